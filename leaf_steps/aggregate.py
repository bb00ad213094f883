"""Aggregate per-run metrics over seeds into the paper-style summary table (Tables 1-2).

    python -m leaf_steps.aggregate --runs summary/runs.parquet --out-summary summary/summary.parquet \\
        --out-markdown summary/table.md --methods teacher_zero_shot ... [--headline leaf] [--title T]

Input: ``evaluate``'s per-run metrics (every run on the same test images). Outputs: a long table
(method, ratio, n_runs, n_images, mean and std over seeds of each metric: srcc, plcc, plcc_logistic,
krcc, rmse, rmse_logistic -- raw and logistic PLCC side by side), and a Markdown table (rows:
methods; columns: MOS ratio x SRCC/PLCC as mean +- std over seeds; PLCC there is the raw one) with
notes saying how many test images each cell used (and which methods lacked which), which stage-1
epoch each distilled student started from and by which rule, and a check of the paper's claim that
distillation + calibration beats calibration alone (CFT-only) at the same MOS budget.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from leaf_steps.core.cli import run_step
from leaf_steps.core.errors import InputError
from leaf_steps.core.io import atomic_write_text, make_provenance, read_parquet, write_parquet
from leaf_steps.evaluation.labels import DISPLAY, PLCC_NOTE, TABLE_PLCC, ratio_label

METRICS = ["srcc", "plcc", "plcc_logistic", "krcc", "rmse", "rmse_logistic"]
RUN_COLUMNS = ["method", "ratio", "seed", "n", "n_test", "n_missing", *METRICS]
RULE_TEXT = {
    "teacher": "teacher rule: the lowest held-out distillation loss, no MOS",
    "mos_subset": "mos_subset rule: the highest SRCC + PLCC of the stage-1 outputs on the subset's own calib_val "
    "images, paper Sec. 3.2.3",
}


def display_name(method: str, headline: str | None) -> str:
    return DISPLAY.get(method, f"LEAF ({method})" if method == headline else method)


def summarize(runs: pl.DataFrame) -> pl.DataFrame:
    """Mean and std over seeds per (method, ratio); every cell's runs must share one image count."""
    mixed = runs.group_by("method", "ratio").agg(pl.col("n").n_unique().alias("k")).filter(pl.col("k") > 1)
    if mixed.height:
        r = mixed.row(0, named=True)
        raise InputError(
            f"runs of {r['method']} at ratio {r['ratio']:g} were evaluated on different numbers of "
            "test images; a table cell would mix them"
        )
    aggs = [pl.len().alias("n_runs"), pl.col("n").first().alias("n_images")]
    for m in METRICS:
        aggs += [pl.col(m).mean().alias(f"{m}_mean"), pl.col(m).std(ddof=1).fill_null(0.0).alias(f"{m}_std")]
    return runs.group_by("method", "ratio").agg(aggs).sort("method", "ratio")


def markdown_table(summary: pl.DataFrame, method_order: Sequence[str], headline: str | None) -> str:
    """Rows: methods; columns: ratio x (SRCC, raw PLCC). When cells used different numbers of test
    images (runs not evaluated together), each cell says its own count."""
    ratios = sorted(summary["ratio"].unique().to_list())
    per_cell_n = summary["n_images"].n_unique() > 1
    header = "| Method | " + " | ".join(f"{ratio_label(r)} SRCC | {ratio_label(r)} PLCC" for r in ratios) + " |"
    lines = [header, "|---|" + "---|" * (2 * len(ratios))]
    cells = {(r["method"], r["ratio"]): r for r in summary.iter_rows(named=True)}
    for method in method_order:
        row = [display_name(method, headline)]
        for r in ratios:
            c = cells.get((method, r))
            for m in ("srcc", TABLE_PLCC):
                if c is None:
                    row.append("-")
                else:
                    n = f" (n={c['n_images']})" if per_cell_n else ""
                    mean, std = c[f"{m}_mean"], c[f"{m}_std"]
                    if mean is None or mean != mean:  # NaN: some seed predicted a constant (correlation undefined)
                        row.append(f"undefined (a run predicted a constant){n}")
                    else:
                        row.append(f"{mean:.3f} ± {std:.3f}{n}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def image_note(runs: pl.DataFrame, headline: str | None) -> str:
    """How many test images the cells used, and which methods cost the others which images."""
    used, total = sorted(runs["n"].unique().to_list()), sorted(runs["n_test"].unique().to_list())
    if len(used) > 1 or len(total) > 1:
        return (
            f"Cells were evaluated on different test images (n = {', '.join(map(str, used))} of "
            f"{', '.join(map(str, total))} with MOS): see the n of each cell."
        )
    lacking = (
        runs.filter(pl.col("n_missing") > 0)
        .group_by("method")
        .agg(pl.col("n_missing").max())
        .sort("method")
        .iter_rows()
    )
    parts = [f"{display_name(m, headline)} lacks {k}" for m, k in lacking]
    if not parts:
        return f"Every cell: the same {used[0]} test images (all test images with a MOS; no method lacks one)."
    return (
        f"Every cell: the same {used[0]} of the {total[0]} test images with a MOS; the other {total[0] - used[0]} "
        f"are left out of every cell because some method has no prediction for them ({'; '.join(parts)}; "
        "per run and image in `coverage.parquet`)."
    )


def _epochs_text(rows: pl.DataFrame) -> str:
    """'epoch 8 (teacher rule)' or 'epochs 8, 7, 1 (seeds 0, 1, 2; mos_subset rule)'; a seed whose rule
    differs from the others' (a fallback) is named."""
    rules = rows["stage1_selection"].to_list()
    main = max(set(rules), key=rules.count)
    if rows.height == 1:
        return f"epoch {rows['stage1_epoch'][0]} ({main} rule)"
    odd = [f"seed {s}: {r} rule" for s, r in zip(rows["seed"], rules, strict=True) if r != main]
    seeds = ", ".join(str(s) for s in rows["seed"])
    return (
        f"epochs {', '.join(str(e) for e in rows['stage1_epoch'])} (seeds {seeds}; {main} rule"
        + (f"; {', '.join(odd)}" if odd else "")
        + ")"
    )


def stage1_notes(runs: pl.DataFrame, method_order: Sequence[str], headline: str | None) -> list[str]:
    """Per distilled student: the stage-1 epoch each run started from, and the rule that chose it."""
    if "stage1_epoch" not in runs.columns:
        return []
    started = runs.filter(pl.col("stage1_epoch").is_not_null())
    if started.is_empty():
        return []
    rules = [r for r in RULE_TEXT if r in set(started["stage1_selection"])]
    out = ["Stage-1 checkpoint each distilled student started from (" + "; ".join(RULE_TEXT[r] for r in rules) + "):"]
    for method in method_order:
        mine = started.filter(pl.col("method") == method)
        if mine.is_empty():
            continue
        cells = [
            (r, mine.filter(pl.col("ratio") == r).sort("seed", nulls_last=False))
            for r in sorted(mine["ratio"].unique().to_list())
        ]
        parts = [f"{ratio_label(r)}: {_epochs_text(rows)}" for r, rows in cells]
        out.append(f"- {display_name(method, headline)}: " + "; ".join(parts) + ".")
    return out


def claim_check(runs: pl.DataFrame, headline: str, baseline: str = "cft_only") -> list[str]:
    out = []
    for ratio in sorted(r for r in runs["ratio"].unique().to_list() if r > 0):
        a = runs.filter((pl.col("method") == headline) & (pl.col("ratio") == ratio))
        b = runs.filter((pl.col("method") == baseline) & (pl.col("ratio") == ratio))
        if a.is_empty() or b.is_empty():
            continue
        paired = a.join(b, on="seed", suffix="_base")
        wins = int((paired["srcc"] > paired["srcc_base"]).sum())
        verdict = "holds" if a["srcc"].mean() > b["srcc"].mean() else "does NOT hold"
        out.append(
            f"- {ratio_label(ratio)}: {headline} SRCC {a['srcc'].mean():.3f} vs {baseline} "
            f"{b['srcc'].mean():.3f} (PLCC {a['plcc'].mean():.3f} vs {b['plcc'].mean():.3f}); "
            f"{headline} better on {wins}/{paired.height} seeds -> the claim {verdict} here."
        )
    return out


def report(
    runs: pl.DataFrame, summary: pl.DataFrame, method_order: Sequence[str], headline: str | None, title: str
) -> str:
    """The Markdown of table.md: title, what the cells are, the table, and its notes."""
    text = [
        f"# {title}",
        "",
        "Test-split SRCC / PLCC, mean ± std over MOS-subset seeds (label-free rows have one run: nothing is sampled).",
        "",
        markdown_table(summary, method_order, headline),
        "",
        image_note(runs, headline),
        PLCC_NOTE,
        "",
    ]
    stage1 = stage1_notes(runs, method_order, headline)
    if stage1:
        text += [*stage1, ""]
    if headline:
        claims = claim_check(runs, headline)
        if claims:
            text += [
                "Paper claim: teacher-guided distillation + calibration beats calibration alone at the "
                "same MOS budget.",
                *claims,
                "",
            ]
    return "\n".join(text)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=Path, required=True, help="evaluate's per-run metrics")
    ap.add_argument("--out-summary", type=Path, required=True)
    ap.add_argument("--out-markdown", type=Path, required=True)
    ap.add_argument("--headline", default=None, help="the LEAF variant compared against CFT-only")
    ap.add_argument("--methods", nargs="+", required=True, help="row order of the table")
    ap.add_argument("--title", default="LEAF results")
    a = ap.parse_args(argv)
    runs = read_parquet(a.runs, RUN_COLUMNS).sort("method", "ratio", "seed", nulls_last=False)
    unknown = sorted(set(runs["method"]) - set(a.methods))
    if unknown:
        raise InputError(f"{a.runs}: method(s) {unknown} are not in --methods; the table would leave them out")
    summary = summarize(runs)
    body = report(runs, summary, a.methods, a.headline, a.title)
    write_parquet(
        summary,
        a.out_summary,
        make_provenance(
            "aggregate",
            methods=a.methods,
            headline=a.headline,
            n_runs=runs.height,
            runs=str(a.runs),
            table_plcc=TABLE_PLCC,
        ),
    )
    atomic_write_text(a.out_markdown, body)
    print(body)


if __name__ == "__main__":
    run_step(main)
