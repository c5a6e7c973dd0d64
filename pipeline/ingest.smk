# Raw files -> canonical dataset form (data/<dataset>/: images, instances, semantic, meta.json).


rule ingest:
    output:
        f"{DATA}/{{dataset}}/meta.json",
    log:
        f"{RESULTS}/logs/ingest/{{dataset}}.log",
    conda:
        ENV
    params:
        seg=SEG,
        cfg=resolved_config,  # not recorded: the config path is no part of a job (common.smk)
        hash=step_hash_of("ingest"),  # rerun when the settings it reads change
        out=lambda wc, output: os.path.dirname(output[0]),  # <data_dir>/<dataset>
    resources:
        mem_mb=4000,
    shell:
        "{params.seg} ingest --config {params.cfg} --dataset {wildcards.dataset} "
        "--out {params.out} > {log} 2>&1"
