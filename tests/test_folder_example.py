"""config/folder_example.yaml works as shipped: the example folder it points at is written by
scripts/make_folder_example.py, the config validates (with the small-test-split warning it documents),
the DAG builds, and (slow) runs to its table. The run uses the shipped config with tests/configs/quick_training.yaml
on top (one epoch per stage, one MOS-subset seed): what it checks is that every job of the example's DAG
runs on the example's data (the bad image left out and listed), not what the training reaches, which
the training tests check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def env() -> dict:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A working directory holding the example folder where the config expects it."""
    work = tmp_path_factory.mktemp("folder_example")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/make_folder_example.py"), "--out", str(work / "resources/folder_example")],
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "90 images, 60 of them in" in proc.stdout
    return work


def snakemake(work: Path, *args: str, overlays: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    configfiles = [str(ROOT / "config/folder_example.yaml"), *(str(ROOT / "tests/configs" / o) for o in overlays)]
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--directory",
            str(work),
            "--configfile",
            *configfiles,
            *args,
        ],
        capture_output=True,
        text=True,
        env=env(),
        cwd=work,
        timeout=1800,
    )


def test_example_validates_and_builds(workdir):
    proc = subprocess.run(
        [sys.executable, "-m", "leaf_steps.core.cli", "validate-config", str(ROOT / "config/folder_example.yaml")],
        capture_output=True,
        text=True,
        env=env(),
        cwd=workdir,
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("folder_example.yaml: ok"), proc.stderr
    assert "warning: dataset: only 12 labelled test images" in proc.stderr
    dry = snakemake(workdir, "-n", "--quiet", "rules")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "prepare_dataset" in dry.stdout and "fit_niqe" in dry.stdout and "calibrate" in dry.stdout


@pytest.mark.slow
def test_example_runs_to_its_table(workdir):
    proc = snakemake(workdir, "--cores", "2", overlays=("quick_training.yaml",))
    assert proc.returncode == 0, proc.stderr[-4000:]
    table = (workdir / "results/folder-example/summary/table.md").read_text()
    assert "LEAF (leaf)" in table and "CFT-only" in table and "30% MOS SRCC" in table
    assert (workdir / "results/folder-example/dataset/bad_images.csv").read_text().count("\n") == 1
