"""Sample image pairs for teacher preferences (paper Sec. 3.1.1 and 4.2).

Pairs are drawn uniformly at random from D x D over the training split (a != b), as many
as there are training images unless ``pairs.count`` says otherwise. Seeded, so the same
manifest and seed give the same pairs. a is shown to the teacher as A, b as B.
Output: pair_id (int64), a_id, b_id.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from leaf_steps.core.cli import json_arg, run_step
from leaf_steps.core.errors import InputError
from leaf_steps.core.io import make_provenance, read_parquet, write_parquet


def sample_pairs(image_ids: Sequence[str], count: int | None, seed: int) -> pl.DataFrame:
    ids = np.array(sorted(image_ids))
    n = len(ids)
    if n < 2:
        raise InputError(f"need at least 2 training images to sample pairs, got {n}")
    count = n if count is None else int(count)
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n, size=count)
    # b uniform over the other n-1 images: shift by 1..n-1 so a != b without rejection.
    b = (a + rng.integers(1, n, size=count)) % n
    return pl.DataFrame({"pair_id": np.arange(count, dtype=np.int64), "a_id": ids[a], "b_id": ids[b]})


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--settings", type=json_arg, required=True, help='{"count": int|null, "seed": int}')
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    manifest = read_parquet(a.manifest, ["image_id", "split"])
    train = manifest.filter(pl.col("split") == "train")["image_id"].to_list()
    pairs = sample_pairs(train, a.settings.get("count"), a.settings.get("seed", 0))
    write_parquet(
        pairs,
        a.out,
        make_provenance(
            "sample_pairs", settings=a.settings, n_train=len(train), n_pairs=pairs.height, manifest=str(a.manifest)
        ),
    )


if __name__ == "__main__":
    run_step(main)
