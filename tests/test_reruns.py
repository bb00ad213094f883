"""Rerun only what changed: after a completed run, a config or code change reruns exactly the steps
that depend on it (Snakemake's Python API, dry runs; see tests/tiny_run.py for the completed runs).

Jobs are named by rule and their alphabetically first output, relative to results/<run_name>. The tiny demo has
two variants (leaf: distilled; cft_only: calibration only), MOS ratios [0, 0.3] and one seed.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from tiny_run import ROOT, Run, dryrun, real_tiny_run, tiny_rerun_config, touched_tiny_run

# Downstream of the leaf student's stage 1 (cft_only never depends on it).
LEAF_STUDENT = {
    ("distill", "predictions/leaf/labelfree.parquet"),
    ("calibrate", "predictions/leaf/ratio0.3/seed0.parquet"),
    ("evaluate_labelfree", "metrics/leaf/labelfree.parquet"),
    ("evaluate_few_shot", "metrics/leaf/ratio0.3/seed0.parquet"),
}
SUMMARY = {
    ("aggregate", "summary/runs.parquet"),
    ("plot_label_efficiency", "figures/label_efficiency.png"),
}
CURVES = {("plot_training_curves", "figures/training_curves.png")}
PAIR_FIGURE = {("plot_pair_confidence", "figures/pair_confidence.png")}
# Everything that reads the teacher's point scores directly.
POINT_READERS = {
    ("teacher_zero_shot", "predictions/teacher_zero_shot/labelfree.parquet"),
    ("teacher_linear", "predictions/teacher_linear/ratio0.3/seed0.parquet"),
    ("evaluate_labelfree", "metrics/teacher_zero_shot/labelfree.parquet"),
    ("evaluate_few_shot", "metrics/teacher_linear/ratio0.3/seed0.parquet"),
    ("plot_teacher_scatter", "figures/teacher_vs_mos.png"),
}
POINT_SCORING = {
    ("score_points", "teacher/{t}/points/1-of-2.parquet"),
    ("score_points", "teacher/{t}/points/2-of-2.parquet"),
    ("gather_points", "teacher/{t}/points.parquet"),
}
PAIR_SCORING = {
    ("score_pairs", "teacher/{t}/pairs/1-of-2.parquet"),
    ("score_pairs", "teacher/{t}/pairs/2-of-2.parquet"),
    ("gather_pairs", "teacher/{t}/pairs.parquet"),
    ("filter_pairs", "teacher/{t}/pairs_tau0.1.parquet"),
}


def teacher_jobs(jobs: set, teacher: str = "standin") -> set:
    return {(rule, out.format(t=teacher)) for rule, out in jobs}


def new_seed_or_ratio(ratio: str, seed: int) -> set:
    """One more MOS subset: its subset, both calibrations, the linear baseline, three evaluations."""
    stem = f"ratio{ratio}/seed{seed}"
    return {
        ("sample_mos_subset", f"subsets/{stem}.parquet"),
        ("teacher_linear", f"predictions/teacher_linear/{stem}.parquet"),
        ("calibrate", f"predictions/leaf/{stem}.parquet"),
        ("calibrate", f"predictions/cft_only/{stem}.parquet"),
        ("evaluate_few_shot", f"metrics/teacher_linear/{stem}.parquet"),
        ("evaluate_few_shot", f"metrics/leaf/{stem}.parquet"),
        ("evaluate_few_shot", f"metrics/cft_only/{stem}.parquet"),
    }


def planned(run: Run, repo: Path = ROOT) -> set[tuple[str, str]]:
    jobs = dryrun(run, repo=repo)
    keys = [(job.rule, job.outputs[0]) for job in jobs]
    assert len(keys) == len(set(keys)), f"two jobs share a first output: {keys}"
    return set(keys)


def with_config(run: Run, tmp_path: Path, edit) -> Run:
    """The completed run, looked at with an edited copy of its config."""
    cfg = copy.deepcopy(run.config())
    edit(cfg)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return Run(run.workdir, path, run.results)


def repo_copy(tmp_path: Path) -> Path:
    """What a checkout needs to run the DAG: the Snakefile, rules and captions, steps, configs, envs
    (conda env files are part of the recorded software environment)."""
    dest = tmp_path / "repo"
    dest.mkdir()
    shutil.copy2(ROOT / "Snakefile", dest / "Snakefile")
    for folder in ("workflow", "leaf_steps", "config", "envs"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Run:
    return touched_tiny_run(tmp_path_factory)


def set_lr(cfg):
    cfg["distill"]["lr"] = 1.0e-3


def set_tau(cfg):
    cfg["pairs"]["tau"] = 0.2


def set_point_prompt(cfg):
    cfg["prompts"]["point"] = "Rate the perceived quality of this photo: Excellent, Good, Fair, Poor or Bad."


def set_pair_prompt(cfg):
    cfg["prompts"]["pair"] = "Image A comes first, Image B second. Which one looks better? Answer A or B."


def test_nothing_changed_nothing_runs(done):
    assert planned(done) == set()


def test_student_hyperparameter_reruns_student_and_after(done, tmp_path):
    changed = planned(with_config(done, tmp_path, set_lr))
    assert changed == LEAF_STUDENT | SUMMARY | CURVES


def test_more_seeds_run_only_the_new_subsets(done, tmp_path):
    changed = planned(with_config(done, tmp_path, lambda cfg: cfg["calibration"].update(seeds=[0, 1])))
    assert changed == new_seed_or_ratio("0.3", 1) | SUMMARY | CURVES


def test_more_ratios_run_only_the_new_subsets(done, tmp_path):
    changed = planned(with_config(done, tmp_path, lambda cfg: cfg["calibration"].update(ratios=[0, 0.3, 0.5])))
    assert changed == new_seed_or_ratio("0.5", 0) | SUMMARY | CURVES


def test_tau_refilters_pairs_without_rescoring(done, tmp_path):
    changed = planned(with_config(done, tmp_path, set_tau))
    assert changed == ({("filter_pairs", "teacher/standin/pairs_tau0.2.parquet")} | LEAF_STUDENT | SUMMARY | CURVES
                       | PAIR_FIGURE)


def test_point_prompt_rescores_points_only(done, tmp_path):
    changed = planned(with_config(done, tmp_path, set_point_prompt))
    assert changed == teacher_jobs(POINT_SCORING) | POINT_READERS | LEAF_STUDENT | SUMMARY | CURVES


def test_pair_prompt_rescores_pairs_only(done, tmp_path):
    changed = planned(with_config(done, tmp_path, set_pair_prompt))
    assert changed == teacher_jobs(PAIR_SCORING) | LEAF_STUDENT | SUMMARY | CURVES | PAIR_FIGURE


def test_both_orders_rescores_pairs_only(done, tmp_path):
    changed = planned(with_config(done, tmp_path, lambda cfg: cfg["scoring"].update(both_orders=True)))
    assert changed == teacher_jobs(PAIR_SCORING) | LEAF_STUDENT | SUMMARY | CURVES | PAIR_FIGURE


def test_step_code_change_reruns_that_step_and_after(done, tmp_path):
    repo = repo_copy(tmp_path)
    # The checkout's location is not part of any job's record: an unchanged copy reruns nothing.
    assert planned(done, repo) == set()
    with (repo / "leaf_steps/filter_pairs.py").open("a") as f:
        f.write("# an edit\n")
    changed = planned(done, repo)
    assert changed == {("filter_pairs", "teacher/standin/pairs_tau0.1.parquet")} | LEAF_STUDENT | SUMMARY | CURVES


def test_shared_helper_change_reruns_its_importers(done, tmp_path):
    # leaf_steps.metrics is imported by evaluate and plot_results, not by the training steps.
    repo = repo_copy(tmp_path)
    with (repo / "leaf_steps/metrics.py").open("a") as f:
        f.write("# an edit\n")
    changed = planned(done, repo)
    evaluations = {(rule, out) for rule, out in LEAF_STUDENT | POINT_READERS if rule.startswith("evaluate")}
    evaluations |= {("evaluate_labelfree", "metrics/leaf/labelfree.parquet"),
                    ("evaluate_few_shot", "metrics/cft_only/ratio0.3/seed0.parquet")}
    assert changed == evaluations | SUMMARY | {("plot_teacher_scatter", "figures/teacher_vs_mos.png")}


def test_teacher_backend_code_is_hashed_into_scoring(tmp_path_factory, tmp_path):
    # The transformers teacher: no upstream fit step, so only the backend's code hash can rerun scoring.
    cfg = tiny_rerun_config()
    cfg["teacher"] = "tiny"
    cfg["teachers"] = {"tiny": {"backend": "transformers", "model": "tiny:qwen2_vl", "device": "cpu",
                                "dtype": "float32", "batch_size": 4}}
    done = touched_tiny_run(tmp_path_factory, "tiny_touched_hf", cfg)
    repo = repo_copy(tmp_path)
    with (repo / "leaf_steps/teachers/hf.py").open("a") as f:
        f.write("# an edit\n")
    changed = planned(done, repo)
    assert changed == (teacher_jobs(POINT_SCORING | PAIR_SCORING, "tiny") | POINT_READERS | LEAF_STUDENT | SUMMARY
                       | CURVES | PAIR_FIGURE)


@pytest.mark.slow
@pytest.mark.parametrize("edit", [None, set_lr, set_tau, set_point_prompt], ids=["nothing", "lr", "tau", "prompt"])
def test_touched_run_reruns_like_a_real_run(tmp_path_factory, tmp_path, edit):
    real = real_tiny_run(tmp_path_factory)  # the session's real run (two seeds): touched with its config
    touched = touched_tiny_run(tmp_path_factory, "tiny_touched_like_real", real.config())
    edit = edit or (lambda cfg: None)
    assert planned(with_config(real, tmp_path, edit)) == planned(with_config(touched, tmp_path, edit))


def test_code_hash_covers_lazy_imports_and_parent_packages():
    from leaf_steps.codehash import module_closure

    closure = module_closure("leaf_steps.teachers.hf")
    assert "leaf_steps.tiny_models" in closure  # imported inside a function
    assert {"leaf_steps", "leaf_steps.teachers"} <= set(closure)  # their __init__ runs on import
