"""What the dataset stage reads, as one cheap fingerprint (names, sizes, mtimes; nothing hashed).

The dataset rules take this as a params value, computed when Snakemake builds the DAG (and again
right before the job runs, once its inputs exist), so that adding, removing, renaming or editing
an image, or fixing a row of a label file, reruns the dataset stage and what it reaches, and
nothing else. Only the files an adapter reads count: images (every extension the folder scan
takes), label and split files (.csv, .xlsx) and archives; hidden entries (LEAF's stamps, sha256
sidecars, the image-check cache) and the folders LEAF writes derived copies into are skipped.
One ``os.scandir`` walk with ``stat`` per file: tens of milliseconds per 10,000 files.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from leaf_steps.datasets.common import ARCHIVE_SUFFIXES, IMAGE_EXTENSIONS

LABEL_SUFFIXES = (".csv", ".xlsx")
READ_SUFFIXES = IMAGE_EXTENSIONS + ARCHIVE_SUFFIXES + LABEL_SUFFIXES
# Folders below <resources>/<dataset>/ that the dataset steps write themselves (SPAQ's resized copies).
WRITTEN_DIRS = ("derived", "resized")


def _walk(root: Path, skip_dirs: tuple[str, ...]) -> Iterator[tuple[str, int, int]]:
    """(relative posix path, size, mtime_ns) of every read file below ``root``, hidden entries skipped."""
    stack = [(root, "")]
    while stack:
        folder, rel = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            name = f"{rel}{entry.name}"
            try:
                if entry.is_dir():
                    if not (rel == "" and entry.name in skip_dirs):
                        stack.append((Path(entry.path), name + "/"))
                elif entry.name.lower().endswith(READ_SUFFIXES):
                    st = entry.stat()
                    yield name, st.st_size, st.st_mtime_ns
            except OSError:  # vanished while walking: counts as absent
                continue


def read_paths(name: str, settings: Mapping[str, Any], resources_dir: str | Path) -> list[tuple[Path, tuple[str, ...]]]:
    """(file or folder, top-level folders to skip) that the dataset steps of ``name`` read."""
    if name == "folder":
        options = settings.get("options") or {}
        paths = [Path(str(options.get("images_dir") or "")).expanduser()]
        if options.get("mos_csv"):
            paths.append(Path(str(options["mos_csv"])).expanduser())
        return [(p, ()) for p in paths]
    return [(Path(resources_dir) / name, WRITTEN_DIRS)]


def dataset_fingerprint(name: str, settings: Mapping[str, Any], resources_dir: str | Path) -> str:
    """``<files>:<sha256 prefix>`` over the names, sizes and mtimes of every file the dataset stage reads."""
    digest = hashlib.sha256()
    files = 0
    for path, skip in read_paths(name, settings, resources_dir):
        digest.update(f"\0root {path}\0".encode())
        if path.is_dir():
            for rel, size, mtime in sorted(_walk(path, skip)):
                digest.update(f"{rel}\0{size}\0{mtime}\n".encode())
                files += 1
        elif path.is_file():
            st = path.stat()
            digest.update(f"{st.st_size}\0{st.st_mtime_ns}\n".encode())
            files += 1
        else:
            digest.update(b"missing\n")
    return f"{files} files:{digest.hexdigest()[:16]}"
