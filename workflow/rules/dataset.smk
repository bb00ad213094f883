# Stage 1 of the DAG: the split-free image list (ids, paths, sha256, size: teacher scoring's input) and
# the image manifest (ids, paths, MOS or null, split, size). The split settings (split_seed,
# test_fraction) reach only the manifest's rule, so a new split rescores nothing.
DATASET = config["dataset"]["name"]
SPLIT_KEYS = ("split_seed", "test_fraction")


if DATASET == "demo":

    rule make_demo_dataset:
        output:
            image_list=IMAGES,
            labels=f"{R}/dataset/demo_labels.parquet",
            # Generated per run (not under resources/): runs with other demo settings never share them.
            images=directory(f"{R}/dataset/images"),
            references=directory(f"{R}/dataset/references"),
        params:
            settings=jq({k: v for k, v in config["dataset"].items() if k in ("name", "demo")}),
            code=step_code("make_demo_dataset"),
        conda:
            ENV_CORE
        log:
            f"{LOGS}/make_demo_dataset.log",
        benchmark:
            f"{BENCH}/make_demo_dataset.tsv"
        shell:
            "python -m leaf_steps.make_demo_dataset --settings {params.settings} --images-dir {output.images}"
            " --references-dir {output.references} --out-image-list {output.image_list}"
            " --out-labels {output.labels} > {log} 2>&1"

    rule split_demo_dataset:
        input:
            image_list=IMAGES,
            labels=rules.make_demo_dataset.output.labels,
        output:
            manifest=MANIFEST,
        params:
            settings=jq({k: config["dataset"][k] for k in SPLIT_KEYS if k in config["dataset"]}),
            code=step_code("split_demo_dataset"),
        conda:
            ENV_CORE
        log:
            f"{LOGS}/split_demo_dataset.log",
        shell:
            "python -m leaf_steps.split_demo_dataset --image-list {input.image_list} --labels {input.labels}"
            " --settings {params.settings} --out {output.manifest} > {log} 2>&1"

else:

    rule download_dataset:
        # The marker is the run's own (results/<run>/dataset/): runs with other settings, and other image
        # folders, never share or overwrite it. What it fetches under resources/<dataset>/ depends on no
        # run's options (each archive and derived size has its own name).
        output:
            marker=f"{R}/dataset/download.json",
        params:
            dataset=DATASET,
            resources_dir=RES,
            settings=jq({"name": DATASET, "options": config["dataset"].get("options") or {}}),
            # The folder dataset's check reads the user's files and writes none: rerun it when they change.
            dataset_files=dataset_files if DATASET == "folder" else "",
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

    rule list_images:
        # The images the manifest will hold (decoded and checked, SPAQ's resized copies made), with each
        # file's sha256 (cached by fingerprint), without the split.
        input:
            marker=rules.download_dataset.output.marker,
        output:
            image_list=IMAGES,
        params:
            dataset=DATASET,
            resources_dir=RES,
            settings=jq({k: v for k, v in dataset_settings().items() if k not in SPLIT_KEYS}),
            images_dir=f"{RES}/{DATASET}/derived",
            dataset_files=dataset_files,
            code=step_code("list_images"),
        # Every image is decoded once (cached by fingerprint); the workers are processes.
        threads: 16
        conda:
            ENV_CORE
        log:
            f"{LOGS}/list_images.log",
        benchmark:
            f"{BENCH}/list_images.tsv"
        shell:
            "python -m leaf_steps.list_images --dataset {params.dataset} --resources-dir {params.resources_dir}"
            " --settings {params.settings} --images-dir {params.images_dir} --download-marker {input.marker}"
            " --workers {threads} --out-image-list {output.image_list} > {log} 2>&1"

    rule prepare_dataset:
        input:
            marker=rules.download_dataset.output.marker,
            image_list=IMAGES,
        output:
            manifest=MANIFEST,
            bad_images=f"{R}/dataset/bad_images.csv",
        params:
            dataset=DATASET,
            resources_dir=RES,
            settings=jq(dataset_settings()),
            images_dir=f"{RES}/{DATASET}/derived",
            dataset_files=dataset_files,
            code=step_code("prepare_dataset"),
        # The images' verdicts come from the cache list_images filled.
        threads: 16
        conda:
            ENV_CORE
        log:
            f"{LOGS}/prepare_dataset.log",
        benchmark:
            f"{BENCH}/prepare_dataset.tsv"
        shell:
            "python -m leaf_steps.prepare_dataset --dataset {params.dataset} --resources-dir {params.resources_dir}"
            " --settings {params.settings} --images-dir {params.images_dir} --download-marker {input.marker}"
            " --image-list {input.image_list} --workers {threads} --out {output.manifest}"
            " --bad-images {output.bad_images} > {log} 2>&1"

    onsuccess:
        # A run that left images out says so where the user looks: at the end of the run's own output.
        _report = Path(rules.prepare_dataset.output.bad_images)
        _dropped = max(0, len(_report.read_text().splitlines()) - 1) if _report.exists() else 0
        if _dropped:
            print(
                f"LEAF dataset: {_dropped} image(s) were left out as unusable (dataset.on_bad_image: drop); "
                f"the list, with each file's problem: {_report}",
                file=sys.stderr,
            )
