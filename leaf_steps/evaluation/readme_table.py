"""The README's copy of the demo's summary table, kept equal to what ``make demo`` printed.

The README holds the demo's ``table.md`` (without its title line) between two marker lines,
:data:`START` and :data:`END`. :func:`compare` says whether that block equals a run's table and
shows the difference; :func:`update` writes the run's table into the block. ``make demo`` runs the
check at its end (``scripts/readme_demo_table.py``), so a README that no longer matches the demo
says so on the next demo run instead of going stale silently.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from leaf_steps.core.errors import InputError

START = "<!-- demo-table:start: written by `python scripts/readme_demo_table.py --write` from make demo's table.md -->"
END = "<!-- demo-table:end -->"


def demo_block(table_md: str) -> str:
    """A run's table.md as the README shows it: without the leading ``# title`` line."""
    lines = table_md.strip("\n").splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    return "\n".join(lines).strip("\n")


def _marker_lines(readme: str, source: str) -> tuple[int, int]:
    lines = readme.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == START]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if len(starts) != 1 or len(ends) != 1:
        raise InputError(
            f"{source}: expected one line {START!r} and one line {END!r} around the demo table, found "
            f"{len(starts)} and {len(ends)}"
        )
    if ends[0] < starts[0]:
        raise InputError(
            f"{source}: the demo-table end marker (line {ends[0] + 1}) comes before its start marker "
            f"(line {starts[0] + 1})"
        )
    return starts[0], ends[0]


def readme_block(readme: str, source: str = "README.md") -> str:
    """The text between the markers (without them)."""
    start, end = _marker_lines(readme, source)
    return "\n".join(readme.splitlines()[start + 1 : end]).strip("\n")


@dataclass(frozen=True)
class Comparison:
    matches: bool
    diff: str  # unified diff README -> run; empty when they match


def compare(readme: str, table_md: str, readme_name: str = "README.md", table_name: str = "table.md") -> Comparison:
    ours, theirs = readme_block(readme, readme_name), demo_block(table_md)
    if ours == theirs:
        return Comparison(True, "")
    diff = difflib.unified_diff(
        ours.splitlines(), theirs.splitlines(), fromfile=f"{readme_name} (demo table)", tofile=table_name, lineterm=""
    )
    return Comparison(False, "\n".join(diff))


def update(readme: str, table_md: str, source: str = "README.md") -> str:
    """``readme`` with the block between the markers replaced by the run's table."""
    start, end = _marker_lines(readme, source)
    lines = readme.splitlines()
    new = lines[: start + 1] + ["", demo_block(table_md), ""] + lines[end:]
    return "\n".join(new) + ("\n" if readme.endswith("\n") else "")
