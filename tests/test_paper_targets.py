"""The paper configs (config/paper/*.yaml) plan the jobs their table needs, and the paper_table step
lays a run's summary out beside the paper's numbers.

The dry-runs need no dataset: Snakemake plans the download, and every job after it, from the config.
Expected job counts are computed here from each config, independently of workflow/rules/common.smk.
"""

import functools
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl
import pytest
import yaml

from leaf_steps.core.config import load_config
from leaf_steps.core.errors import ConfigError
from leaf_steps.evaluation.paper_numbers import TARGETS, missing_runs, paper_rows
from leaf_steps.paper_table import EXTRA_SECTION
from leaf_steps.paper_table import main as paper_table_main
from leaf_steps.teachers.vllm import validate_spec

ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIGS = sorted((ROOT / "config/paper").glob("*.yaml"))
TABLE4_TEACHERS = {
    "Qwen/Qwen3-VL-8B-Instruct",
    "Qwen/Qwen3-VL-32B-Instruct",
    "OpenGVLab/InternVL3_5-8B",
    "OpenGVLab/InternVL3_5-38B",
}
TABLE4_STUDENTS = {"resnet18", "resnet50", "convnext_tiny", "convnext_base", "convnext_large"}


def dry_run(configfile: Path, workdir: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--quiet",
        "rules",
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


def job_counts(output: str) -> dict[str, int]:
    """Snakemake's "Job stats" table as {rule: count}."""
    stats = output[output.index("Job stats:") :]
    counts = {}
    for line in stats.splitlines()[1:]:
        m = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if m is None:
            continue
        if m[1] == "total":
            break
        counts[m[1]] = int(m[2])
    return counts


def expected_counts(cfg: dict) -> dict[str, int]:
    """Jobs per rule the LEAF design implies for a config (paper Sec. 3-4, config/README.md)."""
    ratios = [float(r) for r in cfg["calibration"]["ratios"]]
    n_few_shot = sum(r > 0 for r in ratios) * len(cfg["calibration"]["seeds"])
    variants = [
        {"teacher": cfg["teacher"], "distill": True, "use_pair": True, "use_confidence": True} | v
        for v in cfg["variants"].values()
    ]
    distilled = [v for v in variants if v["distill"]]
    point_teachers = {cfg["teacher"]} | {v["teacher"] for v in distilled}  # baselines use the default teacher
    pair_teachers = {v["teacher"] for v in distilled if v["use_pair"]}
    tau = cfg["pairs"].get("tau", 0.1)
    filtered = {(v["teacher"], tau if v["use_confidence"] else 0) for v in distilled if v["use_pair"]}
    shards = cfg["scoring"]["shards"]
    zero_shot = int("teacher_zero_shot" in cfg["evaluation"]["baselines"])
    linear = int("teacher_linear" in cfg["evaluation"]["baselines"])
    counts = {
        "download_dataset": 1,
        "prepare_dataset": 1,
        "score_points": shards * len(point_teachers),
        "gather_points": len(point_teachers),
        "sample_pairs": int(bool(pair_teachers)),
        "score_pairs": shards * len(pair_teachers),
        "gather_pairs": len(pair_teachers),
        "filter_pairs": len(filtered),
        "distill": len(distilled),
        "sample_mos_subset": n_few_shot,
        "calibrate": len(variants) * n_few_shot,
        "teacher_zero_shot": zero_shot,
        "teacher_linear": linear * n_few_shot,
        # Few-shot stage-1 selection (distill.selection defaults to mos_subset): one per distilled variant x subset.
        "select_stage1": (
            len(distilled) * n_few_shot if cfg["distill"].get("selection", "mos_subset") == "mos_subset" else 0
        ),
        "evaluate": 1,  # every prediction file at once, on their common test images
        "aggregate": 1,
        "paper_table": 1,
        "all": 1,
    }
    return {rule: n for rule, n in counts.items() if n}


@functools.cache
def plan(stem: str) -> tuple[Path, dict, dict[str, int], str]:
    """Dry-run of config/paper/<stem>.yaml (once per test session): path, config, jobs per rule, output."""
    path = ROOT / "config/paper" / f"{stem}.yaml"
    with tempfile.TemporaryDirectory() as workdir:
        proc = dry_run(path, Path(workdir))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return path, load_config(path), job_counts(output), output


@pytest.fixture(params=[p.stem for p in PAPER_CONFIGS])
def planned(request):
    return plan(request.param)


def test_there_is_a_config_per_paper_target():
    covered = {
        (c["paper"]["target"], c["paper"].get("dataset") or c["dataset"]["name"])
        for c in map(load_config, PAPER_CONFIGS)
    }
    assert covered == {(name, ds) for name, t in TARGETS.items() for ds in t.datasets}


def test_dry_run_plans_the_jobs_the_config_implies(planned):
    _, cfg, counts, _ = planned
    expected = expected_counts(cfg)
    assert {rule: counts.get(rule, 0) for rule in expected} == expected
    # Rules not modelled above (figures) are one job per run, never one per seed or shard.
    assert {rule: n for rule, n in counts.items() if rule not in expected and n != 1} == {}


def test_config_runs_every_row_the_paper_reports(planned):
    path, cfg, _, output = planned
    target, dataset = cfg["paper"]["target"], cfg["paper"].get("dataset") or cfg["dataset"]["name"]
    assert dataset == cfg["dataset"]["name"]
    assert path.stem == f"{target}_{dataset}"
    planned_cells = [
        (v, r)
        for v in cfg["variants"]
        for r in cfg["calibration"]["ratios"]
        if r > 0 or cfg["variants"][v].get("distill", True)
    ]
    planned_cells += [("teacher_zero_shot", 0.0)] + [("teacher_linear", r) for r in cfg["calibration"]["ratios"] if r]
    assert missing_runs(target, dataset, planned_cells) == []
    assert "does not run" not in output  # paper.smk's start-up warning
    assert len(cfg["calibration"]["seeds"]) == 5  # "five times with different random seeds" (Sec. 4.2)


def test_teachers_are_valid_vllm_specs(planned):
    _, cfg, _, _ = planned
    for name, spec in cfg["teachers"].items():
        s = validate_spec({**spec, "name": name})
        assert s["launch"]["tensor_parallel_size"] == s["gpus"] >= 1
        if "InternVL" in s["model"]:
            assert s["launch"]["trust_remote_code"], f"{name}: InternVL needs trust_remote_code"


def test_table4_covers_four_teachers_and_five_students():
    _, cfg, counts, _ = plan("table4_agiqa3k")
    assert {t["model"] for t in cfg["teachers"].values()} == TABLE4_TEACHERS
    students = {v.get("student_model", cfg["student"]["model"]) for v in cfg["variants"].values()}
    assert students == TABLE4_STUDENTS and cfg["student"]["pretrained"] is True
    # One stage-1 run per distinct row of the table (the default pair fills a row in each half).
    assert counts["distill"] == len({r.method for r in paper_rows("table4", "agiqa3k")}) == 8
    big = {t["model"]: t["gpus"] for t in cfg["teachers"].values()}
    assert big["OpenGVLab/InternVL3_5-38B"] == big["Qwen/Qwen3-VL-32B-Instruct"] == 2


def test_table3_variants_match_the_paper_rows():
    cfg = load_config(ROOT / "config/paper/table3_agiqa3k.yaml")
    for row in paper_rows("table3", "agiqa3k"):
        marks = {k: v == "✓" for k, v in row.columns}
        v = {"distill": True, "use_point": True, "use_pair": True, "use_confidence": True} | cfg["variants"][row.method]
        if not any(marks.values()):
            assert v["distill"] is False, row.label
            continue
        assert (v["distill"], v["use_point"], v["use_pair"]) == (True, marks["Point"], marks["Pair"]), row.label
        if v["use_pair"]:
            assert v["use_confidence"] == marks["Pair Conf."], row.label


def test_a_paper_block_for_the_wrong_dataset_stops_the_workflow(tmp_path):
    cfg = yaml.safe_load((ROOT / "config/paper/table2_koniq10k.yaml").read_text())
    cfg["paper"] = {"target": "table2"}
    cfg["dataset"] = {"name": "agiqa3k"}  # Table 2 has no AGIQA-3K column
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = dry_run(bad, tmp_path)
    assert proc.returncode != 0
    assert "paper.dataset: the paper reports table2 on ['koniq10k', 'spaq'], not 'agiqa3k'" in proc.stdout + proc.stderr


# --- the paper_table step on a small synthetic summary ---------------------------------------------


def summary_frame(rows: list[tuple[str, float, int, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "method": m,
                "ratio": r,
                "n_runs": n,
                "srcc_mean": s,
                "srcc_std": 0.01 if n > 1 else 0.0,
                "plcc_mean": p,
                "plcc_std": 0.02 if n > 1 else 0.0,
                "plcc_logistic_mean": p + 0.005,
            }
            for m, r, n, s, p in rows
        ],
        schema_overrides={"n_runs": pl.UInt32},
    )


def run_paper_table(tmp_path, summary: pl.DataFrame, target: str, dataset: str) -> tuple[pl.DataFrame, str]:
    summary.write_parquet(tmp_path / "summary.parquet")
    md, pq = tmp_path / f"paper_{target}.md", tmp_path / f"paper_{target}.parquet"
    paper_table_main(
        [
            "--summary",
            str(tmp_path / "summary.parquet"),
            "--target",
            target,
            "--dataset",
            dataset,
            "--out-markdown",
            str(md),
            "--out-parquet",
            str(pq),
        ]
    )
    return pl.read_parquet(pq), md.read_text()


def test_paper_table_puts_ours_beside_the_paper(tmp_path):
    summary = summary_frame(
        [
            ("leaf", 0.0, 1, 0.700, 0.800),
            ("leaf", 0.1, 5, 0.850, 0.890),
            ("cft_only", 0.1, 5, 0.760, 0.800),
            ("teacher_zero_shot", 0.0, 1, 0.650, 0.700),
        ]
    )
    table, md = run_paper_table(tmp_path, summary, "table1", "aigiqa20k")

    ours10 = table.filter(pl.col("label") == "Ours (10% MOS)").row(0, named=True)
    assert (ours10["paper_srcc"], ours10["paper_plcc"]) == (0.839, 0.878)  # Table 1, AIGIQA-20K column
    assert ours10["diff_srcc"] == pytest.approx(0.850 - 0.839) and ours10["diff_plcc"] == pytest.approx(0.890 - 0.878)
    assert "| Ours (10% MOS) | 0.839 | 0.850 ± 0.010 | +0.011 | 0.878 | 0.890 ± 0.020 | +0.012 | 0.895 | 5 |" in md
    assert "| Ours | 0.696 | 0.700 | +0.004 | 0.762 | 0.800 | +0.038 | 0.805 | 1 |" in md  # one run: no ± std
    # 30% MOS was not run: the paper's value stays, ours says so.
    assert "| Ours (30% MOS) | 0.860 | not run |  | 0.905 | not run |" in md
    # Competitors keep the paper's numbers only, in the paper's sections and order.
    brisque = table.filter(pl.col("label") == "BRISQUE (TIP, 2012)").row(0, named=True)
    assert brisque["section"] == "Supervised" and brisque["srcc_mean"] is None and brisque["paper_srcc"] == 0.466
    assert md.index("**Supervised**") < md.index("**Weak-supervised**") < md.index("**Label-free**")
    # What the paper does not report is still shown, after the paper's rows.
    extra = table.filter(pl.col("section") == EXTRA_SECTION)
    assert extra.select("method", "ratio").rows() == [("cft_only", 0.1), ("teacher_zero_shot", 0.0)]
    assert md.index("**Supervised**") < md.index(f"**{EXTRA_SECTION}**")
    assert "not comparable" in md  # the AIGIQA-20K re-split caveat travels with the numbers
    assert "SRCC: 2 row(s) compared" in md


def test_fig4_lists_every_ratio_of_the_sweep_in_order(tmp_path):
    sweep = [("leaf", r, 1 if r == 0 else 5, 0.75 + r / 10, 0.8 + r / 10) for r in (0.0, 0.05, 0.1, 0.7)]
    summary = summary_frame([*sweep, ("cft_only", 0.1, 5, 0.7, 0.75)])
    table, md = run_paper_table(tmp_path, summary, "fig4", "agiqa3k")
    sweep = table.filter(pl.col("method") == "leaf")
    assert sweep["ratio"].to_list() == [0.0, 0.05, 0.1, 0.3, 0.7]  # 0.3: stated by the paper, not run here
    assert sweep["paper_srcc"].to_list() == [0.749, None, 0.841, 0.869, None]
    assert sweep["srcc_mean"].to_list()[3] is None and "| 30% MOS | 0.869 | not run |" in md
    assert "| 5% MOS |  | 0.755 ± 0.010 |  |" in md


def test_table4_keeps_the_params_column_and_fills_both_default_rows(tmp_path):
    summary = summary_frame([("leaf", 0.1, 5, 0.84, 0.9), ("resnet18", 0.1, 5, 0.8, 0.86)])
    table, md = run_paper_table(tmp_path, summary, "table4", "agiqa3k")
    defaults = table.filter(pl.col("method") == "leaf")
    assert defaults["label"].to_list() == ["InternVL-3.5", "ConvNeXt-Base"]
    assert defaults["srcc_mean"].to_list() == [0.84, 0.84]
    assert "| ResNet-18 | 11.7M | 0.807 | 0.800 ± 0.010 | -0.007 |" in md
    assert "Not run by this config: 'Qwen3-VL'" in md


def test_paper_table_refuses_a_dataset_the_paper_does_not_report(tmp_path):
    summary_frame([("leaf", 0.1, 5, 0.8, 0.9)]).write_parquet(tmp_path / "s.parquet")
    with pytest.raises(ConfigError, match=r"paper\.dataset: the paper reports table3 on \['agiqa3k'\], not 'spaq'"):
        paper_table_main(
            [
                "--summary",
                str(tmp_path / "s.parquet"),
                "--target",
                "table3",
                "--dataset",
                "spaq",
                "--out-markdown",
                str(tmp_path / "x.md"),
                "--out-parquet",
                str(tmp_path / "x.parquet"),
            ]
        )
