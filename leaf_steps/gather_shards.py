"""Gather teacher score shards into one Parquet file (the scatter/gather join).

The shards' provenance (teacher, prompt hash, settings) is carried over, with the
per-shard failure counts added up and the answer-token mass distribution of the whole table.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from leaf_steps.core.cli import run_step
from leaf_steps.core.errors import InputError
from leaf_steps.core.io import make_provenance, read_provenance, read_shards, write_parquet
from leaf_steps.teachers.scoring import mass_summary


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--key", required=True, help="id column that must be unique (image_id or pair_id)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("shards", nargs="+", type=Path)
    a = ap.parse_args(argv)
    table = read_shards(a.shards, [a.key]).sort(a.key)
    if table[a.key].n_unique() != table.height:
        raise InputError(f"{a.out}: duplicate {a.key} values across shards {a.shards}")
    first = read_provenance(a.shards[0])
    summaries = [read_provenance(s).get("summary", {}) for s in a.shards]
    summary = {"rows": table.height, **{k: sum(s.get(k, 0) for s in summaries)
                                        for k in ("failed_rows", "not_answered_rows")}}
    if "token_mass" in table.columns:
        summary["token_mass"] = mass_summary(table["token_mass"],
                                             summaries[0].get("token_mass", {}).get("min_token_mass"))
    keep = {k: first[k] for k in ("teacher", "teacher_info", "prompt", "prompt_hash", "scoring") if k in first}
    write_parquet(table, a.out, make_provenance("gather_shards", **keep, shards=[str(s) for s in a.shards],
                                                summary=summary))


if __name__ == "__main__":
    run_step(main)
