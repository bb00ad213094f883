"""Step: the teacher's point scores of a run, points.parquet, assembled from its scoring shards' raw answers:
Eq 1-5 computed from the stored log-likelihoods, ``min_token_mass`` applied, the error budget checked
(see :mod:`leaf_steps.teachers.assembly`).

    python -m leaf_steps.gather_points --teacher-name T --acceptance '{"min_token_mass": 0.5}' \\
        --run '{"max_error_fraction": 0.05}' --out teacher/T/points.parquet teacher/T/points/*.parquet
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from leaf_steps.core.cli import json_arg, run_step
from leaf_steps.teachers.assembly import assemble_scores


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher-name", default="teacher")
    ap.add_argument("--acceptance", type=json_arg, default={}, help='{"min_token_mass": F} (empty: every answer)')
    ap.add_argument("--run", type=json_arg, default={}, help='{"max_error_fraction": F} (not tracked)')
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("shards", nargs="+", type=Path)
    a = ap.parse_args(argv)
    assemble_scores(
        "point", a.shards, a.out, a.acceptance, a.run.get("max_error_fraction", 0.05), False, a.teacher_name
    )


if __name__ == "__main__":
    run_step(main)
