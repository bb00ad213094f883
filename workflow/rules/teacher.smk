# Teacher scoring (scatter/gather over shards), pair sampling and confidence filtering.


rule fit_niqe:
    # Only the classical stand-in teacher needs this: NIQE's pristine model, fitted on the
    # pristine reference photos (never on MOS).
    input:
        unpack(lambda w: niqe_references(w.teacher)),
    output:
        model=f"{R}/teacher/{{teacher}}/niqe_model.npz",
    params:
        # Only what the fit reads: a change of level_scale (a scoring setting) or gpus refits nothing.
        settings=lambda w: jq(
            {
                k: v
                for k, v in config["teachers"][w.teacher].items()
                if k in ("backend", "patch_size", "sharpness_threshold")
            }
        ),
        references=lambda w, input: (
            f"--references-dir {shlex.quote(input.references)}" if hasattr(input, "references") else "--bundled-photos"
        ),
        code=step_code("fit_niqe"),
    conda:
        ENV_TEACHER
    log:
        f"{LOGS}/fit_niqe/{{teacher}}.log",
    shell:
        "python -m leaf_steps.fit_niqe {params.references} --settings {params.settings}"
        " --out {output.model} > {log} 2>&1"


rule score_points:
    # Answers for one shard of the split-free image list: those in the teacher score store are reused,
    # only misses are sent (the teacher is set up only then). Tracked: what changes an answer (the score
    # part of the teacher block, the prompt of a teacher that reads it, the code); Untracked: how the job
    # runs (batch size, concurrency, timeouts, endpoint, GPUs, error threshold, store folder).
    input:
        unpack(lambda w: {"images": IMAGES, **teacher_inputs(w.teacher)}),
    output:
        shard=f"{R}/teacher/{{teacher}}/points/{{scatteritem}}.parquet",
    params:
        spec=lambda w: jq(teacher_part(w.teacher, "score")),
        prompt=lambda w: jq(scoring_prompt(w.teacher, "point")),
        code=lambda w: step_code("score_points", teacher_backend_module(w.teacher)),
        run=lambda w: scoring_run(w.teacher),
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
        "python -m leaf_steps.score_points --images {input.images} --teacher-name {wildcards.teacher}"
        " --teacher-spec {params.spec} --prompt {params.prompt} --run {params.run}"
        " --shard {wildcards.scatteritem} --out {output.shard} > {log} 2>&1"


rule gather_points:
    # Eq 1-2 and the acceptance check (min_token_mass) applied to the shards' answers: a threshold change
    # re-assembles without asking the teacher. Rows sorted by image_id, whatever the shard count.
    input:
        shards=gather.teacher(f"{R}/teacher/{{{{teacher}}}}/points/{{scatteritem}}.parquet"),
    output:
        points=f"{R}/teacher/{{teacher}}/points.parquet",
    params:
        acceptance=lambda w: jq(teacher_part(w.teacher, "acceptance")),
        code=step_code("gather_points"),
        run=Untracked({"max_error_fraction": config["scoring"]["max_error_fraction"]}),
    conda:
        ENV_CORE
    log:
        f"{LOGS}/gather_points/{{teacher}}.log",
    shell:
        "python -m leaf_steps.gather_points --teacher-name {wildcards.teacher}"
        " --acceptance {params.acceptance} --run {params.run} --out {output.points} {input.shards} > {log} 2>&1"


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
    # As score_points, one request per sampled pair (and per swapped pair with scoring.both_orders): a pair
    # sampled again, by a new split or another run, is answered from the store.
    input:
        unpack(lambda w: {"images": IMAGES, "pairs": rules.sample_pairs.output.pairs, **teacher_inputs(w.teacher)}),
    output:
        shard=f"{R}/teacher/{{teacher}}/pairs/{{scatteritem}}.parquet",
    params:
        spec=lambda w: jq(teacher_part(w.teacher, "score")),
        prompt=lambda w: jq(scoring_prompt(w.teacher, "pair")),
        both_orders="--both-orders" if config["scoring"]["both_orders"] else "",
        code=lambda w: step_code("score_pairs", teacher_backend_module(w.teacher)),
        run=lambda w: scoring_run(w.teacher),
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
        "python -m leaf_steps.score_pairs --pairs {input.pairs} --images {input.images}"
        " --teacher-name {wildcards.teacher} --teacher-spec {params.spec} --prompt {params.prompt}"
        " {params.both_orders} --run {params.run} --shard {wildcards.scatteritem} --out {output.shard} > {log} 2>&1"


rule gather_pairs:
    # Eq 3-5 (the two orders averaged with scoring.both_orders) and the acceptance check.
    input:
        shards=gather.teacher(f"{R}/teacher/{{{{teacher}}}}/pairs/{{scatteritem}}.parquet"),
    output:
        pairs=f"{R}/teacher/{{teacher}}/pairs.parquet",
    params:
        acceptance=lambda w: jq(teacher_part(w.teacher, "acceptance")),
        both_orders="--both-orders" if config["scoring"]["both_orders"] else "",
        code=step_code("gather_pairs"),
        run=Untracked({"max_error_fraction": config["scoring"]["max_error_fraction"]}),
    conda:
        ENV_CORE
    log:
        f"{LOGS}/gather_pairs/{{teacher}}.log",
    shell:
        "python -m leaf_steps.gather_pairs --teacher-name {wildcards.teacher}"
        " --acceptance {params.acceptance} {params.both_orders} --run {params.run} --out {output.pairs}"
        " {input.shards} > {log} 2>&1"


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
