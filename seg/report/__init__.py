"""seg.report: the leaderboard and the HTML report (``seg leaderboard``).

Modules, in data-flow order:

- :mod:`seg.report.leaderboard` collects ``metrics.json`` files, merges runs (mean and spread over
  seeds, same-seed duplicates dropped) and sorts them per dataset;
- :mod:`seg.report.tables` renders the CSV (stable columns), Markdown and terminal tables;
- :mod:`seg.report.references` holds the published U-Net results shown for reference;
- :mod:`seg.report.examples` loads test slices with predictions and draws error overlays;
- :mod:`seg.report.figures` draws the matplotlib figures; :mod:`seg.report.build` writes them all;
- :mod:`seg.report.html` renders the self-contained ``report.html``;
- :mod:`seg.report.outputs` does everything in one call; :mod:`seg.commands.report` is the command.

Captions for Snakemake's ``report()`` markers are in ``seg/report/captions/*.rst``.
"""
