#!/usr/bin/env bash
# Apply what `make lint` checks and a tool can fix: ruff's safe fixes (import order, unused imports and noqa
# comments, pyupgrade), ruff format, snakefmt. Then list what is left for a person, and exit non-zero while
# anything is. `make format` runs it with the venv's tools; by hand: PATH=.venv/bin:$PATH scripts/lint_fix.sh
#
# Formatting and comment edits leave every step's code hash alone (leaf_steps/core/codehash.py hashes the parsed
# code); the fixes do not (a reordered or removed import is a code change), so they rerun the steps whose
# modules they touch: apply them together with other code changes that rerun those steps anyway.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check --fix --exit-zero --silent .
ruff format --quiet .
snakefmt Snakefile workflow/rules/*.smk
echo "Left for hand fixing (ruff; snakefmt has nothing left once it has run):"
ruff check --statistics .
