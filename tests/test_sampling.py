"""Pair sampling (Sec. 3.1.1) and MOS subsets (Sec. 3.2.3) against what they promise: the law of
the draws (uniform over ordered pairs of distinct images, every image reachable), the sizes at their
boundaries, the roles, and the step outputs with their provenance."""

from __future__ import annotations

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


def test_pairs_are_uniform_over_ordered_pairs_of_distinct_images():
    ids = [f"im{i}" for i in range(5)]
    pairs = sp.sample_pairs(ids, 20_000, seed=3)
    assert pairs["pair_id"].to_list() == list(range(20_000)) and pairs["pair_id"].dtype == pl.Int64
    assert (pairs["a_id"] != pairs["b_id"]).all()
    counts = Counter(zip(pairs["a_id"], pairs["b_id"]))
    assert len(counts) == 5 * 4  # every ordered pair of distinct images occurs
    # ... equally often: a chi-square test against the uniform law on the 20 ordered pairs.
    assert stats.chisquare(list(counts.values())).pvalue > 1e-4
    for column in ("a_id", "b_id"):  # each image is shown as A and as B
        assert set(pairs[column]) == set(ids)


def test_two_images_give_both_orders_and_one_is_an_error_naming_the_count():
    pairs = sp.sample_pairs(["x", "y"], 50, seed=0)
    assert set(zip(pairs["a_id"], pairs["b_id"])) == {("x", "y"), ("y", "x")}
    with pytest.raises(InputError, match="need at least 2 training images to sample pairs, got 1"):
        sp.sample_pairs(["x"], None, seed=0)


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


def test_sample_mos_subsets_step_writes_the_subset_and_its_counts(tmp_path):
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
    assert prov["step"] == "sample_mos_subsets"
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


def test_rng_is_seeded_numpy_generator_not_global_state():
    np.random.seed(123)
    a = sp.sample_pairs([f"i{k}" for k in range(10)], 30, 7)
    np.random.seed(999)
    assert a.equals(sp.sample_pairs([f"i{k}" for k in range(10)], 30, 7))
    assert not a.equals(sp.sample_pairs([f"i{k}" for k in range(10)], 30, 8))
