"""The deployable forms of a trained student: a timm-native folder, an ONNX file, a model card.

Timm folder. ``config.json`` + ``model.safetensors`` written by timm itself
(``timm.models.save_for_hf``, safetensors), so ``timm.create_model("local-dir:<folder>",
pretrained=True)`` rebuilds the model with its weights (the ``local-dir:`` source exists since
timm 1.0.16, huggingface/pytorch-image-models#2476). Its ``pretrained_cfg`` is the student's
eval transform in timm's terms (:meth:`EvalTransform.timm_data_config`: input size, crop_pct =
crop / resize, crop_mode center, bilinear, ImageNet mean/std), so
``timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))`` gives the
scores ``leaf predict`` gives. A ``leaf`` block beside it (timm keeps extra root keys) holds
what timm has no field for: the model id, output units, stage, and the transform in LEAF's words.

ONNX. ``torch.onnx.export`` with the torch.export-based exporter (``dynamo=True``, the default
since PyTorch 2.9; needs onnxscript), one input ``image`` (float32 N x 3 x crop x crop,
normalised) with a dynamic batch axis, one output ``score`` (N x 1); weights inside the file;
checked with ``onnx.checker``. The ``leaf`` block is stored as the model's ``leaf`` metadata
entry (``onnxruntime``'s ``custom_metadata_map``).

:func:`check_exports` reloads both and scores real images through each, next to the
checkpoint's own forward pass; the export step fails when they disagree beyond
:data:`TOLERANCE`.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leaf_steps.training.transforms import EvalTransform, decode, normalize

log = logging.getLogger("leaf.export")

ONNX_FILE = "model.onnx"
ONNX_INPUT, ONNX_OUTPUT = "image", "score"
# Largest |difference| of a score, relative to the spread (std) of the scores checked, that the
# exports may show against the checkpoint: float32 kernels differ between runtimes (ONNX graph
# fusions, channels_last), nothing else may.
TOLERANCE = 1e-4
# What the architecture's own pretrained_cfg may keep in an export: layout facts. Its weight tag,
# license, hub id and ImageNet preprocessing describe weights this student does not have.
ARCHITECTURE_CFG_KEYS = ("architecture", "fixed_input_size", "pool_size", "first_conv", "classifier", "min_input_size")


def _timm_pretrained_cfg(model: torch.nn.Module, transform: EvalTransform) -> dict[str, Any]:
    """The model's timm pretrained_cfg with the student's eval transform in place of the
    architecture's ImageNet defaults (and no test-time size or hub source left over)."""
    cfg = {k: v for k, v in dict(model.pretrained_cfg).items() if k in ARCHITECTURE_CFG_KEYS}
    cfg.update(transform.timm_data_config())
    cfg["num_classes"] = 1
    return cfg


def save_timm_folder(model: torch.nn.Module, transform: EvalTransform, folder: Path, leaf: dict[str, Any]) -> None:
    """``config.json`` + ``model.safetensors`` as timm writes them, plus the ``leaf`` block."""
    from timm.models import save_for_hf

    model = model.to(memory_format=torch.contiguous_format)  # safetensors stores contiguous tensors only
    model.pretrained_cfg = _timm_pretrained_cfg(model, transform)
    kwargs: dict[str, Any] = {"model_config": {"leaf": leaf}, "safe_serialization": True}
    if "data_config" in inspect.signature(save_for_hf).parameters:  # timm >= 1.0.2x resolves the cfg again
        kwargs["data_config"] = transform.timm_data_config()
    save_for_hf(model.eval(), str(folder), **kwargs)


def _dynamic_batch() -> tuple[dict[int, Any]]:
    major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", torch.__version__).groups())
    if (major, minor) >= (2, 7):  # named dynamic axes (same choice as timm.utils.onnx.onnx_export)
        return ({0: "batch"},)
    return ({0: torch.export.Dim.AUTO},)


def save_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, leaf: dict[str, Any]) -> None:
    """``model`` as ONNX with a dynamic batch axis; ``example`` is a normalised batch (>= 2 images,
    since torch.export specialises a batch of one)."""
    import onnx

    model = model.eval().to(memory_format=torch.contiguous_format)
    if example.shape[0] < 2:
        example = torch.cat([example, example])
    with torch.inference_mode(False), torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_shapes=_dynamic_batch(),
            external_data=False,
            optimize=True,
        )
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "leaf", json.dumps(leaf, sort_keys=True)
    proto.doc_string = f"LEAF student {leaf['model_id']}: image -> {leaf['units']} score"
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def timm_scores(folder: Path, paths: Sequence[Path]) -> np.ndarray:
    """Scores by timm alone: the model and the transform both rebuilt from the folder's config.
    Images are decoded as LEAF decodes them (the model card's recipe: EXIF orientation, JPEGs at
    the DCT scale just above the resize, ...)."""
    import timm
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    cfg = resolve_data_config({}, model=model)
    tf = create_transform(**cfg, is_training=False)
    resize = EvalTransform.from_timm_data_config(cfg).resize
    with torch.no_grad():
        x = torch.stack([tf(decode(p, resize)) for p in paths])
        return model(x).reshape(-1).double().numpy()


def onnx_scores(path: Path, batch: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = normalize(batch).numpy()
    return np.asarray(session.run(None, {ONNX_INPUT: x})[0], dtype=np.float64).reshape(-1)


def check_exports(
    model: torch.nn.Module, transform: EvalTransform, folder: Path, paths: Sequence[Path]
) -> dict[str, Any]:
    """Largest score differences of the timm folder (timm model + timm transform) and of the ONNX
    file (onnxruntime) against the checkpoint (LEAF transform, PyTorch), on ``paths``."""
    batch = torch.stack([transform(transform.load(p)) for p in paths])
    with torch.no_grad():
        reference = (
            model.eval().to(memory_format=torch.contiguous_format)(normalize(batch)).reshape(-1).double().numpy()
        )
    spread = float(np.std(reference)) or 1.0
    out: dict[str, Any] = {"images": len(paths), "score_std": spread, "tolerance_relative_to_std": TOLERANCE}
    for name, scores in (("timm", timm_scores(folder, paths)), ("onnx", onnx_scores(folder / ONNX_FILE, batch))):
        out[f"{name}_max_abs_diff"] = float(np.max(np.abs(scores - reference)))
    out["ok"] = all(out[f"{n}_max_abs_diff"] <= TOLERANCE * spread for n in ("timm", "onnx"))
    return out
