# In-house pretraining of classification versions of the encoders (patch classification on the
# training split), for variants with `pretrained: inhouse`.


rule pretrain:
    input:
        meta=f"{DATA}/{{dataset}}/meta.json",
    output:
        f"{RESULTS}/{{dataset}}/pretrain/{{encoder}}/encoder.pt",
        f"{RESULTS}/{{dataset}}/pretrain/{{encoder}}/pretrain_summary.json",
        report(
            f"{RESULTS}/{{dataset}}/pretrain/{{encoder}}/curve.png",
            caption="report/pretrain.rst",
            category="Pretraining",
            labels={"dataset": "{dataset}", "encoder": "{encoder}"},
        ),
    log:
        f"{RESULTS}/logs/pretrain/{{dataset}}/{{encoder}}.log",
    conda:
        ENV
    params:
        seg=SEG,
        data=data_dir,
        cfg=resolved_config,  # not recorded: the config path is no part of a job (common.smk)
        hash=step_hash_of("pretrain"),  # rerun when the settings it reads change
        out=f"{RESULTS}/{{dataset}}/pretrain/{{encoder}}",
    threads: 8
    resources:
        mem_mb=8000,
    shell:
        "{params.seg} pretrain --config {params.cfg} --dataset {wildcards.dataset} "
        "--encoder {wildcards.encoder} --data-dir {params.data} --threads {threads} "
        "--out {params.out} > {log} 2>&1"
