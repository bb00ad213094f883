"""The result figures: label efficiency (paper Fig 4) and teacher score vs MOS (paper Fig 2); drawn by the
steps :mod:`leaf_steps.plot_label_efficiency` and :mod:`leaf_steps.plot_teacher_scatter`.

Each figure says what it shows in its own text: the images it covers, the units of its axes,
which PLCC (raw), and for Fig 2's calibrated panel the MOS subset its line was fitted on.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: cluster nodes and CI have no display
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from leaf_steps.core.io import atomic_write_bytes
from leaf_steps.evaluation.labels import DISPLAY
from leaf_steps.evaluation.metrics import iqa_metrics


def _save(fig: plt.Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def label_efficiency(summary: pl.DataFrame, out: Path, title: str) -> None:
    """Fig 4: SRCC and raw PLCC on the test split against the MOS-visible share, mean ± std over seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained")
    ratios = sorted(summary["ratio"].unique().to_list())
    for ax, (metric, name) in zip(axes, (("srcc", "SRCC"), ("plcc", "PLCC (raw, no logistic mapping)")), strict=True):
        for method in summary["method"].unique(maintain_order=True).to_list():
            rows = summary.filter(pl.col("method") == method).sort("ratio")
            x = rows["ratio"].to_numpy() * 100
            y, e = rows[f"{metric}_mean"].to_numpy(), rows[f"{metric}_std"].to_numpy()
            style = "s" if len(x) == 1 else "o-"
            ax.errorbar(x, y, yerr=e, fmt=style, capsize=3, label=DISPLAY.get(method, f"LEAF ({method})"))
        ax.set_xticks([r * 100 for r in ratios])
        ax.set_xlabel("MOS-visible share of the training split (%); 0 = label-free")
        ax.set_ylabel(f"test {name}")
        ax.grid(alpha=0.3)
    # Below the panels, never over a data point.
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8)
    n = summary["n_images"].unique().to_list() if "n_images" in summary.columns else []
    images = f"the same {n[0]} test images in every point" if len(n) == 1 else "test split"
    fig.suptitle(f"{title}\n{images}; mean ± std over MOS-subset seeds (label-free: one run)", fontsize=10)
    _save(fig, out)


def _scale(values: np.ndarray) -> str:
    return f"{values.min():.3g}..{values.max():.3g} here"


def teacher_scatter(
    points: pl.DataFrame,
    manifest: pl.DataFrame,
    linear: pl.DataFrame | None,
    out: Path,
    title: str,
    linear_subset: str | None = None,
    linear_fit: dict | None = None,
) -> None:
    """Fig 2: the teacher's expected score against MOS on the test split (its own 1..5 scale, so no
    residual: the two axes have different units), and, with ``linear``, the teacher after a linear
    map to MOS fitted on one MOS subset (``linear_subset`` says which), where residuals are in MOS units."""
    test = manifest.filter((pl.col("split") == "test") & pl.col("mos").is_not_null()).select("image_id", "mos")
    joined = test.join(
        points.filter(pl.col("error").is_null()).select("image_id", "teacher_score"), on="image_id"
    ).sort("image_id")
    x, y = joined["teacher_score"].to_numpy(), joined["mos"].to_numpy()
    n_panels = 2 if linear is not None else 1
    fig, axes = plt.subplots(1, n_panels, figsize=(5.4 * n_panels, 4.6), squeeze=False, layout="constrained")
    ax = axes[0][0]
    m = iqa_metrics(x, y)
    ax.scatter(x, y, s=10, alpha=0.6)
    ax.set_xlabel("teacher expected score (Eq 2; 1 = Bad .. 5 = Excellent)")
    ax.set_ylabel(f"MOS (dataset units: {_scale(y)})")
    ax.set_title(
        f"Zero-shot teacher, {len(x)} of {test.height} test images\nSRCC {m['srcc']:.3f}, "
        f"PLCC {m['plcc']:.3f} (scales differ: no residual)",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    if linear is not None:
        ax = axes[0][1]
        lin = test.join(linear.select("image_id", "prediction"), on="image_id").sort("image_id")
        pred, mos = lin["prediction"].to_numpy(), lin["mos"].to_numpy()
        m = iqa_metrics(pred, mos)
        ax.scatter(pred, mos, s=10, alpha=0.6, color="C1")
        lo, hi = float(min(pred.min(), mos.min())), float(max(pred.max(), mos.max()))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
        ax.legend(fontsize=8, loc="upper left")
        fit = ""
        if linear_fit and linear_fit.get("slope") is not None:
            b = linear_fit["intercept"]
            fit = f": MOS = {linear_fit['slope']:.3g} x teacher {'-' if b < 0 else '+'} {abs(b):.3g}"
        ax.set_xlabel("teacher + linear calibration (MOS units)")
        ax.set_ylabel("MOS")
        ax.set_title(
            f"Line fitted on the MOS subset {linear_subset or '(unnamed)'}{fit}\n{len(pred)} test images: "
            f"SRCC {m['srcc']:.3f}, PLCC {m['plcc']:.3f}, RMSE {m['rmse']:.3g}, "
            f"mean MOS - prediction {np.mean(mos - pred):.3g}",
            fontsize=9,
        )
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    _save(fig, out)
