"""Everything ``seg leaderboard`` writes, in one call (used by the CLI and the tests).

Outputs under ``out_dir`` (``results/`` by default):
``leaderboard.csv`` (columns: :data:`seg.report.tables.CSV_COLUMNS`), ``leaderboard.md``,
``figures/*.png`` (see :mod:`seg.report.build`) and ``report.html`` (self-contained). The Markdown
and the HTML also show each dataset's plan (:mod:`seg.settings.plan`): its fingerprint and every
scale-dependent setting with its value and source (config / data / default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from seg.errors import SegError
from seg.io import atomic_path
from seg.report import html, tables
from seg.report.build import Figures, build_figures
from seg.report.leaderboard import Leaderboard, build_leaderboard
from seg.report.selection import val_choice
from seg.settings.plan import data_plan


@dataclass
class Outputs:
    board: Leaderboard
    figures: Figures
    csv: Path
    markdown: Path
    html: Path
    terminal: str


def write_outputs(result_dirs: list[str | os.PathLike], cfg: dict, *, config_path: str = "",
                  data_dir: str | os.PathLike = "data", out_dir: str | os.PathLike = "results") -> Outputs:
    """Collect the leaderboard and write the CSV, Markdown, figures and HTML report.

    Args:
        result_dirs: folders searched (recursively) for metrics.json.
        cfg: the loaded config (:func:`seg.settings.load_config`); gives variant labels and order,
            dataset kinds, ``report.examples`` and ``postprocess.threshold``.
        data_dir: canonical datasets (``<data_dir>/<dataset>/``) for example slices and the
            weight-map preview; a missing dataset only leaves those figures out.
        out_dir: where the outputs go.

    Raises:
        SegError: a result folder does not exist, or no metrics.json was found.
    """
    import yaml


    out = Path(out_dir)
    board = build_leaderboard(result_dirs, cfg, data_dir)
    csv_path, md_path, html_path = out / "leaderboard.csv", out / "leaderboard.md", out / "report.html"
    tables.write_csv(csv_path, board)

    plans = dataset_plans(cfg, board.datasets, data_dir)
    choices = {ds: c.text() for ds in board.datasets if (c := val_choice(board, ds, data_dir)) is not None}
    with atomic_path(md_path) as tmp:
        tmp.write_text(tables.markdown(board, choices) + plans_markdown(plans))
    figures = build_figures(board, cfg, Path(data_dir), out / "figures")
    text = html.render(board, figures, config_yaml=yaml.safe_dump(cfg, sort_keys=False),
                       config_path=str(config_path), result_dirs=[str(d) for d in result_dirs], plans=plans,
                       choices=choices)
    html.write_html(html_path, text)
    return Outputs(board, figures, csv_path, md_path, html_path, tables.terminal(board))


def dataset_plans(cfg: dict, datasets: list[str], data_dir: str | os.PathLike) -> dict[str, dict | None]:
    """``{dataset: DataPlan.to_dict()}`` of the configured ones of ``datasets``; None for a dataset
    whose canonical folder is not in ``data_dir`` (the report then says so)."""

    out: dict[str, dict | None] = {}
    for ds in datasets:
        if ds not in cfg["datasets"]:
            continue
        try:
            out[ds] = data_plan(cfg, ds, data_dir=data_dir).to_dict()
        except SegError:
            out[ds] = None
    return out


def plans_markdown(plans: dict[str, dict | None]) -> str:
    """A short Markdown section: per dataset, each planned setting as ``value (source)``."""
    if not plans:
        return ""
    lines = ["", "## Scale-dependent settings (the plan from the data)", "",
             "Source: config = set in the config (always wins), data = from the training split's "
             "fingerprint, default = fixed (no annotated object). `seg plan` shows the rules.", ""]
    for ds, doc in plans.items():
        if doc is None:
            lines.append(f"- **{ds}**: not ingested here (no plan)")
            continue
        parts = [f"{s['key']} {s['value']} ({s['source']})" for s in doc["settings"]]
        lines.append(f"- **{ds}**: " + "; ".join(parts))
    return "\n".join(lines) + "\n"
