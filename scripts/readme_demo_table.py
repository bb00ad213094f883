#!/usr/bin/env python3
"""Check (default) or rewrite (--write) the README's demo table against a demo run's table.md.

    python scripts/readme_demo_table.py [--readme README.md] [--table results/demo/summary/table.md] [--write]

Check: prints whether the block between the README's demo-table markers equals the run's table
(without its title line) and, if not, the difference; exit status 1 on a difference (0 with
--exit-zero, which is how `make demo` reports without failing). --write: puts the run's table
into the README between the markers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from leaf_steps.core.errors import LeafError  # noqa: E402
from leaf_steps.evaluation.readme_table import compare, update  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--table", type=Path, default=ROOT / "results/demo/summary/table.md")
    ap.add_argument("--write", action="store_true", help="update the README's table from --table")
    ap.add_argument("--exit-zero", action="store_true", help="report a difference without failing")
    a = ap.parse_args(argv)
    try:
        for path in (a.readme, a.table):
            if not path.is_file():
                raise LeafError(f"{path}: file not found")
        readme, table = a.readme.read_text(), a.table.read_text()
        if a.write:
            new = update(readme, table, str(a.readme))
            if new == readme:
                print(f"{a.readme}: demo table already matches {a.table}")
            else:
                a.readme.write_text(new)  # in place: keeps the file's mode
                print(f"{a.readme}: demo table updated from {a.table}")
            return 0
        result = compare(readme, table, str(a.readme), str(a.table))
    except LeafError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.matches:
        print(f"{a.readme}: the demo table matches this run ({a.table}).")
        return 0
    print(
        f"{a.readme}: the demo table DIFFERS from this run ({a.table}):\n{result.diff}\n"
        f"Update it with: python scripts/readme_demo_table.py --write --table {a.table}"
    )
    return 0 if a.exit_zero else 1


if __name__ == "__main__":
    sys.exit(main())
