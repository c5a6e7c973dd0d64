# Training, one job per dataset x variant (a variant with self_training first labels the unlabelled
# frames with its teacher: rule pseudolabel). Only train_summary.json (written last) is a declared output,
# so that Snakemake never deletes the resumable checkpoints of a killed job: rerunning resumes.
# A job given N > 1 GPUs (resource `gpu`, e.g. `--set-resources train:gpu=4`) trains with DDP on
# N processes (torchrun); multi-node training: see the README.


rule pseudolabel:
    input:
        meta=f"{DATA}/{{dataset}}/meta.json",
        weights=f"{DATA}/{{dataset}}/weights/class_weights.json",
        teacher=teacher_inputs,
    output:
        directory(f"{RESULTS}/{{dataset}}/{{variant}}/pseudo"),
    log:
        f"{RESULTS}/logs/pseudolabel/{{dataset}}/{{variant}}.log",
    conda:
        ENV
    params:
        seg=SEG,
        data=data_dir,
        cfg=resolved_config,  # not recorded: the config path is no part of a job (common.smk)
        hash=step_hash_of("pseudolabel"),  # rerun when the settings it reads change
        teacher=lambda wc: f"{RESULTS}/{wc.dataset}/{config['variants'][wc.variant]['self_training']['teacher']}",
    threads: 8
    resources:
        mem_mb=8000,
    shell:
        "{params.seg} pseudolabel --config {params.cfg} --dataset {wildcards.dataset} "
        "--variant {wildcards.variant} --data-dir {params.data} --teacher-run {params.teacher} "
        "--out {output} > {log} 2>&1"


rule train:
    input:
        meta=f"{DATA}/{{dataset}}/meta.json",
        weights=f"{DATA}/{{dataset}}/weights/class_weights.json",
        pretrained=pretrained_input,
        pseudo=pseudo_input,
        init=init_input,
    output:
        f"{RESULTS}/{{dataset}}/{{variant}}/train_summary.json",
    log:
        f"{RESULTS}/logs/train/{{dataset}}/{{variant}}.log",
    conda:
        ENV
    params:
        seg=SEG,
        data=data_dir,
        cfg=resolved_config,  # not recorded: the config path is no part of a job (common.smk)
        hash=step_hash_of("train"),  # rerun when the settings it reads change
        out=f"{RESULTS}/{{dataset}}/{{variant}}",
        pretrained=lambda wc, input: f"--pretrained {input.pretrained}" if input.pretrained else "",
        pseudo=lambda wc, input: f"--pseudo {input.pseudo}" if input.pseudo else "",
        nproc=lambda wc, resources: max(1, int(getattr(resources, "gpu", 0) or 0)),
    threads: 8
    resources:
        mem_mb=8000,
    shell:
        "{params.seg} train --config {params.cfg} --dataset {wildcards.dataset} "
        "--variant {wildcards.variant} --data-dir {params.data} --threads {threads} {params.pretrained} {params.pseudo} "
        "--nproc {params.nproc} "
        "--out {params.out} > {log} 2>&1"
