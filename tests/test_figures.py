"""The figures say what they show: axis units, the subset a fit used, where selections were made, and a
legend that hides no data. Each figure function is run on small tables and its matplotlib figure is
inspected before it is written (the PNG itself is checked to be a PNG)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import polars as pl
import pytest
from matplotlib.lines import Line2D

from leaf_steps import plot_teacher_scatter
from leaf_steps.core.errors import InputError
from leaf_steps.evaluation import result_figures, training_figures


@pytest.fixture
def captured(monkeypatch):
    """Figures handed to the modules' _save, kept open for inspection; the PNG is still written."""
    figures = []

    def save(fig, path):
        figures.append(fig)
        fig.savefig(path, format="png")  # also draws the canvas, so extents can be measured

    for module in (result_figures, training_figures):
        monkeypatch.setattr(module, "_save", save)
    return figures


def dots(ax):
    """The single-point markers of an axes (the selected-epoch dots)."""
    return [
        (float(line.get_xdata()[0]), float(line.get_ydata()[0]))
        for line in ax.get_lines()
        if line.get_marker() == "o" and line.get_linestyle() == "None" and len(line.get_xdata()) == 1
    ]


def test_teacher_scatter_states_units_and_the_subset_of_its_fit(captured, tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"i{k}" for k in range(30)]
    mos = rng.uniform(0, 100, 30)
    manifest = pl.DataFrame({"image_id": ids, "split": ["test"] * 30, "mos": mos})
    points = pl.DataFrame(
        {"image_id": ids, "teacher_score": 1 + mos / 25 + rng.normal(0, 0.3, 30), "error": [None] * 30},
        schema_overrides={"error": pl.String},
    )
    linear = pl.DataFrame({"image_id": ids, "prediction": points["teacher_score"] * 25 - 20})
    out = tmp_path / "scatter.png"
    result_figures.teacher_scatter(
        points, manifest, linear, out, "T", "30% MOS, seed 2", {"slope": 25.0, "intercept": -20.0}
    )
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    left, right = captured[0].axes
    assert "mean residual" not in left.get_title() and "scales differ: no residual" in left.get_title()
    assert "1 = Bad .. 5 = Excellent" in left.get_xlabel() and "dataset units" in left.get_ylabel()
    assert "30% MOS, seed 2" in right.get_title() and "MOS = 25 x teacher - 20" in right.get_title()
    assert "mean MOS - prediction" in right.get_title()  # in MOS units on both axes: meaningful there


def test_teacher_scatter_cli_needs_the_subset_of_the_linear_fit(tmp_path):
    with pytest.raises(InputError, match="--linear-ratio and --linear-seed"):
        for name in ("p", "m", "l"):
            pl.DataFrame(
                {
                    "image_id": ["a"],
                    "teacher_score": [1.0],
                    "error": [None],
                    "split": ["test"],
                    "mos": [1.0],
                    "prediction": [1.0],
                }
            ).write_parquet(tmp_path / f"{name}.parquet")
        plot_teacher_scatter.main(
            [
                "--points",
                str(tmp_path / "p.parquet"),
                "--manifest",
                str(tmp_path / "m.parquet"),
                "--linear",
                str(tmp_path / "l.parquet"),
                "--out",
                str(tmp_path / "x.png"),
            ]
        )


def test_label_efficiency_legend_covers_no_axes(captured, tmp_path):
    rows = []
    for method, ratios in (
        ("teacher_zero_shot", [0.0]),
        ("teacher_linear", [0.1, 0.3]),
        ("leaf", [0.0, 0.1, 0.3]),
        ("cft_only", [0.1, 0.3]),
    ):
        for r in ratios:
            v = {"teacher_zero_shot": 0.82, "teacher_linear": 0.82, "leaf": 0.4 + r, "cft_only": r}[method]
            rows.append(
                {
                    "method": method,
                    "ratio": r,
                    "n_runs": 5,
                    "n_images": 208,
                    "srcc_mean": v,
                    "srcc_std": 0.05,
                    "plcc_mean": v,
                    "plcc_std": 0.05,
                }
            )
    result_figures.label_efficiency(pl.DataFrame(rows), tmp_path / "le.png", "T")
    fig = captured[0]
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    renderer = fig.canvas.get_renderer()
    box = fig.legends[0].get_window_extent(renderer)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer)), "the legend lies over a panel"
    assert "the same 208 test images" in fig._suptitle.get_text()
    assert "raw" in fig.axes[1].get_ylabel()


def _stage1():
    return pl.DataFrame(
        {
            "epoch": [1, 2, 3],
            "train_loss": [1.0, 0.6, 0.4],
            "val_loss": [0.9, 0.7, 0.8],
            "selected": [False, True, False],
        }
    )


def _stage2(selected_epoch, start=True):
    epochs = [0, 1, 2] if start else [1, 2]
    train = [None, 1.2, 1.0] if start else [1.2, 1.0]
    srcc = [0.5, 0.6, 0.4][-len(epochs) :]
    return pl.DataFrame(
        {
            "epoch": epochs,
            "train_loss": train,
            "val_srcc": srcc,
            "val_plcc": [s + 0.1 for s in srcc],
            "selected": [e == selected_epoch for e in epochs],
        }
    )


def _selection(selected_epoch):
    return pl.DataFrame(
        {
            "epoch": [1, 2, 3],
            "score": [0.8, 1.1, 0.9] if selected_epoch == 2 else [1.3, 1.1, 0.9],
            "selected": [e == selected_epoch for e in (1, 2, 3)],
        }
    )


def test_training_curves_mark_selections_on_the_criteria_they_were_made_on(captured, tmp_path):
    stage2 = [
        ("leaf", "0.1", "0", _stage2(1)),
        ("leaf", "0.1", "1", _stage2(0)),
        ("cft_only", "0.1", "0", _stage2(1, start=False)),
    ]
    selections = [("leaf", "0.1", "0", _selection(2)), ("leaf", "0.1", "1", _selection(1))]
    training_figures.training_curves([("leaf", _stage1())], stage2, tmp_path / "tc.png", "T", selections)
    visible = [ax for ax in captured[0].axes if ax.get_visible()]
    loss1, held1, few1, loss_leaf, val_leaf, loss_cft, val_cft = visible
    # Training losses carry no selection marks.
    assert dots(loss1) == dots(loss_leaf) == dots(loss_cft) == []
    assert dots(held1) == [(2.0, 0.7)]  # lowest held-out teacher loss
    assert sorted(dots(few1)) == [(1.0, 1.3), (2.0, 1.1)]  # each subset's best calib_val criterion
    teacher_line = [line for line in few1.get_lines() if "label-free epoch" in str(line.get_label())]
    assert len(teacher_line) == 1 and list(teacher_line[0].get_xdata()) == [2, 2]
    assert sorted(dots(val_leaf)) == [(0.0, pytest.approx(1.1)), (1.0, pytest.approx(1.3))]  # SRCC + PLCC
    assert dots(val_cft) == [(1.0, pytest.approx(1.3))]
    assert "epoch 0: the stage-1 start" in val_leaf.get_title() and "epoch 0" not in val_cft.get_title()
    assert all(isinstance(line, Line2D) for line in val_leaf.get_lines())
