"""Teacher scoring driver, pair sampling, confidence filtering and MOS subsets on real small tables."""

import numpy as np
import polars as pl
import pytest

from fake_teacher import FakeTeacher
from leaf_steps.core.errors import InputError, TeacherError
from leaf_steps.filter_pairs import filter_pairs
from leaf_steps.core.io import read_provenance
from leaf_steps.sample_mos_subset import sample_subset
from leaf_steps.sample_pairs import sample_pairs
from leaf_steps.score_pairs import score_pairs
from leaf_steps.score_points import score_points
from leaf_steps.teachers.scoring import shard_rows
from leaf_steps.teachers.teacher_math import expected_score, level_probabilities, pair_confidence
from leaf_steps.teachers import base

PROMPTS = {"point": "Rate it.", "pair": "A or B?"}


@pytest.fixture(autouse=True)
def fake_backend(monkeypatch):
    monkeypatch.setitem(base.BACKENDS, "fake", "fake_teacher:FakeTeacher")
    FakeTeacher.calls, FakeTeacher.fail_ids, FakeTeacher.kill_after_calls = [], set(), None


@pytest.fixture()
def manifest(tmp_path):
    n = 40
    df = pl.DataFrame({"image_id": [f"img{i:03d}" for i in range(n)], "path": [f"/x/{i}.png" for i in range(n)],
                       "mos": [float(i) for i in range(n)], "split": ["train"] * 30 + ["test"] * 10})
    path = tmp_path / "manifest.parquet"
    df.write_parquet(path)
    return path


def test_shards_partition_the_rows():
    df = pl.DataFrame({"image_id": [f"i{k}" for k in range(10)]})
    parts = [shard_rows(df, f"{k}-of-3", "image_id")["image_id"].to_list() for k in (1, 2, 3)]
    assert sorted(sum(parts, [])) == sorted(df["image_id"]) and [len(p) for p in parts] == [4, 3, 3]


def test_score_points_rows_follow_eq1_eq2(manifest, tmp_path):
    out = tmp_path / "points.parquet"
    scoring = {"batch_size": 8, "max_error_fraction": 0.0}
    df = score_points(manifest, {"backend": "fake"}, PROMPTS, scoring, "1-of-1", out, tmp_path / "resume")
    assert df.height == 40 and df["error"].null_count() == 40
    ll = df.select(pl.col("^ll_.*$")).to_numpy()
    np.testing.assert_allclose(df["teacher_score"].to_numpy(), expected_score(level_probabilities(ll)))
    prov = read_provenance(out)
    assert prov["prompt"] == "Rate it." and prov["teacher_info"]["backend"] == "fake"
    assert not (tmp_path / "resume").exists()  # partial batches are cleaned up once the shard is whole


def test_killed_job_resumes_losing_at_most_one_batch(manifest, tmp_path):
    out, resume = tmp_path / "points.parquet", tmp_path / "resume"
    scoring = {"batch_size": 8, "max_error_fraction": 0.0}
    FakeTeacher.kill_after_calls = 3  # dies while scoring the 4th of 5 batches
    with pytest.raises(KeyboardInterrupt):
        score_points(manifest, {"backend": "fake"}, PROMPTS, scoring, "1-of-1", out, resume)
    assert not out.exists() and len(list(resume.glob("batch-*.parquet"))) == 3
    FakeTeacher.calls, FakeTeacher.kill_after_calls = [], None
    df = score_points(manifest, {"backend": "fake"}, PROMPTS, scoring, "1-of-1", out, resume)
    assert len(FakeTeacher.calls) == 2 and df.height == 40  # only the batch in flight and the last one


def test_failed_rows_are_rows_and_retried_on_rerun(manifest, tmp_path):
    out, resume = tmp_path / "points.parquet", tmp_path / "resume"
    FakeTeacher.fail_ids = {"img003", "img017", "img020"}
    with pytest.raises(TeacherError, match="3 of 40 rows failed"):
        score_points(manifest, {"backend": "fake"}, PROMPTS, {"batch_size": 8, "max_error_fraction": 0.05},
                     "1-of-1", out, resume)
    assert not out.exists()
    FakeTeacher.calls, FakeTeacher.fail_ids = [], set()
    df = score_points(manifest, {"backend": "fake"}, PROMPTS, {"batch_size": 8, "max_error_fraction": 0.05},
                      "1-of-1", out, resume)
    assert sorted(sum(FakeTeacher.calls, [])) == ["img003", "img017", "img020"]  # only the failures again
    assert df["error"].null_count() == 40
    # Within the tolerated fraction the shard is written with the error rows kept.
    FakeTeacher.fail_ids = {"img005"}
    df = score_points(manifest, {"backend": "fake"}, PROMPTS, {"batch_size": 8, "max_error_fraction": 0.05},
                      "1-of-1", tmp_path / "p2.parquet", tmp_path / "r2")
    bad = df.filter(pl.col("error").is_not_null())
    assert bad["image_id"].to_list() == ["img005"] and bad["teacher_score"].is_null().all()
    summary = read_provenance(tmp_path / "p2.parquet")["summary"]
    assert (summary["rows"], summary["failed_rows"], summary["not_answered_rows"]) == (40, 1, 0)
    assert summary["token_mass"]["rows"] == 39 and summary["token_mass"]["quantiles"]["0.5"] == 0.9


def test_pairs_sampling_scoring_and_filtering(manifest, tmp_path):
    train = [f"img{i:03d}" for i in range(30)]
    pairs = sample_pairs(train, None, seed=7)
    assert pairs.height == 30 and (pairs["a_id"] != pairs["b_id"]).all()
    assert set(pairs["a_id"]).union(pairs["b_id"]) <= set(train)
    assert pairs.equals(sample_pairs(list(reversed(train)), None, seed=7))  # order of input irrelevant
    assert not pairs.equals(sample_pairs(train, None, seed=8))
    pairs_path = tmp_path / "pairs.parquet"
    sample_pairs(train, 200, seed=1).write_parquet(pairs_path)
    scored = score_pairs(pairs_path, manifest, {"backend": "fake"}, PROMPTS, {"batch_size": 50}, "1-of-1",
                         tmp_path / "scored.parquet", tmp_path / "r")
    qa = np.array([FakeTeacher.quality(i) for i in scored["a_id"]])
    qb = np.array([FakeTeacher.quality(i) for i in scored["b_id"]])
    np.testing.assert_allclose(scored["p_a"].to_numpy(), 1 / (1 + np.exp(-4 * (qa - qb))), rtol=1e-9)
    assert (scored["t_ab"].to_numpy() == (qa >= qb)).all()
    np.testing.assert_allclose(scored["confidence"].to_numpy(), pair_confidence(scored["p_a"].to_numpy()))
    kept, summary = filter_pairs(scored, tau=0.2)
    assert (kept["confidence"] >= 0.2).all()
    assert summary["kept"] + summary["below_tau"] + summary["failed"] == 200 == summary["pairs"]
    assert 0 < summary["kept"] < 200


def test_both_orders_average_and_record_each(manifest, tmp_path):
    pairs_path = tmp_path / "pairs.parquet"
    sample_pairs([f"img{i:03d}" for i in range(30)], 20, seed=1).write_parquet(pairs_path)
    scored = score_pairs(pairs_path, manifest, {"backend": "fake"}, PROMPTS, {"batch_size": 8, "both_orders": True},
                         "1-of-1", tmp_path / "scored.parquet", tmp_path / "r")
    # The fake teacher has no position bias, so both orders agree and the average equals each.
    np.testing.assert_allclose(scored["p_a_forward"], scored["p_a_reverse"], rtol=1e-9)
    np.testing.assert_allclose(scored["p_a"], scored["p_a_forward"], rtol=1e-9)
    assert len(FakeTeacher.calls) == 2 * 3  # forward + reversed per batch


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
