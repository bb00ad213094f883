"""Figures of the training signals: stage-1/stage-2 loss curves and the teacher's pair confidence.

    python -m leaf_steps.plot_training curves --stage1 leaf stage1/losses.parquet \\
        --stage2 leaf 0.1 0 ratio0.1/seed0/losses.parquet --out training_curves.png
    python -m leaf_steps.plot_training pair-confidence --pairs standin pairs.parquet --tau 0.1 \\
        --out pair_confidence.png

curves: one panel for stage 1 (distillation: train loss solid, held-out loss dashed, one colour per
variant) and one panel per calibrated variant for stage 2 (train loss per MOS subset, one colour per
ratio, one line per seed). The epoch each run kept is marked with a dot.

pair-confidence: per teacher, the histogram of the confidence w (Eq 5) of its scored pairs, with the
filter threshold tau (pairs with w < tau are dropped, Sec. 3.2.2) and the share of pairs it keeps.
"""

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
from matplotlib.ticker import MaxNLocator  # noqa: E402

from leaf_steps.cli import run_step  # noqa: E402
from leaf_steps.errors import InputError  # noqa: E402
from leaf_steps.io import atomic_write_bytes, read_parquet  # noqa: E402

STAGE1_COLUMNS = ("epoch", "train_loss", "val_loss", "selected")
STAGE2_COLUMNS = ("epoch", "train_loss", "selected")
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


def _curve(ax: plt.Axes, losses: pl.DataFrame, column: str, **style) -> None:
    """One loss column against epoch; epochs without a value (e.g. calibration's epoch 0, which is only
    evaluated) are skipped, and the kept epoch gets a dot."""
    rows = losses.filter(pl.col(column).is_not_null()).sort("epoch")
    if rows.height == 0:
        return
    (line,) = ax.plot(rows["epoch"].to_numpy(), rows[column].to_numpy(), **style)
    kept = rows.filter(pl.col("selected"))
    if kept.height:
        ax.plot(kept["epoch"].to_numpy(), kept[column].to_numpy(), "o", color=line.get_color(), ms=5)


def training_curves(stage1: Sequence[tuple[str, pl.DataFrame]],
                    stage2: Sequence[tuple[str, str, str, pl.DataFrame]], out: Path, title: str) -> None:
    """stage1: (variant, losses); stage2: (variant, ratio, seed, losses)."""
    variants2 = list(dict.fromkeys(v for v, _, _, _ in stage2))
    n_panels = (1 if stage1 else 0) + len(variants2)
    if n_panels == 0:
        raise InputError("plot_training curves: no stage-1 or stage-2 losses given")
    fig, axes = _grid(n_panels)
    panels = iter(axes)
    if stage1:
        ax = next(panels)
        for i, (variant, losses) in enumerate(stage1):
            colour = f"C{i}"
            _curve(ax, losses, "train_loss", color=colour, label=f"{variant} train")
            _curve(ax, losses, "val_loss", color=colour, ls="--", label=f"{variant} held-out")
        ax.set_title("Stage 1: distillation from the teacher")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss (point + pair terms)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    for variant in variants2:
        ax = next(panels)
        runs = [(r, s, losses) for v, r, s, losses in stage2 if v == variant]
        ratios = sorted({r for r, _, _ in runs}, key=float)
        for ratio, seed, losses in runs:
            colour = f"C{ratios.index(ratio)}"
            seeds = [s for r, s, _ in runs if r == ratio]
            label = f"{float(ratio) * 100:g}% MOS, {len(seeds)} seeds" if seed == seeds[0] else None
            _curve(ax, losses, "train_loss", color=colour, lw=1, alpha=0.8, label=label)
        ax.set_title(f"Stage 2: calibration of {variant}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("train loss (standardised MOS)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title} (dots: the epoch each run kept)")
    _save(fig, out)


def pair_confidence(pairs: Sequence[tuple[str, pl.DataFrame]], tau: float | None, out: Path, title: str) -> None:
    if not pairs:
        raise InputError("plot_training pair-confidence: no scored pairs given")
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


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="figure", required=True)
    p1 = sub.add_parser("curves", help="stage-1 and stage-2 loss curves")
    p1.add_argument("--stage1", nargs=2, action="append", default=[], metavar=("VARIANT", "LOSSES"))
    p1.add_argument("--stage2", nargs=4, action="append", default=[], metavar=("VARIANT", "RATIO", "SEED", "LOSSES"))
    p1.add_argument("--out", type=Path, required=True)
    p1.add_argument("--title", default="Training curves")
    p2 = sub.add_parser("pair-confidence", help="histogram of the teacher's pair confidence")
    p2.add_argument("--pairs", nargs=2, action="append", required=True, metavar=("TEACHER", "SCORED_PAIRS"))
    p2.add_argument("--tau", type=float, default=None, help="confidence threshold; omit when pairs are not filtered")
    p2.add_argument("--out", type=Path, required=True)
    p2.add_argument("--title", default="Teacher pair confidence")
    a = ap.parse_args(argv)
    if a.figure == "curves":
        stage1 = [(v, read_parquet(p, STAGE1_COLUMNS)) for v, p in a.stage1]
        stage2 = [(v, r, s, read_parquet(p, STAGE2_COLUMNS)) for v, r, s, p in a.stage2]
        training_curves(stage1, stage2, a.out, a.title)
    else:
        pair_confidence([(t, read_parquet(p, PAIR_COLUMNS)) for t, p in a.pairs], a.tau, a.out, a.title)


if __name__ == "__main__":
    run_step(main)
