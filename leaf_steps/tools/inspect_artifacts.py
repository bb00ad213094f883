"""``leaf inspect PATH``: what is inside a LEAF Parquet artifact (or a folder of shards, or the teacher
score store: then its summary, as ``leaf store summary``).

Prints the schema, row count, provenance metadata (step, teacher, prompt hash, settings,
versions), a per-column summary (nulls; min/max/mean for numbers; value counts for short
categorical columns; histograms of level probabilities, pair confidences and the
answer-token mass, with the mass quantiles), the answer-token mass summary of each teacher
shard (rows below ``min_token_mass``, quantiles, histogram), the teacher requests behind a scoring
artifact (rows reused from the teacher score store, rows scored now, requests sent) and a few sample
rows. ``--json`` prints the same as one JSON object for scripts.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from leaf_steps.core.errors import InputError
from leaf_steps.core.io import parquet_files, read_provenance, read_shards
from leaf_steps.teachers.scoring import add_counts
from leaf_steps.tools import store as store_tool

HISTOGRAM_COLUMNS = (
    "p_excellent",
    "p_good",
    "p_fair",
    "p_poor",
    "p_bad",
    "p_a",
    "confidence",
    "teacher_score",
    "token_mass",
)
QUANTILE_COLUMNS = {"token_mass": (0.01, 0.05, 0.25, 0.5, 0.75, 0.95)}


def _num(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def column_summary(s: pl.Series) -> dict[str, Any]:
    out: dict[str, Any] = {"dtype": str(s.dtype), "nulls": s.null_count()}
    if s.dtype.is_numeric() and s.len() > s.null_count():
        v = s.drop_nulls().cast(pl.Float64)
        v = v.filter(v.is_finite())
        if v.len():
            out |= {"min": _num(v.min()), "max": _num(v.max()), "mean": _num(v.mean())}
        if s.name in HISTOGRAM_COLUMNS and v.len():
            lo, hi = (0.0, 1.0) if s.name != "teacher_score" else (1.0, 5.0)
            counts, edges = np.histogram(v.to_numpy(), bins=10, range=(lo, hi))
            out["histogram"] = {"edges": [round(float(e), 3) for e in edges], "counts": counts.tolist()}
        if s.name in QUANTILE_COLUMNS and v.len():
            out["quantiles"] = {f"{q:g}": float(v.quantile(q, "linear")) for q in QUANTILE_COLUMNS[s.name]}
    elif s.dtype == pl.String and s.drop_nulls().n_unique() <= 12:  # nulls are counted above
        out["values"] = {str(k): int(c) for k, c in s.drop_nulls().value_counts(sort=True).iter_rows()}
    elif isinstance(s.dtype, pl.List):
        lengths = s.list.len()
        out["nonempty"] = int((lengths > 0).sum())
        exploded = s.explode().drop_nulls()
        if exploded.len():
            out["values"] = {str(k): int(c) for k, c in exploded.value_counts(sort=True).head(12).iter_rows()}
    return out


def _schema_groups(files: Sequence[Path]) -> dict[tuple[str, ...], list[Path]]:
    """Files grouped by their column names (one group = one kind of artifact)."""
    groups: dict[tuple[str, ...], list[Path]] = {}
    for f in files:
        try:
            names = tuple(pq.read_schema(f).names)
        except Exception as exc:
            raise InputError(f"{f}: not a readable Parquet file ({exc})") from exc
        groups.setdefault(names, []).append(f)
    return groups


def _mixed_kinds_message(path: str | Path, groups: dict[tuple[str, ...], list[Path]]) -> str:
    lines = []
    for names, members in groups.items():
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        lines.append(f"  {len(members)} file(s) with columns [{shown}], e.g. {members[0]}")
    return (
        f"{path}: holds {len(groups)} kinds of artifact (different columns), which cannot be shown as one "
        "table; inspect one file, or a folder of one artifact's shards:\n" + "\n".join(lines)
    )


def common_provenance(provenances: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The provenance entries every shard shares (same value in all)."""
    first = provenances[0]
    return {k: v for k, v in first.items() if all(p.get(k, object()) == v for p in provenances[1:])}


def inspect(path: str | Path, sample: int = 5) -> dict[str, Any]:
    files = parquet_files(path)
    if not files:
        raise InputError(f"{path}: no Parquet files in this folder")
    groups = _schema_groups(files)
    if len(groups) > 1:
        raise InputError(_mixed_kinds_message(path, groups))
    df = read_shards(files)
    provenances = [read_provenance(f) for f in files]
    # The answer-token mass summary each teacher shard wrote (leaf_steps.teachers.scoring), by file.
    mass = {
        str(f): p["summary"]["token_mass"]
        for f, p in zip(files, provenances)
        if isinstance(p.get("summary"), dict) and p["summary"].get("token_mass")
    }
    info = {
        "path": str(path),
        "files": [str(f) for f in files],
        "rows": df.height,
        # Teacher scoring artifacts: rows reused from the score store, scored now, failed; requests sent.
        "requests": add_counts([p["requests"] for p in provenances])
        if all(isinstance(p.get("requests"), dict) for p in provenances)
        else None,
        "schema": {name: str(dtype) for name, dtype in df.schema.items()},
        "provenance": provenances if len(files) > 1 else provenances[0],
        "token_mass": mass,
        "columns": {name: column_summary(df[name]) for name in df.columns},
        "sample": json.loads(df.head(sample).write_json()),
    }
    if len(files) > 1:
        # A folder of shards: what they share, and per shard its rows and whatever differs.
        common = common_provenance(provenances)
        info["common_provenance"] = common
        info["shards"] = [
            {
                "file": str(f),
                "rows": pq.ParquetFile(f).metadata.num_rows,
                "requests": prov.get("requests"),
                "provenance": {k: v for k, v in prov.items() if k not in common},
            }
            for f, prov in zip(files, provenances, strict=True)
        ]
    return info


def _bar(counts: list[int], width: int = 20) -> str:
    top = max(counts) or 1
    blocks = " ▁▂▃▄▅▆▇█"
    return "".join(blocks[min(8, round(8 * c / top))] for c in counts)


def render(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped output (logs, `| less`) gets a wide fixed width instead of rich's 80-column fallback.
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(f"[bold]{info['path']}[/bold]: {info['rows']} rows in {len(info['files'])} file(s)")
    if info.get("requests"):
        r = info["requests"]
        console.print(
            f"teacher requests: {r['rows']} rows: {r['reused']} reused from the score store, {r['scored']} "
            f"scored now ({r['requests_sent']} requests sent), {r['failed']} failed"
        )
    if "shards" in info:
        console.print(f"[bold]provenance shared by all {len(info['shards'])} shards[/bold]")
        console.print_json(json.dumps(info["common_provenance"], default=str))
        shards = Table(title="shards (rows, and the provenance entries that differ)")
        for col in ("file", "rows", "provenance"):
            shards.add_column(col)
        for shard in info["shards"]:
            shards.add_row(shard["file"], str(shard["rows"]), json.dumps(shard["provenance"], default=str))
        console.print(shards)
    else:
        console.print("[bold]provenance[/bold]")
        console.print_json(json.dumps(info["provenance"], default=str))
    table = Table(title="columns")
    for col in ("column", "dtype", "nulls", "min", "max", "mean", "distribution"):
        table.add_column(col)
    for name, c in info["columns"].items():
        dist = ""
        if "histogram" in c:
            h = c["histogram"]
            dist = f"{h['edges'][0]}–{h['edges'][-1]} {_bar(h['counts'])}"
        elif "values" in c:
            dist = ", ".join(f"{k}: {v}" for k, v in list(c["values"].items())[:6])
        fmt = lambda x: "" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))  # noqa: E731
        table.add_row(name, c["dtype"], str(c["nulls"]), fmt(c.get("min")), fmt(c.get("max")), fmt(c.get("mean")), dist)
    console.print(table)
    if info["token_mass"]:
        mass_table = Table(title="answer-token mass (probability the label tokens held at the answer position)")
        for col in ("file", "rows", "below min_token_mass", "q01", "q05", "median", "q95", "histogram 0–1"):
            mass_table.add_column(col)
        for f, m in info["token_mass"].items():
            q = m.get("quantiles", {})
            below = f"{m['below_min']} (< {m['min_token_mass']:g})" if m.get("min_token_mass") is not None else "–"
            mass_table.add_row(
                Path(f).name,
                str(m["rows"]),
                below,
                *(f"{q[k]:.3g}" if k in q else "" for k in ("0.01", "0.05", "0.5", "0.95")),
                _bar(m["histogram"]["counts"]) if "histogram" in m else "",
            )
        console.print(mass_table)
    console.print("[bold]sample rows[/bold]")
    for row in info["sample"]:
        console.print(row)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="leaf inspect", description=__doc__)
    ap.add_argument("path", help="a Parquet file or a folder of shards")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("--sample", type=int, default=5, help="number of sample rows")
    a = ap.parse_args(argv)
    if store_tool.is_store(a.path):
        store_tool.main(["summary", a.path, *(["--json"] if a.json else [])])
        return
    info = inspect(a.path, a.sample)
    if a.json:
        print(json.dumps(info, indent=2, default=str))
    else:
        render(info)
