"""Mutation testing of the modules that compute numbers (`make mutate`), with mutmut 3.

    python scripts/mutation.py            # run mutmut on the targets, then report
    python scripts/mutation.py --report   # report the last run only

What is mutated and which tests run is configured in pyproject.toml:

* ``[tool.mutmut]``: mutmut's own settings: ``only_mutate`` (the files mutmut makes mutants of) and
  ``pytest_add_cli_args_test_selection`` (the test files it runs against them);
* ``[tool.leaf.mutation] targets``: the mutants that count, as globs over mutmut's mutant names
  (``leaf_steps.<module>.x_<function>__mutmut_<n>``). A whole module is ``leaf_steps.training.losses.*``; part of
  one is a glob per function, e.g. ``leaf_steps.distill.x_holdout_*``. Adding a target is one line.

The report gives, per module, the mutants that ran, how many the tests killed (a timeout counts as killed:
the mutant made the tests hang), the kill rate, and the rate once the survivors that docs/mutation.md
lists as equivalent (no test can tell them apart from the original) are left out. Survivors that are
not listed there are printed by name: each is a missing test or an equivalent mutant to document.
``mutmut show NAME`` prints a mutant's diff.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import re
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENT_DOC = ROOT / "docs" / "mutation.md"
KILLED = {"killed", "timeout", "caught by type check"}
NOT_RUN = {"skipped", "not checked"}


def targets() -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found = pyproject.get("tool", {}).get("leaf", {}).get("mutation", {}).get("targets", [])
    if not found:
        raise SystemExit("pyproject.toml: [tool.leaf.mutation] targets is empty")
    only = pyproject["tool"]["mutmut"].get("only_mutate", [])
    for glob in found:
        module = glob.split(".x_")[0].removesuffix(".*")
        path = module.replace(".", "/") + ".py"
        if only and not any(fnmatch.fnmatch(path, pattern) for pattern in only):
            raise SystemExit(
                f"pyproject.toml: target {glob!r} is in {path}, which [tool.mutmut] only_mutate "
                f"does not list: add {path!r} there"
            )
    return found


def mutmut(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    mutmut_bin = Path(sys.executable).parent / "mutmut"
    # mutmut puts its mutated copy (mutants/) first on sys.path; a PYTHONPATH naming the checkout would
    # let the tests import the original modules instead, and every mutant would survive.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HYPOTHESIS_PROFILE": "mutation"}
    return subprocess.run(
        [str(mutmut_bin), *args], cwd=ROOT, env=env, check=check, text=True, capture_output=args[0] == "results"
    )


def statuses(globs: list[str]) -> dict[str, str]:
    out = mutmut("results", "--all", "true").stdout
    found = {}
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and any(fnmatch.fnmatch(name, g) for g in globs):
            found[name] = status
    return found


def equivalents() -> dict[str, str]:
    """Mutant name -> reason, from the table rows "| `name` | reason |" of docs/mutation.md."""
    rows = re.findall(r"^\|\s*`([\w.]+__mutmut_\d+)`\s*\|\s*(.+?)\s*\|\s*$", EQUIVALENT_DOC.read_text(), re.M)
    return dict(rows)


def module_of(name: str) -> str:
    return name.split(".x_")[0].split(".xǁ")[0]


def report(globs: list[str]) -> int:
    found = statuses(globs)
    if not found:
        print("no mutant results: run `make mutate` first")
        return 1
    known = equivalents()
    table: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    unexplained = []
    for name, status in sorted(found.items()):
        row = table[module_of(name)]
        if status in NOT_RUN:
            row["not run"] += 1
            continue
        row["ran"] += 1
        if status in KILLED:
            row["killed"] += 1
        elif name in known:
            row["equivalent"] += 1
        else:
            unexplained.append((name, status))
    print("| module | mutants | killed | kill rate | equivalent | kill rate without equivalents |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    totals = defaultdict(int)
    for module, row in sorted(table.items()):
        for key, value in row.items():
            totals[key] += value
        print(_row(module, row))
    print(_row("**all**", totals))
    if unexplained:
        print(
            f"\n{len(unexplained)} surviving mutant(s) not listed as equivalent in {EQUIVALENT_DOC.relative_to(ROOT)}"
            " (`mutmut show NAME` prints the change):"
        )
        for name, status in unexplained:
            print(f"  {name}: {status}")
    stale = sorted(set(known) - set(found))
    if stale:
        print(f"\n{len(stale)} mutant(s) listed as equivalent no longer exist (the code changed): {stale}")
    return 0


def _row(module: str, row: dict[str, int]) -> str:
    ran, killed, eq = row["ran"], row["killed"], row["equivalent"]
    rate = f"{100 * killed / ran:.1f}%" if ran else "n/a"
    adjusted = f"{100 * killed / (ran - eq):.1f}%" if ran - eq else "n/a"
    extra = f" ({row['not run']} not run)" if row["not run"] else ""
    return f"| {module} | {ran}{extra} | {killed} | {rate} | {eq} | {adjusted} |"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true", help="report the last run without running mutmut")
    args = ap.parse_args(argv)
    globs = targets()
    if not args.report:
        mutmut("run", *globs)
        # A parallel run has been seen to report a killable mutant as survived (mutmut 3.8, forkserver):
        # every survivor is run once more, one at a time, before it is reported.
        survivors = [name for name, status in statuses(globs).items() if status in ("survived", "suspicious")]
        if survivors:
            mutmut("run", "--max-children", "1", *survivors)
    return report(globs)


if __name__ == "__main__":
    sys.exit(main())
