"""Sample image pairs for teacher preferences (paper Sec. 3.1.1 and 4.2).

The pairs are a uniform sample *without replacement* of the ordered pairs (a, b), a != b, of the training
split: as many as there are training images unless ``pairs.count`` says otherwise. a is shown to the
teacher as A, b as B. Output: pair_id (int64, 0..count-1 in score order), a_id, b_id.

It is a consistent ("bottom-k") sample: every image gets a 64-bit key from a seeded hash of its image_id,
every ordered pair a 64-bit score mixing its two keys (order matters: (a, b) and (b, a) are two pairs with
independent scores), and the sample is the ``count`` pairs with the lowest scores. The scores behave as
i.i.d. uniform draws, so the lowest ``count`` are a uniform ``count``-subset. A pair's score depends only on
the seed and its two image ids, never on which other images exist, so the sample is stable: a pair whose two
images stay in the training split stays sampled unless new pairs rank below it. Adding images or drawing a
new split therefore keeps most pairs, and the teacher score store answers them without a new request
(issue 11). Drawing pairs by index into the training list (the earlier sampler) re-drew almost all of them.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from leaf_steps.core.cli import json_arg, run_step
from leaf_steps.core.errors import InputError
from leaf_steps.core.io import make_provenance, read_parquet, write_parquet

# Recorded in the provenance: a new version is another law for the same seed (the code hash reruns the step).
SAMPLER = "bottom-k-splitmix64/1"

# splitmix64 (Steele, Lea, Flood 2014; the constants of Vigna's reference splitmix64.c): a bijection on
# 64-bit integers whose output passes BigCrush, so distinct inputs give distinct, well-spread scores.
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)

# Scores computed at once (rows x all images): 2^20 uint64 = 8 MiB per array, two arrays live at a time.
CHUNK_ELEMENTS = 1 << 20


def splitmix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 of each element, in place on ``z`` (uint64; arithmetic wraps modulo 2^64)."""
    t = np.empty_like(z)
    z += _GAMMA
    np.right_shift(z, _S30, out=t)
    z ^= t
    z *= _M1
    np.right_shift(z, _S27, out=t)
    z ^= t
    z *= _M2
    np.right_shift(z, _S31, out=t)
    z ^= t
    return z


def image_keys(image_ids: Sequence[str], seed: int) -> np.ndarray:
    """A 64-bit key per image: blake2b of ``"<seed>:<image_id>"``, the first 8 bytes little-endian."""
    digests = b"".join(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest() for i in image_ids)
    return np.frombuffer(digests, dtype="<u8").astype(np.uint64)


def pair_scores(keys_a: np.ndarray, keys_b: np.ndarray) -> np.ndarray:
    """Scores of the ordered pairs keys_a[i] x keys_b[j] (a 2-D array): splitmix64(splitmix64(ka) ^ kb).

    Asymmetric by construction (a's key is mixed before b's joins), and splitmix64 is a bijection, so two
    pairs get one score only if their inner values collide (probability 2^-64 per two pairs)."""
    inner = splitmix64(keys_a.astype(np.uint64, copy=True))
    return splitmix64(np.bitwise_xor(inner[:, None], keys_b[None, :]))


def _lowest(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray, count: int):
    """The ``count`` lowest scores, ties at the cut all kept (the final sort breaks them by image id)."""
    if scores.size <= count:
        return scores, rows, cols
    cut = np.partition(scores, count - 1)[count - 1]
    keep = scores <= cut
    return scores[keep], rows[keep], cols[keep]


def sample_pairs(
    image_ids: Sequence[str], count: int | None, seed: int, chunk_elements: int = CHUNK_ELEMENTS
) -> pl.DataFrame:
    """The ``count`` ordered pairs of distinct images with the lowest scores (``count`` None: one per image).

    Scores are computed a block of rows at a time (about ``chunk_elements`` pairs), keeping only those at
    or below the running ``count``-th lowest, so memory stays bounded (tens of MB) for any number of images.
    Sorted by (score, a_id, b_id); the input order of ``image_ids`` is irrelevant.
    """
    ids = sorted(set(image_ids))
    if len(ids) != len(image_ids):
        raise InputError(f"image ids must be unique to sample pairs; {len(image_ids) - len(ids)} repeated")
    n = len(ids)
    if n < 2:
        raise InputError(f"need at least 2 training images to sample pairs, got {n}")
    count = n if count is None else int(count)
    if not 0 < count <= n * (n - 1):
        raise InputError(
            f"pairs.count = {count}: must be between 1 and n(n-1) = {n * (n - 1)}, the number of "
            f"ordered pairs of distinct images among the {n} training images"
        )
    keys = image_keys(ids, seed)
    rows_per_block = max(1, chunk_elements // n)
    best = (np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.int64))
    for start in range(0, n, rows_per_block):
        stop = min(n, start + rows_per_block)
        block = pair_scores(keys[start:stop], keys)
        diagonal = np.arange(stop - start), np.arange(start, stop)  # a == b is not a pair
        block[diagonal] = np.iinfo(np.uint64).max
        # Only scores at or below the running count-th lowest can be kept. Until count pairs are seen there
        # is none: the block's own count-th lowest bounds it (never a whole block of candidates copied out).
        if best[0].size >= count:
            cut = best[0].max()
        elif count < block.size:
            cut = np.partition(block, count - 1, axis=None)[count - 1]
        else:
            cut = np.iinfo(np.uint64).max
        mask = block <= cut
        mask[diagonal] = False
        r, c = np.nonzero(mask)
        best = _lowest(
            np.concatenate([best[0], block[r, c]]),
            np.concatenate([best[1], r + start]),
            np.concatenate([best[2], c]),
            count,
        )
    id_array = np.array(ids)
    table = pl.DataFrame({"score": best[0], "a_id": id_array[best[1]], "b_id": id_array[best[2]]})
    table = table.sort(["score", "a_id", "b_id"]).head(count)
    return pl.DataFrame({"pair_id": np.arange(count, dtype=np.int64), "a_id": table["a_id"], "b_id": table["b_id"]})


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
            "sample_pairs",
            settings=a.settings,
            sampler=SAMPLER,
            n_train=len(train),
            n_pairs=pairs.height,
            manifest=str(a.manifest),
        ),
    )


if __name__ == "__main__":
    run_step(main)
