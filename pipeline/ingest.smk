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
        cfg=RESOLVED,
        hash=step_hash_of("ingest"),  # rerun when the settings it reads change
        out=f"{DATA}/{{dataset}}",
    resources:
        mem_mb=4000,
    shell:
        "{params.seg} ingest --config {params.cfg} --dataset {wildcards.dataset} "
        "--out {params.out} > {log} 2>&1"
