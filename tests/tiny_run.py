"""Completed tiny demo runs shared by the end-to-end, rerun and report tests, and a dry-run driver.

The tiny demo is config/demo.yaml with tests/configs/tiny.yaml on top (merged as Snakemake merges
several --configfile files), so a test run can be replayed by hand (see that file's header).

Two ways to get a finished DAG to compare against:

* ``real_tiny_run``: the whole tiny demo, for real (a few minutes on 2 cores), once per session and
  shared by every test that needs a real run: test_pipeline_e2e (the DAG's outputs), the report
  (which embeds the figures) and test_reruns (touched vs real).
* ``touched_tiny_run``: every output created empty, then ``snakemake --touch --forceall``: the touch
  executor records the same metadata (params, shell text, input set, software env) as a real job,
  and touches outputs in DAG order, so every rerun trigger sees what it would see after a real run
  (``test_reruns.py`` checks this against the real run). Seconds instead of minutes. Rerun decisions
  never read file contents here: no checkpoints, and no input function opens a file.

Each run is made once per test session (under pytest's session temp dir) whoever asks first; none
touches the checkout's results/, resources/ or .snakemake/ (each has its own working directory).

The dry-run driver runs in a subprocess (``python tests/tiny_run.py dryrun ...``): the Snakefile
imports leaf_steps to hash the step code into params, so a test of a code change must hash a copy of
the repository, which needs a fresh interpreter whose leaf_steps is that copy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
TINY_CONFIGS = Path(__file__).resolve().parent / "configs"


@dataclass(frozen=True)
class Run:
    workdir: Path
    configfile: Path
    results: Path  # results/<run_name> inside workdir

    def config(self) -> dict:
        import yaml

        return yaml.safe_load(self.configfile.read_text())


@dataclass(frozen=True)
class Job:
    rule: str
    outputs: tuple[str, ...]  # relative to the run's results/<run_name>


def tiny_config(*overlays: str, results_dir: str | None = None) -> dict:
    """config/demo.yaml, then tests/configs/tiny.yaml and ``overlays`` (file names in tests/configs/) on
    top, merged key by key as Snakemake merges several --configfile files."""
    import yaml
    from snakemake.utils import update_config

    cfg = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    for name in ("tiny.yaml", *overlays):
        update_config(cfg, yaml.safe_load((TINY_CONFIGS / name).read_text()))
    if results_dir is not None:
        cfg["results_dir"] = results_dir
    return cfg


def tiny_rerun_config(results_dir: str = "results") -> dict:
    """The tiny demo with one MOS-subset seed (tests/configs/tiny_one_seed.yaml): the rerun tests add one."""
    return tiny_config("tiny_one_seed.yaml", results_dir=results_dir)


def env_for(repo: Path) -> dict[str, str]:
    """Steps run as `python -m leaf_steps.x` from the venv; leaf_steps comes from ``repo``."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(repo)
    return env


def _write_config(workdir: Path, cfg: dict) -> Path:
    import yaml

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _session_dir(tmp_path_factory, name: str) -> Path:
    return tmp_path_factory.getbasetemp() / name


def real_tiny_run(tmp_path_factory) -> Run:
    """The tiny demo (tests/configs/tiny.yaml: two MOS-subset seeds), run for real once per session."""
    workdir = _session_dir(tmp_path_factory, "tiny_real")
    cfg = tiny_config()
    run = Run(workdir, workdir / "tiny.yaml", workdir / "results" / cfg["run_name"])
    if (workdir / "DONE").exists():
        return run
    _write_config(workdir, cfg)
    proc = run_snakemake(run)
    assert proc.returncode == 0, f"tiny demo run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"
    (workdir / "DONE").write_text("ok\n")
    return run


def run_snakemake(run: Run, *extra: str, cores: int = 2) -> subprocess.CompletedProcess:
    """``snakemake`` on ``run``'s config in its own working directory, with the checkout's Snakefile."""
    cmd = [
        str(VENV_BIN / "snakemake"),
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(run.workdir),
        "--configfile",
        str(run.configfile),
        "--cores",
        str(cores),
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env_for(ROOT), cwd=run.workdir)


def touched_tiny_run(tmp_path_factory, name: str = "tiny_touched", cfg: dict | None = None) -> Run:
    """The tiny demo (or ``cfg``) completed by touching; ``name`` keys the session cache."""
    workdir = _session_dir(tmp_path_factory, name)
    cfg = cfg or tiny_rerun_config()
    run = Run(workdir, workdir / "tiny.yaml", workdir / "results" / cfg["run_name"])
    if (workdir / "DONE").exists():
        return run
    _write_config(workdir, cfg)
    planned = dryrun(run, collect="paths")
    for path, is_dir in planned:
        target = workdir / path
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    touched = dryrun(run, executor="touch")
    assert touched, "the touch run did nothing"
    (workdir / "DONE").write_text("ok\n")
    return run


def dryrun(run: Run, repo: Path = ROOT, executor: str = "dryrun", collect: str = "jobs"):
    """Jobs a run of ``repo``'s Snakefile would execute now in ``run.workdir`` (Snakemake's Python
    API, in a subprocess). ``collect="paths"``: (output path, is directory) of every planned job."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "dryrun",
        str(repo / "Snakefile"),
        str(run.workdir),
        str(run.configfile),
        executor,
        collect,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env_for(repo), cwd=run.workdir)
    assert proc.returncode == 0, f"dry run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    payload = json.loads(proc.stdout.strip().splitlines()[-1])
    if collect == "paths":
        return [tuple(p) for p in payload]
    prefix = f"{run.results.relative_to(run.workdir)}/"
    return [Job(rule, tuple(sorted(o.removeprefix(prefix) for o in outputs))) for rule, outputs in payload]


def _driver(snakefile: str, workdir: str, configfile: str, executor: str, collect: str) -> None:
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    updated: list = []
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[Path(configfile)]),
            snakefile=Path(snakefile),
            workdir=Path(workdir),
        )
        dag = workflow.dag(DAGSettings(forceall=executor == "touch"))
        dag.execute_workflow(executor=executor, updated_files=updated)
    if collect == "paths":
        payload = [(str(f), bool(f.is_directory)) for f in updated]
    else:
        # updated_files lists every output of every job that would run; each output file object
        # knows the rule that makes it, and a job's outputs come in a row.
        payload, last = [], None
        for f in updated:
            job_key = (f.rule.name, id(f.rule))
            if payload and last == job_key and len(payload[-1][1]) < len(f.rule.output):
                payload[-1][1].append(str(f))
            else:
                payload.append([f.rule.name, [str(f)]])
            last = job_key
    print(json.dumps(payload))


if __name__ == "__main__":
    if sys.argv[1] != "dryrun":
        raise SystemExit(f"usage: {sys.argv[0]} dryrun SNAKEFILE WORKDIR CONFIGFILE EXECUTOR COLLECT")
    _driver(*sys.argv[2:7])
