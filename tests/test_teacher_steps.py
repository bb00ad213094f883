"""Teacher scoring driver, pair sampling, confidence filtering and MOS subsets on real small tables."""

import numpy as np
import polars as pl
import pytest

from fake_teacher import FakeTeacher
from leaf_steps.core.errors import InputError, TeacherError
from leaf_steps.core.io import read_provenance
from leaf_steps.filter_pairs import filter_pairs
from leaf_steps.sample_mos_subset import sample_subset
from leaf_steps.sample_pairs import sample_pairs
from leaf_steps.teachers import base
from leaf_steps.teachers.scoring import shard_rows
from leaf_steps.teachers.teacher_math import expected_score, level_probabilities, pair_confidence
from scoring_helpers import pairs_rows, points_rows, write_image_list

PROMPTS = {"point": "Rate it.", "pair": "A or B?"}


@pytest.fixture(autouse=True)
def fake_backend(monkeypatch):
    monkeypatch.setitem(base.BACKENDS, "fake", "fake_teacher:FakeTeacher")
    FakeTeacher.calls, FakeTeacher.fail_ids, FakeTeacher.kill_after_calls = [], set(), None


@pytest.fixture()
def images(manifest, tmp_path):
    return write_image_list(pl.read_parquet(manifest), tmp_path / "images.parquet")


@pytest.fixture()
def manifest(tmp_path):
    n = 40
    df = pl.DataFrame(
        {
            "image_id": [f"img{i:03d}" for i in range(n)],
            "path": [f"/x/{i}.png" for i in range(n)],
            "mos": [float(i) for i in range(n)],
            "split": ["train"] * 30 + ["test"] * 10,
        }
    )
    path = tmp_path / "manifest.parquet"
    df.write_parquet(path)
    return path


def test_shards_partition_the_rows():
    df = pl.DataFrame({"image_id": [f"i{k}" for k in range(10)]})
    parts = [shard_rows(df, f"{k}-of-3", "image_id")["image_id"].to_list() for k in (1, 2, 3)]
    assert sorted(sum(parts, [])) == sorted(df["image_id"]) and [len(p) for p in parts] == [4, 3, 3]


def test_score_points_rows_follow_eq1_eq2(images, tmp_path):
    scoring = {"batch_size": 8, "max_error_fraction": 0.0}
    df = points_rows(images, {"backend": "fake"}, PROMPTS, scoring, tmp_path)
    assert df.height == 40 and df["error"].null_count() == 40
    ll = df.select(pl.col("^ll_.*$")).to_numpy()
    np.testing.assert_allclose(df["teacher_score"].to_numpy(), expected_score(level_probabilities(ll)))
    prov = read_provenance(tmp_path / "points.parquet")
    assert prov["prompt"] == "Rate it." and prov["teacher_info"]["backend"] == "fake"
    assert prov["requests"] == {
        "rows": 40,
        "reused": 0,
        "scored": 40,
        "failed": 0,
        "requests_sent": 40,
        "parts_written": 1,
    }


def test_answers_are_reused_from_the_store_and_only_misses_are_sent(images, tmp_path):
    scoring = {"batch_size": 8, "max_error_fraction": 0.0}
    first = points_rows(images, {"backend": "fake"}, PROMPTS, scoring, tmp_path / "a", store=tmp_path / "store")
    assert len(sum(FakeTeacher.calls, [])) == 40
    FakeTeacher.calls = []
    # Another run (other shard count, other batch size) with the same teacher and prompt: nothing is asked.
    again = points_rows(
        images, {"backend": "fake"}, PROMPTS, {"batch_size": 3}, tmp_path / "b", store=tmp_path / "store", shards=3
    )
    assert FakeTeacher.calls == [] and again.equals(first)
    assert read_provenance(tmp_path / "b/points.parquet")["requests"] == {
        "rows": 40,
        "reused": 40,
        "scored": 0,
        "failed": 0,
        "requests_sent": 0,
        "parts_written": 0,
    }
    # A new image costs one request; another prompt is another key: everything is asked again.
    grown = pl.read_parquet(images).vstack(
        pl.DataFrame({"image_id": ["img999"], "path": ["/x/999.png"], "sha256": ["f" * 64]})
    )
    grown.write_parquet(tmp_path / "grown.parquet")
    points_rows(
        tmp_path / "grown.parquet", {"backend": "fake"}, PROMPTS, scoring, tmp_path / "c", store=tmp_path / "store"
    )
    assert sum(FakeTeacher.calls, []) == ["img999"]
    FakeTeacher.calls = []
    points_rows(
        images, {"backend": "fake"}, PROMPTS | {"point": "Other?"}, scoring, tmp_path / "d", store=tmp_path / "store"
    )
    assert len(sum(FakeTeacher.calls, [])) == 40


def test_killed_job_keeps_what_it_paid_for(images, tmp_path):
    scoring = {"batch_size": 8, "max_error_fraction": 0.0}
    FakeTeacher.kill_after_calls = 3  # dies while scoring the 4th of 5 batches
    with pytest.raises(KeyboardInterrupt):
        points_rows(images, {"backend": "fake"}, PROMPTS, scoring, tmp_path, flush_rows=8)
    assert not (tmp_path / "points/1-of-1.parquet").exists()
    FakeTeacher.calls, FakeTeacher.kill_after_calls = [], None
    df = points_rows(images, {"backend": "fake"}, PROMPTS, scoring, tmp_path)
    assert len(sum(FakeTeacher.calls, [])) == 16 and df.height == 40  # only the batch in flight and the last one


def test_failed_rows_are_rows_and_retried_on_rerun(images, tmp_path):
    FakeTeacher.fail_ids = {"img003", "img017", "img020"}
    with pytest.raises(TeacherError, match="3 of 40 rows failed"):
        points_rows(images, {"backend": "fake"}, PROMPTS, {"batch_size": 8, "max_error_fraction": 0.05}, tmp_path)
    assert not (tmp_path / "points/1-of-1.parquet").exists()
    FakeTeacher.calls, FakeTeacher.fail_ids = [], set()
    df = points_rows(images, {"backend": "fake"}, PROMPTS, {"batch_size": 8, "max_error_fraction": 0.05}, tmp_path)
    assert sorted(sum(FakeTeacher.calls, [])) == ["img003", "img017", "img020"]  # only the failures again
    assert df["error"].null_count() == 40
    # Within the tolerated fraction the shard is written with the error rows kept; they are never stored.
    FakeTeacher.fail_ids = {"img005"}
    work = tmp_path / "other"
    df = points_rows(images, {"backend": "fake"}, PROMPTS, {"batch_size": 8, "max_error_fraction": 0.05}, work)
    bad = df.filter(pl.col("error").is_not_null())
    assert bad["image_id"].to_list() == ["img005"] and bad["teacher_score"].is_null().all()
    summary = read_provenance(work / "points.parquet")["summary"]
    assert (summary["rows"], summary["failed_rows"], summary["not_answered_rows"]) == (40, 1, 0)
    assert summary["token_mass"]["rows"] == 39 and summary["token_mass"]["quantiles"]["0.5"] == 0.9
    FakeTeacher.calls, FakeTeacher.fail_ids = [], set()
    points_rows(images, {"backend": "fake"}, PROMPTS, {"batch_size": 8}, work / "again", store=work / "store")
    assert sum(FakeTeacher.calls, []) == ["img005"]


def test_pairs_sampling_scoring_and_filtering(images, tmp_path):
    train = [f"img{i:03d}" for i in range(30)]
    pairs = sample_pairs(train, None, seed=7)
    assert pairs.height == 30 and (pairs["a_id"] != pairs["b_id"]).all()
    assert set(pairs["a_id"]).union(pairs["b_id"]) <= set(train)
    assert pairs.equals(sample_pairs(list(reversed(train)), None, seed=7))  # order of input irrelevant
    assert not pairs.equals(sample_pairs(train, None, seed=8))
    pairs_path = tmp_path / "pairs.parquet"
    sample_pairs(train, 200, seed=1).write_parquet(pairs_path)
    scored = pairs_rows(pairs_path, images, {"backend": "fake"}, PROMPTS, {"batch_size": 50}, tmp_path)
    qa = np.array([FakeTeacher.quality(i) for i in scored["a_id"]])
    qb = np.array([FakeTeacher.quality(i) for i in scored["b_id"]])
    np.testing.assert_allclose(scored["p_a"].to_numpy(), 1 / (1 + np.exp(-4 * (qa - qb))), rtol=1e-9)
    assert (scored["t_ab"].to_numpy() == (qa >= qb)).all()
    np.testing.assert_allclose(scored["confidence"].to_numpy(), pair_confidence(scored["p_a"].to_numpy()))
    kept, summary = filter_pairs(scored, tau=0.2)
    assert (kept["confidence"] >= 0.2).all()
    assert summary["kept"] + summary["below_tau"] + summary["failed"] == 200 == summary["pairs"]
    assert 0 < summary["kept"] < 200


def test_both_orders_average_and_record_each(images, tmp_path):
    pairs_path = tmp_path / "pairs.parquet"
    sampled = sample_pairs([f"img{i:03d}" for i in range(30)], 20, seed=2)
    # No pair drawn in both orders (seed 1 draws one: its swap would be a forward answer already).
    assert not set(zip(sampled["a_id"], sampled["b_id"])) & set(zip(sampled["b_id"], sampled["a_id"]))
    sampled.write_parquet(pairs_path)
    scored = pairs_rows(
        pairs_path, images, {"backend": "fake"}, PROMPTS, {"batch_size": 8, "both_orders": True}, tmp_path
    )
    # The fake teacher has no position bias, so both orders agree and the average equals each.
    np.testing.assert_allclose(scored["p_a_forward"], scored["p_a_reverse"], rtol=1e-9)
    np.testing.assert_allclose(scored["p_a"], scored["p_a_forward"], rtol=1e-9)
    asked = sum(FakeTeacher.calls, [])
    assert len(asked) == 40 and len(set(asked)) == 40  # forward and swapped: two distinct requests per pair
    # Turning both orders off later asks nothing (the forward answers are stored); on again, nothing either.
    FakeTeacher.calls = []
    one = pairs_rows(
        pairs_path, images, {"backend": "fake"}, PROMPTS, {"batch_size": 8}, tmp_path / "one", store=tmp_path / "store"
    )
    assert FakeTeacher.calls == [] and one["p_a"].equals(scored["p_a_forward"].alias("p_a"))


def test_turning_both_orders_on_later_asks_only_the_swapped_pairs(images, tmp_path):
    pairs_path = tmp_path / "pairs.parquet"
    sampled = sample_pairs([f"img{i:03d}" for i in range(30)], 20, seed=2)
    # No pair drawn in both orders (seed 1 draws one: its swap would be a forward answer already).
    assert not set(zip(sampled["a_id"], sampled["b_id"])) & set(zip(sampled["b_id"], sampled["a_id"]))
    sampled.write_parquet(pairs_path)
    store = tmp_path / "store"
    forward = pairs_rows(
        pairs_path, images, {"backend": "fake"}, PROMPTS, {"batch_size": 8}, tmp_path / "f", store=store
    )
    asked_forward = sum(FakeTeacher.calls, [])
    FakeTeacher.calls = []
    both = pairs_rows(
        pairs_path,
        images,
        {"backend": "fake"},
        PROMPTS,
        {"batch_size": 8, "both_orders": True},
        tmp_path / "b",
        store=store,
    )
    asked_reverse = sum(FakeTeacher.calls, [])
    # Only the (b, a) requests are new: as many as distinct forward requests, none of them asked before.
    assert len(asked_reverse) == len(set(asked_forward)) and not set(asked_reverse) & set(asked_forward)
    assert both["p_a_forward"].equals(forward["p_a"].alias("p_a_forward"))
    assert read_provenance(tmp_path / "b/pairs.parquet")["requests"]["reused"] == 20


def test_mos_subsets_nested_seeded_and_train_only(manifest):
    train = pl.read_parquet(manifest).filter(pl.col("split") == "train")
    s10 = sample_subset(train, 0.2, seed=3, val_fraction=0.34)
    s30 = sample_subset(train, 0.5, seed=3, val_fraction=0.34)
    assert s10.height == 6 and s30.height == 15
    assert set(s10["image_id"]) <= set(s30["image_id"])  # nested across ratios for one seed
    assert s10.equals(sample_subset(train, 0.2, seed=3, val_fraction=0.34))  # deterministic
    assert not set(sample_subset(train, 0.2, seed=4, val_fraction=0.34)["image_id"]) == set(s10["image_id"])
    assert (s10["role"] == "calib_val").sum() == 3 and set(s10["role"]) == {"calib_train", "calib_val"}
    with pytest.raises(InputError, match="need >= 2 train"):
        sample_subset(train, 0.05, seed=0, val_fraction=0.2)
