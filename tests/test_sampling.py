"""Pair sampling (Sec. 3.1.1) and MOS subsets (Sec. 3.2.3) against what they promise: the law of
the draws (pairs: uniform without replacement over ordered pairs of distinct images, equal to a brute-force
bottom-k reference, stable when images are added or the split changes; subsets: uniform over the labelled
images), the sizes at their boundaries, the roles, and the step outputs with their provenance."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter

import numpy as np
import polars as pl
import pytest
from scipy import stats

from leaf_steps import sample_mos_subset as sms
from leaf_steps import sample_pairs as sp
from leaf_steps.core.errors import InputError
from leaf_steps.core.io import read_provenance
from leaf_steps.training.mos_subsets import subset_sizes

# --------------------------------------------------------------------------- pairs

MASK64 = (1 << 64) - 1


def splitmix64_reference(x: int) -> int:
    """Vigna's splitmix64.c, one step from state x, in Python integers."""
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def reference_pairs(ids, count, seed):
    """Brute force over every ordered pair, one Python integer at a time: the count lowest scores."""
    key = {i: int.from_bytes(hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=8).digest(), "little") for i in ids}
    scored = sorted(
        (splitmix64_reference(splitmix64_reference(key[a]) ^ key[b]), a, b) for a in ids for b in ids if a != b
    )
    return [(a, b) for _, a, b in scored[:count]]


def pair_list(pairs: pl.DataFrame) -> list[tuple[str, str]]:
    return list(zip(pairs["a_id"], pairs["b_id"]))


def test_splitmix64_matches_the_reference_output():
    assert splitmix64_reference(0) == 0xE220A8397B1DCDAF  # first output of splitmix64.c seeded with 0
    xs = [0, 1, 2**63, MASK64, 0x0123456789ABCDEF]
    assert sp.splitmix64(np.array(xs, dtype=np.uint64)).tolist() == [splitmix64_reference(x) for x in xs]


@pytest.mark.parametrize("n, count, seed", [(2, 2, 0), (7, 7, 1), (9, 30, 5), (6, 30, 2), (13, 1, 3)])
@pytest.mark.parametrize("chunk_elements", [1, 7, 1 << 20])
def test_pairs_are_the_lowest_scores_over_all_ordered_pairs(n, count, seed, chunk_elements):
    ids = [f"img{k:02d}" for k in range(n)]
    pairs = sp.sample_pairs(ids, count, seed, chunk_elements=chunk_elements)  # one row a block, or several
    assert pair_list(pairs) == reference_pairs(ids, count, seed)
    assert pairs["pair_id"].to_list() == list(range(count)) and pairs["pair_id"].dtype == pl.Int64
    assert pairs.columns == ["pair_id", "a_id", "b_id"]


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("count", [3, 40, 300])
@pytest.mark.parametrize("chunk_elements", [120, 1 << 20])
def test_the_block_cut_never_drops_a_pair_of_the_lowest(seed, count, chunk_elements):
    # Blocks larger than count (one block of 900 scores, or 4 rows of 30): the first block's cut is its own
    # count-th lowest score; a cut taken anywhere below it would keep fewer than count candidates.
    ids = [f"img{k:02d}" for k in range(30)]
    assert pair_list(sp.sample_pairs(ids, count, seed, chunk_elements=chunk_elements)) == reference_pairs(
        ids, count, seed
    )


def test_pairs_are_a_uniform_sample_without_replacement_of_ordered_pairs():
    ids = [f"im{i}" for i in range(5)]  # 20 ordered pairs of distinct images, 4 drawn per seed
    hits = Counter()
    for seed in range(1000):
        drawn = pair_list(sp.sample_pairs(ids, 4, seed))
        assert len(set(drawn)) == 4 and all(a != b for a, b in drawn)  # without replacement, never a == b
        hits.update(drawn)
    assert len(hits) == 20  # every ordered pair, in both orders, is reachable
    assert stats.chisquare(list(hits.values())).pvalue > 1e-4  # ... and equally likely (each about 200 times)
    shown_as_a = Counter(a for (a, _), k in hits.items() for _ in range(k))
    assert stats.chisquare(list(shown_as_a.values())).pvalue > 1e-4  # each image shown as A equally often


def test_both_orders_of_a_pair_are_independent_draws():
    ids = [f"im{i}" for i in range(30)]
    both = sum(
        len({(a, b), (b, a)} & set(pair_list(sp.sample_pairs(ids, 30, seed)))) == 2
        for seed in range(200)
        for a, b in [("im0", "im1")]
    )
    # P(both orders drawn) = (30/870) * (29/869), about 0.0012: in 200 seeds, almost never.
    assert both <= 2


def test_adding_images_keeps_every_pair_not_displaced_by_a_lower_new_pair():
    old_ids = [f"old{k:03d}" for k in range(120)]
    added = [f"new{k:03d}" for k in range(30)]
    for count in (120, 400):
        old = set(pair_list(sp.sample_pairs(old_ids, count, seed=4)))
        new = pair_list(sp.sample_pairs(old_ids + added, count, seed=4))
        involving_new = [p for p in new if p[0] in added or p[1] in added]
        among_old = [p for p in new if p not in involving_new]
        assert set(among_old) <= old  # no pair among the old images is drawn afresh
        assert len(old - set(new)) == len(involving_new)  # each dropped pair gave way to a lower new one
    # pairs.count null (one pair per training image): the count grows, but the rate n / n(n-1) falls, so a
    # uniform sample must hold fewer pairs among the old images (about 150 * 120*119 / (150*149) = 96 of 120).
    # Still every pair asked anew involves a new image: the old-image pairs kept are the lowest of the old.
    old = pair_list(sp.sample_pairs(old_ids, None, seed=4))
    new = pair_list(sp.sample_pairs(old_ids + added, None, seed=4))
    among_old = [p for p in new if p[0] in old_ids and p[1] in old_ids]
    assert among_old == old[: len(among_old)] and 80 <= len(among_old) <= 110


def test_a_new_split_keeps_every_earlier_pair_whose_images_stay_in_train_and_whose_rank_fits():
    ids = [f"img{k:03d}" for k in range(60)]
    rng = np.random.default_rng(0)
    train_1 = sorted(rng.choice(ids, 42, replace=False))
    train_2 = sorted(rng.choice(ids, 42, replace=False))
    first = set(pair_list(sp.sample_pairs(train_1, None, seed=9)))
    second = pair_list(sp.sample_pairs(train_2, None, seed=9))
    assert second == reference_pairs(train_2, 42, seed=9)
    ranks = {p: r for r, p in enumerate(reference_pairs(train_2, 42 * 41, seed=9))}
    still_train = {p for p in first if p[0] in train_2 and p[1] in train_2}
    assert {p for p in still_train if ranks[p] < 42} == still_train & set(second)
    # Scores do not depend on the split: most of the earlier pairs among remaining images are kept.
    assert len(still_train & set(second)) >= len(still_train) // 2 > 0


def test_pair_counts_outside_one_to_n_n_minus_1_are_errors_naming_the_bounds():
    pairs = sp.sample_pairs(["x", "y"], 2, seed=0)
    assert set(pair_list(pairs)) == {("x", "y"), ("y", "x")}
    with pytest.raises(InputError, match="need at least 2 training images to sample pairs, got 1"):
        sp.sample_pairs(["x"], None, seed=0)
    with pytest.raises(InputError, match=r"pairs.count = 21: must be between 1 and n\(n-1\) = 20.* 5 training"):
        sp.sample_pairs([f"im{i}" for i in range(5)], 21, seed=0)
    with pytest.raises(InputError, match=r"pairs.count = 0"):
        sp.sample_pairs([f"im{i}" for i in range(5)], 0, seed=0)
    assert sp.sample_pairs([f"im{i}" for i in range(5)], 20, seed=0).height == 20  # every ordered pair
    with pytest.raises(InputError, match="1 repeated"):
        sp.sample_pairs(["x", "y", "x"], None, seed=0)


def test_sample_pairs_step_uses_the_train_split_and_records_its_settings(tmp_path):
    manifest = tmp_path / "manifest.parquet"
    pl.DataFrame({"image_id": [f"i{k:02d}" for k in range(12)], "split": ["train"] * 9 + ["test"] * 3}).write_parquet(
        manifest
    )
    out = tmp_path / "pairs.parquet"
    sp.main(["--manifest", str(manifest), "--settings", json.dumps({"count": 40, "seed": 2}), "--out", str(out)])
    pairs = pl.read_parquet(out)
    assert pairs.equals(sp.sample_pairs([f"i{k:02d}" for k in range(9)], 40, 2))  # test images never paired
    prov = read_provenance(out)
    assert prov["step"] == "sample_pairs" and prov["settings"] == {"count": 40, "seed": 2}
    assert prov["sampler"] == sp.SAMPLER
    assert (prov["n_train"], prov["n_pairs"], prov["manifest"]) == (9, 40, str(manifest))
    # count null: as many pairs as training images (Sec. 4.2); seed 0 when not given.
    sp.main(["--manifest", str(manifest), "--settings", json.dumps({"count": None}), "--out", str(out)])
    assert pl.read_parquet(out).equals(sp.sample_pairs([f"i{k:02d}" for k in range(9)], None, 0))


# --------------------------------------------------------------------------- MOS subsets


def train_table(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {"image_id": [f"t{k:03d}" for k in range(n)], "mos": [float(10 * k) for k in range(n)], "split": ["train"] * n}
    )


@pytest.mark.parametrize(
    "n, ratio, val_fraction, sizes",
    [
        (100, 0.1, 0.2, (10, 2)),
        (100, 0.3, 0.2, (30, 6)),
        (10, 0.5, 0.0, (5, 0)),
        (7, 0.5, 0.34, (4, 2)),
        (10, 1.0, 0.25, (10, 3)),  # ceil: the validation part is never rounded away
    ],
)
def test_subset_sizes(n, ratio, val_fraction, sizes):
    assert subset_sizes(n, ratio, val_fraction) == sizes


def test_subset_boundaries_two_train_and_two_val_are_enough():
    train = train_table(10)
    ok = sms.sample_subset(train, 0.4, seed=1, val_fraction=0.5)  # 4 images: 2 train + 2 val
    assert Counter(ok["role"]) == {"calib_train": 2, "calib_val": 2}
    no_val = sms.sample_subset(train, 0.2, seed=1, val_fraction=0.0)  # 2 train, no validation asked for
    assert Counter(no_val["role"]) == {"calib_train": 2}
    with pytest.raises(InputError, match=r"gives 3 MOS images \(1 train / 2 val\); need >= 2 train and >= 2 val"):
        sms.sample_subset(train, 0.3, seed=1, val_fraction=0.5)  # the validation part is fine, training is not
    with pytest.raises(InputError, match=r"gives 4 MOS images \(3 train / 1 val\)"):
        sms.sample_subset(train, 0.4, seed=1, val_fraction=0.2)  # training is fine, validation is not
    with pytest.raises(InputError, match=r"gives 1 MOS images \(1 train / 0 val\)"):
        sms.sample_subset(train, 0.1, seed=1, val_fraction=0.0)


def test_subset_roles_sizes_and_mos_come_from_the_manifest():
    train = train_table(50).with_columns(mos=pl.when(pl.col("image_id") == "t007").then(None).otherwise("mos"))
    s = sms.sample_subset(train, 0.2, seed=4, val_fraction=0.2)
    k, n_val = subset_sizes(49, 0.2, 0.2)  # 49 images have a MOS
    assert s.columns == ["image_id", "role", "mos"] and s.height == k
    assert Counter(s["role"]) == {"calib_train": k - n_val, "calib_val": n_val}
    assert "t007" not in s["image_id"].to_list()  # no MOS: never in a subset
    truth = dict(zip(train["image_id"], train["mos"]))
    assert s["mos"].to_list() == [truth[i] for i in s["image_id"]]


def test_subset_draws_are_uniform_over_the_labelled_images():
    train = train_table(20)
    hits = Counter(i for seed in range(400) for i in sms.sample_subset(train, 0.25, seed, 0.4)["image_id"])
    assert set(hits) == set(train["image_id"])
    assert stats.chisquare(list(hits.values())).pvalue > 1e-4  # 400 draws of 5: each image about 100 times


def test_sample_mos_subset_step_writes_the_subset_and_its_counts(tmp_path):
    manifest = tmp_path / "manifest.parquet"
    table = pl.concat(
        [
            train_table(30).with_columns(pl.col("mos").cast(pl.Float64)),
            pl.DataFrame({"image_id": ["x1", "x2"], "mos": [1.0, 2.0], "split": ["test", "test"]}),
        ]
    )
    table.write_parquet(manifest)
    out = tmp_path / "subset.parquet"
    sms.main(
        ["--manifest", str(manifest), "--ratio", "0.3", "--seed", "5", "--val-fraction", "0.25", "--out", str(out)]
    )
    subset = pl.read_parquet(out)
    assert subset.equals(sms.sample_subset(table.filter(pl.col("split") == "train"), 0.3, 5, 0.25))
    prov = read_provenance(out)
    assert prov["step"] == "sample_mos_subset"
    assert (prov["ratio"], prov["seed"], prov["val_fraction"]) == (0.3, 5, 0.25)
    assert (prov["n_train_labelled"], prov["n_subset"], prov["n_calib_val"]) == (30, 9, math.ceil(0.25 * 9))
    assert not set(subset["image_id"]) & {"x1", "x2"}


def test_a_missing_manifest_column_is_named(tmp_path):
    manifest = tmp_path / "manifest.parquet"
    pl.DataFrame({"image_id": ["a"], "split": ["train"]}).write_parquet(manifest)
    with pytest.raises(InputError, match="mos"):
        sms.main(
            [
                "--manifest",
                str(manifest),
                "--ratio",
                "0.3",
                "--seed",
                "0",
                "--val-fraction",
                "0.2",
                "--out",
                str(tmp_path / "s.parquet"),
            ]
        )
    with pytest.raises(InputError, match="split"):
        pl.DataFrame({"image_id": ["a"]}).write_parquet(manifest)
        sp.main(["--manifest", str(manifest), "--settings", "{}", "--out", str(tmp_path / "p.parquet")])


def test_pairs_depend_on_the_seed_only_not_on_global_state_or_input_order():
    np.random.seed(123)
    a = sp.sample_pairs([f"i{k}" for k in range(10)], 30, 7)
    np.random.seed(999)
    assert a.equals(sp.sample_pairs([f"i{k}" for k in reversed(range(10))], 30, 7))
    assert not a.equals(sp.sample_pairs([f"i{k}" for k in range(10)], 30, 8))
