"""Dataset adapters: fetch (download or check what the user placed) and prepare (manifest).

Each adapter module exposes ``NAME``, ``OPTIONS`` (the ``dataset.options`` keys it reads, with a
line of help each: config validation refuses any other key), ``fetch(root, settings, client=None)
-> dict`` (the facts recorded in the download marker) and ``prepare(root, settings,
images_dir=None) -> Prepared`` (the manifest frame without image sizes, the label files' sha256
and the split protocol); optionally ``check_options(settings)`` (value checks run at config
validation) and ``derive(frame, root, settings, images_dir)`` (derived copies of the images that
passed the image check, e.g. SPAQ's resized photos). ``root`` is ``<resources_dir>/<name>``.

The adapters are imported here statically (they are light; openpyxl is imported only when
SPAQ's workbook is read) so that the step code hash (``leaf_steps.core.codehash``) covers them and
editing an adapter reruns the dataset steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

from leaf_steps.core.errors import ConfigError
from leaf_steps.core.errors import did_you_mean as closest
from leaf_steps.datasets import agiqa3k, aigiqa20k, folder, koniq10k, spaq
from leaf_steps.datasets.common import DatasetSettings

DATASETS: dict[str, ModuleType] = {m.NAME: m for m in (koniq10k, spaq, agiqa3k, aigiqa20k, folder)}


def get_dataset(name: str) -> ModuleType:
    """The adapter module of dataset ``name``; an unknown name is a ConfigError naming ``dataset.name``."""
    if name not in DATASETS:
        raise ConfigError(
            f"dataset.name: {name!r} has no download/prepare adapter; known: {sorted(DATASETS)} "
            "(the embedded demo data set is built by its own step, make_demo_dataset)"
        )
    return DATASETS[name]


def dataset_settings(name: str, raw: Mapping[str, Any]) -> DatasetSettings:
    """The ``dataset`` block of dataset ``name`` as its steps read it; an option the adapter does not
    declare is a ConfigError naming it, with the closest declared key."""
    adapter = get_dataset(name)
    settings = DatasetSettings.from_mapping(raw, name)
    for key in settings.options:
        if key not in adapter.OPTIONS:
            known = ", ".join(sorted(adapter.OPTIONS)) or "none"
            raise ConfigError(
                f"dataset.options.{key}: not an option of dataset {name}{closest(key, adapter.OPTIONS)}; "
                f"its options: {known} (docs/datasets.md)"
            )
    return DatasetSettings(**{**settings.__dict__, "declared": frozenset(adapter.OPTIONS)})


def check_dataset_settings(name: str, raw: Mapping[str, Any]) -> DatasetSettings:
    """Everything about the ``dataset`` block that can be checked without reading the data (config validation)."""
    settings = dataset_settings(name, raw)
    check = getattr(get_dataset(name), "check_options", None)
    if check is not None:
        check(settings)
    return settings
