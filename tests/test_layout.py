"""The package layout is part of the interface: `ls leaf_steps/` shows the DAG's steps and nothing else,
each step is named after the rule that runs it, and no step imports another step (shared code lives in
the library subpackages, so that a step's code hash covers exactly the code it runs)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "leaf_steps"
LIBRARY = {"core", "datasets", "evaluation", "images", "inference", "teachers", "tools", "training"}


def top_level_modules() -> set[str]:
    return {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}


def rules_and_steps() -> dict[str, set[str]]:
    """rule name -> the leaf_steps modules its shell command runs."""
    out: dict[str, set[str]] = {}
    for smk in sorted((ROOT / "workflow/rules").glob("*.smk")):
        text = smk.read_text()
        for m in re.finditer(r"^\s*rule (\w+):(.*?)(?=^\s*rule \w+:|\Z)", text, re.S | re.M):
            out[m.group(1)] = set(re.findall(r"python -m leaf_steps\.([\w.]+)", m.group(2)))
    return out


def imported_leaf_modules(path: Path) -> set[str]:
    """Every leaf_steps module a file imports (any depth, any form, importlib included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "leaf_steps":
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "leaf_steps")
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(str(node.args[0].value))
    return found


def test_the_package_top_level_holds_the_steps_and_the_library_subpackages_only():
    steps = set().union(*rules_and_steps().values())
    assert top_level_modules() == steps, (
        f"top-level modules no rule runs: {sorted(top_level_modules() - steps)}; "
        f"steps that are not top-level modules: {sorted(steps - top_level_modules())}"
    )
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == LIBRARY


def test_each_rule_runs_the_step_of_its_own_name():
    mismatched = {rule: sorted(mods) for rule, mods in rules_and_steps().items() if mods and mods != {rule}}
    assert not mismatched, f"rules whose step module has another name: {mismatched}"


def test_each_rule_hashes_the_code_of_the_step_it_runs():
    for smk in sorted((ROOT / "workflow/rules").glob("*.smk")):
        for m in re.finditer(r"^\s*rule (\w+):(.*?)(?=^\s*rule \w+:|\Z)", smk.read_text(), re.S | re.M):
            runs = set(re.findall(r"python -m leaf_steps\.([\w.]+)", m.group(2)))
            hashed = set(re.findall(r'step_code\("(\w+)"', m.group(2)))
            assert runs == hashed, f"{smk.name}: rule {m.group(1)} runs {runs} but hashes the code of {hashed}"


def test_no_step_imports_another_step():
    steps = top_level_modules()
    offenders = {}
    for step in sorted(steps):
        imported = imported_leaf_modules(PACKAGE / f"{step}.py")
        others = {m for m in imported if m.count(".") == 1 and m.split(".")[1] in steps - {step}}
        if others:
            offenders[step] = sorted(others)
    assert not offenders, f"steps importing steps: {offenders}"


def test_no_library_module_imports_a_step():
    steps = top_level_modules()
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent == PACKAGE:
            continue
        imported = imported_leaf_modules(path)
        bad = {m for m in imported if m.count(".") == 1 and m.split(".")[1] in steps}
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, f"library modules importing steps: {offenders}"


def test_the_import_checker_sees_a_step_importing_a_step(tmp_path):
    # the checks above would pass vacuously if the parser missed an import form
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import importlib\nfrom leaf_steps import distill\n"
        "def f():\n    from leaf_steps.aggregate import x\n    importlib.import_module('leaf_steps.evaluate')\n"
    )
    found = imported_leaf_modules(probe)
    assert {"leaf_steps.distill", "leaf_steps.aggregate", "leaf_steps.evaluate"} <= found
