"""``seg leaderboard``: collect results into the leaderboard (CSV, Markdown, terminal) and report.

Only the standard library is imported here; the work happens in :mod:`seg.report.outputs`.
"""

from __future__ import annotations

import argparse

from seg.cli import Command


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/config.yaml",
                   help="workflow config (variant labels, dataset kinds, report.examples)")
    p.add_argument("--data-dir", default=None,
                   help="canonical datasets, for example slices and weight previews "
                        "(default: %(default)s = the config's data_dir)")
    p.add_argument("--out", default=None,
                   help="folder for leaderboard.csv/.md, report.html and figures/ "
                        "(default: %(default)s = the config's results_dir)")
    p.add_argument("result_dirs", nargs="*", metavar="RESULT_DIR", default=argparse.SUPPRESS,
                   help="folders searched recursively for metrics.json, e.g. results/ and runs "
                        "copied back from a cluster (default: the config's results_dir)")


def _run(args: argparse.Namespace) -> int:
    from seg.report.outputs import write_outputs
    from seg.settings import load_config

    cfg = load_config(args.config)
    out = args.out or cfg.get("results_dir", "results")
    result_dirs = getattr(args, "result_dirs", None) or [cfg.get("results_dir", "results")]
    res = write_outputs(result_dirs, cfg, config_path=args.config,
                        data_dir=args.data_dir or cfg.get("data_dir", "data"), out_dir=out)
    print(res.terminal, end="")
    print(f"\nwrote {res.csv}, {res.markdown}, {res.html} and {len(res.figures.entries)} figures "
          f"in {res.figures.folder}")
    return 0


COMMANDS = {
    "leaderboard": Command(
        help="collect metrics.json files into the leaderboard and the HTML report",
        description="Collect every metrics.json under the given result folders into one leaderboard "
        "per dataset (sorted by IoU; runs of the same variant and config hash with different seeds "
        "are merged into mean and std), write leaderboard.csv, leaderboard.md, figures/*.png and a "
        "self-contained report.html, and print the table.",
        add_arguments=_add_arguments,
        run=_run,
    ),
}
