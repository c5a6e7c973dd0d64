# The IoU leaderboard (CSV, Markdown, terminal) and the self-contained HTML report.


rule leaderboard:
    input:
        metrics=[f"{RESULTS}/{d}/{v}/metrics.json" for d, v in runs()],
        weights=[f"{DATA}/{d}/weights/preview.png" for d in DATASETS],
    output:
        report(
            f"{RESULTS}/leaderboard.csv",
            caption="report/leaderboard.rst",
            category="Leaderboard",
            labels={"table": "leaderboard (CSV)"},
        ),
        f"{RESULTS}/leaderboard.md",
        report(
            f"{RESULTS}/report.html",
            caption="report/report_html.rst",
            category="Leaderboard",
            labels={"table": "HTML report"},
        ),
        report(
            directory(f"{RESULTS}/figures"),
            patterns=["{name}.png"],
            caption="report/figures.rst",
            category="Figures",
            labels={"figure": "{name}"},
        ),
    log:
        f"{RESULTS}/logs/leaderboard.log",
    params:
        seg=SEG,
        cfg=RESOLVED,
    localrule: True
    shell:
        "{params.seg} leaderboard --config {params.cfg} --data-dir {DATA} --out {RESULTS} "
        "{RESULTS} 2>&1 | tee {log}"
