"""The Slurm profile as Snakemake resolves it: dry-runs through `--workflow-profile
profiles/slurm` (no cluster needed, the executor plugin must be installed), parsed into
per-job resources, threads and groups; and the profile derived for a GPU-less test node."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

pytest.importorskip("snakemake_executor_plugin_slurm")

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
PROFILE_DIR = REPO / "profiles" / "slurm"
PROFILE = yaml.safe_load((PROFILE_DIR / "config.yaml").read_text())
# What a site exports (see the profile's header); distinct values so a job's partition
# tells which of them it got.
SITE_ENV = {"LEAF_SLURM_ACCOUNT": "acct_t", "LEAF_SLURM_PARTITION": "cpu_t", "LEAF_SLURM_GPU_PARTITION": "gpu_t"}
GPU_RULES = {"score_points", "score_pairs", "distill", "calibrate"}
STUDENT_RULES = {"distill", "calibrate"}
SCORING_RULES = {"score_points", "score_pairs"}

sys.path.insert(0, str(REPO / "scripts"))
from slurm_local_profile import derive  # noqa: E402


@dataclass
class DryJob:
    rule: str
    group: str | None
    wildcards: str = ""
    threads: int = 1
    resources: dict[str, str] = field(default_factory=dict)
    shell: str = ""


RULE_LINE = re.compile(r"^(\s*)(?:localrule|rule|checkpoint) (\w+):$")
GROUP_LINE = re.compile(r"Group job (\S+) \(jobs")


def parse_dry_run(text: str) -> list[DryJob]:
    """Jobs of `snakemake -n -p` output: a `rule X:` block, indented inside a group job."""
    jobs: list[DryJob] = []
    group = None
    for line in text.splitlines():
        if m := GROUP_LINE.search(line):
            group = m.group(1)
        elif m := RULE_LINE.match(line):
            jobs.append(DryJob(rule=m.group(2), group=group if m.group(1) else None))
        elif jobs and (stripped := line.strip()):
            key, _, value = stripped.partition(": ")
            job = jobs[-1]
            if key == "wildcards":
                job.wildcards = value
            elif key == "threads":
                job.threads = int(value)
            elif key == "resources":
                job.resources = dict(item.split("=", 1) for item in value.split(", "))
            elif key == "Shell command":
                job.shell = value
    return jobs


def dry_run(profile_dir: Path, *configfiles: str | Path, env: dict | None = None) -> list[DryJob]:
    """``snakemake -n -p`` of the checkout's Snakefile in an empty working directory of its own: what a
    fresh site would run, whatever the checkout holds (results/, resources/, .snakemake/)."""
    env = {
        **os.environ,
        **SITE_ENV,
        **(env or {}),
        "PATH": f"{SNAKEMAKE.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    with tempfile.TemporaryDirectory(prefix="leaf-profile-") as workdir:
        proc = subprocess.run(
            [
                str(SNAKEMAKE),
                "-n",
                "-p",
                "--nolock",
                "--snakefile",
                str(REPO / "Snakefile"),
                "--directory",
                workdir,
                "--workflow-profile",
                str(profile_dir),
                "--configfile",
                *(str(REPO / c) for c in configfiles),
            ],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert f"Using workflow specific profile {profile_dir}" in out
    jobs = parse_dry_run(out)
    assert jobs, out[-4000:]
    return jobs


def by_rule(jobs: list[DryJob], *rules: str) -> list[DryJob]:
    found = [j for j in jobs if j.rule in rules]
    assert found, f"no job of {rules} in the dry-run"
    return found


def gpus(job: DryJob) -> int:
    return int(job.resources.get("gpu", 0))


@pytest.fixture(scope="module")
def paper_jobs():
    return dry_run(PROFILE_DIR, "config/config.yaml")


@pytest.fixture(scope="module")
def demo_jobs():
    return dry_run(PROFILE_DIR, "config/demo.yaml")


def test_paper_run_gpu_jobs_are_scoring_and_students(paper_jobs):
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    teacher_gpus = config["teachers"][config["teacher"]]["gpus"]
    assert teacher_gpus >= 1  # the paper's teacher is served on a GPU
    for job in by_rule(paper_jobs, *SCORING_RULES):
        assert gpus(job) == teacher_gpus, job
        assert job.resources["slurm_partition"] == "gpu_t"
        assert job.resources["mem_mb"] == "64000"
        assert job.threads == 8
    for job in by_rule(paper_jobs, *STUDENT_RULES):
        assert gpus(job) == 1, job
        assert job.resources["slurm_partition"] == "gpu_t"
        # The cluster profile's threads, not profiles/default's 2 and 1 (which --profile would add).
        assert job.threads == 8 and job.shell.startswith("OMP_NUM_THREADS=8 "), job


def test_paper_run_everything_else_is_cpu_only(paper_jobs):
    cpu_jobs = [j for j in paper_jobs if j.rule not in GPU_RULES and j.rule != "all"]
    assert {j.rule for j in cpu_jobs} >= {
        "download_dataset",
        "prepare_dataset",
        "select_stage1",
        "evaluate",
        "aggregate",
        "gather_points",
    }
    for job in cpu_jobs:
        assert gpus(job) == 0 and "gres" not in job.resources, job
        assert job.resources["slurm_partition"] == "cpu_t", job
        assert job.resources["slurm_account"] == "acct_t", job
        # The dataset stage decodes every image in worker processes (its threads).
        assert job.threads == (8 if job.rule in ("list_images", "prepare_dataset") else 1), job
    assert by_rule(paper_jobs, "download_dataset")[0].resources["runtime"] == "240"
    assert by_rule(paper_jobs, "aggregate")[0].resources["mem_mb"] == "8000"
    assert by_rule(paper_jobs, "evaluate")[0].resources["mem_mb"] == "8000"


def test_teacher_shards_follow_the_config(paper_jobs):
    # The profile leaves sharding to the config (sized per dataset), one GPU job per shard.
    assert "set-scatter" not in PROFILE
    shards = yaml.safe_load((REPO / "config/config.yaml").read_text())["scoring"]["shards"]
    assert shards > 1
    for rule in SCORING_RULES:
        items = sorted(re.search(r"scatteritem=(\S+)", j.wildcards).group(1) for j in by_rule(paper_jobs, rule))
        assert items == sorted(f"{k}-of-{shards}" for k in range(1, shards + 1))


def test_per_subset_cpu_jobs_run_in_groups_without_gpu(paper_jobs):
    selections = by_rule(paper_jobs, "select_stage1")
    assert {j.group for j in selections} == {"selection"}
    assert all(gpus(j) == 0 and j.resources["runtime"] == "5" for j in selections)
    assert [j.group for j in by_rule(paper_jobs, "evaluate")] == [None]  # one job: all runs, common test images
    assert {j.group for j in by_rule(paper_jobs, "sample_mos_subset")} == {"subsets"}
    assert {j.group for j in by_rule(paper_jobs, "calibrate", "score_points")} == {None}


def test_scoring_gpus_follow_the_teacher(demo_jobs, tmp_path):
    # The demo's stand-in teacher runs on CPU (no `gpus`): its scoring jobs ask for none,
    # under the same profile that gives the paper's teacher a GPU.
    for job in by_rule(demo_jobs, *SCORING_RULES):
        assert gpus(job) == 0, job
    assert all(gpus(j) == 1 for j in by_rule(demo_jobs, *STUDENT_RULES))
    # A teacher that needs two GPUs (tensor parallel) gets two per scoring job.
    override = tmp_path / "two_gpus.yaml"
    override.write_text(yaml.safe_dump({"teachers": {"internvl3_5_8b": {"gpus": 2}}}))
    for job in by_rule(dry_run(PROFILE_DIR, "config/config.yaml", override), *SCORING_RULES):
        assert gpus(job) == 2, job


def test_site_values_come_from_the_environment_not_the_repository():
    assert PROFILE["default-resources"]["slurm_account"] == "$LEAF_SLURM_ACCOUNT"
    assert PROFILE["default-resources"]["slurm_partition"] == "$LEAF_SLURM_PARTITION"
    for rule in GPU_RULES:
        assert PROFILE["set-resources"][rule]["slurm_partition"] == "$LEAF_SLURM_GPU_PARTITION"
    # Rules state what a step needs; where it runs is the profile's business.
    cluster_keys = re.compile(r"\b(slurm_partition|slurm_account|slurm_extra|gres|gpu_model|constraint)\s*=")
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")) + [REPO / "Snakefile"]:
        assert not cluster_keys.search(smk.read_text()), f"{smk.relative_to(REPO)} names cluster resources"


def test_cores_do_not_cap_the_threads_the_profile_sets():
    # `cores` caps every job's threads on any executor: below a set-threads value it would
    # silently shrink that job's --cpus-per-task.
    assert PROFILE["cores"] >= max(PROFILE["set-threads"].values())


def test_local_profile_asks_nothing_a_small_gpu_less_node_lacks():
    local, changes = derive(PROFILE, cpus=2, mem_mb=10000, jobs=4, scatter=4)
    for rule, res in local["set-resources"].items():
        assert res.get("gpu", 0) == 0 and "gres" not in res and "gpu_model" not in res, rule
        assert not isinstance(res.get("mem_mb"), int) or res["mem_mb"] <= 10000, rule
    assert local["set-resources"]["score_points"]["gpu"] == 0  # overrides a GPU teacher's `gpus`
    assert all(n <= 2 for n in local["set-threads"].values())
    assert local["cores"] == 2 and local["set-scatter"]["teacher"] == 4 and local["jobs"] == 4
    assert local["slurm-status-command"] == "squeue"  # no sacct without accounting
    # What the node can satisfy is kept as it is.
    for key in ("executor", "groups", "group-components", "retries", "latency-wait"):
        assert local[key] == PROFILE[key], key
    assert local["default-resources"]["slurm_partition"] == "$LEAF_SLURM_PARTITION"
    assert local["set-resources"]["download_dataset"] == PROFILE["set-resources"]["download_dataset"]
    assert any("distill: gpu 1 -> 0" in c for c in changes)


def test_local_profile_dry_run(tmp_path):
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/slurm_local_profile.py"),
            "--cpus",
            "2",
            "--mem-mb",
            "8000",
            "--scatter",
            "3",
            "--out",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    jobs = dry_run(tmp_path, "config/config.yaml", env={"LEAF_SLURM_ACCOUNT": ""})
    assert all(gpus(j) == 0 for j in jobs)  # even the paper's GPU teacher
    assert all(j.threads <= 2 for j in jobs)
    assert all(int(j.resources["mem_mb"]) <= 8000 for j in jobs if j.resources)
    assert len(by_rule(jobs, "score_points")) == 3
    assert {j.resources["slurm_account"] for j in jobs if j.resources} == {""}  # empty: no sbatch -A
