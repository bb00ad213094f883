"""Hash a step module's source together with the leaf_steps modules it imports.

Snakemake's "code" rerun trigger does not see modules run as ``python -m``; rules put this
hash in their ``params`` so that editing a step (or a shared helper it imports) reruns
that step and everything downstream, and nothing else.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE = "leaf_steps"


ROOT = Path(__file__).resolve().parent


def _module_file(name: str) -> Path | None:
    """Source file of a leaf_steps module, found on disk without importing it (None for names that are
    not modules, e.g. the function in ``from leaf_steps.io import write_parquet``)."""
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


@lru_cache(maxsize=None)
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


@lru_cache(maxsize=None)
def code_hash(*names: str, length: int = 16) -> str:
    """Hash of the sources of ``names`` and their import closures. Teacher backends are imported
    lazily by name, so a rule adds the backend module it uses explicitly."""
    digest = hashlib.sha256()
    for mod in sorted(set().union(*(module_closure(n) for n in names))):
        digest.update(mod.encode() + b"\0" + _module_file(mod).read_bytes() + b"\0")  # type: ignore[union-attr]
    return digest.hexdigest()[:length]
