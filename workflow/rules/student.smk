# Stage 1 (teacher-guided distillation), MOS subsets, stage 2 (calibration fine-tuning).


rule distill:
    input:
        unpack(distill_inputs),
    output:
        **stage1_epoch_outputs(),
        model=f"{R}/students/{{variant}}/stage1/model.safetensors",
        losses=f"{R}/students/{{variant}}/stage1/losses.parquet",
        predictions=f"{R}/predictions/{{variant}}/labelfree.parquet",
    params:
        settings=lambda w: jq(
            student_settings(w.variant)
            | {k: VARIANTS[w.variant][k] for k in ("use_point", "use_pair", "use_confidence")}
            | {"distill": config["distill"], "seed": config["distill"]["seed"]}
        ),
        pairs=lambda w, input: f"--pairs {input.pairs}" if "pairs" in input.keys() else "",
        per_epoch=lambda w, output: (
            f"--out-epoch-checkpoints {' '.join(output.epoch_checkpoints)}"
            f" --out-epoch-predictions {output.epoch_predictions}"
            if "epoch_predictions" in output.keys()
            else ""
        ),
        code=step_code("distill"),
    threads: 8
    conda:
        ENV_STUDENT
    log:
        f"{LOGS}/distill/{{variant}}.log",
    benchmark:
        f"{BENCH}/distill/{{variant}}.tsv"
    shell:
        "OMP_NUM_THREADS={threads} python -m leaf_steps.distill --manifest {input.manifest} --points {input.points}"
        " {params.pairs} --settings {params.settings} --out-model {output.model} --out-losses {output.losses}"
        " --out-predictions {output.predictions} {params.per_epoch} > {log} 2>&1"


rule sample_mos_subset:
    input:
        manifest=MANIFEST,
    output:
        subset=f"{R}/subsets/ratio{{ratio}}/seed{{seed}}.parquet",
    params:
        val_fraction=config["calibration"]["val_fraction"],
        code=step_code("sample_mos_subset"),
    conda:
        ENV_CORE
    log:
        f"{LOGS}/sample_mos_subset/ratio{{ratio}}-seed{{seed}}.log",
    shell:
        "python -m leaf_steps.sample_mos_subset --manifest {input.manifest} --ratio {wildcards.ratio}"
        " --seed {wildcards.seed} --val-fraction {params.val_fraction} --out {output.subset} > {log} 2>&1"


rule select_stage1:
    input:
        epoch_predictions=f"{R}/students/{{variant}}/stage1/epoch_predictions.parquet",
        losses=f"{R}/students/{{variant}}/stage1/losses.parquet",
        subset=rules.sample_mos_subset.output.subset,
    output:
        selection=stage1_selection_file("{variant}", "{ratio}", "{seed}"),
    params:
        code=step_code("select_stage1"),
    conda:
        ENV_CORE
    log:
        f"{LOGS}/select_stage1/{{variant}}-ratio{{ratio}}-seed{{seed}}.log",
    shell:
        "python -m leaf_steps.select_stage1 --epoch-predictions {input.epoch_predictions}"
        " --stage1-losses {input.losses} --subset {input.subset} --out {output.selection} > {log} 2>&1"


rule calibrate:
    input:
        unpack(calibrate_inputs),
    output:
        model=f"{R}/students/{{variant}}/ratio{{ratio}}/seed{{seed}}/model.safetensors",
        losses=f"{R}/students/{{variant}}/ratio{{ratio}}/seed{{seed}}/losses.parquet",
        predictions=f"{R}/predictions/{{variant}}/ratio{{ratio}}/seed{{seed}}.parquet",
    params:
        settings=lambda w: jq(
            student_settings(w.variant)
            | {
                "calibration": {k: v for k, v in config["calibration"].items() if k not in ("ratios", "seeds")},
                "seed": int(w.seed),
            }
        ),
        init=lambda w, input: stage1_start_args(input),
        code=step_code("calibrate"),
    threads: 8
    conda:
        ENV_STUDENT
    log:
        f"{LOGS}/calibrate/{{variant}}-ratio{{ratio}}-seed{{seed}}.log",
    benchmark:
        f"{BENCH}/calibrate/{{variant}}-ratio{{ratio}}-seed{{seed}}.tsv"
    shell:
        "OMP_NUM_THREADS={threads} python -m leaf_steps.calibrate --manifest {input.manifest}"
        " --subset {input.subset} {params.init} --settings {params.settings} --out-model {output.model}"
        " --out-losses {output.losses} --out-predictions {output.predictions} > {log} 2>&1"
