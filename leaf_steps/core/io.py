"""Parquet artifacts: atomic writes, provenance metadata, clear read errors.

Every artifact carries a JSON blob under the schema metadata key ``leaf`` with the
step that wrote it, the values it depended on, library versions and the sha256 of the
environment lock, so that ``leaf inspect`` (and a curious user with pyarrow) can tell
where a file came from.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from leaf_steps import __version__
from leaf_steps.core.errors import InputError

PROVENANCE_KEY = b"leaf"


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-serialisable value, independent of dict key order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


# The pinned environment `make demo`/`make test` install (`make lock`, README "Environments"): in a checkout it
# lies beside the package; an install from a wheel has none.
LOCK_FILE = Path(__file__).resolve().parents[2] / "requirements" / "lock.txt"


@lru_cache(maxsize=1)
def lock_sha256() -> str | None:
    """sha256 of the checkout's requirements/lock.txt (as ``sha256sum`` prints it; hashed once per process),
    None where there is none. Provenance metadata only: never in a rule's params, so a new lock reruns nothing."""
    try:
        return hashlib.sha256(LOCK_FILE.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    versions = {
        "leaf": __version__,
        "python": platform.python_version(),
        "polars": pl.__version__,
        "pyarrow": pa.__version__,
        "lock_sha256": lock_sha256(),
    }
    for name in ("torch", "timm", "transformers", "numpy"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = getattr(module, "__version__", "?")
    return versions


def make_provenance(step: str, **values: Any) -> dict[str, Any]:
    return {
        "step": step,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": library_versions(),
        **values,
    }


def current_umask() -> int:
    """The process umask, read without changing it where the OS says it (Linux /proc), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def _atomic_target(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files whatever the umask; an artifact is shared like any file the user
        # writes (colleagues on a cluster read results), so it gets the umask's mode before the rename.
        os.fchmod(fd, new_file_mode())
    finally:
        os.close(fd)
    return Path(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_parquet(df: pl.DataFrame, path: str | Path, provenance: dict[str, Any]) -> Path:
    """Write ``df`` to ``path`` atomically (temp file + rename) with provenance metadata."""
    path = Path(path)
    table = df.to_arrow()
    meta = dict(table.schema.metadata or {})
    meta[PROVENANCE_KEY] = json.dumps(provenance, sort_keys=True, default=str).encode()
    table = table.replace_schema_metadata(meta)
    tmp = _atomic_target(path)
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_parquet(path: str | Path, required: Iterable[str] = ()) -> pl.DataFrame:
    """Read one artifact; a missing/corrupt file or a missing column names the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # pyarrow/polars raise several types for corrupt files
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; has {df.columns}")
    return df


def read_provenance(path: str | Path) -> dict[str, Any]:
    meta = pq.read_schema(path).metadata or {}
    blob = meta.get(PROVENANCE_KEY)
    return json.loads(blob) if blob else {}


def read_shards(paths: Iterable[str | Path], required: Iterable[str] = ()) -> pl.DataFrame:
    frames = [read_parquet(p, required) for p in paths]
    if not frames:
        raise InputError("no shard files given")
    return pl.concat(frames, how="vertical_relaxed")


def parquet_files(path: str | Path) -> list[Path]:
    """A Parquet file, or every ``*.parquet`` below a folder (sorted)."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))
    if not path.exists():
        raise InputError(f"{path}: file not found")
    return [path]


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
