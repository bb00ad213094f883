# Teacher baselines, per-run evaluation on the test split, aggregation over seeds, figures.


rule teacher_zero_shot:
    input:
        points=f"{R}/teacher/{config['teacher']}/points.parquet",
        manifest=MANIFEST,
    output:
        predictions=f"{R}/predictions/teacher_zero_shot/labelfree.parquet",
    params:
        code=step_code("teacher_zero_shot"),
    conda:
        ENV_CORE
    log:
        f"{LOGS}/teacher_zero_shot.log",
    shell:
        "python -m leaf_steps.teacher_zero_shot --points {input.points} --manifest {input.manifest}"
        " --out {output.predictions} > {log} 2>&1"


rule teacher_linear:
    input:
        points=f"{R}/teacher/{config['teacher']}/points.parquet",
        manifest=MANIFEST,
        subset=rules.sample_mos_subset.output.subset,
    output:
        predictions=f"{R}/predictions/teacher_linear/ratio{{ratio}}/seed{{seed}}.parquet",
    params:
        code=step_code("teacher_linear"),
    conda:
        ENV_CORE
    log:
        f"{LOGS}/teacher_linear/ratio{{ratio}}-seed{{seed}}.log",
    shell:
        "python -m leaf_steps.teacher_linear --points {input.points} --manifest {input.manifest}"
        " --subset {input.subset} --out {output.predictions} > {log} 2>&1"


rule evaluate:
    input:
        predictions=prediction_files(),
        manifest=MANIFEST,
    output:
        runs=f"{R}/summary/runs.parquet",
        coverage=f"{R}/summary/coverage.parquet",
    params:
        runs=evaluate_run_args(),
        code=step_code("evaluate"),
    conda:
        ENV_CORE
    log:
        f"{LOGS}/evaluate.log",
    shell:
        "python -m leaf_steps.evaluate --manifest {input.manifest} {params.runs} --out-runs {output.runs}"
        " --out-coverage {output.coverage} > {log} 2>&1"


rule aggregate:
    input:
        runs=rules.evaluate.output.runs,
    output:
        summary=f"{R}/summary/summary.parquet",
        table=report(
            f"{R}/summary/table.md",
            caption="../report/table.rst",
            category="Results",
            labels={"figure": "Summary table"},
        ),
    params:
        methods=" ".join(method_order()),
        headline=f"--headline {HEADLINE}" if HEADLINE else "",
        title=shlex.quote(f"LEAF on {config['dataset']['name']} ({config['run_name']})"),
        code=step_code("aggregate"),
    conda:
        ENV_CORE
    log:
        f"{LOGS}/aggregate.log",
    shell:
        "python -m leaf_steps.aggregate --runs {input.runs} --out-summary {output.summary}"
        " --out-markdown {output.table} {params.headline} --methods {params.methods} --title {params.title}"
        " > {log} 2>&1"


rule plot_label_efficiency:
    input:
        summary=rules.aggregate.output.summary,
    output:
        png=report(
            f"{R}/figures/label_efficiency.png",
            caption="../report/label_efficiency.rst",
            category="Figures",
            labels={"figure": "Label efficiency (Fig 4)"},
        ),
    params:
        title=shlex.quote(f"Label efficiency: {config['dataset']['name']}"),
        code=step_code("plot_label_efficiency"),
    conda:
        ENV_CORE
    log:
        f"{LOGS}/plot_label_efficiency.log",
    shell:
        "python -m leaf_steps.plot_label_efficiency --summary {input.summary} --out {output.png}"
        " --title {params.title} > {log} 2>&1"


rule plot_teacher_scatter:
    input:
        unpack(scatter_linear_input),
        points=f"{R}/teacher/{config['teacher']}/points.parquet",
        manifest=MANIFEST,
    output:
        png=report(
            f"{R}/figures/teacher_vs_mos.png",
            caption="../report/teacher_vs_mos.rst",
            category="Figures",
            labels={"figure": "Teacher vs MOS (Fig 2)"},
        ),
    params:
        linear=lambda w, input: scatter_linear_args(input),
        title=shlex.quote(f"Teacher '{config['teacher']}' vs MOS, test split"),
        code=step_code("plot_teacher_scatter"),
    conda:
        ENV_CORE
    log:
        f"{LOGS}/plot_teacher_scatter.log",
    shell:
        "python -m leaf_steps.plot_teacher_scatter --points {input.points} --manifest {input.manifest}"
        " {params.linear} --out {output.png} --title {params.title} > {log} 2>&1"


rule plot_training_curves:
    input:
        stage1=[path for _, path in stage1_loss_runs()],
        stage2=[path for *_, path in stage2_loss_runs()],
        selections=[path for *_, path in stage1_selection_runs()],
    output:
        png=report(
            f"{R}/figures/training_curves.png",
            caption="../report/training_curves.rst",
            category="Figures",
            labels={"figure": "Training curves"},
        ),
    params:
        runs=training_curve_args(),
        title=shlex.quote(f"Training curves: {config['dataset']['name']} ({config['run_name']})"),
        code=step_code("plot_training_curves"),
    conda:
        ENV_CORE
    log:
        f"{LOGS}/plot_training_curves.log",
    shell:
        "python -m leaf_steps.plot_training_curves {params.runs} --out {output.png} --title {params.title}"
        " > {log} 2>&1"


rule plot_pair_confidence:
    input:
        pairs=[f"{R}/teacher/{t}/pairs.parquet" for t in pair_teachers()],
    output:
        png=report(
            f"{R}/figures/pair_confidence.png",
            caption="../report/pair_confidence.rst",
            category="Figures",
            labels={"figure": "Pair confidence (Eq 5)"},
        ),
    params:
        pairs=scored_pairs_args(),
        tau=confidence_tau_arg(),
        title=shlex.quote(f"Teacher pair confidence: {config['dataset']['name']}"),
        code=step_code("plot_pair_confidence"),
    conda:
        ENV_CORE
    log:
        f"{LOGS}/plot_pair_confidence.log",
    shell:
        "python -m leaf_steps.plot_pair_confidence {params.pairs} {params.tau} --out {output.png}"
        " --title {params.title} > {log} 2>&1"
