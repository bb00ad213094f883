"""Oracles for the summary table (leaf_steps.aggregate) on a runs table built by hand, so that every
number of the table is known before the code runs: the mean and the sample std (ddof=1) over seeds of
each cell, the cells as printed, and the paired-seed check of the paper's claim (distillation +
calibration beats calibration alone at the same MOS budget: "better on k/n seeds", verdict by mean SRCC).
"""

import statistics

import polars as pl
import pytest

from leaf_steps import aggregate

# SRCC per seed, chosen so that the mean and both stds are exact on paper:
# leaf @10%: mean 0.64, squared deviations sum to 0.009 -> std 0.04743 (ddof=1) vs 0.04243 (ddof=0).
# cft_only @10%: mean 0.55; leaf wins on seeds 0, 2, 4 and loses on 1, 3 -> 3/5.
# @30%: leaf wins on seeds 0-3 but loses badly on seed 4: 4/5 seeds, yet the mean is lower.
SRCC = {
    ("leaf", 0.1): [0.61, 0.64, 0.70, 0.58, 0.67],
    ("cft_only", 0.1): [0.60, 0.66, 0.50, 0.59, 0.40],
    ("leaf", 0.3): [0.70, 0.71, 0.72, 0.73, 0.20],
    ("cft_only", 0.3): [0.69, 0.70, 0.71, 0.72, 0.90],
}
PLCC = {
    ("leaf", 0.1): [0.5, 0.6, 0.7, 0.8, 0.9],
    ("cft_only", 0.1): [0.4] * 5,
    ("leaf", 0.3): [0.8] * 5,
    ("cft_only", 0.3): [0.3, 0.4, 0.5, 0.6, 0.7],
}


def run_row(method, ratio, seed, srcc, plcc):
    return {
        "method": method,
        "ratio": ratio,
        "seed": seed,
        "n": 20,
        "n_test": 20,
        "n_missing": 0,
        "srcc": srcc,
        "plcc": plcc,
        "plcc_logistic": plcc + 0.01,
        "krcc": srcc - 0.1,
        "rmse": 10 * (1 - srcc),
        "rmse_logistic": 9 * (1 - srcc),
    }


def runs_table() -> pl.DataFrame:
    rows = [run_row("leaf", 0.0, None, 0.45, 0.47)]
    for (method, ratio), values in SRCC.items():
        seeds = range(5) if method == "leaf" else reversed(range(5))  # baseline rows in another order
        rows += [run_row(method, ratio, s, values[s], PLCC[(method, ratio)][s]) for s in seeds]
    return pl.DataFrame(rows, schema_overrides={"seed": pl.Int64})


def test_mean_and_sample_std_over_seeds_of_every_metric():
    runs = runs_table()
    summary = aggregate.summarize(runs)
    assert summary.select("method", "ratio").rows() == [
        ("cft_only", 0.1),
        ("cft_only", 0.3),
        ("leaf", 0.0),
        ("leaf", 0.1),
        ("leaf", 0.3),
    ]
    for cell in summary.iter_rows(named=True):
        mine = runs.filter((pl.col("method") == cell["method"]) & (pl.col("ratio") == cell["ratio"]))
        assert cell["n_runs"] == mine.height and cell["n_images"] == 20
        for m in aggregate.METRICS:
            values = mine[m].to_list()
            assert cell[f"{m}_mean"] == pytest.approx(statistics.fmean(values), abs=1e-12)
            # statistics.stdev is the sample std (n - 1); one run (label-free) has no spread: 0.
            expected_std = statistics.stdev(values) if len(values) > 1 else 0.0
            assert cell[f"{m}_std"] == pytest.approx(expected_std, abs=1e-12), (cell["method"], cell["ratio"], m)
    leaf10 = summary.filter((pl.col("method") == "leaf") & (pl.col("ratio") == 0.1)).row(0, named=True)
    assert leaf10["srcc_mean"] == pytest.approx(0.64, abs=1e-12)
    assert leaf10["srcc_std"] == pytest.approx((0.009 / 4) ** 0.5, abs=1e-12)  # not (0.009 / 5) ** 0.5
    assert leaf10["plcc_std"] == pytest.approx((0.1 / 4) ** 0.5, abs=1e-12)


def test_table_cells_are_mean_and_sample_std_to_three_decimals():
    summary = aggregate.summarize(runs_table())
    table = aggregate.markdown_table(summary, ["leaf", "cft_only"], "leaf")
    # Each cell worked out by hand from SRCC/PLCC above: mean, then sqrt(sum of squared deviations / 4).
    assert table.splitlines() == [
        "| Method | label-free SRCC | label-free PLCC | 10% MOS SRCC | 10% MOS PLCC | 30% MOS SRCC | 30% MOS PLCC |",
        "|---|---|---|---|---|---|---|",
        "| LEAF (leaf) | 0.450 ± 0.000 | 0.470 ± 0.000 | 0.640 ± 0.047 | 0.700 ± 0.158 | 0.612 ± 0.231 | 0.800 ± 0.000 |",  # noqa: E501
        (
            "| CFT-only (student on MOS subset alone) | - | - | 0.550 ± 0.101 | 0.400 ± 0.000 | 0.744 ± 0.088 "
            "| 0.500 ± 0.158 |"
        ),
    ]


def test_claim_check_pairs_runs_by_seed_and_judges_by_mean_srcc():
    lines = aggregate.claim_check(runs_table(), "leaf")
    assert lines == [
        (
            "- 10% MOS: leaf SRCC 0.640 vs cft_only 0.550 (PLCC 0.700 vs 0.400); leaf better on 3/5 seeds "
            "-> the claim holds here."
        ),
        (
            "- 30% MOS: leaf SRCC 0.612 vs cft_only 0.744 (PLCC 0.800 vs 0.500); leaf better on 4/5 seeds "
            "-> the claim does NOT hold here."
        ),
    ]


def test_claim_check_counts_only_seeds_both_methods_ran_and_skips_label_free():
    runs = runs_table().filter(~((pl.col("method") == "cft_only") & (pl.col("seed") == 2)))  # a win of leaf
    lines = aggregate.claim_check(runs, "leaf")
    assert len(lines) == 2  # no label-free line: calibration alone needs MOS
    assert "leaf better on 2/4 seeds" in lines[0]
    # The means are over each method's own runs: cft_only's without seed 2.
    assert f"vs cft_only {statistics.fmean([0.60, 0.66, 0.59, 0.40]):.3f} " in lines[0]
    # A tie is not a win.
    tied = runs_table().with_columns(
        srcc=pl.when((pl.col("method") == "cft_only") & (pl.col("seed") == 0) & (pl.col("ratio") == 0.1))
        .then(0.61)
        .otherwise(pl.col("srcc"))
    )
    assert "leaf better on 2/5 seeds" in aggregate.claim_check(tied, "leaf")[0]


def test_report_states_the_claim_and_the_cells():
    runs = runs_table().sort("method", "ratio", "seed", nulls_last=False)
    summary = aggregate.summarize(runs)
    text = aggregate.report(runs, summary, ["leaf", "cft_only"], "leaf", "T")
    assert "| LEAF (leaf) | 0.450 ± 0.000 | 0.470 ± 0.000 | 0.640 ± 0.047 |" in text
    assert "Every cell: the same 20 test images" in text
    assert "leaf better on 3/5 seeds -> the claim holds here." in text
    assert "leaf better on 4/5 seeds -> the claim does NOT hold here." in text


def test_claim_check_goes_on_past_a_ratio_one_method_lacks_and_a_tie_of_means_does_not_hold():
    runs = runs_table().filter(~((pl.col("method") == "cft_only") & (pl.col("ratio") == 0.1)))
    lines = aggregate.claim_check(runs, "leaf")
    assert len(lines) == 1 and lines[0].startswith("- 30% MOS:")
    # Equal mean SRCC is not "beats".
    same = runs_table().with_columns(
        srcc=pl.when((pl.col("method") == "cft_only") & (pl.col("ratio") == 0.1))
        .then(pl.col("seed").replace_strict(dict(enumerate(SRCC[("leaf", 0.1)])), return_dtype=pl.Float64) - 0.0)
        .otherwise(pl.col("srcc"))
    )
    assert aggregate.claim_check(same, "leaf")[0].endswith("better on 0/5 seeds -> the claim does NOT hold here.")


def test_cells_mixing_image_counts_are_refused_by_name():
    runs = runs_table().with_columns(n=pl.when(pl.col("seed") == 3).then(19).otherwise(pl.col("n")))
    # Several cells mix counts (every method at 10% and 30%): one of them is named, with the reason.
    with pytest.raises(
        aggregate.InputError,
        match=r"^runs of (leaf|cft_only) at ratio 0\.[13] were evaluated on different "
        r"numbers of test images; a table cell would mix them$",
    ):
        aggregate.summarize(runs)
