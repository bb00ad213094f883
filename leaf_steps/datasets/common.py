"""Shared machinery of the dataset adapters: settings, downloads, archives, label checks, splits.

Every adapter (koniq10k, spaq, agiqa3k, aigiqa20k, folder) reduces to: find or fetch the
files, parse the label file into (name, mos, extras), locate each image, split, and emit the
manifest (image_id, path, mos, split, width, height, extras). The pieces they share live here
so that each adapter module only states its dataset's facts.
"""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tarfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import polars as pl

from leaf_steps.core.errors import ConfigError, InputError, LeafError
from leaf_steps.core.io import atomic_write_text, write_json
from leaf_steps.images import DEFAULT_MAX_PIXELS, probe
from leaf_steps.images.check import DEFAULT_MAX_ASPECT_RATIO, DEFAULT_MIN_SIDE, Limits

log = logging.getLogger("leaf.datasets")
T = TypeVar("T")

# Raster formats Pillow decodes itself (no plugin, no Ghostscript). A file with one of these
# extensions is an image: it is used, or reported by name when it cannot be (leaf_steps.images).
IMAGE_EXTENSIONS = (
    ".apng",
    ".avif",
    ".bmp",
    ".dib",
    ".gif",
    ".j2k",
    ".jfif",
    ".jp2",
    ".jpe",
    ".jpeg",
    ".jpg",
    ".jpx",
    ".pbm",
    ".pgm",
    ".png",
    ".pnm",
    ".ppm",
    ".qoi",
    ".tga",
    ".tif",
    ".tiff",
    ".webp",
)
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
MANIFEST_COLUMNS = ("image_id", "path", "mos", "split", "width", "height")
SPLITS = ("train", "val", "test")
BAD_IMAGE_ACTIONS = ("fail", "drop")
# dataset.options every adapter of a hand-placed or downloaded benchmark takes (not folder).
RELEASE_OPTIONS = {
    "checksums": "file name (or path relative to the dataset folder) -> sha256 hex; a mismatch is an error",
    "expected_count": "number of labelled images; makes the count check strict (default: warn only)",
}
DOWNLOADS_DIRNAME = "downloads"
CACHE_HASH_MIN_BYTES = 16 << 20  # below this, hashing again is cheaper than a sidecar file


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class DatasetSettings:
    """The config ``dataset`` block as the dataset steps receive it (``--settings`` JSON)."""

    name: str
    split_seed: int = 0
    test_fraction: float = 0.2
    options: Mapping[str, Any] = field(default_factory=dict)
    # The image check (leaf_steps.images.check): what to do with unusable images, and the limits.
    on_bad_image: str = "fail"
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_side: int | None = None  # None: DEFAULT_MIN_SIDE (the workflow passes the value resolved for its teachers)
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
    # The adapter's declared option keys (its OPTIONS); reading another key is a bug, caught in tests.
    declared: frozenset[str] | None = None

    @classmethod
    def from_mapping(cls, raw: Any, dataset: str) -> DatasetSettings:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"dataset: settings must be a mapping, got {type(raw).__name__}")
        name = raw.get("name", dataset)
        if name != dataset:
            raise ConfigError(f"dataset.name: settings say {name!r} but the step was run with --dataset {dataset}")
        seed = raw.get("split_seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"dataset.split_seed: must be an integer >= 0, got {seed!r}")
        fraction = raw.get("test_fraction", 0.2)
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise ConfigError(f"dataset.test_fraction: must be a number in (0, 1), got {fraction!r}")
        options = raw.get("options") or {}
        if not isinstance(options, Mapping):
            raise ConfigError(f"dataset.options: must be a mapping, got {type(options).__name__}")
        on_bad = raw.get("on_bad_image", "fail")
        if on_bad not in BAD_IMAGE_ACTIONS:
            raise ConfigError(f"dataset.on_bad_image: must be one of {list(BAD_IMAGE_ACTIONS)}, got {on_bad!r}")
        max_pixels = raw.get("max_pixels", DEFAULT_MAX_PIXELS)
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or not 0 < max_pixels <= DEFAULT_MAX_PIXELS:
            raise ConfigError(
                f"dataset.max_pixels: must be an integer in 1..{DEFAULT_MAX_PIXELS:,} (the limit every "
                f"later stage's decoder applies; it can be lowered, not raised), got {max_pixels!r}"
            )
        min_side = raw.get("min_side")
        if min_side is not None and (isinstance(min_side, bool) or not isinstance(min_side, int) or min_side < 1):
            raise ConfigError(f"dataset.min_side: must be an integer >= 1 or null, got {min_side!r}")
        ratio = raw.get("max_aspect_ratio", DEFAULT_MAX_ASPECT_RATIO)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio >= 1 or not math.isfinite(ratio):
            raise ConfigError(f"dataset.max_aspect_ratio: must be a number >= 1, got {ratio!r}")
        return cls(
            name=name,
            split_seed=seed,
            test_fraction=float(fraction),
            options=dict(options),
            on_bad_image=on_bad,
            max_pixels=max_pixels,
            min_side=min_side,
            max_aspect_ratio=float(ratio),
        )

    @property
    def limits(self) -> Limits:
        return Limits(
            max_pixels=self.max_pixels,
            min_side=self.min_side or DEFAULT_MIN_SIDE,
            max_aspect_ratio=self.max_aspect_ratio,
        )

    def option(
        self,
        key: str,
        default: Any = None,
        *,
        choices: Sequence[Any] | None = None,
        kind: type | tuple[type, ...] | None = None,
    ) -> Any:
        """One entry of ``dataset.options``; a wrong value is a ConfigError naming the key."""
        if self.declared is not None and key not in self.declared:
            raise LeafError(f"dataset {self.name}: its adapter reads options.{key} but does not declare it in OPTIONS")
        value = self.options.get(key, default)
        if choices is not None and value not in choices:
            raise ConfigError(f"dataset.options.{key}: must be one of {list(choices)}, got {value!r}")
        if kind is not None and value is not None:
            if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
                raise ConfigError(f"dataset.options.{key}: must be {kind}, got {value!r}")
            if not isinstance(value, kind):
                raise ConfigError(f"dataset.options.{key}: must be {kind}, got {value!r}")
        return value

    def checksums(self) -> dict[str, str]:
        """``options.checksums``: file name (or path relative to the dataset folder) -> sha256 hex."""
        raw = self.options.get("checksums") or {}
        if not isinstance(raw, Mapping):
            raise ConfigError("dataset.options.checksums: must be a mapping of file name -> sha256 hex")
        out = {}
        for key, value in raw.items():
            if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value):
                raise ConfigError(f"dataset.options.checksums.{key}: not a sha256 hex digest: {value!r}")
            out[str(key)] = value.lower()
        return out

    def expected_checksum(self, relpath: str) -> str | None:
        sums = self.checksums()
        return sums.get(relpath) or sums.get(Path(relpath).name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "split_seed": self.split_seed,
            "test_fraction": self.test_fraction,
            "options": dict(self.options),
            "on_bad_image": self.on_bad_image,
            "max_pixels": self.max_pixels,
            "min_side": self.limits.min_side,
            "max_aspect_ratio": self.max_aspect_ratio,
        }


# --------------------------------------------------------------------------- hashing


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256.json")


def cached_sha256(path: Path) -> str:
    """sha256 of a (possibly multi-GB) file, remembered next to it while size and mtime hold.

    Re-checking an already downloaded archive on every run would cost a full read each time.
    """
    stat = path.stat()
    if stat.st_size < CACHE_HASH_MIN_BYTES:
        return sha256_file(path)
    sidecar = _sidecar(path)
    if sidecar.exists():
        try:
            cached = json.loads(sidecar.read_text())
            if cached.get("size") == stat.st_size and cached.get("mtime_ns") == stat.st_mtime_ns:
                return str(cached["sha256"])
        except (ValueError, KeyError):
            pass
    digest = sha256_file(path)
    _remember_sha256(path, digest)
    return digest


def _remember_sha256(path: Path, digest: str) -> None:
    stat = path.stat()
    try:
        atomic_write_text(
            _sidecar(path), json.dumps({"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest})
        )
    except OSError:  # a read-only folder of user-placed files: just hash again next time
        pass


# --------------------------------------------------------------------------- downloads


class _RangeNotSatisfiable(Exception):
    def __init__(self, total: int | None):
        self.total = total


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """(start, total) of a Content-Range header such as ``bytes 100-199/1000`` or ``bytes */1000``."""
    if not header:
        return None, None
    match = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", header)
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


def _stream_into_part(client: httpx.Client, url: str, part: Path) -> None:
    """Append the rest of ``url`` to ``part`` (HTTP Range from its current size)."""
    offset = part.stat().st_size if part.exists() else 0
    # identity: Range offsets then count the file's own bytes, not those of a compressed transfer.
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={offset}-"} if offset else {})}
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code == 416:
            raise _RangeNotSatisfiable(_content_range(response.headers.get("content-range"))[1])
        if response.status_code == 206:
            start, _ = _content_range(response.headers.get("content-range"))
            if start != offset:
                raise LeafError(f"{url}: server resumed at byte {start}, expected {offset}")
            mode = "ab"
        elif response.status_code == 200:
            mode = "wb"  # the server ignored the Range header: start over
            if offset:
                log.info("%s: server does not support resuming; downloading from the start", url)
        else:
            raise LeafError(f"{url}: HTTP {response.status_code} {response.reason_phrase}")
        with open(part, mode) as fh:
            # iter_raw yields bytes as they arrive: a dropped connection loses nothing already received
            # (iter_bytes(chunk_size) would hold up to chunk_size back in its buffer).
            for chunk in response.iter_raw():
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())


def download(
    url: str,
    dest: Path,
    *,
    expected_sha256: str | None = None,
    client: httpx.Client | None = None,
    retries: int = 3,
    retry_wait_s: float = 2.0,
) -> str:
    """Resumable download of ``url`` to ``dest``; returns the file's sha256.

    Bytes go to ``dest.part`` first and are resumed with an HTTP Range request after a dropped
    connection (within this call, up to ``retries`` times) or on the next run. The finished file
    replaces ``dest`` only after the checksum matched (when one is configured), so an existing
    ``dest`` is always complete: it is not fetched again.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        digest = cached_sha256(dest)
        if expected_sha256 and digest != expected_sha256:
            raise InputError(
                f"{dest}: sha256 {digest} does not match the configured {expected_sha256} "
                f"(dataset.options.checksums); delete the file to download it again"
            )
        log.info("%s: already downloaded (sha256 %s)", dest, digest)
        return digest
    part = dest.with_name(dest.name + ".part")
    own_client = client is None
    client = client or httpx.Client(follow_redirects=True, timeout=httpx.Timeout(60.0, connect=30.0))
    try:
        for attempt in range(retries + 1):
            try:
                log.info(
                    "%s -> %s%s",
                    url,
                    dest,
                    f" (resuming at byte {part.stat().st_size})" if part.exists() and part.stat().st_size else "",
                )
                _stream_into_part(client, url, part)
                break
            except _RangeNotSatisfiable as exc:
                size = part.stat().st_size if part.exists() else 0
                if exc.total is not None and exc.total == size:
                    break  # the partial file was already complete
                part.unlink(missing_ok=True)  # inconsistent with the server: start over
                if attempt == retries:
                    raise LeafError(f"{url}: the server refused the resume range {size}-") from None
            except httpx.HTTPError as exc:
                size = part.stat().st_size if part.exists() else 0
                if attempt == retries:
                    raise LeafError(
                        f"{url}: download failed after {retries + 1} attempts ({exc}); "
                        f"rerun to resume from {part} ({size} bytes)"
                    ) from exc
                log.warning("%s: %s; retrying from byte %d", url, exc, size)
                time.sleep(retry_wait_s * (attempt + 1))
    finally:
        if own_client:
            client.close()
    digest = sha256_file(part)
    if expected_sha256 and digest != expected_sha256:
        size = part.stat().st_size
        part.unlink()
        raise InputError(
            f"{url}: sha256 mismatch: expected {expected_sha256} (dataset.options.checksums), "
            f"got {digest} for {size} bytes; the download was removed, rerun to fetch it again"
        )
    os.replace(part, dest)
    _remember_sha256(dest, digest)
    return digest


# --------------------------------------------------------------------------- archives


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and any(name.endswith(s) for s in ARCHIVE_SUFFIXES)


def placed_archives(root: Path) -> list[Path]:
    """Archives the user put in ``root`` or ``root/downloads`` (not deeper: those are contents)."""
    found: list[Path] = []
    for folder in (root, root / DOWNLOADS_DIRNAME):
        if folder.is_dir():
            found.extend(p for p in sorted(folder.iterdir()) if is_archive(p) and not p.name.startswith("."))
    return found


def _merge_into(src: Path, dest: Path) -> None:
    """Move the tree ``src`` into ``dest`` (same filesystem: renames), merging existing folders."""
    dest.mkdir(parents=True, exist_ok=True)
    for entry in src.iterdir():
        target = dest / entry.name
        if entry.is_dir() and target.is_dir():
            _merge_into(entry, target)
        else:
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(entry, target)


def extract_archive(archive: Path, dest: Path, repair_hint: str = "") -> bool:
    """Extract ``archive`` into ``dest`` once; returns False when it was already extracted.

    Extraction goes to a hidden folder inside ``dest`` first and is moved into place only when
    the whole archive read cleanly, so a broken archive leaves no truncated images behind. A
    stamp records the archive's sha256: a rerun skips the work, a changed archive is redone.
    zipfile and tarfile (``filter="data"``) both refuse paths that would escape ``dest``.
    """
    if is_extracted(archive, dest):
        return False
    digest = cached_sha256(archive)
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".extracting.{archive.name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    log.info("extracting %s into %s", archive, dest)
    hint = f"\n{repair_hint}" if repair_hint else ""
    # Go by the suffix: tarfile.is_tarfile() can say yes to a truncated zip.
    as_zip = archive.name.lower().endswith(".zip")
    try:
        if as_zip and zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(staging)
        elif not as_zip and tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(staging, filter="data")
        else:
            raise InputError(f"{archive}: not a readable zip or tar archive (truncated or split into parts?){hint}")
        _merge_into(staging, dest)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        tarfile.TarError,
        EOFError,
        zlib.error,
        NotImplementedError,
    ) as exc:
        raise InputError(f"{archive}: cannot be extracted ({exc}){hint}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_json(dest / f".extracted.{archive.name}.json", {"archive": str(archive), "sha256": digest})
    return True


# --------------------------------------------------------------------------- finding files


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def find_named(root: Path, name: str, *, want_dir: bool = False, exclude: Iterable[Path] = ()) -> list[Path]:
    """Every file (or folder) called ``name`` below ``root``, hidden and excluded folders skipped."""
    if not root.is_dir():
        return []
    excluded = [Path(e).resolve() for e in exclude]
    hits = []
    for path in root.rglob(glob.escape(name)):
        if not _visible(path, root) or (path.is_dir() != want_dir):
            continue
        resolved = path.resolve()
        if any(resolved == e or e in resolved.parents for e in excluded):
            continue
        hits.append(path)
    return sorted(hits)


def find_one(root: Path, name: str, *, want_dir: bool = False, exclude: Iterable[Path] = ()) -> Path | None:
    hits = find_named(root, name, want_dir=want_dir, exclude=exclude)
    if len(hits) > 1:
        listing = "\n  ".join(str(h) for h in hits)
        raise InputError(f"{root}: found {len(hits)} copies of {name!r}; keep one:\n  {listing}")
    return hits[0] if hits else None


def list_images(root: Path, exclude: Iterable[Path] = ()) -> list[Path]:
    """Image files below ``root`` (recursive, common extensions, hidden entries skipped), sorted."""
    excluded = [Path(e).resolve() for e in exclude]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and not any(Path(dirpath, d).resolve() == e for e in excluded)
        )
        for fname in filenames:
            if not fname.startswith(".") and fname.lower().endswith(IMAGE_EXTENSIONS):
                out.append(Path(dirpath, fname))
    return sorted(out)


def index_by_name(paths: Iterable[Path]) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """File name -> path, plus the names that occur more than once (ambiguous)."""
    index: dict[str, Path] = {}
    dupes: dict[str, list[Path]] = {}
    for path in paths:
        if path.name in index:
            dupes.setdefault(path.name, [index[path.name]]).append(path)
        else:
            index[path.name] = path
    return index, dupes


def resolve_images(
    names: Sequence[str],
    index: Mapping[str, Path],
    dupes: Mapping[str, list[Path]],
    label_file: Path,
    line_of: Mapping[str, int],
    searched: Path,
    unit: str = "line",
) -> list[Path]:
    """The image path for each labelled name; missing or ambiguous ones are one InputError."""
    missing = [n for n in names if n not in index]
    if missing:
        shown = ", ".join(f"{n} ({unit} {line_of[n]})" for n in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise InputError(
            f"{label_file}: {len(missing)} of {len(names)} listed image(s) not found under {searched}: {shown}{more}"
        )
    ambiguous = [n for n in names if n in dupes]
    if ambiguous:
        n = ambiguous[0]
        raise InputError(
            f"{label_file}: {unit} {line_of[n]}: image {n!r} exists more than once under {searched}: "
            + ", ".join(str(p) for p in dupes[n])
        )
    return [index[n] for n in names]


# --------------------------------------------------------------------------- label files


def check_utf8(path: Path) -> None:
    """A label file is UTF-8 text. UTF-16 (or binary) is an InputError; other invalid bytes (Latin-1, say)
    are read as replacement characters, with a warning naming the first line: harmless in a prompt, and
    in an image name the name then matches no file, an error naming that line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data[:4096]:
        raise InputError(f"{path}: not UTF-8 text (UTF-16, or a binary file?); save it as CSV in UTF-8")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        log.warning(
            "%s: line %d: not valid UTF-8 (byte 0x%02x; saved as Latin-1 or Windows-1252?); read with "
            "replacement characters (\ufffd). Save the file as UTF-8 if names are affected",
            path,
            line,
            data[exc.start],
        )


def check_field_counts(path: Path, has_header: bool = True) -> None:
    """Every row has as many fields as the header (or, without one, as the first row); else an
    InputError naming the first line that does not, e.g. a prompt with an unquoted comma."""
    check_utf8(path)
    expected, reference, first_line, bad = None, "", 1, []
    try:
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
            reader = csv.reader(fh)
            try:
                for row in reader:
                    start, first_line = first_line, reader.line_num + 1  # a quoted field may span lines
                    if not row:
                        continue  # blank line
                    if expected is None:
                        expected = len(row)
                        reference = "the header" if has_header else f"line {start}"
                    elif len(row) != expected:
                        bad.append((start, len(row)))
            except csv.Error as exc:  # e.g. a field over csv's size limit (an unclosed quote swallows the file)
                raise InputError(
                    f"{path}: line {first_line}: not readable as CSV ({exc}: a field of over 128 KB, "
                    "or an unclosed double quote?)"
                ) from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc
    if bad:
        line, n = bad[0]
        more = f" ({len(bad) - 1} more line(s) like it)" if len(bad) > 1 else ""
        why = (
            'a field with a comma that is not in double quotes? Quote such fields: "a cat, sitting"'
            if n > expected
            else "a missing field?"
        )
        raise InputError(f"{path}: line {line} has {n} fields but {reference} has {expected} ({why}){more}")


def read_csv_strings(path: Path, *, has_header: bool = True, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """A CSV as all-string columns, so that bad values can be reported by line, not mis-typed."""
    if not path.is_file():
        raise InputError(f"{path}: label file not found")
    check_field_counts(path, has_header)
    try:
        df = pl.read_csv(
            path,
            has_header=has_header,
            infer_schema=False,
            new_columns=list(columns) if columns else None,
            encoding="utf8-lossy",
        )
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        # polars appends advice about its own options ("Consider setting ..."), which is no help to a user.
        reason = str(exc).split("\n\n")[0].strip()
        raise InputError(f"{path}: not a readable CSV ({reason})") from exc
    if has_header:
        df = df.rename({c: c.strip().lstrip("\ufeff") for c in df.columns})
    return df


def require_columns(df: pl.DataFrame, path: Path, required: Sequence[str]) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}; has {df.columns}")


def parse_mos_column(values: Sequence[Any], path: Path, column: str, first_line: int, unit: str = "line") -> np.ndarray:
    """Float MOS per row; an empty, non-numeric or non-finite value names its line."""
    out = np.empty(len(values), dtype=np.float64)
    for i, raw in enumerate(values):
        try:
            value = float(raw.strip()) if isinstance(raw, str) else float(raw)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value):
            shown = "''" if raw is None else repr(raw)
            raise InputError(f"{path}: {unit} {first_line + i}: {column} {shown} is not a finite number")
        out[i] = value
    return out


def check_names(names: Sequence[Any], path: Path, column: str, first_line: int, unit: str = "line") -> list[str]:
    """Non-empty, unique image names; returns them stripped."""
    cleaned: list[str] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(names):
        name = (raw if isinstance(raw, str) else ("" if raw is None else str(raw))).strip()
        line = first_line + i
        if not name:
            raise InputError(f"{path}: {unit} {line}: {column} is empty")
        if name in seen:
            raise InputError(f"{path}: {unit} {line}: duplicate {column} {name!r} (first on {unit} {seen[name]})")
        seen[name] = line
        cleaned.append(name)
    return cleaned


# --------------------------------------------------------------------------- images and manifest


def image_size(path: Path) -> tuple[int, int]:
    """Upright (width, height) from the image header, as :func:`leaf_steps.images.load_rgb` will decode it."""
    info = probe(path)
    return info.width, info.height


def test_count(n: int, test_fraction: float) -> int:
    """Images ``random_split`` puts in the test split: round(f*n), at least one image on each
    side when there are two or more."""
    n_test = int(round(test_fraction * n))
    return min(max(n_test, 1), n - 1) if n >= 2 else n_test


def random_split(image_ids: Sequence[str], test_fraction: float, seed: int) -> list[str]:
    """train/test label per id: a seeded permutation of the sorted ids, the first
    ``test_count`` are test. Sorting first makes the split independent of the label file's
    row order.
    """
    n = len(image_ids)
    n_test = test_count(n, test_fraction)
    order = sorted(image_ids)
    perm = np.random.default_rng(seed).permutation(n)
    test = {order[i] for i in perm[:n_test]}
    return ["test" if i in test else "train" for i in image_ids]


def manifest_frame(
    image_ids: Sequence[str],
    paths: Sequence[Path | str],
    mos: Sequence[float | None],
    splits: Sequence[str],
    sizes: Sequence[tuple[int, int]] | None = None,
    extras: Mapping[str, Sequence[Any]] | None = None,
) -> pl.DataFrame:
    """The manifest in its schema: image_id, path, mos (Float64, null = unlabelled), split, width, height, extras.

    ``sizes`` None leaves width/height null: the dataset step fills them from its full decode of
    every image (:mod:`leaf_steps.images.check`).
    """
    sizes = sizes if sizes is not None else [(None, None)] * len(image_ids)
    columns: dict[str, pl.Series] = {
        "image_id": pl.Series("image_id", list(image_ids), dtype=pl.String),
        "path": pl.Series("path", [str(p) for p in paths], dtype=pl.String),
        "mos": pl.Series("mos", [None if m is None else float(m) for m in mos], dtype=pl.Float64),
        "split": pl.Series("split", list(splits), dtype=pl.String),
        "width": pl.Series("width", [s[0] for s in sizes], dtype=pl.Int32),
        "height": pl.Series("height", [s[1] for s in sizes], dtype=pl.Int32),
    }
    for name, values in (extras or {}).items():
        columns[name] = pl.Series(name, list(values))
    df = pl.DataFrame(columns)
    if df["image_id"].is_duplicated().any():
        dup = df.filter(pl.col("image_id").is_duplicated())["image_id"][0]
        raise InputError(f"manifest: image_id {dup!r} occurs more than once")
    bad = set(df["split"].unique().to_list()) - set(SPLITS)
    if bad:
        raise LeafError(f"manifest: unknown split value(s) {sorted(bad)}")
    return df


def split_counts(splits: Iterable[str]) -> dict[str, int]:
    counts = {s: 0 for s in SPLITS}
    for s in splits:
        counts[s] += 1
    return {k: v for k, v in counts.items() if v}


@dataclass
class Prepared:
    """What an adapter's ``prepare`` returns: the manifest and what it was built from."""

    frame: pl.DataFrame
    source_files: dict[str, str]  # label/split file path -> sha256
    protocol: dict[str, Any]


def check_count(found: int, published: int, settings: DatasetSettings, what: str, source: Path) -> list[str]:
    """Compare a count with the published one; strict when ``options.expected_count`` is set.

    Returns warnings (for the marker) when no explicit count was configured: a subset placed on
    purpose stays usable, but the mismatch is on record.
    """
    expected = settings.option("expected_count", None, kind=int)
    if expected is not None:
        if found != expected:
            raise InputError(f"{source}: {found} {what}, but dataset.options.expected_count is {expected}")
        return []
    if found != published:
        msg = (
            f"{source}: {found} {what}; the published dataset has {published} "
            f"(set dataset.options.expected_count to make this an error)"
        )
        log.warning(msg)
        return [msg]
    return []


@dataclass
class Labels:
    """A parsed label file: one row per image, in file order."""

    source: Path
    names: list[str]
    mos: np.ndarray
    line_of: dict[str, int]  # image name -> line (or sheet row) in ``source``, for error messages
    extras: dict[str, list[Any]] = field(default_factory=dict)
    unit: str = "line"

    def __len__(self) -> int:
        return len(self.names)


def labels_from_strings(
    df: pl.DataFrame, path: Path, name_col: str, mos_col: str, first_line: int, unit: str = "line"
) -> Labels:
    """Names and MOS of an all-string table (see :func:`read_csv_strings`), checked row by row."""
    require_columns(df, path, [name_col, mos_col])
    if df.height == 0:
        raise InputError(f"{path}: no data rows")
    names = check_names(df[name_col].to_list(), path, name_col, first_line, unit)
    mos = parse_mos_column(df[mos_col].to_list(), path, mos_col, first_line, unit)
    return Labels(
        source=path, names=names, mos=mos, line_of={n: first_line + i for i, n in enumerate(names)}, unit=unit
    )


# --------------------------------------------------------------------------- user-placed datasets


def print_instructions(text: str) -> None:
    """Tell the user what to fetch by hand; stdout, so it shows in the Snakemake job log."""
    print(text.rstrip() + "\n", flush=True)


def require_placed_file(root: Path, name: str, instructions: str) -> Path:
    """The one user-placed file called ``name`` below ``root``; its absence explains what to fetch."""
    found = find_one(root, name, exclude=[root / DOWNLOADS_DIRNAME])
    if found is None:
        placed = ", ".join(a.name for a in placed_archives(root)) or "no archive"
        raise InputError(
            f"{root}: {name!r} not found (looked in the extracted folders and in {placed}).\n{instructions.rstrip()}"
        )
    return found


def is_extracted(archive: Path, dest: Path) -> bool:
    stamp = dest / f".extracted.{archive.name}.json"
    try:
        return stamp.exists() and json.loads(stamp.read_text()).get("sha256") == cached_sha256(archive)
    except ValueError:
        return False


def load_placed(root: Path, attempt: Callable[[], T], repair_hint: str = "") -> tuple[T, list[str]]:
    """Run ``attempt`` (find + parse + check) on what the user placed, extracting archives if needed.

    Placed archives are extracted only when the check fails and they were not extracted
    before, so a folder extracted by hand is used as is. An archive that cannot be read
    (a split zip, say) is reported together with what is still missing. Returns the result
    and the archives seen (their sha256 goes into the marker).
    """
    archives = placed_archives(root)
    try:
        return attempt(), [str(a) for a in archives]
    except InputError:
        pending = [a for a in archives if not is_extracted(a, root)]
        if not pending:
            raise
    failures = []
    for archive in pending:
        try:
            extract_archive(archive, root, repair_hint)
        except InputError as exc:
            failures.append(str(exc))
    try:
        return attempt(), [str(a) for a in archives]
    except InputError as exc:
        if failures:
            raise InputError("\n".join(failures) + f"\nAfter extracting the readable archives: {exc}") from exc
        raise


def verify_placed_checksums(root: Path, settings: DatasetSettings) -> dict[str, str]:
    """Check every ``options.checksums`` entry against the placed file (path relative to root, or a name)."""
    results = {}
    for key, expected in settings.checksums().items():
        path = root / key
        if not path.is_file():
            path = find_one(root, Path(key).name) or path
        if not path.is_file():
            raise InputError(f"{root / key}: not found, but dataset.options.checksums.{key} is configured")
        digest = cached_sha256(path)
        if digest != expected:
            raise InputError(f"{path}: sha256 {digest} does not match dataset.options.checksums.{key} = {expected}")
        results[str(path.relative_to(root))] = digest
    return results


def relative_hashes(root: Path, paths: Iterable[Path | str]) -> dict[str, str]:
    out = {}
    for p in paths:
        p = Path(p)
        key = str(p.relative_to(root)) if p.is_relative_to(root) else str(p)
        out[key] = cached_sha256(p)
    return out


def check_placed(root: Path, settings: Any, load: Any, instructions_text: str) -> dict[str, Any]:
    """The ``fetch`` of a hand-placed dataset: say what to fetch, then check what the user put in ``root``.

    ``load(root, settings)`` returns (labels, image paths, extracted archives, warnings) and raises
    InputError naming what is missing.
    """
    print_instructions(instructions_text)
    root.mkdir(parents=True, exist_ok=True)
    labels, paths, archives, warnings = load(root, settings)
    return {
        "files": relative_hashes(root, archives),
        "checksums_verified": verify_placed_checksums(root, settings),
        "label_files": relative_hashes(root, [labels.source]),
        "images": len(paths),
        "images_dir": str(paths[0].parent) if paths else None,
        "warnings": warnings,
    }
