"""Figures: label efficiency (paper Fig 4) and teacher score vs MOS (paper Fig 2)."""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: cluster nodes and CI have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from leaf_steps.aggregate import DISPLAY  # noqa: E402
from leaf_steps.cli import run_step  # noqa: E402
from leaf_steps.io import atomic_write_bytes, read_parquet  # noqa: E402
from leaf_steps.metrics import iqa_metrics  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def label_efficiency(summary: pl.DataFrame, out: Path, title: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("srcc", "plcc"), strict=True):
        for method in summary["method"].unique(maintain_order=True).to_list():
            rows = summary.filter(pl.col("method") == method).sort("ratio")
            x = rows["ratio"].to_numpy() * 100
            y, e = rows[f"{metric}_mean"].to_numpy(), rows[f"{metric}_std"].to_numpy()
            style = "s" if len(x) == 1 else "o-"
            ax.errorbar(x, y, yerr=e, fmt=style, capsize=3, label=DISPLAY.get(method, f"LEAF ({method})"))
        ax.set_xlabel("MOS-visible share of the training split (%)")
        ax.set_ylabel(metric.upper())
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, out)


def teacher_scatter(points: pl.DataFrame, manifest: pl.DataFrame, linear: pl.DataFrame | None, out: Path,
                    title: str) -> None:
    test = manifest.filter((pl.col("split") == "test") & pl.col("mos").is_not_null()).select("image_id", "mos")
    joined = test.join(points.filter(pl.col("error").is_null()).select("image_id", "teacher_score"), on="image_id")
    x, y = joined["teacher_score"].to_numpy(), joined["mos"].to_numpy()
    panels = [("Teacher expected score (Eq 2)", x)]
    if linear is not None:
        lin = test.join(linear.select("image_id", "prediction"), on="image_id")
        panels.append(("Teacher + linear calibration", lin.sort("image_id")["prediction"].to_numpy()))
        y_lin = lin.sort("image_id")["mos"].to_numpy()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False)
    for i, (ax, (label, pred)) in enumerate(zip(axes[0], panels, strict=True)):
        mos = y if i == 0 else y_lin
        m = iqa_metrics(pred, mos)
        ax.scatter(pred, mos, s=10, alpha=0.6)
        lo, hi = float(min(pred.min(), mos.min())), float(max(pred.max(), mos.max()))
        if i > 0:
            ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
            ax.legend(fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("MOS")
        ax.set_title(f"SRCC {m['srcc']:.3f}  PLCC {m['plcc']:.3f}  mean residual {np.mean(mos - pred):.3f}",
                     fontsize=9)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    _save(fig, out)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="figure", required=True)
    p1 = sub.add_parser("label-efficiency")
    p1.add_argument("--summary", type=Path, required=True)
    p1.add_argument("--out", type=Path, required=True)
    p1.add_argument("--title", default="Label efficiency")
    p2 = sub.add_parser("teacher-scatter")
    p2.add_argument("--points", type=Path, required=True)
    p2.add_argument("--manifest", type=Path, required=True)
    p2.add_argument("--linear", type=Path, default=None, help="teacher_linear predictions of one subset")
    p2.add_argument("--out", type=Path, required=True)
    p2.add_argument("--title", default="Teacher vs MOS (test split)")
    a = ap.parse_args(argv)
    if a.figure == "label-efficiency":
        label_efficiency(read_parquet(a.summary), a.out, a.title)
    else:
        linear = read_parquet(a.linear, ["image_id", "prediction"]) if a.linear else None
        teacher_scatter(read_parquet(a.points, ["image_id", "teacher_score", "error"]),
                        read_parquet(a.manifest, ["image_id", "split", "mos"]), linear, a.out, a.title)


if __name__ == "__main__":
    run_step(main)
