"""Figures of the training signals: training and selection curves, and the teacher's pair confidence;
drawn by the steps :mod:`leaf_steps.plot_training_curves` and :mod:`leaf_steps.plot_pair_confidence`.

curves: each selection is drawn on the criterion it was made on, with a dot on the kept epoch.
First row, stage 1: the training loss per distilled variant; the held-out distillation loss, on
which the label-free model's epoch is chosen (lowest); with per-subset selection (``--selection``),
per variant the SRCC + PLCC of the stage-1 outputs on each MOS subset's calib_val images, on which
the epoch each calibration starts from is chosen (highest; the dotted line is the label-free
epoch). Then per calibrated variant, stage 2: the training loss per MOS subset, and the calib_val
SRCC + PLCC on which the calibration's epoch is chosen (highest; epoch 0 is the affinely mapped
stage-1 start). One colour per MOS ratio, one line per subset seed.

pair-confidence: per teacher, the histogram of the confidence w (Eq 5) of its scored pairs, with the
filter threshold tau (pairs with w < tau are dropped, Sec. 3.2.2) and the share of pairs it keeps.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: cluster nodes and CI have no display
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from matplotlib.ticker import MaxNLocator

from leaf_steps.core.errors import InputError
from leaf_steps.core.io import atomic_write_bytes

STAGE1_COLUMNS = ("epoch", "train_loss", "val_loss", "selected")
STAGE2_COLUMNS = ("epoch", "train_loss", "val_srcc", "val_plcc", "selected")
SELECTION_COLUMNS = ("epoch", "score", "selected")
PAIR_COLUMNS = ("confidence", "error")


def _save(fig: plt.Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _grid(n_panels: int, width: float = 5.0, height: float = 3.8):
    cols = min(3, n_panels)
    rows = -(-n_panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n_panels])


def _rows_grid(rows: Sequence[int], width: float = 5.0, height: float = 3.6, max_cols: int = 3):
    """Panels in logical rows (each row starts a new line of the grid, wrapping at ``max_cols``)."""
    cols = min(max_cols, max(rows))
    lines = [min(cols, n - i) for n in rows for i in range(0, n, cols)]
    fig, axes = plt.subplots(
        len(lines), cols, figsize=(width * cols, height * len(lines)), squeeze=False, layout="constrained"
    )
    panels = []
    for line, used in zip(axes, lines, strict=True):
        panels += list(line[:used])
        for ax in line[used:]:
            ax.set_visible(False)
    return fig, panels


def _curve(ax: plt.Axes, frame: pl.DataFrame, column: str, mark: bool, **style) -> None:
    """One column against epoch (rows without a value skipped); ``mark``: a dot on the selected epoch."""
    rows = frame.filter(pl.col(column).is_not_null()).sort("epoch")
    if rows.height == 0:
        return
    (line,) = ax.plot(rows["epoch"].to_numpy(), rows[column].to_numpy(), **style)
    kept = rows.filter(pl.col("selected"))
    if mark and kept.height:
        ax.plot(kept["epoch"].to_numpy(), kept[column].to_numpy(), "o", color=line.get_color(), ms=5)


def _style(ax: plt.Axes, title: str, ylabel: str, legend: bool = True) -> None:
    ax.set_title(title, fontsize=9.5)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel, fontsize=9)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _per_subset(ax: plt.Axes, runs: Sequence[tuple[str, str, pl.DataFrame]], column: str, mark: bool) -> None:
    """One line per (ratio, seed): colour per ratio, one legend entry per ratio."""
    ratios = sorted({r for r, _, _ in runs}, key=float)
    for ratio, seed, frame in runs:
        seeds = [s for r, s, _ in runs if r == ratio]
        label = f"{float(ratio) * 100:g}% MOS, {len(seeds)} seed(s)" if seed == seeds[0] else None
        _curve(ax, frame, column, mark, color=f"C{ratios.index(ratio)}", lw=1, alpha=0.8, label=label)


def _criterion(losses: pl.DataFrame) -> pl.DataFrame:
    return losses.with_columns(criterion=pl.col("val_srcc") + pl.col("val_plcc"))


def training_curves(
    stage1: Sequence[tuple[str, pl.DataFrame]],
    stage2: Sequence[tuple[str, str, str, pl.DataFrame]],
    out: Path,
    title: str,
    selections: Sequence[tuple[str, str, str, pl.DataFrame]] = (),
) -> None:
    """stage1: (variant, losses); stage2: (variant, ratio, seed, losses); selections: (variant, ratio,
    seed, stage-1 selection table) of the per-subset stage-1 selection."""
    variants2 = list(dict.fromkeys(v for v, _, _, _ in stage2))
    selected1 = list(dict.fromkeys(v for v, _, _, _ in selections))
    rows = ([2 + len(selected1)] if stage1 else []) + [2] * len(variants2)
    if not rows:
        raise InputError("plot_training_curves: no stage-1 or stage-2 losses given")
    fig, axes = _rows_grid(rows)
    panels = iter(axes)
    if stage1:
        loss_ax, held_ax = next(panels), next(panels)
        for i, (variant, losses) in enumerate(stage1):
            _curve(loss_ax, losses, "train_loss", False, color=f"C{i}", label=variant)
            _curve(held_ax, losses, "val_loss", True, color=f"C{i}", ls="--", label=variant)
        _style(loss_ax, "Stage 1 training loss (distillation from the teacher)", "train loss (point + pair terms)")
        _style(
            held_ax,
            "Stage 1, label-free selection: held-out distillation loss\n(lowest is kept; no MOS)",
            "held-out loss (point + pair terms)",
        )
        teacher_epoch = {v: losses.filter(pl.col("selected"))["epoch"].to_list() for v, losses in stage1}
        for variant in selected1:
            ax = next(panels)
            _per_subset(ax, [(r, s, sel) for v, r, s, sel in selections if v == variant], "score", True)
            for epoch in teacher_epoch.get(variant, [])[:1]:
                ax.axvline(epoch, color="0.4", ls=":", lw=1, label=f"label-free epoch ({epoch})")
            _style(
                ax,
                f"Stage 1, few-shot selection of {variant}: stage-1 outputs vs MOS\n"
                "on each subset's calib_val (highest is kept)",
                "calib_val SRCC + PLCC",
            )
    for variant in variants2:
        runs = [(r, s, _criterion(losses)) for v, r, s, losses in stage2 if v == variant]
        loss_ax, val_ax = next(panels), next(panels)
        _per_subset(loss_ax, runs, "train_loss", False)
        _per_subset(val_ax, runs, "criterion", True)
        _style(loss_ax, f"Stage 2 training loss: calibration of {variant}", "train loss (standardised MOS)")
        start = any((frame["epoch"] == 0).any() for _, _, frame in runs)
        _style(
            val_ax,
            f"Stage 2 selection of {variant}: calib_val SRCC + PLCC\n(highest is kept"
            + ("; epoch 0: the stage-1 start)" if start else ")"),
            "calib_val SRCC + PLCC",
        )
    fig.suptitle(f"{title}\nDots: the epoch each run kept, on the criterion it was selected on")
    _save(fig, out)


def pair_confidence(pairs: Sequence[tuple[str, pl.DataFrame]], tau: float | None, out: Path, title: str) -> None:
    if not pairs:
        raise InputError("plot_pair_confidence: no scored pairs given")
    fig, axes = _grid(len(pairs))
    bins = np.linspace(0.0, 1.0, 41)  # w = 1 - H(p)/log 2 lies in [0, 1]
    for ax, (teacher, scored) in zip(axes, pairs, strict=True):
        valid = scored.filter(pl.col("error").is_null() & pl.col("confidence").is_not_null())
        w = valid["confidence"].to_numpy()
        ax.hist(w, bins=bins, color="C0", alpha=0.8)
        failed = scored.height - valid.height
        head = f"{teacher}: {valid.height} scored pairs" + (f", {failed} failed" if failed else "")
        if tau is not None:
            kept = float(np.mean(w >= tau)) if len(w) else 0.0
            ax.axvline(tau, color="C3", ls="--", lw=1.5, label=f"tau = {tau:g}: keeps {kept:.0%}")
            ax.legend(fontsize=8)
        ax.set_title(head, fontsize=10)
        ax.set_xlabel("pair confidence w (Eq 5)")
        ax.set_ylabel("pairs")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    _save(fig, out)
