# Paper comparison (config `paper:`, used by config/paper/*.yaml): the run's summary in the layout of
# the paper table or figure it reproduces, the paper's numbers beside this run's (docs/reproduce_paper.md).
from pathlib import PurePosixPath

from leaf_steps.evaluation.paper_numbers import check_target, missing_runs

if "paper" in config:
    PAPER_TARGET = config["paper"]["target"]
    PAPER_DATASET = config["paper"].get("dataset") or config["dataset"]["name"]
    try:
        check_target(PAPER_TARGET, PAPER_DATASET)
    except ConfigError as exc:
        sys.exit(f"LEAF config error: {exc}")
    # Warn at start, not after hours of GPU time, when the config skips cells the paper reports.
    _paper_gaps = missing_runs(
        PAPER_TARGET,
        PAPER_DATASET,
        # method_runs() stems: "labelfree" or "ratio<r>/seed<s>"
        [
            (m, 0.0 if stem == "labelfree" else float(PurePosixPath(stem).parent.name.removeprefix("ratio")))
            for m, stem in method_runs()
        ],
    )
    if _paper_gaps:
        print(
            f"LEAF: this config does not run {len(_paper_gaps)} of the paper's {PAPER_TARGET} rows "
            f"(shown as 'not run'): {'; '.join(_paper_gaps)}",
            file=sys.stderr,
        )

    rule paper_table:
        input:
            summary=rules.aggregate.output.summary,
        output:
            markdown=f"{R}/summary/paper_{PAPER_TARGET}.md",
            table=f"{R}/summary/paper_{PAPER_TARGET}.parquet",
        params:
            target=PAPER_TARGET,
            dataset=PAPER_DATASET,
            title=shlex.quote(f"Paper {PAPER_TARGET} vs this run ({config['run_name']})"),
            code=step_code("paper_table"),
        conda:
            ENV_CORE
        log:
            f"{LOGS}/paper_table.log",
        shell:
            "python -m leaf_steps.paper_table --summary {input.summary} --target {params.target}"
            " --dataset {params.dataset} --title {params.title} --out-markdown {output.markdown}"
            " --out-parquet {output.table} > {log} 2>&1"
