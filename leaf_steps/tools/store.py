"""``leaf store summary|compact DIR``: what the teacher score store holds, and merging its parts.

``summary`` (also what ``leaf inspect DIR`` shows for a store folder) lists every settings hash with
its kind, backend, model (or the NIQE stand-in's fitted model), prompt hash, answers, answers that were
not a label, part files, bytes and when answers were first and last added, then the settings each hash
covers. ``--json`` prints the same as one JSON object.

``compact`` merges the part files of each (settings hash, kind) into one (the first copy of each answer
is kept). Run it when no scoring job writes to the store; readers that start meanwhile still find every
answer. It never changes what a lookup returns.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from leaf_steps.core.errors import InputError
from leaf_steps.teachers.store import KINDS, MARKER, TeacherStore


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def render_summary(info: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200)
    entries = info["settings"]
    answers = sum(k["answers"] for e in entries for k in e["kinds"].values())
    console.print(
        f"[bold]{info['store']}[/bold]: teacher score store, {len(entries)} settings, {answers} answers, "
        f"{_size(info['bytes'])}"
    )
    table = Table(title="answers per settings hash")
    for col in (
        "settings hash",
        "kind",
        "backend",
        "model",
        "prompt",
        "answers",
        "not a label",
        "parts",
        "size",
        "last added",
    ):
        table.add_column(col)
    for e in entries:
        for kind, k in e["kinds"].items():
            model = str(e["model"] or "")
            table.add_row(
                e["settings_hash"],
                kind,
                str(e["backend"]),
                model if len(model) < 40 else model[:37] + "...",
                e["prompt_hash"] or "(none read)",
                str(k["answers"]),
                str(k["not_label_answers"]),
                str(k["parts"]),
                _size(k["bytes"]),
                str(k["last_added"]),
            )
    console.print(table)
    for e in entries:
        console.print(f"[bold]{e['settings_hash']}[/bold] covers:")
        console.print_json(json.dumps(e["settings"], default=str))


def is_store(path: str | Path) -> bool:
    return (Path(path) / MARKER).is_file()


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="leaf store", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="action", required=True)
    s = sub.add_parser("summary", help="settings hashes, answers per kind, size")
    s.add_argument("store", type=Path)
    s.add_argument("--json", action="store_true")
    c = sub.add_parser("compact", help="merge each (settings hash, kind)'s part files into one (offline)")
    c.add_argument("store", type=Path)
    c.add_argument("--settings-hash", default=None, help="only this settings hash")
    a = ap.parse_args(argv)
    if not is_store(a.store):
        raise InputError(
            f"{a.store}: not a teacher score store (no {MARKER}); the default one is <resources_dir>/teacher_store"
        )
    store = TeacherStore(a.store)
    if a.action == "summary":
        info = store.summary()
        if a.json:
            print(json.dumps(info, indent=2, default=str))
        else:
            render_summary(info)
        return
    for entry in store.summary()["settings"]:
        if a.settings_hash and entry["settings_hash"] != a.settings_hash:
            continue
        for kind in KINDS:
            if kind in entry["kinds"]:
                parts, rows = store.compact(entry["settings_hash"], kind)
                print(f"{entry['settings_hash']} {kind}: {parts} part(s) -> 1 ({rows} answers)")
