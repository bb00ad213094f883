"""Step: the teacher's score against MOS on the test split (paper Fig 2), zero-shot and, with
``--linear``, after the linear calibration fitted on one MOS subset.

    python -m leaf_steps.plot_teacher_scatter --points teacher/<t>/points.parquet --manifest M \\
        [--linear predictions/teacher_linear/ratio0.1/seed0.parquet --linear-ratio 0.1 --linear-seed 0] --out F
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from leaf_steps.core.cli import run_step
from leaf_steps.core.errors import InputError
from leaf_steps.core.io import read_parquet, read_provenance
from leaf_steps.evaluation.result_figures import teacher_scatter


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=Path, required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--linear", type=Path, default=None, help="teacher_linear predictions of one subset")
    ap.add_argument("--linear-ratio", type=float, default=None, help="MOS ratio of the subset --linear was fitted on")
    ap.add_argument("--linear-seed", type=int, default=None, help="seed of that subset")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--title", default="Teacher vs MOS (test split)")
    a = ap.parse_args(argv)
    linear = read_parquet(a.linear, ["image_id", "prediction"]) if a.linear else None
    subset = None
    if a.linear and a.linear_ratio is not None and a.linear_seed is not None:
        subset = f"{a.linear_ratio * 100:g}% MOS, seed {a.linear_seed}"
    elif a.linear:
        raise InputError(
            "plot_teacher_scatter: --linear needs --linear-ratio and --linear-seed (the panel says "
            "which MOS subset its line was fitted on)"
        )
    teacher_scatter(
        read_parquet(a.points, ["image_id", "teacher_score", "error"]),
        read_parquet(a.manifest, ["image_id", "split", "mos"]),
        linear,
        a.out,
        a.title,
        subset,
        read_provenance(a.linear) if a.linear else None,
    )


if __name__ == "__main__":
    run_step(main)
