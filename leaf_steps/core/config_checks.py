"""Config checks beyond the schema, by the code that reads each block; and the values resolved from a config.

* ``check_blocks``: each ``teachers.<name>`` block by its backend's own code
  (:mod:`leaf_steps.teachers.specs`), ``dataset`` by its adapter (``OPTIONS``, ``check_options``), and
  the labelled-image counts the MOS ratios need, where they are known before any job runs;
* ``config_warnings``: what will likely be regretted but does not stop a run (a test split too small to
  mean anything, a folder that is not there yet);
* ``resolved_min_side``: ``dataset.min_side`` for this run's teachers;
* ``main``: ``leaf validate-config FILE``.

Called by :func:`leaf_steps.core.config.validate_config`, the workflow's start (workflow/rules/common.smk) and
``leaf validate-config``; no step imports this module.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from leaf_steps.core.config import load_config, variant_settings
from leaf_steps.core.errors import ConfigError


def check_blocks(config: dict[str, Any]) -> None:
    """The blocks the schema leaves open, checked by the code that reads them: each teacher block by its
    backend (leaf_steps.teachers.specs), ``dataset.options`` by the dataset's adapter; then the label
    counts the MOS ratios need, where they are known before the data is read."""
    from leaf_steps.core.errors import InputError
    from leaf_steps.teachers.specs import check_teacher

    for name, spec in config["teachers"].items():
        check_teacher(name, spec)
    ds = config["dataset"]
    if ds["name"] != "demo":
        from leaf_steps.datasets import check_dataset_settings

        check_dataset_settings(ds["name"], ds)
    try:
        counts = known_label_counts(config)
    except InputError:
        counts = None  # reported by config_warnings, and with its line by the dataset step
    if counts is not None:
        train, _test, where = counts
        problems = ratio_problems(train, config["calibration"]["ratios"], config["calibration"]["val_fraction"], where)
        if problems:
            raise ConfigError("\n  ".join(problems))


def config_warnings(config: dict[str, Any]) -> list[str]:
    """What a validated config will likely regret (nothing here stops a run): a labelled test split too
    small to mean anything, a folder or MOS file that is not there (yet), a label file that cannot be read."""
    from leaf_steps.core.errors import InputError
    from leaf_steps.datasets.labels_check import small_test_split_warning

    out = []
    ds = config["dataset"]
    options = ds.get("options") or {}
    if ds["name"] == "folder":
        for key in ("images_dir", "mos_csv"):
            if options.get(key) and not Path(str(options[key])).expanduser().exists():
                out.append(f"dataset.options.{key}: {options[key]} does not exist (yet)")
    try:
        counts = known_label_counts(config)
    except InputError as exc:
        out.append(f"cannot count the labelled images yet: {exc}")
        counts = None
    if counts is not None and (message := small_test_split_warning(counts[1])) is not None:
        out.append(f"dataset: {message} {counts[2]}")
    return out


def resolved_min_side(config: dict[str, Any]) -> int:
    """``dataset.min_side``, or when null the largest shortest side this run's teachers need, at least 32 px
    (leaf_steps.teachers.specs.min_image_side). The student is not counted: it resizes every image
    (student.resize) and crops; set dataset.min_side to student.crop to refuse images it must upscale."""
    from leaf_steps.images.check import DEFAULT_MIN_SIDE
    from leaf_steps.teachers.specs import min_image_side

    ds = config["dataset"]
    if ds.get("min_side") is not None:
        return int(ds["min_side"])
    used = {config["teacher"]} | {variant_settings(config, v)["teacher"] for v in config["variants"]}
    return max([DEFAULT_MIN_SIDE] + [min_image_side(config["teachers"][t]) for t in sorted(used)])


# A MOS ratio applies to the labelled *training* images: ``ratio`` of them are drawn for calibration,
# ``calibration.val_fraction`` of those held out to select the epoch (sample_mos_subset), and the test
# split (``dataset.test_fraction`` of the labelled images; KonIQ-10k's official split) is never touched.
# The counts are known before any job runs for the benchmarks (published) and a folder's MOS CSV.


def ratio_problems(n_train_labelled: int, ratios: list[float], val_fraction: float, where: str) -> list[str]:
    """One message per MOS ratio that leaves too few calibration or held-out images (the rule of sample_mos_subset)."""
    from leaf_steps.training.mos_subsets import MIN_TRAIN, MIN_VAL, subset_sizes

    out = []
    for ratio in ratios:
        if ratio <= 0:
            continue
        k, n_val = subset_sizes(n_train_labelled, ratio, val_fraction)
        if k - n_val < MIN_TRAIN or (val_fraction > 0 and n_val < MIN_VAL):
            out.append(
                f"calibration.ratios: {ratio:g} of the {n_train_labelled} labelled training images {where} is "
                f"{k} image(s) ({k - n_val} to calibrate on, {n_val} held out by calibration.val_fraction="
                f"{val_fraction:g}); need >= {MIN_TRAIN} and >= {MIN_VAL}. A ratio applies to the labelled "
                "training images: label more images, or use a larger ratio"
            )
    return out


def known_label_counts(config: Mapping[str, Any]) -> tuple[int, int, str] | None:
    """(labelled training images, labelled test images, where the count comes from), or None when unknowable
    before the dataset step runs. Published counts for the benchmarks; a folder's MOS CSV rows."""
    from leaf_steps.datasets import get_dataset
    from leaf_steps.datasets.common import read_csv_strings, test_count

    ds = config["dataset"]
    name = ds["name"]
    fraction = ds.get("test_fraction", 0.2)
    if name == "demo":
        return None
    options = ds.get("options") or {}
    if name == "folder":
        csv = options.get("mos_csv")
        if not csv or not Path(str(csv)).expanduser().is_file():
            return None if csv else (0, 0, "(dataset.options.mos_csv not set)")
        n = read_csv_strings(Path(str(csv)).expanduser()).height
        n_test = test_count(n, fraction)
        return n - n_test, n_test, f"({n} rows in {csv})"
    adapter = get_dataset(name)
    if name == "koniq10k" and options.get("split", "official") == "official":
        counts = adapter.OFFICIAL_COUNTS
        return counts["train"], counts["test"], "(KonIQ-10k's official split)"
    published = (
        options.get("expected_count")
        or getattr(adapter, "PUBLISHED_IMAGES", None)
        or getattr(adapter, "PUBLISHED_LABELLED", None)
    )
    if not published:
        return None
    n_test = test_count(published, fraction)
    return published - n_test, n_test, f"(of {published} published labelled images)"


def main(argv: Sequence[str] | None = None) -> None:
    """``leaf validate-config FILE``: every block checked, warnings on stderr, ``FILE: ok`` when valid."""
    ap = argparse.ArgumentParser(
        prog="leaf validate-config",
        description="validate a config file without running "
        "anything: the schema, each teacher block by its backend, dataset.options by the "
        "dataset's adapter, and the label counts the MOS ratios need where they are known",
    )
    ap.add_argument("config")
    a = ap.parse_args(argv)
    config = load_config(a.config)
    for warning in config_warnings(config):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{a.config}: ok")
