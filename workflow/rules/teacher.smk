# Teacher scoring (scatter/gather over shards), pair sampling and confidence filtering.


rule fit_niqe:
    # Only the classical stand-in teacher needs this: NIQE's pristine model, fitted on the
    # pristine reference photos (never on MOS).
    input:
        unpack(lambda w: niqe_references(w.teacher)),
    output:
        model=f"{R}/teacher/{{teacher}}/niqe_model.npz",
    params:
        settings=lambda w: jq(config["teachers"][w.teacher]),
        references=lambda w, input: (f"--references-dir {shlex.quote(input.references)}"
                                     if hasattr(input, "references") else "--bundled-photos"),
        code=step_code("fit_niqe"),
    conda:
        ENV_TEACHER
    log:
        f"{LOGS}/fit_niqe/{{teacher}}.log",
    shell:
        "python -m leaf_steps.fit_niqe {params.references} --settings {params.settings}"
        " --out {output.model} > {log} 2>&1"


rule score_points:
    input:
        unpack(lambda w: {"manifest": MANIFEST, **teacher_inputs(w.teacher)}),
    output:
        shard=f"{R}/teacher/{{teacher}}/points/{{scatteritem}}.parquet",
    params:
        spec=lambda w: jq(teacher_spec(w.teacher)),
        prompts=jq(step_prompts("point")),
        scoring=jq(step_scoring("point")),
        resume_dir=lambda w: f"{R}/teacher/{w.teacher}/.partial/points-{w.scatteritem}",
        code=lambda w: step_code("score_points", teacher_backend_module(w.teacher)),
    resources:
        # The teacher's need (teachers.<name>.gpus; 0 for an existing endpoint or a CPU teacher) under
        # the standard name executors read (Slurm: --gpus). Cluster specifics live in profiles/slurm.
        gpu=lambda w: int(config["teachers"][w.teacher].get("gpus", 0)),
    conda:
        lambda w: teacher_env(w.teacher)
    log:
        f"{LOGS}/score_points/{{teacher}}-{{scatteritem}}.log",
    benchmark:
        f"{BENCH}/score_points/{{teacher}}-{{scatteritem}}.tsv"
    shell:
        "python -m leaf_steps.score_points --manifest {input.manifest} --teacher-name {wildcards.teacher}"
        " --teacher-spec {params.spec} --prompts {params.prompts} --scoring {params.scoring}"
        " --shard {wildcards.scatteritem} --resume-dir {params.resume_dir} --out {output.shard} > {log} 2>&1"


rule gather_points:
    input:
        shards=gather.teacher(f"{R}/teacher/{{{{teacher}}}}/points/{{scatteritem}}.parquet"),
    output:
        points=f"{R}/teacher/{{teacher}}/points.parquet",
    params:
        code=step_code("gather_shards"),
    conda:
        ENV_CORE
    log:
        f"{LOGS}/gather_points/{{teacher}}.log",
    shell:
        "python -m leaf_steps.gather_shards --key image_id --out {output.points} {input.shards} > {log} 2>&1"


rule sample_pairs:
    input:
        manifest=MANIFEST,
    output:
        pairs=f"{R}/pairs/pairs.parquet",
    params:
        settings=jq({"count": config["pairs"]["count"], "seed": config["pairs"]["seed"]}),
        code=step_code("sample_pairs"),
    conda:
        ENV_CORE
    log:
        f"{LOGS}/sample_pairs.log",
    shell:
        "python -m leaf_steps.sample_pairs --manifest {input.manifest} --settings {params.settings}"
        " --out {output.pairs} > {log} 2>&1"


rule score_pairs:
    input:
        unpack(lambda w: {"manifest": MANIFEST, "pairs": rules.sample_pairs.output.pairs, **teacher_inputs(w.teacher)}),
    output:
        shard=f"{R}/teacher/{{teacher}}/pairs/{{scatteritem}}.parquet",
    params:
        spec=lambda w: jq(teacher_spec(w.teacher)),
        prompts=jq(step_prompts("pair")),
        scoring=jq(step_scoring("pair")),
        resume_dir=lambda w: f"{R}/teacher/{w.teacher}/.partial/pairs-{w.scatteritem}",
        code=lambda w: step_code("score_pairs", teacher_backend_module(w.teacher)),
    resources:
        # The teacher's need (teachers.<name>.gpus; 0 for an existing endpoint or a CPU teacher) under
        # the standard name executors read (Slurm: --gpus). Cluster specifics live in profiles/slurm.
        gpu=lambda w: int(config["teachers"][w.teacher].get("gpus", 0)),
    conda:
        lambda w: teacher_env(w.teacher)
    log:
        f"{LOGS}/score_pairs/{{teacher}}-{{scatteritem}}.log",
    benchmark:
        f"{BENCH}/score_pairs/{{teacher}}-{{scatteritem}}.tsv"
    shell:
        "python -m leaf_steps.score_pairs --pairs {input.pairs} --manifest {input.manifest}"
        " --teacher-name {wildcards.teacher} --teacher-spec {params.spec} --prompts {params.prompts}"
        " --scoring {params.scoring} --shard {wildcards.scatteritem} --resume-dir {params.resume_dir}"
        " --out {output.shard} > {log} 2>&1"


rule gather_pairs:
    input:
        shards=gather.teacher(f"{R}/teacher/{{{{teacher}}}}/pairs/{{scatteritem}}.parquet"),
    output:
        pairs=f"{R}/teacher/{{teacher}}/pairs.parquet",
    params:
        code=step_code("gather_shards"),
    conda:
        ENV_CORE
    log:
        f"{LOGS}/gather_pairs/{{teacher}}.log",
    shell:
        "python -m leaf_steps.gather_shards --key pair_id --out {output.pairs} {input.shards} > {log} 2>&1"


rule filter_pairs:
    input:
        pairs=rules.gather_pairs.output.pairs,
    output:
        pairs=f"{R}/teacher/{{teacher}}/pairs_tau{{tau}}.parquet",
        summary=f"{R}/teacher/{{teacher}}/pairs_tau{{tau}}.summary.json",
    params:
        code=step_code("filter_pairs"),
    conda:
        ENV_CORE
    log:
        f"{LOGS}/filter_pairs/{{teacher}}-tau{{tau}}.log",
    shell:
        "python -m leaf_steps.filter_pairs --pairs {input.pairs} --tau {wildcards.tau} --out {output.pairs}"
        " --summary {output.summary} > {log} 2>&1"
