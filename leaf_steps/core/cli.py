"""Entry points shared by the step modules, and the ``leaf`` command."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from leaf_steps.core.errors import LeafError

log = logging.getLogger("leaf")


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def json_arg(text: str) -> Any:
    """argparse type for the ``--settings`` JSON blobs Snakemake rules pass in."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc


def run_step(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> None:
    """Run a step's main; a LeafError becomes one clear line on stderr and exit code 2."""
    setup_logging()
    try:
        main(argv)
    except LeafError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


PASSTHROUGH = {
    "validate-config": ("leaf_steps.core.config_checks", "check a config file (every block) without running anything"),
    "inspect": ("leaf_steps.tools.inspect_artifacts", "schema, provenance and summary of a Parquet artifact"),
    "estimate-cost": ("leaf_steps.tools.estimate_cost", "GPU-hours of a config from per-image costs"),
    "predict": ("leaf_steps.tools.predict", "score images with a trained student (checkpoint, export folder or ONNX)"),
    "why": (
        "leaf_steps.tools.why",
        "which jobs a run would execute now, and the setting, file or code change behind each",
    ),
    "store": ("leaf_steps.tools.store", "the teacher score store: summary (settings, answers, size) or compact"),
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="leaf", description="LEAF pipeline utilities")
    sub = parser.add_subparsers(dest="command", required=True)
    for command, (_, help_text) in PASSTHROUGH.items():
        sub.add_parser(command, help=help_text, add_help=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] and argv[0] in PASSTHROUGH:
        # These subcommands are whole step CLIs: they parse their own arguments.
        module = importlib.import_module(PASSTHROUGH[argv[0]][0])
        run_step(module.main, argv[1:])
        return
    parser.parse_args(argv)  # no subcommand, or an unknown one: argparse says so


if __name__ == "__main__":
    main()
