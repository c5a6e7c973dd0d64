# The IoU leaderboard (CSV, Markdown, terminal) and the self-contained HTML report.


rule leaderboard:
    input:
        metrics=[f"{RESULTS}/{d}/{v}/metrics.json" for d, v in runs()],
        weights=[f"{DATA}/{d}/weights/preview.png" for d in DATASETS],
        meta=[f"{DATA}/{d}/meta.json" for d in DATASETS],  # the report shows each fingerprint and plan
    output:
        report(
            f"{RESULTS}/leaderboard.csv",
            caption="../seg/report/captions/leaderboard.rst",
            category="Leaderboard",
            labels={"table": "leaderboard (CSV)"},
        ),
        f"{RESULTS}/leaderboard.md",
        report(
            f"{RESULTS}/report.html",
            caption="../seg/report/captions/report.rst",
            category="Leaderboard",
            labels={"table": "HTML report"},
        ),
        report(
            directory(f"{RESULTS}/figures"),
            patterns=["{figure,[a-z]+}_{dataset}.png"],
            caption="../seg/report/captions/figures.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "{figure}"},
        ),
    log:
        f"{RESULTS}/logs/leaderboard.log",
    conda:
        ENV
    params:
        seg=SEG,
        data=lambda wc: DATA,
        results=lambda wc, output: os.path.dirname(output[0]),
        cfg=resolved_config,  # not recorded: the config path is no part of a job (common.smk)
        hash=step_hash_of("leaderboard"),  # rerun when the settings it reads change
    localrule: True
    shell:
        "{params.seg} leaderboard --config {params.cfg} --data-dir {params.data} --out {params.results} "
        "{params.results} 2>&1 | tee {log}"
