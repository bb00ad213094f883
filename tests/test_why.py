"""`leaf why`: the jobs a run would execute and the exact change behind each (on a completed tiny run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from test_reruns import edit_code, repo_copy, with_config
from tiny_run import ROOT, Run, env_for, touched_tiny_run


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Run:
    return touched_tiny_run(tmp_path_factory)


def leaf_why(run: Run, repo=ROOT, *extra: str) -> str:
    cmd = [
        sys.executable,
        "-m",
        "leaf_steps.core.cli",
        "why",
        "--snakefile",
        str(repo / "Snakefile"),
        "--directory",
        str(run.workdir),
        "--configfile",
        str(run.configfile),
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env_for(repo), cwd=run.workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def job_block(text: str, header: str) -> list[str]:
    """The reason lines under the job whose header line starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    block = []
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        block.append(line.strip())
    return block


def test_nothing_changed(done):
    assert "Nothing would run" in leaf_why(done)


def test_a_setting_is_named_with_its_old_and_new_value(done, tmp_path):
    out = leaf_why(with_config(done, tmp_path, lambda cfg: cfg["distill"].update(lr=1.0e-3)))
    assert job_block(out, "distill (variant=leaf)") == [
        f"setting distill.lr: {done.config()['distill']['lr']} -> 0.001"
    ]
    # Few-shot calibrations start from the stage-1 epoch chosen on their subset (distill.selection: mos_subset).
    stage1 = "results/tiny/students/leaf/stage1"
    assert job_block(out, "calibrate (variant=leaf, ratio=0.3, seed=0)") == [
        f"input rebuilt by distill: {stage1}/epochs/epoch1.safetensors, {stage1}/epochs/epoch2.safetensors, "
        f"{stage1}/model.safetensors",
        "input rebuilt by select_stage1: results/tiny/students/leaf/ratio0.3/seed0/stage1_selection.parquet",
    ]
    assert "cft_only" not in out  # CFT-only never reads stage 1


def test_a_code_change_names_the_module(done, tmp_path):
    repo = repo_copy(tmp_path)
    edit_code(repo / "leaf_steps/filter_pairs.py")
    out = leaf_why(done, repo)
    assert job_block(out, "filter_pairs (teacher=standin, tau=0.1)") == ["code leaf_steps.filter_pairs changed"]


def test_an_input_file_changed_on_disk(done):
    points = done.results / "teacher/standin/points.parquet"
    stat = points.stat()
    before = points.read_bytes()
    try:
        points.write_bytes(before + b"edited")  # new content, newer mtime
        out = leaf_why(done, ROOT, "--json")
    finally:
        points.write_bytes(before)
        os.utime(points, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    jobs = {(j["rule"], j["outputs"][0]): j["reasons"] for j in json.loads(out)}
    zero_shot = jobs[("teacher_zero_shot", "results/tiny/predictions/teacher_zero_shot/labelfree.parquet")]
    assert zero_shot == ["input changed: results/tiny/teacher/standin/points.parquet"]
