"""Dataset adapters: fetch (download or check what the user placed) and prepare (manifest).

Each adapter module exposes ``NAME``, ``fetch(root, settings, client=None) -> dict`` (the
facts recorded in the ``.ready.json`` marker) and ``prepare(root, settings, images_dir=None)
-> Prepared`` (the manifest frame, the label files' sha256 and the split protocol). ``root``
is ``<resources_dir>/<name>``.

The adapters are imported here statically (they are light; openpyxl is imported only when
SPAQ's workbook is read) so that the step code hash (``leaf_steps.codehash``) covers them and
editing an adapter reruns the dataset steps.
"""

from __future__ import annotations

from types import ModuleType

from leaf_steps.datasets import agiqa3k, aigiqa20k, folder, koniq10k, spaq
from leaf_steps.errors import ConfigError

DATASETS: dict[str, ModuleType] = {m.NAME: m for m in (koniq10k, spaq, agiqa3k, aigiqa20k, folder)}


def get_dataset(name: str) -> ModuleType:
    """The adapter module of dataset ``name``; an unknown name is a ConfigError naming ``dataset.name``."""
    if name not in DATASETS:
        raise ConfigError(f"dataset.name: {name!r} has no download/prepare adapter; known: {sorted(DATASETS)} "
                          "(the embedded demo data set is built by its own step, make_demo_dataset)")
    return DATASETS[name]
