"""A trained student ready to score: from a LEAF checkpoint, a timm export folder or an ONNX file.

Whatever the form, a :class:`Predictor` carries the scorer (uint8 batch -> float64 scores), the
eval transform the model was trained with, the output units ("mos" after calibration,
"teacher_score" label-free) and the model id. The id is ``<architecture>-<stage>-<sha256 of
the checkpoint file, 12 hex>``; the exports carry the id of the checkpoint they came from, so
one model has one id in every form (``runtime`` says which form scored).

* ``*.safetensors``: a checkpoint written by the stages (:func:`leaf_steps.training.models.save_checkpoint`);
  the transform comes from its settings (``student.resize``/``crop``), the units from its metadata.
* a folder with ``config.json``: the timm-native export, rebuilt by
  ``timm.create_model("local-dir:<folder>", pretrained=True)``; the transform comes from its
  timm ``pretrained_cfg`` (and must agree with the ``leaf`` block beside it).
* ``*.onnx``: run by onnxruntime (CUDA provider when the device is CUDA and onnxruntime has it);
  transform, units and id from the model's ``leaf`` metadata entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leaf_steps.core.errors import InputError
from leaf_steps.training.models import load_checkpoint, read_checkpoint_metadata
from leaf_steps.training.scoring import TorchScorer
from leaf_steps.training.settings import student_block
from leaf_steps.training.transforms import EvalTransform, normalize

log = logging.getLogger("leaf.predict.models")

UNITS = ("mos", "teacher_score")
ONNX_METADATA_KEY = "leaf"
CONFIG_LEAF_KEY = "leaf"


@dataclass
class Predictor:
    scorer: Callable[[torch.Tensor], np.ndarray]
    transform: EvalTransform
    model_id: str
    units: str
    runtime: str  # "torch" or "onnxruntime"
    device: torch.device  # where the scorer runs (pinned memory on CUDA)
    source: str  # the file or folder it was loaded from
    info: dict[str, Any] = field(default_factory=dict)


def file_sha256(path: str | Path, length: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def checkpoint_facts(path: str | Path) -> dict[str, Any]:
    """What a LEAF checkpoint says about itself: architecture, stage, units, transform, id."""
    meta = read_checkpoint_metadata(path)
    try:
        settings = json.loads(meta.get("settings", "{}"))
        student = student_block(settings)
    except Exception as exc:
        raise InputError(f"{path}: checkpoint settings do not describe a student block ({exc})") from exc
    units = meta.get("output_units")
    if units not in UNITS:
        raise InputError(f"{path}: checkpoint output_units {units!r} is not one of {list(UNITS)}")
    return {
        "architecture": meta["model"],
        "stage": meta.get("stage", "?"),
        "units": units,
        "transform": EvalTransform(student["resize"], student["crop"]),
        "model_id": f"{meta['model']}-{meta.get('stage', 'model')}-{file_sha256(path)}",
        "selected_epoch": meta.get("selected_epoch"),
        "settings": settings,
    }


def _from_checkpoint(path: Path, device: torch.device, amp: bool) -> Predictor:
    facts = checkpoint_facts(path)
    model, _ = load_checkpoint(path, "cpu")
    return Predictor(
        TorchScorer(model, device, amp),
        facts["transform"],
        facts["model_id"],
        facts["units"],
        "torch",
        device,
        str(path),
        {"architecture": facts["architecture"], "stage": facts["stage"]},
    )


def read_export_config(folder: Path) -> dict[str, Any]:
    cfg_file = folder / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{cfg_file}: not a readable timm config ({exc})") from exc
    if CONFIG_LEAF_KEY not in cfg:
        raise InputError(f"{cfg_file}: no {CONFIG_LEAF_KEY!r} block (not a LEAF export: output units unknown)")
    return cfg


def _from_timm_folder(folder: Path, device: torch.device, amp: bool) -> Predictor:
    import timm
    from timm.data import resolve_data_config

    leaf = read_export_config(folder)[CONFIG_LEAF_KEY]
    try:
        model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    except Exception as exc:
        raise InputError(f"{folder}: timm could not rebuild the model ({type(exc).__name__}: {exc})") from exc
    try:
        transform = EvalTransform.from_timm_data_config(resolve_data_config({}, model=model))
    except ValueError as exc:
        raise InputError(f"{folder}/config.json: pretrained_cfg is not a LEAF eval transform ({exc})") from exc
    if (transform.resize, transform.crop) != (leaf["transform"]["resize"], leaf["transform"]["crop"]):
        raise InputError(
            f"{folder}/config.json: pretrained_cfg gives resize {transform.resize} / crop "
            f"{transform.crop} but the leaf block says {leaf['transform']}"
        )
    return Predictor(
        TorchScorer(model, device, amp),
        transform,
        leaf["model_id"],
        leaf["units"],
        "torch",
        device,
        str(folder),
        {"architecture": leaf.get("architecture"), "stage": leaf.get("stage")},
    )


class OnnxScorer:
    """uint8 batch -> float64 scores through an onnxruntime session (input ``image``, NCHW float32)."""

    def __init__(self, path: Path, device: torch.device, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise InputError(
                    f"{path}: device cuda requested but this onnxruntime has no CUDAExecutionProvider "
                    "(install onnxruntime-gpu, or use --device cpu)"
                )
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:
            raise InputError(f"{path}: onnxruntime cannot load this model ({exc})") from exc
        self.input_name = self.session.get_inputs()[0].name

    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        x = normalize(images, "cpu").numpy()
        return np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float64).reshape(-1)


def _from_onnx(path: Path, device: torch.device) -> Predictor:
    scorer = OnnxScorer(path, device, threads=torch.get_num_threads())
    blob = scorer.metadata().get(ONNX_METADATA_KEY)
    if blob is None:
        raise InputError(f"{path}: no {ONNX_METADATA_KEY!r} metadata (not a LEAF export: transform and units unknown)")
    leaf = json.loads(blob)
    transform = EvalTransform(leaf["transform"]["resize"], leaf["transform"]["crop"])
    return Predictor(
        scorer,
        transform,
        leaf["model_id"],
        leaf["units"],
        "onnxruntime",
        device,
        str(path),
        {"architecture": leaf.get("architecture"), "stage": leaf.get("stage")},
    )


def load_predictor(source: str | Path, device: torch.device, amp: bool = True) -> Predictor:
    """The student at ``source`` (checkpoint, timm export folder or ONNX file) on ``device``."""
    path = Path(source)
    if path.is_dir():
        if (path / "config.json").is_file():
            return _from_timm_folder(path, device, amp)
        hint = (
            " (it has model.onnx: pass that file to run it through onnxruntime)"
            if (path / "model.onnx").is_file()
            else ""
        )
        raise InputError(f"{path}: a model folder needs config.json (a LEAF timm export){hint}")
    if not path.is_file():
        raise InputError(f"{path}: model not found")
    if path.suffix == ".onnx":
        return _from_onnx(path, device)
    if path.suffix == ".safetensors":
        return _from_checkpoint(path, device, amp)
    raise InputError(
        f"{path}: unknown model format (expected a LEAF .safetensors checkpoint, an export folder "
        "with config.json, or a .onnx file)"
    )
