# Stage 1 of the DAG: the image manifest (ids, paths, MOS or null, split, size).
DATASET = config["dataset"]["name"]

if DATASET == "demo":

    rule make_demo_dataset:
        output:
            manifest=MANIFEST,
            # Generated per run (not under resources/): runs with other demo settings never share them.
            images=directory(f"{R}/dataset/images"),
            references=directory(f"{R}/dataset/references"),
        params:
            settings=jq(config["dataset"]),
            code=step_code("make_demo_dataset"),
        conda:
            ENV_CORE
        log:
            f"{LOGS}/make_demo_dataset.log",
        benchmark:
            f"{BENCH}/make_demo_dataset.tsv"
        shell:
            "python -m leaf_steps.make_demo_dataset --settings {params.settings} --images-dir {output.images}"
            " --references-dir {output.references} --out {output.manifest} > {log} 2>&1"

else:

    rule download_dataset:
        output:
            marker=f"{RES}/{DATASET}/.ready.json",
        params:
            dataset=DATASET,
            # RES, read off the marker path (RES/<dataset>/.ready.json) as the linter asks of path prefixes.
            resources_dir=lambda w, output: output.marker.rsplit("/", 2)[0],
            settings=jq(config["dataset"]),
            code=step_code("download_dataset"),
        conda:
            ENV_CORE
        log:
            f"{LOGS}/download_dataset.log",
        benchmark:
            f"{BENCH}/download_dataset.tsv"
        shell:
            "python -m leaf_steps.download_dataset --dataset {params.dataset} --resources-dir {params.resources_dir}"
            " --settings {params.settings} --out-marker {output.marker} > {log} 2>&1"

    rule prepare_dataset:
        input:
            marker=rules.download_dataset.output.marker,
        output:
            manifest=MANIFEST,
        params:
            dataset=DATASET,
            resources_dir=lambda w, input: input.marker.rsplit("/", 2)[0],
            settings=jq(config["dataset"]),
            images_dir=f"{RES}/{DATASET}/derived",
            code=step_code("prepare_dataset"),
        conda:
            ENV_CORE
        log:
            f"{LOGS}/prepare_dataset.log",
        benchmark:
            f"{BENCH}/prepare_dataset.tsv"
        shell:
            "python -m leaf_steps.prepare_dataset --dataset {params.dataset} --resources-dir {params.resources_dir}"
            " --settings {params.settings} --images-dir {params.images_dir} --out {output.manifest} > {log} 2>&1"
