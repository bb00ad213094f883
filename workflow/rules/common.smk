# Helpers and input functions shared by all rule files.
import json
import re
import shlex
import sys
from pathlib import Path

from leaf_steps.core.codehash import code_fingerprint
from leaf_steps.core.config import validate_config, variant_settings
from leaf_steps.core.config_checks import config_warnings, resolved_min_side
from leaf_steps.datasets.fingerprint import dataset_fingerprint
from leaf_steps.core.errors import ConfigError, LeafError
from leaf_steps.teachers.base import BACKENDS, backend_class, split_spec
from leaf_steps.training.epochs import candidate_epochs

try:
    validate_config(config, source="config")
except LeafError as exc:
    sys.exit(f"LEAF config error: {exc}")
for _warning in config_warnings(config):
    print(f"LEAF config warning: {_warning}", file=sys.stderr)


R = f"{config['results_dir']}/{config['run_name']}"
RES = config["resources_dir"]
LOGS = f"{R}/logs"
BENCH = f"{R}/benchmarks"
MANIFEST = f"{R}/dataset/manifest.parquet"
# The split-free image list (image_id, path, sha256): teacher scoring's input, so a new split rescores nothing.
IMAGES = f"{R}/dataset/images.parquet"
# Every teacher answer, keyed by image bytes and score settings, shared by all runs and configs
# (leaf_steps/teachers/store.py).
TEACHER_STORE = config.get("teacher_store") or f"{RES}/teacher_store"
# Steps (`python -m leaf_steps.<step>`) always import leaf_steps from this checkout: the code that
# runs is the code that is hashed into params. A shell prefix rather than a variable in each command:
# it also applies inside conda envs (which drop an inherited PYTHONPATH; the prefix runs after the
# activation), it keeps `snakemake --lint` clean, and the checkout's location stays out of the
# recorded shell text, so moving the checkout reruns nothing. (The prefix is str.format-ed.)
shell.prefix(
    "set -euo pipefail; export PYTHONPATH={}; ".format(
        shlex.quote(str(workflow.basedir)).replace("{", "{{").replace("}", "}}")
    )
)


wildcard_constraints:
    teacher=r"[A-Za-z0-9_.-]+",
    # Only configured variants: predictions/teacher_linear/... is the baseline's, never a student's.
    variant="|".join(re.escape(v) for v in config["variants"]),
    ratio=r"[0-9]+(\.[0-9]+)?",
    seed=r"[0-9]+",
    tau=r"[0-9]+(\.[0-9]+)?",


scattergather:
    teacher=config["scoring"]["shards"],


ENV_CORE = "../../envs/core.yaml"
ENV_STUDENT = "../../envs/student.yaml"
ENV_TEACHER = "../../envs/teacher.yaml"


def teacher_env(teacher):
    """A launched vLLM server needs vLLM in the job's env; every other teacher does not."""
    spec = config["teachers"][teacher]
    if spec["backend"] == "vllm" and not spec.get("base_url"):
        return "../../envs/teacher-vllm.yaml"
    return ENV_TEACHER


def jq(obj):
    """A JSON value quoted for the shell: settings reach the step as one argument."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


class Untracked:
    """A params value Snakemake does not track: it records and compares only builtin values (strings,
    numbers, containers; snakemake/persistence), so changing this one reruns no job. For settings that
    change how a job runs, never what it writes (batch size, concurrency, timeouts, endpoint, error
    threshold, the score store's folder). It reaches the shell as quoted JSON."""

    def __init__(self, value):
        self.value = value

    def __str__(self):
        return jq(self.value)

    def __repr__(self):
        return f"Untracked({self.value!r})"


def step_code(*modules):
    """Per-module hashes of the step modules' code and their leaf_steps imports (rerun on a code
    change; comments, docstrings and formatting do not count; `leaf why` names the module)."""
    return code_fingerprint(*(f"leaf_steps.{m}" for m in modules))


def fmt(x):
    """Ratios and taus as they appear in paths: 0.1 -> '0.1', 0 -> '0'."""
    return f"{float(x):g}"


RATIOS = [fmt(r) for r in config["calibration"]["ratios"]]
FEW_SHOT_RATIOS = [r for r in RATIOS if float(r) > 0]
SEEDS = [int(s) for s in config["calibration"]["seeds"]]
VARIANTS = {name: variant_settings(config, name) for name in config["variants"]}
BASELINES = config["evaluation"]["baselines"]
# Few-shot stage-1 selection per MOS subset (distill.selection: mos_subset): distill keeps the
# candidate epochs' checkpoints and outputs, select_stage1 picks one per subset.
STAGE1_PER_SUBSET = config["distill"]["selection"] == "mos_subset" and bool(FEW_SHOT_RATIOS)
STAGE1_EPOCHS = (
    candidate_epochs(config["distill"]["epochs"], config["distill"]["checkpoint_every"]) if STAGE1_PER_SUBSET else []
)
HEADLINE = config["evaluation"].get("headline_variant") or next((v for v, s in VARIANTS.items() if s["distill"]), None)


def dataset_settings():
    """The dataset block as the dataset steps read it, with dataset.min_side resolved for this run's teachers."""
    return {**config["dataset"], "min_side": resolved_min_side(config)}


def dataset_files(wildcards):
    """Names, sizes and mtimes of every file the dataset stage reads (leaf_steps.datasets.fingerprint):
    adding, removing, renaming or editing an image, or editing a label file, reruns the stage. Evaluated
    when the DAG is built and again right before the job runs (after the download), never hashing content."""
    return dataset_fingerprint(config["dataset"]["name"], config["dataset"], RES)


def niqe_references(teacher):
    """The pristine photos NIQE is fitted on: teachers.<name>.pristine_dir, else the demo's generated
    references, else (other datasets) none: the step then uses scikit-image's bundled photos."""
    spec = config["teachers"][teacher]
    if spec.get("pristine_dir"):
        return {"references": spec["pristine_dir"]}
    if config["dataset"]["name"] == "demo":
        return {"references": f"{R}/dataset/references"}
    return {}


def teacher_backend_module(teacher):
    return BACKENDS[config["teachers"][teacher]["backend"]].split(":")[0].removeprefix("leaf_steps.")


def teacher_inputs(teacher):
    """Extra inputs a teacher needs (the stand-in's pristine model)."""
    if config["teachers"][teacher]["backend"] == "niqe":
        return {"niqe_model": f"{R}/teacher/{teacher}/niqe_model.npz"}
    return {}


# scoring.* defaults of token-reading teachers: they reach a scoring step through teacher_spec only,
# so that a stand-in teacher, which reads no tokens, is not rescored when they change.
TOKEN_DEFAULTS = ("missing_token_policy", "min_token_mass")


def teacher_spec(teacher):
    """teachers.<name> as the scoring steps run it: token defaults from scoring.*, the NIQE model's path."""
    spec = dict(config["teachers"][teacher])
    if spec["backend"] in ("vllm", "transformers"):  # only token-reading backends impute or check label tokens
        for key in TOKEN_DEFAULTS:
            spec.setdefault(key, config["scoring"][key])
    if spec["backend"] == "niqe":
        spec["model_path"] = teacher_inputs(teacher)["niqe_model"]
    return spec


def teacher_part(teacher, part):
    """One part of the teacher block (leaf_steps.teachers.base.split_spec): "score" (what changes an
    answer: the scoring rules' tracked params), "acceptance" (min_token_mass: the assembling rules')."""
    return split_spec(teacher_spec(teacher))[part]


def scoring_prompt(teacher, kind):
    """The kind's prompt, for a teacher that reads prompts (None for the NIQE stand-in: editing the
    prompts reruns none of its jobs)."""
    return config["prompts"][kind] if backend_class(config["teachers"][teacher]["backend"]).reads_prompts else None


def scoring_run(teacher):
    """How a scoring job runs (Untracked: none of it changes an answer): the whole teacher block, both
    prompts (backends check both are set), batch size, error threshold, the score store's folder."""
    return Untracked(
        {
            "teacher": teacher_spec(teacher),
            "prompts": config["prompts"],
            "batch_size": config["scoring"]["batch_size"],
            "max_error_fraction": config["scoring"]["max_error_fraction"],
            "store": TEACHER_STORE,
        }
    )


def pair_tau(variant):
    # Without confidence (Table 3 ablation) pairs are neither filtered nor weighted.
    return fmt(config["pairs"]["tau"]) if VARIANTS[variant]["use_confidence"] else "0"


def distill_inputs(wildcards):
    s = VARIANTS[wildcards.variant]
    inputs = {"manifest": MANIFEST, "points": f"{R}/teacher/{s['teacher']}/points.parquet"}
    if s["use_pair"]:
        inputs["pairs"] = f"{R}/teacher/{s['teacher']}/pairs_tau{pair_tau(wildcards.variant)}.parquet"
    return inputs


def student_settings(variant):
    s = VARIANTS[variant]
    return {
        "student": config["student"],
        "student_model": s["student_model"],
        "device": config["device"],
    }


def stage1_epoch_outputs():
    """distill's per-epoch outputs for few-shot selection ({variant} stays a wildcard); none otherwise."""
    if not STAGE1_PER_SUBSET:
        return {}
    stage1 = f"{R}/students/{{variant}}/stage1"
    return {
        "epoch_checkpoints": [f"{stage1}/epochs/epoch{e}.safetensors" for e in STAGE1_EPOCHS],
        "epoch_predictions": f"{stage1}/epoch_predictions.parquet",
    }


def stage1_selection_file(variant, ratio, seed):
    return f"{R}/students/{variant}/ratio{ratio}/seed{seed}/stage1_selection.parquet"


def calibrate_inputs(wildcards):
    inputs = {"manifest": MANIFEST, "subset": f"{R}/subsets/ratio{wildcards.ratio}/seed{wildcards.seed}.parquet"}
    if VARIANTS[wildcards.variant]["distill"]:
        stage1 = f"{R}/students/{wildcards.variant}/stage1"
        if STAGE1_PER_SUBSET:
            inputs["selection"] = stage1_selection_file(wildcards.variant, wildcards.ratio, wildcards.seed)
            # The teacher rule's checkpoint too: a subset too small to rank epochs falls back to it.
            inputs["stage1_checkpoints"] = [f"{stage1}/epochs/epoch{e}.safetensors" for e in STAGE1_EPOCHS] + [
                f"{stage1}/model.safetensors"
            ]
        else:
            inputs["init"] = f"{stage1}/model.safetensors"
    return inputs


def stage1_start_args(input):
    """calibrate's stage-1 start: a per-subset selection among the kept epochs, or the teacher rule's checkpoint."""
    if "selection" in input.keys():
        return f"--stage1-selection {input.selection} --stage1-checkpoints {' '.join(input.stage1_checkpoints)}"
    if "init" in input.keys():
        return f"--init {input.init}"
    return ""


def method_runs():
    """(method, path stem) of every prediction file that gets evaluated."""
    runs = []
    if "teacher_zero_shot" in BASELINES:
        runs.append(("teacher_zero_shot", "labelfree"))
    for ratio in FEW_SHOT_RATIOS:
        for seed in SEEDS:
            if "teacher_linear" in BASELINES:
                runs.append(("teacher_linear", f"ratio{ratio}/seed{seed}"))
    for variant, s in VARIANTS.items():
        if s["distill"] and "0" in RATIOS:
            runs.append((variant, "labelfree"))
        for ratio in FEW_SHOT_RATIOS:
            for seed in SEEDS:
                runs.append((variant, f"ratio{ratio}/seed{seed}"))
    return runs


def prediction_files():
    return [f"{R}/predictions/{method}/{stem}.parquet" for method, stem in method_runs()]


def evaluate_run_args():
    """evaluate's --run METHOD RATIO SEED PREDICTIONS for every prediction file (seed '-': label-free)."""
    args = []
    for (method, stem), path in zip(method_runs(), prediction_files()):
        ratio, seed = ("0", "-") if stem == "labelfree" else re.fullmatch(r"ratio(.+)/seed(\d+)", stem).groups()
        args.append(f"--run {shlex.quote(method)} {ratio} {seed} {shlex.quote(path)}")
    return " ".join(args)


def method_order():
    seen = []
    for method, _ in method_runs():
        if method not in seen:
            seen.append(method)
    return seen


def scatter_linear_input(wildcards):
    """Fig 2 b/c: the teacher after a linear calibration on the first MOS subset, when there is one."""
    if "teacher_linear" in BASELINES and FEW_SHOT_RATIOS:
        return {"linear": f"{R}/predictions/teacher_linear/ratio{FEW_SHOT_RATIOS[0]}/seed{SEEDS[0]}.parquet"}
    return {}


def scatter_linear_args(input):
    """The linear panel's file and the MOS subset (ratio, seed) its line was fitted on, for its title."""
    if "linear" not in input.keys():
        return ""
    return f"--linear {input.linear} --linear-ratio {FEW_SHOT_RATIOS[0]} --linear-seed {SEEDS[0]}"


def stage1_loss_runs():
    """(variant, losses file) of every distilled variant."""
    return [(v, f"{R}/students/{v}/stage1/losses.parquet") for v, s in VARIANTS.items() if s["distill"]]


def stage2_loss_runs():
    """(variant, ratio, seed, losses file) of every calibration."""
    return [
        (v, ratio, seed, f"{R}/students/{v}/ratio{ratio}/seed{seed}/losses.parquet")
        for v in VARIANTS
        for ratio in FEW_SHOT_RATIOS
        for seed in SEEDS
    ]


def stage1_selection_runs():
    """(variant, ratio, seed, selection file) of every per-subset stage-1 selection."""
    if not STAGE1_PER_SUBSET:
        return []
    return [
        (v, ratio, seed, stage1_selection_file(v, ratio, seed))
        for v, s in VARIANTS.items()
        if s["distill"]
        for ratio in FEW_SHOT_RATIOS
        for seed in SEEDS
    ]


def training_curve_args():
    args = [f"--stage1 {shlex.quote(v)} {shlex.quote(path)}" for v, path in stage1_loss_runs()]
    args += [f"--stage2 {shlex.quote(v)} {r} {s} {shlex.quote(path)}" for v, r, s, path in stage2_loss_runs()]
    args += [f"--selection {shlex.quote(v)} {r} {s} {shlex.quote(path)}" for v, r, s, path in stage1_selection_runs()]
    return " ".join(args)


def pair_teachers():
    """Teachers whose scored pairs a distilled variant trains on (no figure forces pair scoring)."""
    return sorted({s["teacher"] for s in VARIANTS.values() if s["distill"] and s["use_pair"]})


def scored_pairs_args():
    return " ".join(
        f"--pairs {shlex.quote(t)} {shlex.quote(f'{R}/teacher/{t}/pairs.parquet')}" for t in pair_teachers()
    )


def confidence_tau_arg():
    """The threshold line of the pair-confidence figure, when some variant filters pairs by it."""
    filtered = any(s["distill"] and s["use_pair"] and s["use_confidence"] for s in VARIANTS.values())
    return f"--tau {fmt(config['pairs']['tau'])}" if filtered else ""


def final_targets():
    targets = [f"{R}/summary/table.md", f"{R}/figures/label_efficiency.png", f"{R}/figures/teacher_vs_mos.png"]
    targets += [path for _, path in stage1_loss_runs()]
    if stage1_loss_runs() or stage2_loss_runs():
        targets.append(f"{R}/figures/training_curves.png")
    if pair_teachers():
        targets.append(f"{R}/figures/pair_confidence.png")
    targets.append(f"{R}/export")  # the headline student, deployable (workflow/rules/export.smk)
    if "paper" in config:  # the paper's table beside this run's (workflow/rules/paper.smk)
        targets.append(f"{R}/summary/paper_{config['paper']['target']}.md")
    return targets


def export_choice():
    """(variant, ratio, seed) of the model exported to <run>/export: config `export`, by default the
    headline variant at the largest few-shot ratio and the first seed (label-free when no ratio > 0)."""
    e = config["export"]
    if e["variant"] is not None and e["variant"] not in VARIANTS:
        sys.exit(f"LEAF config error: export.variant: {e['variant']!r} is not a key of variants")
    if e["ratio"] is not None and fmt(e["ratio"]) not in RATIOS:
        sys.exit(f"LEAF config error: export.ratio: {e['ratio']} is not one of calibration.ratios {RATIOS}")
    if e["seed"] is not None and int(e["seed"]) not in SEEDS:
        sys.exit(f"LEAF config error: export.seed: {e['seed']} is not one of calibration.seeds {SEEDS}")
    variant = e["variant"] or HEADLINE or next(iter(VARIANTS))
    if e["ratio"] is not None:
        ratio = fmt(e["ratio"])
    elif FEW_SHOT_RATIOS:
        ratio = max(FEW_SHOT_RATIOS, key=float)
    else:
        ratio = "0"
    if float(ratio) == 0 and not VARIANTS[variant]["distill"]:
        sys.exit(
            f"LEAF config error: export: variant {variant!r} has no label-free model (distill: false); "
            "set export.ratio to a few-shot ratio"
        )
    seed = SEEDS[0] if e["seed"] is None else int(e["seed"])
    return variant, ratio, seed


def export_inputs(wildcards):
    variant, ratio, seed = export_choice()
    if float(ratio) == 0:
        return {
            "checkpoint": f"{R}/students/{variant}/stage1/model.safetensors",
            "runs": f"{R}/summary/runs.parquet",
            "manifest": MANIFEST,
        }
    return {
        "checkpoint": f"{R}/students/{variant}/ratio{ratio}/seed{seed}/model.safetensors",
        "runs": f"{R}/summary/runs.parquet",
        "subset": f"{R}/subsets/ratio{ratio}/seed{seed}.parquet",
        "manifest": MANIFEST,
    }


def export_settings():
    variant, ratio, seed = export_choice()
    teacher = VARIANTS[variant]["teacher"]
    spec = config["teachers"][teacher]
    return {
        "run_name": config["run_name"],
        "variant": variant,
        "ratio": float(ratio),
        "seed": seed if float(ratio) > 0 else None,
        "onnx": config["export"]["onnx"],
        "teacher": {"name": teacher, "backend": spec["backend"], "model": spec.get("model")},
        "dataset": config["dataset"]["name"],
        "student": config["student"] | {"model": VARIANTS[variant]["student_model"]},
        "distill": config["distill"],
        "calibration": {k: v for k, v in config["calibration"].items() if k not in ("ratios", "seeds")},
        "tau": float(pair_tau(variant)),
    }
