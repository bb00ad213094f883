"""Shared pieces of the student stages (:mod:`leaf_steps.distill`, :mod:`leaf_steps.calibrate`).

- Settings: the ``student`` / ``distill`` / ``calibration`` blocks of a ``--settings`` JSON are
  validated against the same JSON schema as the pipeline config, with its defaults filled.
- Model: ``timm.create_model(name, pretrained=..., num_classes=1)``. ``pretrained: true``
  goes through timm's normal Hugging Face Hub download (honouring ``HF_HOME`` /
  ``HF_HUB_OFFLINE``), so a cluster with a populated cache or network works as usual; a
  failed fetch is a :class:`ConfigError` naming ``student.pretrained``.
- Images: rows of the manifest (``image_id``, ``path``) become :class:`ImageRow`; a missing
  or undecodable file is an :class:`InputError` naming the file, the manifest and the row.
  Images are converted to RGB.
- Transforms (paper Sec. 4.1): every image is first resized so its shorter side is
  ``resize`` (aspect kept). Training then takes a ``RandomResizedCrop(crop)`` with scale
  (0.5, 1) -- a milder range than torchvision's default (0.08, 1), because blowing a tiny
  patch up to ``crop`` pixels blurs it and so changes the very quality being learned --
  and a random horizontal flip; evaluation takes ``CenterCrop(crop)``. Both normalise
  with the ImageNet mean/std. The deterministic resize happens inside the dataset so
  that its output can be cached in memory across epochs (in-process loading only, up
  to a byte budget): small datasets are then decoded once, not once per epoch.
- Runtime: device choice ``auto|cpu|cuda``, bf16 autocast on CUDA when ``amp`` is set
  (never on CPU), AdamW via timm (no weight decay on biases and norm layers), cosine
  learning-rate decay per epoch, full seeding (same seed -> same weights on CPU).
- Checkpoints: safetensors with string metadata (model name, stage, settings hash,
  settings JSON, output units); :func:`load_checkpoint` rebuilds the timm model from it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import polars as pl
import torch
from PIL import Image

from leaf_steps.config import load_schema
from leaf_steps.errors import ConfigError, InputError
from leaf_steps.images import load_rgb
from leaf_steps.io import atomic_write_bytes, read_parquet, stable_hash
from leaf_steps.progress import progress  # noqa: F401  (used here and as st.progress by the stages)

log = logging.getLogger("leaf.student")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRAIN_CROP_SCALE = (0.5, 1.0)
DEVICES = ("auto", "cpu", "cuda")
# Resized images kept in memory across epochs (per process); beyond this, images are re-decoded.
DEFAULT_CACHE_BYTES = 2 * 1024**3


# --------------------------------------------------------------------------- settings

def settings_block(settings: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``settings[key]`` validated against the config schema's ``key`` block, defaults filled."""
    block = settings.get(key)
    if not isinstance(block, dict):
        raise ConfigError(f"settings.{key}: missing or not a mapping (got {type(block).__name__})")
    schema = load_schema()["properties"][key]
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(block), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = ".".join([key, *map(str, err.absolute_path)])
        raise ConfigError(f"settings.{where}: {err.message}")
    filled = {k: sub["default"] for k, sub in schema.get("properties", {}).items() if "default" in sub}
    filled.update(block)
    return filled


def student_block(settings: Any) -> dict[str, Any]:
    """The ``student`` block of a stage's settings JSON, checked the same way for both stages."""
    if not isinstance(settings, dict):
        raise ConfigError(f"--settings: expected a JSON object, got {type(settings).__name__}")
    student = settings_block(settings, "student")
    if student["crop"] > student["resize"]:
        raise ConfigError(f"settings.student.crop ({student['crop']}) must be <= student.resize ({student['resize']})")
    return student


def settings_flag(settings: Mapping[str, Any], key: str, default: bool) -> bool:
    value = settings.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigError(f"settings.{key}: expected true/false, got {value!r}")
    return value


def settings_seed(settings: Mapping[str, Any], default: int) -> int:
    value = settings.get("seed", default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"settings.seed: expected a non-negative integer, got {value!r}")
    return value


def settings_model_name(settings: Mapping[str, Any], student: Mapping[str, Any]) -> str:
    """The variant's ``student_model`` overrides ``student.model``."""
    name = settings.get("student_model") or student["model"]
    if not isinstance(name, str):
        raise ConfigError(f"settings.student_model: expected a timm model name, got {name!r}")
    return name


# --------------------------------------------------------------------------- runtime

def choose_device(name: str | None) -> torch.device:
    name = name or "auto"
    if name not in DEVICES:
        raise ConfigError(f"settings.device: {name!r} is not one of {list(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("settings.device: 'cuda' requested but no CUDA device is available to torch")
    return torch.device(name)


def use_amp(device: torch.device, amp: bool) -> bool:
    """bf16 autocast is used on CUDA only; on CPU it is slower than float32 and changes results."""
    return bool(amp) and device.type == "cuda"


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if use_amp(device, amp):
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels.

    On CPU this makes a run bit-for-bit repeatable for a fixed thread count; on CUDA it
    removes the usual sources of nondeterminism (cuDNN autotuning, atomics where torch
    has a deterministic alternative) -- ``warn_only`` keeps ops without one usable.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW; timm leaves biases and normalisation parameters out of weight decay."""
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model, opt="adamw", lr=lr, weight_decay=weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay stepped once per epoch: epoch e uses lr * (1 + cos(pi e / epochs)) / 2."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs))


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def batch_indices(order: Sequence[int], batch_size: int) -> list[list[int]]:
    """Consecutive batches of ``order``; a trailing batch of one joins the previous batch,
    because BatchNorm cannot normalise a single sample in training mode."""
    batches = [list(order[i:i + batch_size]) for i in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches[-2].extend(batches.pop())
    return batches


def copy_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- model

def build_model(name: str, pretrained: bool) -> torch.nn.Module:
    """A timm regressor with one output. Fails clearly for an unknown name or unfetchable weights."""
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
        raise ConfigError(f"student.model: {name!r} is not a timm model" + (f" (similar: {close})" if close else ""))
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=1)
    except Exception as exc:
        if not pretrained:
            raise
        raise ConfigError(
            f"student.pretrained: could not fetch pretrained weights for {name!r} through timm / the "
            f"Hugging Face Hub ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Pre-populate the Hub cache (HF_HOME) on a machine with network access, or set "
            "student.pretrained: false") from exc


def output_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The final layer producing the single score (timm's classifier)."""
    layer = model.get_classifier()
    if not hasattr(layer, "weight") or getattr(layer, "bias", None) is None:
        raise ConfigError(f"student.model: the classifier of {type(model).__name__} ({layer}) has no weight "
                          "and bias to calibrate; pick a timm model with a linear head")
    return layer


@torch.no_grad()
def fold_affine_into_head(model: torch.nn.Module, scale: float, shift: float) -> None:
    """Make the model output ``scale * old_output + shift`` by rescaling the last layer."""
    layer = output_layer(model)
    layer.weight.mul_(scale)
    layer.bias.mul_(scale).add_(shift)


# --------------------------------------------------------------------------- checkpoints

def save_checkpoint(model: torch.nn.Module, path: str | Path, *, model_name: str, stage: str,
                    settings: Mapping[str, Any], output_units: str, extra: Mapping[str, Any] | None = None) -> Path:
    """Write the weights as safetensors (atomically) with metadata to rebuild and trace the model."""
    from safetensors.torch import save

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "model": model_name,
        "stage": stage,
        "settings_hash": stable_hash(settings),
        "settings": json.dumps(settings, sort_keys=True, default=str),
        "output_units": output_units,
    }
    for key, value in (extra or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path


def read_checkpoint_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:
        raise InputError(f"{path}: not a readable safetensors checkpoint ({exc})") from exc
    if "model" not in meta:
        raise InputError(f"{path}: checkpoint metadata has no 'model' entry (not written by leaf_steps.student)")
    return meta


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, str]]:
    """Rebuild the timm model named in the metadata (no weight download) and load the weights."""
    from safetensors.torch import load_file

    meta = read_checkpoint_metadata(path)
    model = build_model(meta["model"], pretrained=False)
    state = load_file(str(path), device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"{path}: weights do not match timm model {meta['model']!r} ({exc})") from exc
    return model.to(device), meta


# --------------------------------------------------------------------------- images

@dataclass(frozen=True)
class ImageRow:
    """One manifest image, with where it came from for error messages."""

    image_id: str
    path: Path
    row: int            # 0-based row in the manifest file
    manifest: str

    def where(self) -> str:
        return f"manifest {self.manifest}, row {self.row}, image_id {self.image_id!r}"


MANIFEST_COLUMNS = ("image_id", "path", "split")


def read_manifest(path: str | Path) -> pl.DataFrame:
    """The manifest with a ``row`` column (0-based file row); image ids must be unique and non-null."""
    df = read_parquet(path, required=MANIFEST_COLUMNS).with_row_index("row")
    for col in ("image_id", "path", "split"):
        nulls = df.filter(pl.col(col).is_null())
        if nulls.height:
            raise InputError(f"{path}: row {nulls['row'][0]}: {col} is null")
    dup = df.filter(pl.col("image_id").is_duplicated())
    if dup.height:
        raise InputError(f"{path}: row {dup['row'][0]}: image_id {dup['image_id'][0]!r} is not unique")
    return df


def resolve_image_path(raw: str, manifest: str | Path) -> Path:
    """Absolute paths as written; relative ones against the working directory (where
    Snakemake runs), falling back to the manifest's folder."""
    p = Path(raw)
    if p.is_absolute() or p.exists():
        return p
    beside = Path(manifest).parent / p
    return beside if beside.exists() else p


def image_rows(manifest_df: pl.DataFrame, manifest_path: str | Path, ids: Iterable[str] | None = None) -> list[ImageRow]:
    """ImageRows for ``ids`` (in that order) or for the whole manifest."""
    by_id = {r["image_id"]: r for r in manifest_df.select("image_id", "path", "row").iter_rows(named=True)}
    wanted = list(by_id) if ids is None else list(ids)
    rows = []
    for image_id in wanted:
        r = by_id.get(image_id)
        if r is None:
            raise InputError(f"{manifest_path}: image_id {image_id!r} is not in the manifest")
        rows.append(ImageRow(image_id, resolve_image_path(r["path"], manifest_path), int(r["row"]), str(manifest_path)))
    return rows


def check_images_exist(rows: Iterable[ImageRow]) -> None:
    """Fail before training, not hours into it, when an image file is missing."""
    missing = [r for r in rows if not r.path.is_file()]
    if missing:
        first = missing[0]
        more = f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else ""
        raise InputError(f"{first.path}: image file not found ({first.where()}){more}")


def load_image(row: ImageRow) -> Image.Image:
    """Decode one image to RGB; any failure names the file and its manifest row."""
    try:
        return load_rgb(row.path)
    except InputError as exc:
        raise InputError(f"{exc} ({row.where()})") from exc


class ImageCache:
    """Resized images kept in memory up to a byte budget (first come, first kept)."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: dict[tuple[str, int], Image.Image] = {}

    def get(self, key: tuple[str, int]) -> Image.Image | None:
        return self._items.get(key)

    def put(self, key: tuple[str, int], image: Image.Image) -> None:
        size = image.width * image.height * len(image.getbands())
        if self.bytes + size <= self.max_bytes:
            self._items[key] = image
            self.bytes += size


def train_transform(crop: int):
    from torchvision import transforms as T

    return T.Compose([
        T.RandomResizedCrop(crop, scale=TRAIN_CROP_SCALE, antialias=True),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(crop: int):
    from torchvision import transforms as T

    return T.Compose([T.CenterCrop(crop), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


class ImageDataset(torch.utils.data.Dataset):
    """Item i -> (transformed image tensor, i). The shorter-side resize to ``resize`` is done
    here (deterministic, so cacheable); ``transform`` is the rest (crop, flip, normalise)."""

    def __init__(self, rows: Sequence[ImageRow], transform, resize: int, cache: ImageCache | None = None):
        self.rows = list(rows)
        self.transform = transform
        self.resize = resize
        self.cache = cache

    def __len__(self) -> int:
        return len(self.rows)

    def resized(self, i: int) -> Image.Image:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        row = self.rows[i]
        key = (str(row.path), self.resize)
        image = self.cache.get(key) if self.cache is not None else None
        if image is None:
            image = TF.resize(load_image(row), self.resize, interpolation=InterpolationMode.BILINEAR, antialias=True)
            if self.cache is not None:
                self.cache.put(key, image)
        return image

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.resized(i)), i


def make_loader(dataset: ImageDataset, batches: Sequence[Sequence[int]], num_workers: int, seed: int,
                device: torch.device) -> torch.utils.data.DataLoader:
    """A loader that yields exactly ``batches`` (lists of dataset indices), in order.
    Worker RNGs derive from ``seed``, so augmentations repeat with the seed."""
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=[list(b) for b in batches], num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed), pin_memory=device.type == "cuda",
    )


def shared_cache(num_workers: int) -> ImageCache | None:
    """In-process loading shares one cache across epochs; worker processes would each keep
    their own copy (and lose it every epoch), so they decode instead."""
    return ImageCache() if num_workers == 0 else None


@torch.inference_mode()
def predict(model: torch.nn.Module, rows: Sequence[ImageRow], *, resize: int, crop: int,
            device: torch.device | str = "cpu", batch_size: int = 64, amp: bool = False,
            num_workers: int = 0, cache: ImageCache | None = None, desc: str = "predict") -> np.ndarray:
    """Scores of ``rows`` (eval transform, eval mode) as float64, in row order."""
    device = torch.device(device)
    if not rows:
        return np.zeros(0, dtype=np.float64)
    model.eval()
    dataset = ImageDataset(rows, eval_transform(crop), resize, cache)
    loader = make_loader(dataset, batch_indices(range(len(rows)), batch_size), num_workers, 0, device)
    out = np.empty(len(rows), dtype=np.float64)
    for images, idx in progress(loader, total=len(loader), desc=desc):
        with autocast(device, amp):
            scores = model(images.to(device, non_blocking=True)).reshape(-1)
        out[idx.numpy()] = scores.float().cpu().numpy()
    return out


# --------------------------------------------------------------------------- metrics

def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """SRCC; NaN when undefined (fewer than 2 values or a constant vector)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(spearmanr(x, y).statistic)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """PLCC; NaN when undefined (fewer than 2 values or a constant vector)."""
    from scipy.stats import pearsonr

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(pearsonr(x, y).statistic)


def finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)
