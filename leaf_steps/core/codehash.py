"""Hash a step module's code together with the leaf_steps modules it imports.

Snakemake's "code" rerun trigger does not see modules run as ``python -m``; rules put this
fingerprint in their ``params`` so that editing a step (or a shared helper it imports) reruns
that step and everything downstream, and nothing else.

What is hashed is the parsed code, not the file's bytes: comments, docstrings, blank lines and
formatting (line breaks, spacing, quote style) do not count, so a comment edit in a shared helper
reruns nothing. The canonical form walks the syntax tree and leaves out empty fields, so that the
hash of unchanged code stays the same across the Python versions that add new, empty AST fields.
"""

from __future__ import annotations

import ast
import hashlib
import json
from functools import cache
from pathlib import Path

PACKAGE = "leaf_steps"


ROOT = Path(__file__).resolve().parents[1]  # the leaf_steps package


def _module_file(name: str) -> Path | None:
    """Source file of a leaf_steps module, found on disk without importing it (None for names that are
    not modules, e.g. the function in ``from leaf_steps.core.io import write_parquet``)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _local_imports(path: Path, name: str) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
            found.add(node.module)
            # "from leaf_steps.teachers import base" imports a submodule, not a name.
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m != name}


@cache
def module_closure(name: str) -> tuple[str, ...]:
    """``name`` and every leaf_steps module it imports, transitively (sorted)."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        mod = todo.pop()
        path = _module_file(mod)
        if mod in seen or path is None:
            continue
        seen.add(mod)
        todo.extend(_local_imports(path, mod))
        # Importing a.b.c first runs the __init__ of a and of a.b.
        parts = mod.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
    return tuple(sorted(seen))


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _canonical(node: object) -> str:
    """A stable text form of a syntax tree: node types, non-empty fields and constants' reprs;
    no positions (line numbers, columns), so formatting does not count."""
    if isinstance(node, ast.AST):
        fields = []
        for name in node._fields:
            value = getattr(node, name, None)
            if value is None or value == []:
                continue
            fields.append(f"{name}={_canonical(value)}")
        return f"{type(node).__name__}({','.join(fields)})"
    if isinstance(node, list):
        return "[" + ",".join(_canonical(v) for v in node) + "]"
    return f"{type(node).__name__}:{node!r}"


@cache
def module_code_hash(name: str, length: int = 12) -> str:
    """Hash of one module's parsed code (comments, docstrings and formatting left out)."""
    path = _module_file(name)
    if path is None:
        raise ValueError(f"{name}: not a module of {PACKAGE}")
    tree = _without_docstrings(ast.parse(path.read_text(), filename=str(path)))
    return hashlib.sha256(_canonical(tree).encode()).hexdigest()[:length]


@cache
def code_fingerprint(*names: str) -> str:
    """``{"module": hash, ...}`` (compact JSON) over ``names`` and their import closures.

    Rules put this in their params: any module's change reruns the rule, and ``leaf why`` can say
    which module it was. Teacher backends are imported lazily by name, so a rule adds the
    backend module it uses explicitly."""
    modules = sorted(set().union(*(module_closure(n) for n in names)))
    return json.dumps({m: module_code_hash(m) for m in modules}, separators=(",", ":"))


@cache
def code_hash(*names: str, length: int = 16) -> str:
    """One hash of :func:`code_fingerprint` (for provenance records)."""
    return hashlib.sha256(code_fingerprint(*names).encode()).hexdigest()[:length]
