# Tiled inference with overlap on the held-out split, then scoring with the field's metrics.
# With postprocess.calibrate, the val split is predicted too and its best threshold (seg calibrate)
# is applied to the test split.


rule predict:
    input:
        meta=f"{DATA}/{{dataset}}/meta.json",
        summary=f"{RESULTS}/{{dataset}}/{{variant}}/train_summary.json",
        threshold=threshold_input,
    output:
        directory(f"{RESULTS}/{{dataset}}/{{variant}}/pred/{{split}}"),
    log:
        f"{RESULTS}/logs/predict/{{dataset}}/{{variant}}/{{split}}.log",
    conda:
        ENV
    params:
        seg=SEG,
        data=data_dir,
        cfg=resolved_config,  # not recorded: the config path is no part of a job (common.smk)
        hash=step_hash_of("predict"),  # rerun when the settings it reads change
        ckpt=f"{RESULTS}/{{dataset}}/{{variant}}/checkpoints/best.pt",
        threshold=lambda wc, input: f"--threshold-file {input.threshold}" if input.threshold else "",
    threads: 8
    resources:
        mem_mb=8000,
    shell:
        "{params.seg} predict --config {params.cfg} --dataset {wildcards.dataset} "
        "--variant {wildcards.variant} --checkpoint {params.ckpt} --split {wildcards.split} "
        "--data-dir {params.data} --threads {threads} {params.threshold} --out {output} > {log} 2>&1"


rule calibrate:
    input:
        meta=f"{DATA}/{{dataset}}/meta.json",
        pred=f"{RESULTS}/{{dataset}}/{{variant}}/pred/val",
    output:
        f"{RESULTS}/{{dataset}}/{{variant}}/calibration.json",
    log:
        f"{RESULTS}/logs/calibrate/{{dataset}}/{{variant}}.log",
    conda:
        ENV
    params:
        seg=SEG,
        data=data_dir,
        cfg=resolved_config,  # not recorded: the config path is no part of a job (common.smk)
        hash=step_hash_of("calibrate"),  # rerun when the settings it reads change
    resources:
        mem_mb=2000,
    shell:
        "{params.seg} calibrate --config {params.cfg} --dataset {wildcards.dataset} "
        "--variant {wildcards.variant} --pred {input.pred} --data-dir {params.data} "
        "--out {output} > {log} 2>&1"


rule score:
    input:
        meta=f"{DATA}/{{dataset}}/meta.json",
        pred=f"{RESULTS}/{{dataset}}/{{variant}}/pred/test",
        summary=f"{RESULTS}/{{dataset}}/{{variant}}/train_summary.json",
    output:
        f"{RESULTS}/{{dataset}}/{{variant}}/metrics.json",
    log:
        f"{RESULTS}/logs/score/{{dataset}}/{{variant}}.log",
    conda:
        ENV
    params:
        seg=SEG,
        data=data_dir,
        cfg=resolved_config,  # not recorded: the config path is no part of a job (common.smk)
        hash=step_hash_of("score"),  # rerun when the settings it reads change
    resources:
        mem_mb=4000,
    shell:
        "{params.seg} score --config {params.cfg} --dataset {wildcards.dataset} "
        "--variant {wildcards.variant} --pred {input.pred} --train-summary {input.summary} "
        "--data-dir {params.data} --out {output} > {log} 2>&1"
