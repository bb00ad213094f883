"""Derive a profile for a small GPU-less Slurm node from profiles/slurm/config.yaml.

The cluster profile asks for GPUs, 8 CPUs and up to 64 GB per job; a single-node test
cluster (scripts/slurm_local_cluster.sh) has a few CPUs and no GPU, and sbatch rejects a
job that asks for more than the node has. Everything else is kept as it is, so a run
through the derived profile exercises the real one: same rules, groups, partitions (from
the same LEAF_SLURM_* variables), runtimes.

Changes, each printed when written:
  set-resources  gpu -> 0, gpu_model / gres dropped, mem_mb capped at --mem-mb
  set-threads    capped at --cpus
  cores          --cpus (caps threads that rules declare themselves, and group jobs)
  set-scatter    teacher -> --scatter, when given
  plugin         --slurm-status-command squeue (a cluster without accounting has no sacct),
                 first status check after 5 s instead of 40 s
  jobs           --jobs

Usage: python scripts/slurm_local_profile.py --cpus 2 --mem-mb 10000 --out DIR [--scatter 4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CLUSTER_PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
GPU_KEYS_DROPPED = ("gpu_model", "gres")


def derive(profile: dict, cpus: int, mem_mb: int, jobs: int, scatter: int | None) -> tuple[dict, list[str]]:
    """The local profile and a line per change."""
    out = dict(profile)
    changes: list[str] = []

    set_resources = {}
    for rule, res in (profile.get("set-resources") or {}).items():
        res = dict(res)
        if res.get("gpu"):
            changes.append(f"set-resources {rule}: gpu {res['gpu']} -> 0 (no GPU on this node)")
            res["gpu"] = 0
        for key in GPU_KEYS_DROPPED:
            if key in res:
                changes.append(f"set-resources {rule}: {key} dropped")
                del res[key]
        if "mem_mb" in res and not (isinstance(res["mem_mb"], int) and res["mem_mb"] <= mem_mb):
            changes.append(f"set-resources {rule}: mem_mb {res['mem_mb']} -> {mem_mb}")
            res["mem_mb"] = mem_mb
        set_resources[rule] = res
    # Rules whose GPU comes from the rule itself (scoring: teachers.<name>.gpus) get an
    # explicit 0 too, so a GPU teacher in the config cannot ask this node for a GPU.
    for rule in ("score_points", "score_pairs"):
        if set_resources.setdefault(rule, {}).get("gpu") != 0:
            set_resources[rule]["gpu"] = 0
            changes.append(f"set-resources {rule}: gpu -> 0 (overrides teachers.<name>.gpus)")
    out["set-resources"] = set_resources

    default_mem = (profile.get("default-resources") or {}).get("mem_mb")
    if isinstance(default_mem, int) and default_mem > mem_mb:
        out["default-resources"] = {**profile["default-resources"], "mem_mb": mem_mb}
        changes.append(f"default-resources: mem_mb {default_mem} -> {mem_mb}")

    threads = {}
    for rule, n in (profile.get("set-threads") or {}).items():
        threads[rule] = min(int(n), cpus)
        if threads[rule] != n:
            changes.append(f"set-threads {rule}: {n} -> {threads[rule]}")
    out["set-threads"] = threads

    out["cores"] = cpus
    changes.append(f"cores: {cpus} (caps rule threads and group jobs at the node's CPUs)")
    if scatter is not None:
        old = (profile.get("set-scatter") or {}).get("teacher")
        out["set-scatter"] = {**(profile.get("set-scatter") or {}), "teacher": scatter}
        changes.append(f"set-scatter teacher: {old} -> {scatter}")
    out["jobs"] = jobs
    changes.append(f"jobs: {profile.get('jobs')} -> {jobs}")
    out["slurm-status-command"] = "squeue"
    out["slurm-init-seconds-before-status-checks"] = 5
    changes.append("slurm-status-command: squeue; slurm-init-seconds-before-status-checks: 5")
    return out, changes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpus", type=int, required=True, help="CPUs of the node")
    ap.add_argument("--mem-mb", type=int, required=True, help="largest memory request a job may make (MB)")
    ap.add_argument("--jobs", type=int, default=8, help="Slurm jobs pending or running at once")
    ap.add_argument("--scatter", type=int, default=None, help="teacher shards (default: as the profile says)")
    ap.add_argument("--profile", type=Path, default=CLUSTER_PROFILE, help="cluster profile to derive from")
    ap.add_argument("--out", type=Path, required=True, help="directory to write config.yaml into")
    args = ap.parse_args(argv)
    if args.cpus < 1 or args.mem_mb < 1:
        ap.error("--cpus and --mem-mb must be positive")

    profile = yaml.safe_load(args.profile.read_text())
    if not isinstance(profile, dict) or profile.get("executor") != "slurm":
        sys.exit(f"{args.profile}: not a Slurm profile (executor: slurm missing)")
    local, changes = derive(profile, args.cpus, args.mem_mb, args.jobs, args.scatter)
    args.out.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Derived from {args.profile} by scripts/slurm_local_profile.py for a node with "
        f"{args.cpus} CPUs and no GPU. Do not edit: regenerate.\n"
    )
    (args.out / "config.yaml").write_text(header + yaml.safe_dump(local, sort_keys=False))
    print(f"wrote {args.out / 'config.yaml'} (from {args.profile}):")
    for line in changes:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
