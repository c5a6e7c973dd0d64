# Training, one job per dataset x variant. Only train_summary.json (written last) is a declared output,
# so that Snakemake never deletes the resumable checkpoints of a killed job: rerunning resumes.


rule train:
    input:
        meta=f"{DATA}/{{dataset}}/meta.json",
        weights=f"{DATA}/{{dataset}}/weights/class_weights.json",
        pretrained=pretrained_input,
    output:
        f"{RESULTS}/{{dataset}}/{{variant}}/train_summary.json",
    log:
        f"{RESULTS}/logs/train/{{dataset}}/{{variant}}.log",
    conda:
        ENV
    params:
        seg=SEG,
        data=data_dir,
        cfg=RESOLVED,
        out=f"{RESULTS}/{{dataset}}/{{variant}}",
        hash=run_hash,
        pretrained=lambda wc, input: f"--pretrained {input.pretrained}" if input.pretrained else "",
    threads: 8
    resources:
        mem_mb=8000,
    shell:
        "{params.seg} train --config {params.cfg} --dataset {wildcards.dataset} "
        "--variant {wildcards.variant} --data-dir {params.data} --threads {threads} {params.pretrained} "
        "--out {params.out} > {log} 2>&1"
