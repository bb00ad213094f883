"""What the teacher scoring jobs of the demo reuse and score after each kind of change (README, "Rerun only
what changed"): runs Snakemake on config/demo.yaml in a scratch folder (never the checkout's results/ or
resources/), builds the teacher's outputs (points.parquet, pairs.parquet), then applies one change at a
time and reports, per change, the scoring jobs that ran and the rows they reused from the teacher score
store and scored now (their ``requests`` provenance), with the requests sent.

    PYTHONPATH=$PWD .venv/bin/python scripts/store_rerun_counts.py [--workdir /tmp/leaf-store-counts]

Prints a Markdown table. Only the teacher's outputs are built (the students are not needed for the counts).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from leaf_steps.core.io import read_provenance  # noqa: E402
from leaf_steps.teachers.scoring import add_counts  # noqa: E402

KINDS = ("point", "pair")


class DemoRun:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.store = workdir / "teacher_store"
        self.configfile = workdir / "demo.yaml"
        cfg = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
        cfg["teacher_store"] = str(self.store)
        self.teacher = cfg["teacher"]
        self.results = workdir / cfg.get("results_dir", "results") / cfg["run_name"]
        self.configfile.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def edit(self, change) -> None:
        cfg = yaml.safe_load(self.configfile.read_text())
        change(cfg)
        self.configfile.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def out(self, kind: str) -> Path:
        return self.results / "teacher" / self.teacher / f"{kind}s.parquet"

    def shards(self) -> dict[Path, int]:
        folder = self.results / "teacher" / self.teacher
        return {p: p.stat().st_mtime_ns for k in KINDS for p in (folder / f"{k}s").glob("*.parquet")}

    def snakemake(self, *extra: str) -> dict:
        before = self.shards()
        env = dict(
            os.environ, PYTHONPATH=str(ROOT), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        )
        targets = [str(self.out(k).relative_to(self.workdir)) for k in KINDS]
        cmd = [
            str(Path(sys.executable).parent / "snakemake"),
            "--snakefile",
            str(ROOT / "Snakefile"),
            "--directory",
            str(self.workdir),
            "--configfile",
            str(self.configfile),
            "--cores",
            "2",
            *targets,
            *extra,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=self.workdir)
        if proc.returncode:
            sys.exit(f"snakemake failed:\n{proc.stderr[-4000:]}")
        ran = [p for p, t in self.shards().items() if before.get(p) != t]
        return {
            k: {
                "jobs": sum(p.parent.name == f"{k}s" for p in ran),
                **add_counts([read_provenance(p)["requests"] for p in ran if p.parent.name == f"{k}s"]),
            }
            for k in KINDS
        }

    def images(self) -> int:
        return pl.read_parquet(self.results / "dataset/images.parquet").height


def cell(c: dict) -> str:
    return f"{c['jobs']}" if not c["jobs"] else f"{c['jobs']}: {c['reused']} / {c['scored']}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, help="scratch folder (default: a new temporary one, removed after)")
    a = ap.parse_args()
    workdir = a.workdir or Path(tempfile.mkdtemp(prefix="leaf-store-counts-"))
    if ROOT in [workdir.resolve(), *workdir.resolve().parents]:
        sys.exit(f"--workdir {workdir} is inside the checkout: use a folder outside it")
    workdir.mkdir(parents=True, exist_ok=True)
    run = DemoRun(workdir)
    rows = []

    def step(what: str, *extra: str) -> dict:
        counts = run.snakemake(*extra)
        rows.append((what, counts))
        print(f"{what}: {counts}", file=sys.stderr, flush=True)
        return counts

    step("first run (empty store)")
    n0 = run.images()
    run.edit(lambda c: c["scoring"].update(shards=4))
    step("scoring.shards 2 -> 4")
    run.edit(lambda c: c["dataset"].update(split_seed=1))
    step("dataset.split_seed 0 -> 1")
    run.edit(lambda c: c["scoring"].update(batch_size=8, max_error_fraction=0.2))
    step("scoring.batch_size 32 -> 8, max_error_fraction 0.05 -> 0.2")
    run.edit(lambda c: c["dataset"]["demo"]["distortions"].append("contrast"))
    step("dataset.demo.distortions + contrast")
    added = run.images() - n0
    reference = pl.read_parquet(run.out("point")), pl.read_parquet(run.out("pair"))
    run.edit(lambda c: c["prompts"].update(point=c["prompts"]["point"] + " Be strict."))
    step("prompts.point edited")
    run.edit(lambda c: c["teachers"][c["teacher"]].update(level_scale=0.3))
    step(f"teachers.{run.teacher}.level_scale set to 0.3")
    run.edit(lambda c: c["teachers"][c["teacher"]].pop("level_scale"))
    step("level_scale back to its default")
    shutil.rmtree(run.store)
    step("teacher store deleted (scoring jobs forced)", "--forcerun", "score_points", "score_pairs")
    same = pl.read_parquet(run.out("point")).equals(reference[0]) and pl.read_parquet(run.out("pair")).equals(
        reference[1]
    )

    print(
        f"Demo (`config/demo.yaml`, teacher `{run.teacher}`), {n0} images, then {n0 + added}; each cell: scoring "
        "jobs that ran: rows reused from the store / rows scored now.\n"
    )
    print("| change | point scoring | pair scoring | requests sent |")
    print("|---|---|---|---|")
    for what, c in rows:
        print(
            f"| {what} | {cell(c['point'])} | {cell(c['pair'])} | "
            f"{c['point']['requests_sent'] + c['pair']['requests_sent']} |"
        )
    print(
        f"\nAfter the store was deleted, points.parquet and pairs.parquet are "
        f"{'identical' if same else 'NOT identical'} to those before the prompt edit."
    )
    if a.workdir is None:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
