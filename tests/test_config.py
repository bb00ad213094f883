"""Config validation: wrong keys and types fail with the key named; defaults are filled."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from leaf_steps.core.config import load_config, validate_config
from leaf_steps.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def demo():
    return yaml.safe_load((ROOT / "config/demo.yaml").read_text())


def shipped_configs() -> list[str]:
    """The configs the repository ships: tracked files in a git checkout (a local, untracked
    config/mine.yaml is nobody else's business), every file otherwise (an unpacked archive).
    Overlays of tests/configs/ are checked merged onto the demo config, as the tests use them."""
    try:
        tracked = subprocess.run(
            ["git", "ls-files", "--", "config/*.yaml"],
            cwd=ROOT,  # "*" spans folders
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # no git, or not a checkout
        tracked = None
    found = tracked if tracked else [str(p.relative_to(ROOT)) for p in (ROOT / "config").rglob("*.yaml")]
    return sorted(found)


@pytest.mark.parametrize("path", shipped_configs())
def test_shipped_configs_are_valid(path):
    load_config(ROOT / path)


def test_tiny_test_configs_are_valid_demo_overlays():
    from tiny_run import TINY_CONFIGS, tiny_config

    overlays = sorted(p.name for p in TINY_CONFIGS.glob("*.yaml"))
    assert "tiny.yaml" in overlays
    for name in overlays:  # each on top of demo.yaml + tiny.yaml, as the tests and the replay commands use it
        validate_config(tiny_config(*([] if name == "tiny.yaml" else [name])), source=f"tests/configs/{name}")


def test_unknown_key_is_named(demo):
    demo["distill"]["lamda_dis"] = 0.5  # typo
    with pytest.raises(ConfigError, match=r"distill: .*'lamda_dis'.*unknown key"):
        validate_config(demo)


def test_wrong_type_is_named(demo):
    demo["calibration"]["ratios"] = [0, "ten percent"]
    with pytest.raises(ConfigError, match=r"calibration\.ratios\.1: 'ten percent' is not of type 'number'"):
        validate_config(demo)


def test_dangling_teacher_reference(demo):
    demo["variants"]["big"] = {"teacher": "nope"}
    with pytest.raises(ConfigError, match=r"variants\.big\.teacher: 'nope'"):
        validate_config(demo)


def test_student_crops_must_fit_the_resize(demo):
    demo["student"] |= {"resize": 96, "train_crop": 128}
    with pytest.raises(ConfigError, match=r"student\.train_crop \(128\) must be <= student\.resize"):
        validate_config(demo)


def test_export_choice_must_be_a_trained_model(tmp_path, demo):
    demo["export"] = {"seed": 7}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(demo))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "export.seed: 7 is not one of calibration.seeds [0, 1, 2, 3, 4]" in proc.stdout + proc.stderr


def test_defaults_filled(demo):
    del demo["pairs"]["tau"]
    cfg = validate_config(copy.deepcopy(demo))
    assert cfg["pairs"]["tau"] == 0.1 and cfg["results_dir"] == "results"
    assert cfg["variants"]["leaf"]["use_confidence"] is True
    assert cfg["export"] == {"variant": None, "ratio": None, "seed": None, "onnx": True}


def test_snakemake_refuses_a_bad_config(tmp_path, demo):
    demo["student"]["crop"] = "big"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(demo))
    # Its own working directory: nothing is read from or written to the checkout's .snakemake/.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--configfile",
            str(bad),
            "--cores",
            "1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "student.crop: 'big' is not of type 'integer'" in proc.stdout + proc.stderr
