# Tiled inference with overlap on the held-out split, then scoring with the field's metrics.


rule predict:
    input:
        meta=f"{DATA}/{{dataset}}/meta.json",
        summary=f"{RESULTS}/{{dataset}}/{{variant}}/train_summary.json",
    output:
        directory(f"{RESULTS}/{{dataset}}/{{variant}}/pred/{{split}}"),
    log:
        f"{RESULTS}/logs/predict/{{dataset}}/{{variant}}/{{split}}.log",
    conda:
        ENV
    params:
        seg=SEG,
        data=data_dir,
        cfg=RESOLVED,
        ckpt=f"{RESULTS}/{{dataset}}/{{variant}}/checkpoints/best.pt",
        hash=run_hash,
    threads: 8
    resources:
        mem_mb=8000,
    shell:
        "{params.seg} predict --config {params.cfg} --dataset {wildcards.dataset} "
        "--variant {wildcards.variant} --checkpoint {params.ckpt} --split {wildcards.split} "
        "--data-dir {params.data} --threads {threads} --out {output} > {log} 2>&1"


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
        cfg=RESOLVED,
    resources:
        mem_mb=4000,
    shell:
        "{params.seg} score --config {params.cfg} --dataset {wildcards.dataset} "
        "--variant {wildcards.variant} --pred {input.pred} --train-summary {input.summary} "
        "--data-dir {params.data} --out {output} > {log} 2>&1"
