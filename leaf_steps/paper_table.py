"""This run's results in the layout of one of the paper's tables, beside the paper's numbers.

    python -m leaf_steps.paper_table --summary summary.parquet --target table1 --dataset agiqa3k \\
        --out-markdown paper_table1.md --out-parquet paper_table1.parquet

``--summary`` is ``aggregate``'s summary (method, ratio, n_runs, srcc_mean, srcc_std, plcc_mean,
plcc_std, ...). The paper's rows (``leaf_steps.evaluation.paper_numbers``) come in the paper's order and
sections; a row the pipeline reproduces gets this run's mean ± std over seeds and the difference
ours − paper; competitor rows keep the paper's numbers only. Runs the paper does not report
(teacher baselines, CFT-only, extra ratios) follow in a last section, so nothing the run computed
is hidden. For Fig 4 the LEAF rows are every MOS ratio the run has, in ratio order.
The Parquet holds the same rows with numeric columns.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from leaf_steps.core.cli import run_step
from leaf_steps.core.errors import InputError
from leaf_steps.core.io import atomic_write_text, make_provenance, read_parquet, write_parquet
from leaf_steps.evaluation.labels import DISPLAY, ratio_label
from leaf_steps.evaluation.paper_numbers import HEADLINE, PaperRow, check_target, paper_rows, target_notes

EXTRA_SECTION = "Not in the paper (this run only)"
SUMMARY_COLUMNS = ["method", "ratio", "n_runs", "srcc_mean", "srcc_std", "plcc_mean", "plcc_std"]


def _key(method: str, ratio: float) -> tuple[str, float]:
    return method, round(float(ratio), 6)


def _sweep_rows(rows: list[PaperRow], method: str, ratios: list[float]) -> list[PaperRow]:
    """Fig 4: one row per ratio the paper states or the run has, the paper's value where stated."""
    stated = {_key(r.method, r.ratio): r for r in rows if r.method == method}
    section = rows[0].section
    keys = sorted(set(stated) | {_key(method, r) for r in ratios}, key=lambda k: k[1])
    return [stated.get(k) or PaperRow(section, ratio_label(k[1]), None, None, method, k[1]) for k in keys]


def _method_name(method: str) -> str:
    return DISPLAY.get(method, "LEAF" if method == HEADLINE else method)


def build_table(summary: pl.DataFrame, target: str, dataset: str) -> pl.DataFrame:
    spec = check_target(target, dataset)
    rows = paper_rows(target, dataset)
    if spec.sweep_method:
        ratios = summary.filter(pl.col("method") == spec.sweep_method)["ratio"].to_list()
        rows = _sweep_rows(rows, spec.sweep_method, ratios)
    cells = {_key(r["method"], r["ratio"]): r for r in summary.iter_rows(named=True)}
    used = set()
    out = []

    def record(row: PaperRow, cell: dict | None) -> None:
        extra = dict(row.columns)
        rec = {
            "section": row.section,
            "label": row.label,
            "method": row.method,
            "ratio": row.ratio,
            **{c: extra.get(c, "") for c in spec.extra_columns},
            "paper_srcc": row.srcc,
            "paper_plcc": row.plcc,
            "reproduced": row.method is not None,
            "n_runs": None,
            "srcc_mean": None,
            "srcc_std": None,
            "plcc_mean": None,
            "plcc_std": None,
            "plcc_logistic_mean": None,
        }
        if cell is not None:
            for col in ("n_runs", "srcc_mean", "srcc_std", "plcc_mean", "plcc_std", "plcc_logistic_mean"):
                rec[col] = cell.get(col)
        out.append(rec)

    for row in rows:
        cell = None
        if row.method is not None:
            key = _key(row.method, row.ratio)
            cell = cells.get(key)
            used.add(key)
        record(row, cell)
    for key, cell in sorted(cells.items()):
        if key not in used:
            label = f"{_method_name(key[0])}, {ratio_label(key[1])}"
            record(PaperRow(EXTRA_SECTION, label, None, None, key[0], key[1]), cell)

    table = pl.DataFrame(
        out,
        schema={
            "section": pl.String,
            "label": pl.String,
            "method": pl.String,
            "ratio": pl.Float64,
            **{c: pl.String for c in spec.extra_columns},
            "paper_srcc": pl.Float64,
            "paper_plcc": pl.Float64,
            "reproduced": pl.Boolean,
            "n_runs": pl.Int64,
            "srcc_mean": pl.Float64,
            "srcc_std": pl.Float64,
            "plcc_mean": pl.Float64,
            "plcc_std": pl.Float64,
            "plcc_logistic_mean": pl.Float64,
        },
    )
    return table.with_columns(
        diff_srcc=pl.col("srcc_mean") - pl.col("paper_srcc"), diff_plcc=pl.col("plcc_mean") - pl.col("paper_plcc")
    )


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def _ours(mean: float | None, std: float | None, n_runs: int | None, reproduced: bool) -> str:
    if mean is None:
        return "not run" if reproduced else ""
    return f"{mean:.3f}" if n_runs == 1 else f"{mean:.3f} ± {std:.3f}"


def _diff(x: float | None) -> str:
    return "" if x is None else f"{x:+.3f}"


def to_markdown(table: pl.DataFrame, target: str, dataset: str, title: str) -> str:
    spec = check_target(target, dataset)
    show_logistic = table["plcc_logistic_mean"].is_not_null().any()
    header = [
        "Method",
        *spec.extra_columns,
        "SRCC paper",
        "SRCC ours",
        "Δ SRCC",
        "PLCC paper",
        "PLCC ours",
        "Δ PLCC",
        *(["PLCC ours (logistic)"] if show_logistic else []),
        "runs",
    ]
    intro = (
        f"Paper {spec.title}; dataset `{dataset}`. Ours: mean ± std over MOS-subset seeds on the test "
        "split (label-free rows: one run). Δ = ours − paper."
    )
    lines = [f"# {title}", "", intro, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    section = None
    for r in table.iter_rows(named=True):
        if r["section"] != section:
            section = r["section"]
            lines.append("| " + " | ".join([f"**{section}**"] + [""] * (len(header) - 1)) + " |")
        cells = [r["label"], *(r[c] for c in spec.extra_columns)]
        for m in ("srcc", "plcc"):
            cells += [
                _num(r[f"paper_{m}"]),
                _ours(r[f"{m}_mean"], r[f"{m}_std"], r["n_runs"], r["reproduced"]),
                _diff(r[f"diff_{m}"]),
            ]
        if show_logistic:
            cells.append(_num(r["plcc_logistic_mean"]))
        cells.append("" if r["n_runs"] is None else str(r["n_runs"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        *_comparison_lines(table),
        "",
        "PLCC ours: Pearson on the raw predictions; the paper does not say whether it fits a logistic "
        "first" + (" (the logistic column shows that variant)." if show_logistic else "."),
        *(f"- {note}" for note in target_notes(target, dataset)),
        "",
    ]
    return "\n".join(lines)


def _comparison_lines(table: pl.DataFrame) -> list[str]:
    out = []
    for metric in ("srcc", "plcc"):
        d = table.filter(pl.col(f"diff_{metric}").is_not_null())
        if d.is_empty():
            out.append(f"- {metric.upper()}: no row has both the paper's and this run's value.")
            continue
        worst = d.sort(pl.col(f"diff_{metric}").abs(), descending=True).row(0, named=True)
        out.append(
            f"- {metric.upper()}: {d.height} row(s) compared, mean |Δ| {d[f'diff_{metric}'].abs().mean():.3f}, "
            f"largest {worst[f'diff_{metric}']:+.3f} ({worst['label']} in '{worst['section']}')"
        )
    missing = table.filter(pl.col("reproduced") & pl.col("srcc_mean").is_null() & pl.col("section").ne(EXTRA_SECTION))
    if missing.height:
        out.append("- Not run by this config: " + "; ".join(f"'{x}'" for x in missing["label"].to_list()))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", type=Path, required=True, help="aggregate's summary.parquet")
    ap.add_argument("--target", required=True, help="table1 | table2 | table3 | table4 | fig4")
    ap.add_argument("--dataset", required=True, help="which of the paper's datasets to compare against")
    ap.add_argument("--out-markdown", type=Path, required=True)
    ap.add_argument("--out-parquet", type=Path, required=True)
    ap.add_argument("--title", default=None)
    a = ap.parse_args(argv)
    check_target(a.target, a.dataset)
    summary = read_parquet(a.summary, SUMMARY_COLUMNS)
    if summary.is_empty():
        raise InputError(f"{a.summary}: no rows")
    table = build_table(summary, a.target, a.dataset)
    text = to_markdown(table, a.target, a.dataset, a.title or f"Paper {a.target} vs this run ({a.dataset})")
    write_parquet(
        table, a.out_parquet, make_provenance("paper_table", target=a.target, dataset=a.dataset, summary=str(a.summary))
    )
    atomic_write_text(a.out_markdown, text)
    print(text)


if __name__ == "__main__":
    run_step(main)
