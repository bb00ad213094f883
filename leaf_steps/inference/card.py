"""The model card (``README.md``) of an exported student: what it is, how good, how to call it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

UNITS_TEXT = {
    "mos": "MOS units of the training dataset (calibrated on a subset of its MOS)",
    "teacher_score": "teacher-score units (the teacher's expected rating on 1 = Bad .. 5 = Excellent; "
    "no human rating was used: compare scores, or calibrate them on a few MOS)",
}

SHORT_UNITS = {"mos": "MOS (the dataset's rating scale)", "teacher_score": "teacher score (1..5 scale)"}


def _f(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def _mean_std(values: Sequence[float]) -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "n/a"
    mean = sum(vals) / len(vals)
    std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
    return f"{mean:.3f} ± {std:.3f}"


def render(facts: Mapping[str, Any]) -> str:
    """Markdown for ``facts`` (built by :mod:`leaf_steps.export_model`)."""
    t = facts["transform"]
    metrics: list[dict[str, Any]] = facts["metrics"]
    exported = next((m for m in metrics if m.get("seed") == facts.get("seed")), None)
    ratio = facts["ratio"]
    budget = (
        "no MOS at all (label-free: stage 1 only)"
        if ratio == 0
        else f"{ratio:g} of the training images' MOS ({facts['calib_train']} images to fine-tune, "
        f"{facts['calib_val']} to pick the epoch), seed {facts['seed']}"
    )
    teacher = facts["teacher"]
    teacher_text = (
        f"`{teacher['model']}` ({teacher['backend']} backend, config key `{teacher['name']}`)"
        if teacher.get("model")
        else f"`{teacher['name']}` ({teacher['backend']} backend)"
    )
    if teacher["backend"] == "niqe":
        teacher_text += (
            " -- the CPU demo's classical stand-in for the MLLM (NIQE fitted on pristine references "
            "only), not a multimodal model"
        )
    lines = [
        "---",
        "library_name: timm",
        "pipeline_tag: image-classification",
        "tags: [image-quality-assessment, no-reference-iqa, leaf, regression]",
        "---",
        "",
        f"# LEAF student `{facts['model_id']}`",
        "",
        f"A no-reference image quality model: one RGB image in, one score out, in {UNITS_TEXT[facts['units']]}.",
        (
            "Trained by the LEAF pipeline (label-efficient IQA: an MLLM teacher distilled into a small student, then "
            "calibrated on a few human ratings; Li et al. 2026, arXiv:2601.20689)."
        ),
        "",
        "| | |",
        "|---|---|",
        (
            f"| student | timm `{facts['architecture']}` ({'ImageNet-pretrained' if facts['pretrained'] else 'random init'}), "  # noqa: E501
            f"one regression output; {facts['parameters'] / 1e6:.2f} M parameters |"
        ),
        f"| teacher | {teacher_text} |",
        f"| data | run `{facts['run_name']}`, dataset `{facts['dataset']}`: {facts['train_images']} training images "
        f"(teacher-labelled), {facts['test_images']} test images"
        + (
            " (the CPU demo's synthetic images; its MOS is synthetic too: 100 x SSIM to the pristine image)"
            if facts["dataset"] == "demo"
            else ""
        )
        + " |",
        f"| stage 1 (distillation) | variant `{facts['variant']}`: {facts['distill_text']} |",
        f"| MOS budget | {budget} |",
        f"| stage 2 (calibration) | {facts['calibration_text']} |",
        f"| output | `score`: {SHORT_UNITS[facts['units']]} |",
        (
            f"| input transform | RGB (JPEG decoded at the DCT scale just above {t['resize']} px), shorter side to "
            f"{t['resize']} px (bilinear, antialiased), center crop {t['crop']} x "
            f"{t['crop']}, RGB / 255, ImageNet mean {tuple(t['mean'])} / std {tuple(t['std'])} |"
        ),
        f"| source checkpoint | `{facts['checkpoint']}` (selected epoch {facts['selected_epoch']}) |",
        "",
        f"## Test results ({facts['dataset']} test split, {facts['test_images']} images)",
        "",
    ]
    if metrics:
        lines += ["| seed | n | SRCC | PLCC | KRCC | RMSE |", "|---|---|---|---|---|---|"]
        for m in metrics:
            mark = " (this model)" if m is exported else ""
            seed = "-" if m.get("seed") is None else m["seed"]
            lines.append(
                f"| {seed}{mark} | {m['n']} | {_f(m['srcc'])} | {_f(m['plcc'])} | {_f(m.get('krcc'))} | "
                f"{_f(m.get('rmse'))} |"
            )
        if len(metrics) > 1:
            lines.append(
                f"| mean ± std over {len(metrics)} seeds | | {_mean_std([m['srcc'] for m in metrics])} | "
                f"{_mean_std([m['plcc'] for m in metrics])} | | |"
            )
        lines += [
            "",
            "Each seed draws a different MOS subset (and so trains a different model); this folder "
            "holds the one marked."
            if ratio > 0
            else "Label-free: one model, no seed.",
        ]
    else:
        lines.append("No test metrics were given to the export step.")
    check = facts["check"]
    lines += [
        "",
        "## How to use it",
        "",
        "With LEAF (any mix of files, folders, CSV/text lists, manifests; resumable; bad files become error rows):",
        "",
        "```bash",
        f"leaf predict --model {facts['folder']} my_images/ --out scores.parquet",
        f"leaf predict --model {facts['folder']}/model.onnx my_images/ --out scores.csv   # onnxruntime",
        "```",
        "",
        "With timm alone (the folder's `pretrained_cfg` is the transform above):",
        "",
        "```python",
        "import timm, torch",
        "from PIL import Image, ImageOps",
        f'model = timm.create_model("local-dir:{facts["folder"]}", pretrained=True).eval()',
        "cfg = timm.data.resolve_data_config({}, model=model)",
        "transform = timm.data.create_transform(**cfg)",
        'image = Image.open("photo.jpg")',
        f'image.draft("RGB", ({t["resize"]}, {t["resize"]}))  # JPEG: decode at the DCT scale just above the resize, as LEAF does',  # noqa: E501
        'image = ImageOps.exif_transpose(image).convert("RGB")',
        "with torch.no_grad():",
        "    score = model(transform(image).unsqueeze(0)).item()",
        "```",
        "",
        (
            "With onnxruntime (input `image`: float32 N x 3 x "
            f"{t['crop']} x {t['crop']}, normalised as above; output `score`: N x 1; dynamic batch):"
        ),
        "",
        "```python",
        "import onnxruntime as ort",
        f'session = ort.InferenceSession("{facts["folder"]}/model.onnx")',
        'scores = session.run(None, {"image": batch})[0][:, 0]',
        "```",
        "",
        (
            "LEAF decodes images with EXIF orientation applied, JPEGs at the smallest DCT scale (1/2, 1/4, 1/8) that "
            f"keeps both sides >= {t['resize']} px (`Image.draft`; the student was trained on such pixels), 16-bit "
            "samples scaled to 8 bits, transparency composited on white, animated files refused: the three lines "
            "above, for ordinary RGB JPEG/PNG files."
        ),
        "",
        "## Export check",
        "",
        (
            f"On {check['images']} test images the three forms agree: largest |score difference| against the "
            f"checkpoint in PyTorch is {check['timm_max_abs_diff']:.2e} for timm (model and transform rebuilt from this "  # noqa: E501
            f"folder) and {check['onnx_max_abs_diff']:.2e} for ONNX (onnxruntime, CPU); the export step fails above "
            f"{check['tolerance_relative_to_std']:g} x the scores' std ({check['score_std']:.3g})."
        ),
        "",
        (
            f"Written by LEAF {facts['leaf_version']} (timm {facts['versions'].get('timm')}, torch "
            f"{facts['versions'].get('torch')})."
        ),
        "",
    ]
    return "\n".join(lines)
