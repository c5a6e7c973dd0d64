# U-Net border-weight maps and an on-disk augmented preview of the training slices.


rule weights:
    input:
        meta=f"{DATA}/{{dataset}}/meta.json",
    output:
        f"{DATA}/{{dataset}}/weights/class_weights.json",
        report(
            f"{DATA}/{{dataset}}/weights/preview.png",
            caption="report/weights.rst",
            category="Training targets",
            labels={"dataset": "{dataset}", "figure": "border-weight map"},
        ),
    log:
        f"{RESULTS}/logs/weights/{{dataset}}.log",
    conda:
        ENV
    params:
        seg=SEG,
        data=data_dir,
        cfg=resolved_config,  # not recorded: the config path is no part of a job (common.smk)
        hash=step_hash_of("weights"),  # rerun when the settings it reads change
    resources:
        mem_mb=4000,
    shell:
        "{params.seg} weights --config {params.cfg} --dataset {wildcards.dataset} "
        "--data-dir {params.data} > {log} 2>&1"


rule augment:
    input:
        meta=f"{DATA}/{{dataset}}/meta.json",
        weights=f"{DATA}/{{dataset}}/weights/class_weights.json",
    output:
        report(
            directory(f"{DATA}/{{dataset}}/augmented"),
            patterns=["preview.png"],
            caption="report/augment.rst",
            category="Training targets",
            labels={"dataset": "{dataset}", "figure": "elastic deformation"},
        ),
    log:
        f"{RESULTS}/logs/augment/{{dataset}}.log",
    conda:
        ENV
    params:
        seg=SEG,
        data=data_dir,
        cfg=resolved_config,  # not recorded: the config path is no part of a job (common.smk)
        hash=step_hash_of("augment"),  # rerun when the settings it reads change
        copies=config["augment"]["copies"],
    resources:
        mem_mb=4000,
    shell:
        "{params.seg} augment --config {params.cfg} --dataset {wildcards.dataset} "
        "--data-dir {params.data} --copies {params.copies} --out {output} > {log} 2>&1"
