# The run's headline student, exported: timm-native folder, ONNX, model card (config `export`).


rule export_model:
    input:
        unpack(export_inputs),
    output:
        folder=directory(f"{R}/export"),
    params:
        settings=jq(export_settings()),
        subset=lambda w, input: f"--subset {input.subset}" if "subset" in input.keys() else "",
        code=step_code("export_model"),
    conda:
        ENV_STUDENT
    log:
        f"{LOGS}/export_model.log",
    shell:
        "OMP_NUM_THREADS={threads} python -m leaf_steps.export_model --checkpoint {input.checkpoint}"
        " --manifest {input.manifest} --runs {input.runs} {params.subset} --out-dir {output.folder}"
        " --settings {params.settings} > {log} 2>&1"
