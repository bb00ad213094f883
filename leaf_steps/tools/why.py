"""``leaf why --configfile C``: which jobs a run would execute now, and the exact change behind each.

Snakemake's own dry-run says "Params have changed" and prints two long JSON strings; and
``--list-changes params`` also lists outputs whose params did not change. This command builds the
same DAG Snakemake would (Snakemake's Python API, nothing is executed) and, for every job that
would run, says why in the project's terms:

* ``setting distill.lr: 0.002 -> 0.001``: a value in the rule's params, diffed key by key;
* ``code leaf_steps.core.io changed``: a module in the rule's code fingerprint (comments, docstrings and
  formatting never count, see :mod:`leaf_steps.core.codehash`);
* ``input rebuilt by distill: results/.../model.safetensors``: an upstream job runs first;
* ``input changed: <file>``: an input file on disk is newer than the output, or its checksum moved;
* ``output missing: <file>``, ``output incomplete``, ``no record of how the output was made``,
  ``shell command changed``, ``software environment changed``, ``input file set changed``.

    leaf why --configfile config/demo.yaml            # jobs and reasons
    leaf why --configfile config/demo.yaml --json     # the same for scripts
"""

from __future__ import annotations

import argparse
import ast
import json
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
_MISSING = object()


@dataclass
class JobWhy:
    rule: str
    wildcards: dict[str, str]
    outputs: list[str]
    reasons: list[str] = field(default_factory=list)


def decode_param(serialized: str) -> Any:
    """A recorded param (Snakemake stores ``repr(value)``) back to a value: shell-quoted JSON (the
    rules' settings), bare JSON (code fingerprints), or the plain value."""
    try:
        value = ast.literal_eval(serialized)
    except (ValueError, SyntaxError):
        return serialized
    return decode_value(value)


def decode_value(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    for text in (value, *_single_shell_word(value)):
        try:
            return json.loads(text)
        except ValueError:
            continue
    return value


def _single_shell_word(text: str) -> list[str]:
    try:
        words = shlex.split(text)
    except ValueError:
        return []
    return words if len(words) == 1 else []


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys; lists and scalars are leaves."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def diff_values(old: Any, new: Any, name: str) -> list[str]:
    """Key-by-key differences of two decoded param values, as reason lines."""
    if isinstance(old, dict) and isinstance(new, dict):
        a, b = flatten(old), flatten(new)
        lines = []
        for key in sorted(set(a) | set(b)):
            before, after = a.get(key, _MISSING), b.get(key, _MISSING)
            if before == after:
                continue
            label = f"{name}.{key}" if name not in ("settings", "spec") else key
            if name == "code":
                lines.append(
                    f"code {key} {'added' if before is _MISSING else 'removed' if after is _MISSING else 'changed'}"
                )
            elif before is _MISSING:
                lines.append(f"setting {label} added: {_short(after)}")
            elif after is _MISSING:
                lines.append(f"setting {label} removed (was {_short(before)})")
            else:
                lines.append(f"setting {label}: {_short(before)} -> {_short(after)}")
        return lines or [f"setting {name} changed"]
    return [f"setting {name}: {_short(old)} -> {_short(new)}"]


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _closeness(old: Any, new: Any) -> int:
    """How many leaves two values share (to pair a changed param with its previous value)."""
    if isinstance(old, dict) and isinstance(new, dict):
        a, b = flatten(old), flatten(new)
        return sum(1 for k in a if k in b and a[k] == b[k]) + sum(1 for k in a if k in b)
    return 1 if type(old) is type(new) else 0


def params_reasons(job: Any, persistence: Any) -> list[str]:
    """Which named params of ``job`` differ from what was recorded for its outputs, key by key."""
    serialize = persistence._serialize_param
    recorded: set[str] = set()
    for out in job.output:
        stored = persistence.params(out)
        if stored:
            recorded.update(stored)
    # Params computed from input/output paths are not recorded (Snakemake tracks those as files).
    own = {serialize(v) for v in job.non_derived_params}
    current = {name: s for name, s in ((n, serialize(v)) for n, v in job.params.items()) if s in own}
    changed = {name: s for name, s in current.items() if isinstance(s, str) and s not in recorded}
    unmatched_old = [decode_param(s) for s in recorded - set(current.values())]
    lines: list[str] = []
    for name, serialized in changed.items():
        new = decode_param(serialized)
        if not unmatched_old:
            lines.append(f"setting {name} added: {_short(new)}")
            continue
        best = max(range(len(unmatched_old)), key=lambda i: _closeness(unmatched_old[i], new))
        old = unmatched_old.pop(best)
        lines.extend(diff_values(old, new, name))
    for old in unmatched_old:
        lines.append(f"a recorded setting is gone: {_short(old)}")
    return lines


def job_reasons(job: Any, dag: Any) -> list[str]:
    reason = dag.reason(job)
    persistence = dag.workflow.persistence
    lines: list[str] = []
    if reason.forced:
        lines.append("forced")
    if reason._missing_output:
        lines.append("output missing: " + ", ".join(sorted(map(str, reason.missing_output))))
    if reason._incomplete_output:
        lines.append(
            "output incomplete (an earlier run was interrupted): "
            + ", ".join(sorted(map(str, reason.incomplete_output)))
        )
    if reason._updated_input_run:
        producers = {}
        for f in reason.updated_input_run:
            rule = next((dep.rule.name for dep in dag.dependencies[job] if f in dep.output), "an upstream job")
            producers.setdefault(rule, []).append(str(f))
        for rule, files in sorted(producers.items()):
            lines.append(f"input rebuilt by {rule}: " + ", ".join(sorted(files)))
    if reason._updated_input:
        lines.append("input changed: " + ", ".join(sorted(map(str, reason.updated_input))))
    if reason.params_changed:
        lines.extend(params_reasons(job, persistence))
    if reason.code_changed:
        lines.append("shell command changed")
    if reason.software_stack_changed:
        lines.append("software environment changed")
    if reason.input_changed:
        lines.append("input file set changed")
    if getattr(reason, "no_metadata", False):
        lines.append("no record of how the output was made (made outside Snakemake, or metadata deleted)")
    if not lines:
        lines.extend(reason.get_names() or ["(Snakemake gives no reason)"])
    return lines


def explain(
    configfiles: Sequence[Path],
    snakefile: Path = ROOT / "Snakefile",
    workdir: Path | None = None,
    targets: Iterable[str] = (),
    config: dict[str, Any] | None = None,
) -> list[JobWhy]:
    """The jobs a run would execute now in ``workdir`` and why (nothing is run)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow_api = api.workflow(
            resource_settings=ResourceSettings(cores=1),
            config_settings=ConfigSettings(configfiles=[Path(c).resolve() for c in configfiles], config=config or {}),
            snakefile=Path(snakefile).resolve(),
            workdir=Path(workdir).resolve() if workdir else Path.cwd(),
        )
        workflow_api.dag(DAGSettings(targets=set(targets)))
        workflow = workflow_api._workflow
        workflow._prepare_dag(forceall=False, ignore_incomplete=True, lock_warn_only=True)
        workflow._build_dag()
        dag = workflow.dag
        out = []
        for job in dag.needrun_jobs():
            if job.rule.name == "all":
                continue
            out.append(
                JobWhy(
                    rule=job.rule.name,
                    wildcards=dict(job.wildcards_dict),
                    outputs=sorted(map(str, job.output)),
                    reasons=job_reasons(job, dag),
                )
            )
    return sorted(out, key=lambda j: (j.rule, j.outputs))


def render(jobs: Sequence[JobWhy]) -> str:
    if not jobs:
        return "Nothing would run: every output is up to date with its settings, code and inputs."
    lines = [f"{len(jobs)} job(s) would run:"]
    for job in jobs:
        wc = ", ".join(f"{k}={v}" for k, v in job.wildcards.items())
        lines.append(f"\n{job.rule}{f' ({wc})' if wc else ''} -> {job.outputs[0] if job.outputs else '(no output)'}")
        lines.extend(f"    {r}" for r in job.reasons)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="leaf why",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    ap.add_argument("--configfile", required=True, nargs="+", type=Path)
    ap.add_argument("--snakefile", type=Path, default=ROOT / "Snakefile")
    ap.add_argument("--directory", type=Path, default=None, help="working directory of the run (default: here)")
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("targets", nargs="*")
    a = ap.parse_args(argv)
    jobs = explain(a.configfile, a.snakefile, a.directory, a.targets)
    if a.json:
        print(json.dumps([asdict(j) for j in jobs], indent=2))
    else:
        print(render(jobs))
    sys.stdout.flush()


if __name__ == "__main__":
    from leaf_steps.core.cli import run_step

    run_step(main)
