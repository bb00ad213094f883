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

# Downstream of the leaf student's stage 1 (cft_only never depends on it); the stage-1 epoch of each
# calibration is chosen per MOS subset (distill.selection: mos_subset, the default).
LEAF_STUDENT = {
    ("distill", "predictions/leaf/labelfree.parquet"),
    ("select_stage1", "students/leaf/ratio0.3/seed0/stage1_selection.parquet"),
    ("calibrate", "predictions/leaf/ratio0.3/seed0.parquet"),
}
# One evaluation of every prediction file on their common test images, then the table; the exported
# student's model card quotes the evaluation, so the export follows it.
EXPORT = {("export_model", "export")}
SUMMARY = {
    ("evaluate", "summary/coverage.parquet"),
    ("aggregate", "summary/summary.parquet"),
    ("plot_label_efficiency", "figures/label_efficiency.png"),
} | EXPORT
CURVES = {("plot_training_curves", "figures/training_curves.png")}
PAIR_FIGURE = {("plot_pair_confidence", "figures/pair_confidence.png")}
# Everything that reads the teacher's point scores directly.
POINT_READERS = {
    ("teacher_zero_shot", "predictions/teacher_zero_shot/labelfree.parquet"),
    ("teacher_linear", "predictions/teacher_linear/ratio0.3/seed0.parquet"),
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
    """One more MOS subset: its subset, leaf's stage-1 selection on it, both calibrations, the linear baseline."""
    stem = f"ratio{ratio}/seed{seed}"
    return {
        ("sample_mos_subset", f"subsets/{stem}.parquet"),
        ("select_stage1", f"students/leaf/{stem}/stage1_selection.parquet"),
        ("teacher_linear", f"predictions/teacher_linear/{stem}.parquet"),
        ("calibrate", f"predictions/leaf/{stem}.parquet"),
        ("calibrate", f"predictions/cft_only/{stem}.parquet"),
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


def edit_code(path: Path) -> None:
    """A real code change (a new statement), as opposed to a comment or formatting edit."""
    with path.open("a") as f:
        f.write("\n_LEAF_TEST_EDIT = 1\n")


def edit_cosmetics(path: Path) -> None:
    """Comments, a docstring edit and reformatting: no change to what the code does."""
    text = path.read_text()
    if text.startswith('"""'):
        end = text.index('"""', 3)
        text = text[:end] + " Edited docstring." + text[end:]
    text = text.replace("(\n", "(  # a comment\n", 1)
    text = text.replace(" = ", "  =  ", 3)
    path.write_text("# a header comment\n" + text + "\n# a trailing comment\n")


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
    assert changed == new_seed_or_ratio("0.3", 1) | SUMMARY | CURVES | EXPORT  # its card lists every seed


def test_more_ratios_run_only_the_new_subsets(done, tmp_path):
    changed = planned(with_config(done, tmp_path, lambda cfg: cfg["calibration"].update(ratios=[0, 0.3, 0.5])))
    assert changed == new_seed_or_ratio("0.5", 0) | SUMMARY | CURVES | EXPORT  # the export moves to ratio 0.5


def test_export_choice_reruns_the_export_only(done, tmp_path):
    label_free = planned(with_config(done, tmp_path, lambda cfg: cfg.update(export={"ratio": 0})))
    assert label_free == EXPORT
    no_onnx = planned(with_config(done, tmp_path, lambda cfg: cfg.update(export={"onnx": False})))
    assert no_onnx == EXPORT


def test_stage1_selection_rule_reruns_the_leaf_student_only(done, tmp_path):
    # distill.selection: teacher starts every calibration from the MOS-free epoch: no per-subset selection,
    # and distill no longer keeps the candidate epochs; cft_only and the teacher are untouched.
    changed = planned(with_config(done, tmp_path, lambda cfg: cfg["distill"].update(selection="teacher")))
    assert (
        changed
        == {("distill", "predictions/leaf/labelfree.parquet"), ("calibrate", "predictions/leaf/ratio0.3/seed0.parquet")}
        | SUMMARY
        | CURVES
    )


def test_tau_refilters_pairs_without_rescoring(done, tmp_path):
    changed = planned(with_config(done, tmp_path, set_tau))
    assert changed == (
        {("filter_pairs", "teacher/standin/pairs_tau0.2.parquet")} | LEAF_STUDENT | SUMMARY | CURVES | PAIR_FIGURE
    )


def test_prompts_rerun_nothing_for_a_teacher_that_reads_none(done, tmp_path):
    # The NIQE stand-in answers from pixels alone: its store key and its rules carry no prompt.
    assert planned(with_config(done, tmp_path, set_point_prompt)) == set()
    assert planned(with_config(done, tmp_path, set_pair_prompt)) == set()


def test_point_prompt_rescores_points_only(tmp_path_factory, tmp_path):
    changed = planned(with_config(hf_touched_run(tmp_path_factory), tmp_path, set_point_prompt))
    assert changed == teacher_jobs(POINT_SCORING, "tiny") | POINT_READERS | LEAF_STUDENT | SUMMARY | CURVES


def test_pair_prompt_rescores_pairs_only(tmp_path_factory, tmp_path):
    changed = planned(with_config(hf_touched_run(tmp_path_factory), tmp_path, set_pair_prompt))
    assert changed == teacher_jobs(PAIR_SCORING, "tiny") | LEAF_STUDENT | SUMMARY | CURVES | PAIR_FIGURE


def test_both_orders_rescores_pairs_only(done, tmp_path):
    changed = planned(with_config(done, tmp_path, lambda cfg: cfg["scoring"].update(both_orders=True)))
    assert changed == teacher_jobs(PAIR_SCORING) | LEAF_STUDENT | SUMMARY | CURVES | PAIR_FIGURE


@pytest.mark.parametrize(
    "edit",
    [
        {"scoring": {"batch_size": 3}},
        {"scoring": {"max_error_fraction": 0.5}},
        {"teacher_store": "elsewhere/store"},
        {"teachers": {"standin": {"gpus": 2}}},
    ],
    ids=["batch_size", "max_error_fraction", "store_folder", "gpus"],
)
def test_settings_that_cannot_change_a_score_rerun_nothing(done, tmp_path, edit):
    from snakemake.utils import update_config

    assert planned(with_config(done, tmp_path, lambda cfg: update_config(cfg, copy.deepcopy(edit)))) == set()


def test_shard_count_reruns_only_the_sharded_jobs_and_after(done, tmp_path):
    # New shard files are new jobs (they answer from the score store: tests/test_store_runs.py counts 0 requests);
    # the assembled points and pairs get the same rows, but Snakemake reruns what reads a rewritten file.
    changed = planned(with_config(done, tmp_path, lambda cfg: cfg["scoring"].update(shards=3)))
    shards = {
        (rule, f"teacher/standin/{kind}/{k}-of-3.parquet")
        for rule, kind in (("score_points", "points"), ("score_pairs", "pairs"))
        for k in (1, 2, 3)
    }
    assembled = {
        ("gather_points", "teacher/standin/points.parquet"),
        ("gather_pairs", "teacher/standin/pairs.parquet"),
        ("filter_pairs", "teacher/standin/pairs_tau0.1.parquet"),
    }
    assert changed == shards | assembled | POINT_READERS | LEAF_STUDENT | SUMMARY | CURVES | PAIR_FIGURE


def test_new_split_rescores_no_point(done, tmp_path):
    # Point scoring reads the split-free image list: a new split reruns the manifest's rule and what reads it.
    # Pairs are drawn from the new training split: their scoring reruns (new pairs are the only new requests).
    changed = planned(with_config(done, tmp_path, lambda cfg: cfg["dataset"].update(split_seed=5)))
    rules = {rule for rule, _ in changed}
    assert "split_demo_dataset" in rules and "sample_pairs" in rules and "score_pairs" in rules
    assert not rules & {"make_demo_dataset", "fit_niqe", "score_points", "gather_points"}


def test_step_code_change_reruns_that_step_and_after(done, tmp_path):
    repo = repo_copy(tmp_path)
    # The checkout's location is not part of any job's record: an unchanged copy reruns nothing.
    assert planned(done, repo) == set()
    edit_code(repo / "leaf_steps/filter_pairs.py")
    changed = planned(done, repo)
    assert changed == {("filter_pairs", "teacher/standin/pairs_tau0.1.parquet")} | LEAF_STUDENT | SUMMARY | CURVES


def test_comment_docstring_and_formatting_edits_rerun_nothing(done, tmp_path):
    repo = repo_copy(tmp_path)
    for module in ("core/io.py", "distill.py", "teachers/standin.py", "images/decode.py"):
        edit_cosmetics(repo / "leaf_steps" / module)
    assert planned(done, repo) == set()


def test_shared_helper_change_reruns_its_importers(done, tmp_path):
    # leaf_steps.evaluation.metrics is imported by evaluate and plot_teacher_scatter, not by the training steps.
    repo = repo_copy(tmp_path)
    edit_code(repo / "leaf_steps/evaluation/metrics.py")
    changed = planned(done, repo)
    assert changed == SUMMARY | {("plot_teacher_scatter", "figures/teacher_vs_mos.png")}


def test_selection_rule_code_change_reruns_selections_and_calibrations_not_distillation(done, tmp_path):
    # leaf_steps.training.selection (the criterion, shared by select_stage1 and calibrate's own epoch choice):
    # every selection and calibration reruns; distill imports only leaf_steps.training.epochs, so it does not.
    repo = repo_copy(tmp_path)
    edit_code(repo / "leaf_steps/training/selection.py")
    changed = planned(done, repo)
    assert (
        changed
        == {
            ("select_stage1", "students/leaf/ratio0.3/seed0/stage1_selection.parquet"),
            ("calibrate", "predictions/leaf/ratio0.3/seed0.parquet"),
            ("calibrate", "predictions/cft_only/ratio0.3/seed0.parquet"),
        }
        | SUMMARY
        | CURVES
    )


def hf_touched_run(tmp_path_factory) -> Run:
    """The tiny demo with the transformers teacher on a tiny random-weight Qwen2-VL, completed by touching."""
    cfg = tiny_rerun_config()
    cfg["teacher"] = "tiny"
    cfg["teachers"] = {
        "tiny": {
            "backend": "transformers",
            "model": "tiny:qwen2_vl",
            "device": "cpu",
            "dtype": "float32",
            "batch_size": 4,
        }
    }
    return touched_tiny_run(tmp_path_factory, "tiny_touched_hf", cfg)


def test_token_checks_reassemble_without_rescoring(done, tmp_path_factory, tmp_path):
    def lower_mass(cfg):
        cfg["scoring"]["min_token_mass"] = 0.2

    # The NIQE stand-in reads no tokens: its scores do not depend on the threshold.
    (tmp_path / "niqe").mkdir()
    (tmp_path / "hf").mkdir()
    assert planned(with_config(done, tmp_path / "niqe", lower_mass)) == set()
    # A token-reading teacher: the threshold is checked when answers are assembled; no scoring job reruns.
    assembled = {
        ("gather_points", "teacher/tiny/points.parquet"),
        ("gather_pairs", "teacher/tiny/pairs.parquet"),
        ("filter_pairs", "teacher/tiny/pairs_tau0.1.parquet"),
    }
    hf = hf_touched_run(tmp_path_factory)
    assert planned(with_config(hf, tmp_path / "hf", lower_mass)) == (
        assembled | POINT_READERS | LEAF_STUDENT | SUMMARY | CURVES | PAIR_FIGURE
    )


@pytest.mark.parametrize(
    "edit", [{"batch_size": 2}, {"device": "auto"}, {"gpus": 1}], ids=["batch_size", "device", "gpus"]
)
def test_how_the_teacher_runs_reruns_nothing(tmp_path_factory, tmp_path, edit):
    hf = hf_touched_run(tmp_path_factory)
    assert planned(with_config(hf, tmp_path, lambda cfg: cfg["teachers"]["tiny"].update(edit))) == set()


def vllm_touched_run(tmp_path_factory) -> Run:
    """The tiny demo with a vLLM teacher at an endpoint (never contacted: the run is touched)."""
    cfg = tiny_rerun_config()
    cfg["teacher"] = "vlm"
    cfg["teachers"] = {"vlm": {"backend": "vllm", "model": "fake/vlm", "base_url": "http://127.0.0.1:9/v1"}}
    return touched_tiny_run(tmp_path_factory, "tiny_touched_vllm", cfg)


@pytest.mark.parametrize(
    "edit",
    [
        {"max_concurrency": 4},
        {"request_timeout_s": 30.0},
        {"max_retries": 9},
        {"backoff_s": 0.5},
        {"base_url": "http://gpu-node:8000/v1"},
        {"gpus": 4},
        {"api_key_env": "MY_KEY"},
    ],
    ids=lambda e: next(iter(e)),
)
def test_vllm_run_settings_rerun_nothing(tmp_path_factory, tmp_path, edit):
    done = vllm_touched_run(tmp_path_factory)
    assert planned(with_config(done, tmp_path, lambda cfg: cfg["teachers"]["vlm"].update(edit))) == set()


@pytest.mark.parametrize(
    "edit",
    [{"top_logprobs": 5}, {"image_transport": "png"}, {"enable_thinking": True}, {"extra_body": {"seed": 1}}],
    ids=lambda e: next(iter(e)),
)
def test_vllm_answer_settings_rescore(tmp_path_factory, tmp_path, edit):
    done = vllm_touched_run(tmp_path_factory)
    changed = planned(with_config(done, tmp_path, lambda cfg: cfg["teachers"]["vlm"].update(edit)))
    assert teacher_jobs(POINT_SCORING | PAIR_SCORING, "vlm") <= changed


@pytest.mark.parametrize(
    "setting",
    [{"visual_budget": {"max_pixels": 3136}}, {"enable_thinking": None}, {"image_max_side": 64}],
    ids=["budget", "thinking", "max_side"],
)
def test_what_the_teacher_sees_rescores_it(tmp_path_factory, tmp_path, setting):
    hf = hf_touched_run(tmp_path_factory)
    changed = planned(with_config(hf, tmp_path, lambda cfg: cfg["teachers"]["tiny"].update(setting)))
    assert changed == (
        teacher_jobs(POINT_SCORING | PAIR_SCORING, "tiny")
        | POINT_READERS
        | LEAF_STUDENT
        | SUMMARY
        | CURVES
        | PAIR_FIGURE
    )


def test_teacher_backend_code_is_hashed_into_scoring(tmp_path_factory, tmp_path):
    # The transformers teacher: no upstream fit step, so only the backend's code hash can rerun scoring.
    done = hf_touched_run(tmp_path_factory)
    repo = repo_copy(tmp_path)
    edit_code(repo / "leaf_steps/teachers/hf.py")
    changed = planned(done, repo)
    assert changed == (
        teacher_jobs(POINT_SCORING | PAIR_SCORING, "tiny")
        | POINT_READERS
        | LEAF_STUDENT
        | SUMMARY
        | CURVES
        | PAIR_FIGURE
    )


@pytest.mark.slow
@pytest.mark.parametrize("edit", [None, set_lr, set_tau, set_point_prompt], ids=["nothing", "lr", "tau", "prompt"])
def test_touched_run_reruns_like_a_real_run(tmp_path_factory, tmp_path, edit):
    real = real_tiny_run(tmp_path_factory)  # the session's real run (two seeds): touched with its config
    touched = touched_tiny_run(tmp_path_factory, "tiny_touched_like_real", real.config())
    edit = edit or (lambda cfg: None)
    assert planned(with_config(real, tmp_path, edit)) == planned(with_config(touched, tmp_path, edit))


CODE_VERSIONS = {
    "base": 'def f(x):\n    """Doc."""\n    return x + 1\n',
    "cosmetic": '# comment\ndef f( x ):  # why\n    """Other doc."""\n\n    return (x +\n            1)\n',
    "no_doc": "def f(x):\n    return x + 1\n",
    "changed": 'def f(x):\n    """Doc."""\n    return x + 2\n',
    "string": 'def f(x):\n    """Doc."""\n    return "a" + str(x + 1)\n',
    "string_quotes": "def f(x):\n    '''Doc.'''\n    return 'a' + str(x + 1)\n",
}


def test_code_hash_ignores_comments_docstrings_and_formatting_but_not_code(tmp_path, monkeypatch):
    from leaf_steps.core import codehash

    pkg = tmp_path / "leaf_steps"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    monkeypatch.setattr(codehash, "ROOT", pkg)
    hashes = {}
    try:
        for name, text in CODE_VERSIONS.items():
            (pkg / "m.py").write_text(text)
            codehash.module_code_hash.cache_clear()
            hashes[name] = codehash.module_code_hash("leaf_steps.m")
    finally:
        codehash.module_code_hash.cache_clear()
    assert hashes["base"] == hashes["cosmetic"] == hashes["no_doc"]
    assert hashes["changed"] != hashes["base"]
    assert hashes["string"] == hashes["string_quotes"] != hashes["base"]


def test_code_hash_covers_lazy_imports_and_parent_packages():
    from leaf_steps.core.codehash import module_closure

    closure = module_closure("leaf_steps.teachers.hf")
    assert "leaf_steps.teachers.tiny_models" in closure  # imported inside a function
    assert {"leaf_steps", "leaf_steps.teachers"} <= set(closure)  # their __init__ runs on import
