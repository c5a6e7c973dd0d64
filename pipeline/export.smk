# Handing the models on: the best row of each dataset as a self-contained model package, its
# TorchScript, ONNX and bioimage.io exports, and (target segment_all) every unannotated image of the
# dataset segmented with it: the ISBI 2012 test volume as the challenge's submission stack, every
# frame of every CTC sequence into <seq>_RES/maskNNN.tif.


rule package:
    input:
        meta=f"{DATA}/{{dataset}}/meta.json",
        metrics=lambda wc: [f"{RESULTS}/{wc.dataset}/{v}/metrics.json" for v in dataset_variants(wc.dataset)],
    output:
        report(
            directory(f"{RESULTS}/models/{{dataset}}/package"),
            patterns=["README.md"],
            caption="report/package.rst",
            category="Models",
            labels={"dataset": "{dataset}", "file": "model package"},
        ),
    log:
        f"{RESULTS}/logs/package/{{dataset}}.log",
    conda:
        ENV
    params:
        seg=SEG,
        cfg=resolved_config,  # not recorded: the config path is no part of a job (common.smk)
        # <results>/<dataset>/<variant>/metrics.json -> <results>
        results=lambda wc, input: os.path.dirname(os.path.dirname(os.path.dirname(input.metrics[0]))),
        data=data_dir,
    resources:
        mem_mb=4000,
    shell:
        "{params.seg} package --best-of {params.results} --dataset {wildcards.dataset} "
        "--config {params.cfg} --data-dir {params.data} --threads {threads} --out {output} > {log} 2>&1"


rule export:
    input:
        f"{RESULTS}/models/{{dataset}}/package",
    output:
        report(
            directory(f"{RESULTS}/models/{{dataset}}/{{format}}"),
            patterns=["export.json"],
            caption="report/export.rst",
            category="Models",
            labels={"dataset": "{dataset}", "file": "{format} export"},
        ),
    log:
        f"{RESULTS}/logs/export/{{dataset}}/{{format}}.log",
    wildcard_constraints:
        format="torchscript|onnx",
    conda:
        ENV
    params:
        seg=SEG,
    threads: 2
    resources:
        mem_mb=8000,
    shell:
        # a family ONNX cannot express (PSPNet, UPerNet) writes export.json saying why, not a failure
        "{params.seg} export --model {input} --format {wildcards.format} --allow-refusal "
        "--threads {threads} --out {output} > {log} 2>&1"


rule bioimageio:
    input:
        package=f"{RESULTS}/models/{{dataset}}/package",
        # the checked TorchScript and ONNX exports are packed as they are, not exported again
        exports=[f"{RESULTS}/models/{{dataset}}/torchscript", f"{RESULTS}/models/{{dataset}}/onnx"],
    output:
        report(
            f"{RESULTS}/models/{{dataset}}/bioimageio.zip",
            caption="report/bioimageio.rst",
            category="Models",
            labels={"dataset": "{dataset}", "file": "bioimage.io package"},
        ),
    log:
        f"{RESULTS}/logs/export/{{dataset}}/bioimageio.log",
    conda:
        ENV
    params:
        seg=SEG,
    threads: 2
    resources:
        mem_mb=8000,
    shell:
        # validated by bioimageio.spec and tested by bioimageio.core before it is kept
        "{params.seg} export --model {input.package} --format bioimageio --from-exports {input.exports} "
        "--threads {threads} --out {output} > {log} 2>&1"


rule segment:
    input:
        meta=f"{DATA}/{{dataset}}/meta.json",
        package=f"{RESULTS}/models/{{dataset}}/package",
    output:
        directory(f"{RESULTS}/models/{{dataset}}/segmented"),
    log:
        f"{RESULTS}/logs/segment/{{dataset}}.log",
    conda:
        ENV
    params:
        seg=SEG,
        data=lambda wc, input: os.path.dirname(input.meta),
    threads: 8
    resources:
        mem_mb=8000,
    shell:
        # the canonical dataset folder: every frame of each CTC sequence, ISBI's unannotated stack
        "{params.seg} segment --model {input.package} {params.data} --threads {threads} "
        "--out {output} > {log} 2>&1"


rule segment_all:
    input:
        [f"{RESULTS}/models/{d}/segmented" for d in DATASETS],
