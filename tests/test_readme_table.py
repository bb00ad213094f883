"""The README's demo table is checked against (and written from) a run's table.md: the library
(leaf_steps.evaluation.readme_table) on a small fixture README, and the script `make demo` runs."""

import subprocess
import sys
from pathlib import Path

import pytest

from leaf_steps.core.errors import InputError
from leaf_steps.evaluation.readme_table import END, START, compare, demo_block, readme_block, update

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "readme_demo_table.py"

TABLE = """# LEAF on demo (demo)

Test-split SRCC / PLCC, mean ± std over MOS-subset seeds.

| Method | label-free SRCC | label-free PLCC |
|---|---|---|
| LEAF (leaf) | 0.439 ± 0.000 | 0.401 ± 0.000 |

Every cell: the same 208 test images (all test images with a MOS; no method lacks one).
"""

README = f"""# Project

Intro text.

{START}

| Method | label-free SRCC | label-free PLCC |
|---|---|---|
| LEAF (leaf) | 0.408 ± 0.000 | 0.364 ± 0.000 |

{END}

More text after the table.
"""


def test_a_stale_table_is_reported_with_its_difference():
    result = compare(README, TABLE)
    assert not result.matches
    assert "-| LEAF (leaf) | 0.408 ± 0.000 | 0.364 ± 0.000 |" in result.diff
    assert "+| LEAF (leaf) | 0.439 ± 0.000 | 0.401 ± 0.000 |" in result.diff


def test_write_puts_the_run_table_between_the_markers_and_nothing_else_changes():
    new = update(README, TABLE)
    assert compare(new, TABLE).matches
    assert readme_block(new) == demo_block(TABLE)
    assert "# LEAF on demo" not in new  # the run's title line stays out of the README
    before, after = README.split(START)[0], README.split(END)[1]
    assert new.startswith(before) and new.endswith(after)
    assert update(new, TABLE) == new  # idempotent


@pytest.mark.parametrize(
    "broken,message",
    [
        (README.replace(END, ""), "found 1 and 0"),
        (README + START + "\n", "found 2 and 1"),
        (README.replace(START, "@@").replace(END, START).replace("@@", END), "comes before its start marker"),
    ],
)
def test_missing_or_misplaced_markers_are_clear_errors(broken, message):
    with pytest.raises(InputError, match=message):
        compare(broken, TABLE, readme_name="R.md")


def run_script(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_script_checks_then_writes(tmp_path):
    readme, table = tmp_path / "README.md", tmp_path / "table.md"
    readme.write_text(README)
    table.write_text(TABLE)
    args = ["--readme", str(readme), "--table", str(table)]
    stale = run_script(*args)
    assert stale.returncode == 1 and "DIFFERS from this run" in stale.stdout and "--write" in stale.stdout
    assert run_script(*args, "--exit-zero").returncode == 0  # how make demo reports without failing
    assert readme.read_text() == README  # checking never writes
    written = run_script(*args, "--write")
    assert written.returncode == 0 and "updated" in written.stdout
    fresh = run_script(*args)
    assert fresh.returncode == 0 and "matches this run" in fresh.stdout
    missing = run_script("--readme", str(readme), "--table", str(tmp_path / "nope.md"))
    assert missing.returncode == 2 and "nope.md: file not found" in missing.stderr


def test_the_repository_readme_has_the_markers_and_make_demo_checks_them():
    readme_block((ROOT / "README.md").read_text())  # one marker pair, in order
    demo_recipe = (ROOT / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "scripts/readme_demo_table.py" in demo_recipe
