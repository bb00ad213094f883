"""`leaf inspect` on the artifact kinds: files, folders of shards, --json, provenance and summaries."""

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from leaf_steps.core.io import make_provenance, write_parquet
from leaf_steps.teachers.scoring import mass_summary
from leaf_steps.teachers.teacher_math import NOT_ANSWERED, expected_score, level_probabilities, pair_confidence
from leaf_steps.tools.inspect_artifacts import inspect


@pytest.fixture()
def artifacts(tmp_path):
    rng = np.random.default_rng(0)
    ll = rng.normal(size=(12, 5))
    p = level_probabilities(ll)
    points = pl.DataFrame(
        {
            "image_id": [f"i{k}" for k in range(12)],
            **{f"p_{n}": p[:, j] for j, n in enumerate(["excellent", "good", "fair", "poor", "bad"])},
            "teacher_score": expected_score(p),
            "missing_tokens": [[]] * 11 + [["Bad"]],
            "token_mass": [0.9, 0.8, 0.85, 0.7, 0.95, 0.02, 0.9, 0.88, 0.6, 0.75, 0.93, None],
            "error": [None] * 5 + [NOT_ANSWERED + ": ..."] + [None] * 5 + ["timeout"],
        }
    )
    shards = tmp_path / "points"
    for k in (1, 2):
        part = points[(k - 1) * 6 : k * 6]
        write_parquet(
            part,
            shards / f"{k}-of-2.parquet",
            make_provenance(
                "score_points",
                teacher="t",
                prompt_hash="abc",
                shard=f"{k}-of-2",
                summary={"rows": 6, "token_mass": mass_summary(part["token_mass"], 0.5)},
            ),
        )
    p_a = rng.uniform(size=20)
    pairs = pl.DataFrame(
        {"pair_id": np.arange(20), "p_a": p_a, "confidence": pair_confidence(p_a), "t_ab": (p_a >= 0.5).astype(np.int8)}
    )
    write_parquet(pairs, tmp_path / "pairs.parquet", make_provenance("score_pairs", teacher="t"))
    manifest = pl.DataFrame({"image_id": ["a", "b", "c"], "mos": [1.0, None, 3.0], "split": ["train", "train", "test"]})
    write_parquet(manifest, tmp_path / "manifest.parquet", make_provenance("make_demo_dataset"))
    return tmp_path


def test_folder_of_shards(artifacts):
    info = inspect(artifacts / "points", sample=3)
    assert info["rows"] == 12 and len(info["files"]) == 2
    assert [p["shard"] for p in info["provenance"]] == ["1-of-2", "2-of-2"]
    col = info["columns"]["p_excellent"]
    assert sum(col["histogram"]["counts"]) == 12 and col["histogram"]["edges"][0] == 0.0
    assert info["columns"]["error"]["values"] == {"timeout": 1, NOT_ANSWERED + ": ...": 1}
    assert info["columns"]["error"]["nulls"] == 10
    mass = info["columns"]["token_mass"]
    assert sum(mass["histogram"]["counts"]) == 11 and mass["histogram"]["counts"][0] == 1
    assert mass["quantiles"]["0.5"] == pytest.approx(0.85)
    shard_mass = info["token_mass"]
    assert [m["below_min"] for m in shard_mass.values()] == [1, 0] and [m["rows"] for m in shard_mass.values()] == [
        6,
        5,
    ]
    assert info["columns"]["missing_tokens"]["nonempty"] == 1
    assert len(info["sample"]) == 3


def test_pairs_and_manifest(artifacts):
    info = inspect(artifacts / "pairs.parquet")
    conf = info["columns"]["confidence"]
    assert 0 <= conf["min"] <= conf["max"] <= 1 and sum(conf["histogram"]["counts"]) == 20
    assert info["provenance"]["step"] == "score_pairs"
    man = inspect(artifacts / "manifest.parquet")
    assert man["columns"]["mos"]["nulls"] == 1 and man["columns"]["split"]["values"] == {"train": 2, "test": 1}


def test_cli_json_and_text(artifacts):
    out = subprocess.run(
        [sys.executable, "-m", "leaf_steps.core.cli", "inspect", str(artifacts / "points"), "--json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out)["rows"] == 12
    text = subprocess.run(
        [sys.executable, "-m", "leaf_steps.core.cli", "inspect", str(artifacts / "pairs.parquet")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "20 rows" in text and "confidence" in text and "score_pairs" in text
    text = subprocess.run(
        [sys.executable, "-m", "leaf_steps.core.cli", "inspect", str(artifacts / "points")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "answer-token mass" in text and "1 (< 0.5)" in text and "1-of-2.parquet" in text


def test_missing_path_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "leaf_steps.core.cli", "inspect", str(tmp_path / "nope.parquet")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "nope.parquet: file not found" in proc.stderr
