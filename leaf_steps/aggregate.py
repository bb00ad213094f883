"""Aggregate per-run metrics over seeds into the paper-style summary table (Tables 1-2).

Inputs: every metrics Parquet from ``evaluate``. Outputs: a long table (method, ratio,
n_runs, mean and std of each metric), a Markdown table (rows: methods; columns: MOS
ratio x SRCC/PLCC as mean +- std over seeds), and a check of the paper's claim that
distillation + calibration beats calibration alone (CFT-only) at the same MOS budget.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from leaf_steps.cli import run_step
from leaf_steps.io import atomic_write_text, make_provenance, read_shards, write_parquet

METRICS = ["srcc", "plcc", "plcc_logistic", "krcc", "rmse", "rmse_logistic"]
DISPLAY = {"teacher_zero_shot": "Teacher (zero-shot)", "teacher_linear": "Teacher + linear calibration",
           "cft_only": "CFT-only (student on MOS subset alone)"}


def summarize(runs: pl.DataFrame) -> pl.DataFrame:
    aggs = [pl.len().alias("n_runs")]
    for m in METRICS:
        aggs += [pl.col(m).mean().alias(f"{m}_mean"), pl.col(m).std(ddof=1).fill_null(0.0).alias(f"{m}_std")]
    return runs.group_by("method", "ratio").agg(aggs).sort("method", "ratio")


def ratio_label(r: float) -> str:
    return "label-free" if r == 0 else f"{r * 100:g}% MOS"


def markdown_table(summary: pl.DataFrame, method_order: Sequence[str], headline: str | None) -> str:
    ratios = sorted(summary["ratio"].unique().to_list())
    header = "| Method | " + " | ".join(f"{ratio_label(r)} SRCC | {ratio_label(r)} PLCC" for r in ratios) + " |"
    lines = [header, "|---|" + "---|" * (2 * len(ratios))]
    cells = {(r["method"], r["ratio"]): r for r in summary.iter_rows(named=True)}
    for method in method_order:
        name = DISPLAY.get(method, f"LEAF ({method})" if method == headline else method)
        row = [name]
        for r in ratios:
            c = cells.get((method, r))
            for m in ("srcc", "plcc"):
                row.append("-" if c is None else f"{c[f'{m}_mean']:.3f} ± {c[f'{m}_std']:.3f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


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
        out.append(f"- {ratio_label(ratio)}: {headline} SRCC {a['srcc'].mean():.3f} vs {baseline} "
                   f"{b['srcc'].mean():.3f} (PLCC {a['plcc'].mean():.3f} vs {b['plcc'].mean():.3f}); "
                   f"{headline} better on {wins}/{paired.height} seeds -> the claim {verdict} here.")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out-runs", type=Path, required=True)
    ap.add_argument("--out-summary", type=Path, required=True)
    ap.add_argument("--out-markdown", type=Path, required=True)
    ap.add_argument("--headline", default=None, help="the LEAF variant compared against CFT-only")
    ap.add_argument("--methods", nargs="+", required=True, help="row order of the table")
    ap.add_argument("--title", default="LEAF results")
    ap.add_argument("metrics", nargs="+", type=Path)
    a = ap.parse_args(argv)
    runs = read_shards(a.metrics, ["method", "ratio", "seed", *METRICS]).sort("method", "ratio", "seed")
    summary = summarize(runs)
    text = [f"# {a.title}", "", "Test-split SRCC / PLCC, mean ± std over MOS-subset seeds "
            "(label-free rows have one run: nothing is sampled).", "",
            markdown_table(summary, a.methods, a.headline), ""]
    if a.headline:
        claims = claim_check(runs, a.headline)
        if claims:
            text += ["Paper claim: teacher-guided distillation + calibration beats calibration alone at the "
                     "same MOS budget.", *claims, ""]
    body = "\n".join(text)
    provenance = make_provenance("aggregate", methods=a.methods, headline=a.headline, n_runs=runs.height)
    write_parquet(runs, a.out_runs, provenance)
    write_parquet(summary, a.out_summary, provenance)
    atomic_write_text(a.out_markdown, body)
    print(body)


if __name__ == "__main__":
    run_step(main)
