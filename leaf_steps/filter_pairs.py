"""Confidence filtering of teacher pairs (paper Sec. 3.2.2): drop pairs with w < tau.

Pairs whose scoring failed (non-null ``error``) are dropped too. Writes the kept pairs
(same columns as the scored pairs) and a JSON summary with the counts.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from leaf_steps.core.cli import run_step
from leaf_steps.core.io import make_provenance, read_parquet, read_provenance, write_json, write_parquet


def filter_pairs(scored: pl.DataFrame, tau: float) -> tuple[pl.DataFrame, dict[str, int | float]]:
    valid = scored.filter(pl.col("error").is_null())
    kept = valid.filter(pl.col("confidence") >= tau)
    summary = {
        "tau": tau,
        "pairs": scored.height,
        "failed": scored.height - valid.height,
        "below_tau": valid.height - kept.height,
        "kept": kept.height,
        "kept_fraction": kept.height / scored.height if scored.height else 0.0,
        "kept_prefers_a": int(kept["t_ab"].sum()) if kept.height else 0,
    }
    return kept, summary


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=Path, required=True, help="scored pairs (gathered)")
    ap.add_argument("--tau", type=float, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--summary", type=Path, required=True)
    a = ap.parse_args(argv)
    scored = read_parquet(a.pairs, ["pair_id", "a_id", "b_id", "t_ab", "confidence", "error"])
    kept, summary = filter_pairs(scored, a.tau)
    upstream = read_provenance(a.pairs)
    write_parquet(
        kept,
        a.out,
        make_provenance(
            "filter_pairs",
            tau=a.tau,
            summary=summary,
            teacher=upstream.get("teacher"),
            prompt_hash=upstream.get("prompt_hash"),
        ),
    )
    write_json(a.summary, summary)


if __name__ == "__main__":
    run_step(main)
