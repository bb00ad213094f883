# LEAF: label-efficient IQA. MLLM teacher -> stage-1 distillation -> stage-2 MOS calibration.
# Run:  snakemake --configfile config/demo.yaml --cores 2     (see README.md)
from snakemake.utils import min_version

min_version("9.0")


# A config given with --configfile replaces the default one instead of being merged into it,
# so that a dataset or experiment config never inherits stray teachers or variants.
if not config:

    configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/student.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/paper.smk"


report: "workflow/report/workflow.rst"


localrules:
    all,


rule all:
    input:
        final_targets(),
    default_target: True
