"""Teacher-side numbers against independent oracles: the tau boundary of the confidence filter,
failed pairs counted, position debiasing with ``both_orders`` under a teacher that favours the
image shown first, and stored answers never reused across settings.

Each test pins a behaviour a one-line slip would break silently (``>=`` turned into ``>``, the
two orders not averaged, the prompt left out of the store key); docs/mutation.md lists them.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from scipy.special import expit

from fake_teacher import FakeTeacher
from leaf_steps import filter_pairs as fp
from leaf_steps.core.errors import InputError
from leaf_steps.core.io import read_provenance
from leaf_steps.sample_pairs import sample_pairs
from leaf_steps.teachers import base
from leaf_steps.teachers.teacher_math import pair_confidence
from scoring_helpers import pairs_rows, points_rows, write_image_list

PROMPTS = {"point": "Rate it.", "pair": "A or B?"}
N_TRAIN = 30


@pytest.fixture(autouse=True)
def fake_backend(monkeypatch):
    monkeypatch.setitem(base.BACKENDS, "fake", "fake_teacher:FakeTeacher")
    monkeypatch.setattr(FakeTeacher, "calls", [])
    monkeypatch.setattr(FakeTeacher, "fail_ids", set())
    monkeypatch.setattr(FakeTeacher, "kill_after_calls", None)
    monkeypatch.setattr(FakeTeacher, "position_bias", 0.0)


@pytest.fixture()
def manifest(tmp_path):
    n = 40
    df = pl.DataFrame(
        {
            "image_id": [f"img{i:03d}" for i in range(n)],
            "path": [f"/x/{i}.png" for i in range(n)],
            "mos": [float(i) for i in range(n)],
            "split": ["train"] * N_TRAIN + ["test"] * 10,
        }
    )
    path = tmp_path / "manifest.parquet"
    df.write_parquet(path)
    return path


@pytest.fixture()
def images(manifest, tmp_path):
    return write_image_list(pl.read_parquet(manifest), tmp_path / "images.parquet")


# --------------------------------------------------------------------------- confidence filter


def scored_pairs(confidence, error, t_ab) -> pl.DataFrame:
    n = len(confidence)
    return pl.DataFrame(
        {
            "pair_id": list(range(n)),
            "a_id": [f"a{i}" for i in range(n)],
            "b_id": [f"b{i}" for i in range(n)],
            "t_ab": t_ab,
            "confidence": confidence,
            "error": error,
        },
        schema={
            "pair_id": pl.Int64,
            "a_id": pl.String,
            "b_id": pl.String,
            "t_ab": pl.Int8,
            "confidence": pl.Float64,
            "error": pl.String,
        },
    )


def test_tau_keeps_a_pair_exactly_at_the_threshold_and_counts_every_drop():
    tau = 0.3
    below, above = np.nextafter(tau, 0.0), np.nextafter(tau, 1.0)
    df = scored_pairs(
        confidence=[tau, below, above, 0.0, 1.0, 0.95, None, tau],
        error=[None, None, None, None, None, "HTTP 500", "timeout", None],
        t_ab=[1, 0, 0, 1, 1, 1, None, 0],
    )
    kept, summary = fp.filter_pairs(df, tau)
    # Sec. 3.2.2 drops pairs with w < tau: w == tau stays (ids 0 and 7); a failed pair goes whatever its w.
    assert kept["pair_id"].to_list() == [0, 2, 4, 7]
    assert kept.columns == df.columns and kept.equals(df.filter(pl.col("pair_id").is_in([0, 2, 4, 7])))
    assert summary == {
        "tau": tau,
        "pairs": 8,
        "failed": 2,
        "below_tau": 2,
        "kept": 4,
        "kept_fraction": 0.5,
        "kept_prefers_a": 2,
    }


def test_tau_zero_keeps_every_valid_pair_and_an_empty_table_gives_zero_fractions():
    df = scored_pairs([0.0, 0.5, None], [None, None, "bad json"], [0, 1, None])
    kept, summary = fp.filter_pairs(df, 0.0)
    assert kept["pair_id"].to_list() == [0, 1]
    assert (summary["failed"], summary["below_tau"], summary["kept_prefers_a"]) == (1, 0, 1)
    assert summary["kept_fraction"] == pytest.approx(2 / 3)
    _, empty = fp.filter_pairs(df.head(0), 0.1)
    assert empty == {
        "tau": 0.1,
        "pairs": 0,
        "failed": 0,
        "below_tau": 0,
        "kept": 0,
        "kept_fraction": 0.0,
        "kept_prefers_a": 0,
    }
    _, all_failed = fp.filter_pairs(df.tail(1), 0.1)
    assert (all_failed["failed"], all_failed["kept"], all_failed["kept_prefers_a"]) == (1, 0, 0)


def test_filter_step_writes_kept_pairs_summary_and_upstream_provenance(images, tmp_path):
    FakeTeacher.fail_ids = {"img004", "img011"}
    pairs = tmp_path / "pairs.parquet"
    sample_pairs([f"img{i:03d}" for i in range(N_TRAIN)], 120, seed=3).write_parquet(pairs)
    scored = pairs_rows(
        pairs,
        images,
        {"backend": "fake"},
        PROMPTS,
        {"batch_size": 50, "max_error_fraction": 0.5},
        tmp_path,
        teacher_name="fk",
        out=tmp_path / "scored.parquet",
    )
    touching = scored["a_id"].is_in(["img004", "img011"]) | scored["b_id"].is_in(["img004", "img011"])
    assert scored.filter(touching)["error"].is_not_null().all() and touching.sum() > 0
    tau = float(np.median(scored.filter(~touching)["confidence"].to_numpy()))  # a value some pairs have exactly
    out, summary_path = tmp_path / "kept.parquet", tmp_path / "summary.json"
    fp.main(
        [
            "--pairs",
            str(tmp_path / "scored.parquet"),
            "--tau",
            str(tau),
            "--out",
            str(out),
            "--summary",
            str(summary_path),
        ]
    )
    kept = pl.read_parquet(out)
    valid = scored.filter(~touching)
    assert kept["pair_id"].to_list() == valid.filter(pl.col("confidence") >= tau)["pair_id"].to_list()
    summary = json.loads(summary_path.read_text())
    assert summary["failed"] == int(touching.sum()) and summary["pairs"] == 120
    assert summary["kept"] + summary["below_tau"] + summary["failed"] == 120
    prov = read_provenance(out)
    assert prov["step"] == "filter_pairs" and prov["tau"] == tau and prov["teacher"] == "fk"
    assert prov["summary"] == summary
    assert prov["prompt_hash"] == read_provenance(tmp_path / "scored.parquet")["prompt_hash"]


# --------------------------------------------------------------------------- position debiasing


def quality_gap(scored: pl.DataFrame) -> np.ndarray:
    qa = np.array([FakeTeacher.quality(i) for i in scored["a_id"]])
    qb = np.array([FakeTeacher.quality(i) for i in scored["b_id"]])
    return 4 * (qa - qb)  # the fake's logit of "a is better", free of position bias


def test_both_orders_average_removes_a_position_bias(images, tmp_path):
    bias = 1.5
    FakeTeacher.position_bias = bias
    pairs = tmp_path / "pairs.parquet"
    sample_pairs([f"img{i:03d}" for i in range(N_TRAIN)], 60, seed=5).write_parquet(pairs)

    one = pairs_rows(pairs, images, {"backend": "fake"}, PROMPTS, {"batch_size": 16}, tmp_path / "one")
    d = quality_gap(one)
    np.testing.assert_allclose(one["p_a"], expit(d + bias), rtol=1e-12)  # a shown first: favoured
    assert (one["t_ab"].to_numpy() != (d >= 0)).sum() >= 5  # the bias really flips labels in one order

    both = pairs_rows(
        pairs, images, {"backend": "fake"}, PROMPTS, {"batch_size": 16, "both_orders": True}, tmp_path / "both"
    )
    d = quality_gap(both)
    np.testing.assert_allclose(both["p_a_forward"], expit(d + bias), rtol=1e-12)
    np.testing.assert_allclose(both["p_a_reverse"], expit(d - bias), rtol=1e-12)  # b shown first: b favoured
    p = 0.5 * (expit(d + bias) + expit(d - bias))  # averaged in probability space
    np.testing.assert_allclose(both["p_a"], p, rtol=1e-12)
    # sigma(d + b) + sigma(d - b) >= 1 exactly when d >= 0: the averaged label follows quality alone.
    np.testing.assert_array_equal(both["t_ab"].to_numpy(), (d >= 0).astype(np.int8))
    np.testing.assert_allclose(both["confidence"], pair_confidence(p), rtol=1e-12)
    # Both answers are kept: the raw log-likelihoods of each order.
    np.testing.assert_allclose(both["ll_a"], -np.log1p(np.exp(-(d + bias))), rtol=1e-12)
    # Swapped prompt: b is "A" with logit -d + bias; "B" (image a) has log sigmoid(d - bias).
    np.testing.assert_allclose(both["ll_b_rev"], -np.log1p(np.exp(bias - d)), rtol=1e-12)


def test_both_orders_a_failed_order_fails_the_pair(images, tmp_path):
    FakeTeacher.fail_ids = {"img002"}
    pairs = tmp_path / "pairs.parquet"
    pl.DataFrame({"pair_id": [0, 1], "a_id": ["img001", "img002"], "b_id": ["img003", "img001"]}).write_parquet(pairs)
    scored = pairs_rows(
        pairs,
        images,
        {"backend": "fake"},
        PROMPTS,
        {"batch_size": 8, "both_orders": True, "max_error_fraction": 1.0},
        tmp_path,
    )
    good, bad = scored.row(0, named=True), scored.row(1, named=True)
    assert good["error"] is None and good["t_ab"] in (0, 1)
    assert "simulated failure" in bad["error"] and "/x/2.png" in bad["error"]
    assert bad["p_a"] is None and bad["t_ab"] is None and bad["confidence"] is None


# --------------------------------------------------------------------------- the score store


def test_answers_of_other_settings_are_never_reused(images, tmp_path):
    scoring = {"batch_size": 8, "max_error_fraction": 0.0}
    FakeTeacher.kill_after_calls = 3  # dies in the 4th of 5 batches: 3 batches of answers are in the store
    with pytest.raises(KeyboardInterrupt):
        points_rows(
            images, {"backend": "fake"}, PROMPTS, scoring, tmp_path / "a", store=tmp_path / "store", flush_rows=8
        )
    FakeTeacher.calls, FakeTeacher.kill_after_calls = [], None
    # Another prompt is another key: none of the 24 stored answers is used, every image is asked.
    other = {"point": "Rate the photo.", "pair": PROMPTS["pair"]}
    df = points_rows(images, {"backend": "fake"}, other, scoring, tmp_path / "b", store=tmp_path / "store")
    assert len(FakeTeacher.calls) == 5 and sorted(sum(FakeTeacher.calls, [])) == sorted(df["image_id"])
    assert read_provenance(tmp_path / "b/points.parquet")["prompt"] == "Rate the photo."
    # The first prompt again: its 24 answers are reused, the other 16 asked.
    FakeTeacher.calls = []
    points_rows(images, {"backend": "fake"}, PROMPTS, scoring, tmp_path / "c", store=tmp_path / "store")
    assert [len(c) for c in FakeTeacher.calls] == [8, 8]


def test_store_sees_only_whole_parts_and_names_a_damaged_one(images, tmp_path):
    store = tmp_path / "store"
    first = points_rows(images, {"backend": "fake"}, PROMPTS, {"batch_size": 8}, tmp_path / "a", store=store)
    (kind_dir,) = list(store.glob("*/point"))
    # A writer killed between creating its temporary file and the rename leaves a hidden file: never read.
    (kind_dir / ".part-20260101T000000-dead.parquet.1234.tmp").write_bytes(b"PAR1 torn")
    FakeTeacher.calls = []
    again = points_rows(images, {"backend": "fake"}, PROMPTS, {"batch_size": 8}, tmp_path / "b", store=store)
    assert FakeTeacher.calls == [] and again.equals(first)
    (kind_dir / "part-20260101T000000-bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match=r"part-20260101T000000-bad.parquet: not a readable store part"):
        points_rows(images, {"backend": "fake"}, PROMPTS, {"batch_size": 8}, tmp_path / "c", store=store)


def test_filter_step_names_a_missing_column(tmp_path):
    scored = tmp_path / "scored.parquet"
    pl.DataFrame({"pair_id": [0], "a_id": ["a"], "b_id": ["b"], "t_ab": [1], "confidence": [0.5]}).write_parquet(scored)
    with pytest.raises(InputError, match=r"scored.parquet: missing column\(s\) \['error'\]"):
        fp.main(
            [
                "--pairs",
                str(scored),
                "--tau",
                "0.1",
                "--out",
                str(tmp_path / "k.parquet"),
                "--summary",
                str(tmp_path / "s.json"),
            ]
        )
    assert not (tmp_path / "k.parquet").exists()
