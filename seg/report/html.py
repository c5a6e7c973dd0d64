"""The self-contained HTML report: leaderboards, published references, figures, runs, settings.

One file, no external resources: CSS is inline, every figure is embedded as a base64 PNG
(``<img src="data:image/png;base64,...">``, exactly one per figure), and there is no JavaScript and
no link to the network, so the file opens offline and can be mailed or archived as is.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import os
from pathlib import Path

from seg.io import atomic_path
from seg.report import tables
from seg.report.build import Figures, safe_name
from seg.report.leaderboard import Leaderboard
from seg.report.references import SOURCE, references_for
from seg.settings.plan import fingerprint_summary

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; overflow-wrap: anywhere; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; white-space: nowrap;
         overflow-wrap: normal; }
th { background: #f0f0f0; } tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { font-weight: 600; }
/* wide tables scroll inside their box (scrollbar always shown) instead of widening the page */
.scroll { overflow-x: scroll; max-width: 100%; }
section, .ref, figure { min-width: 0; max-width: 100%; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; max-width: 60em; }
.ref { background: #fff5f3; border-left: 4px solid #c0392b; padding: 0.5em 1em; }
.note { color: #8a5a00; font-size: 0.9em; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; font-size: 0.85em; }
nav a { margin-right: 1em; }
"""

_NUMERIC_HEADERS = {"#", "n", "warping error", "params", "train time", "inference s/slice", "threshold",
                    *tables.METRIC_NAMES.values()}


def _table(header: list[str], cells: list[list[str]], *, best_first: bool = False) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(cells):
        tds = "".join(
            f'<td class="num">{esc(c)}</td>' if h in _NUMERIC_HEADERS or h.endswith(" IoU") else f"<td>{esc(c)}</td>"
            for h, c in zip(header, row))
        cls = ' class="best"' if best_first and i == 0 else ""
        body.append(f"<tr{cls}>{tds}</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}'
            "</tbody></table></div>")


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _notes(notes: list[str]) -> str:
    if not notes:
        return ""
    return "<ul>" + "".join(f'<li class="note">{html.escape(n)}</li>' for n in notes) + "</ul>"


def _plan_section(dataset: str, doc: dict | None) -> str:
    """The dataset's fingerprint and plan (:meth:`seg.settings.plan.DataPlan.to_dict`), or a note."""

    esc = html.escape
    if doc is None:
        return _notes([f"{dataset}: no canonical dataset in the data folder, so no fingerprint or plan is shown."])
    cells = [[s["key"], str(s["value"]), s["source"], s["rule"]] for s in doc["settings"]]
    return (f"<h3>The plan from the data</h3><p>Fingerprint of the training split: "
            f"{esc(fingerprint_summary(doc['fingerprint']))} Scale-dependent settings, each with its source "
            "(config = set in the config, which always wins; data = derived from the fingerprint; "
            "default = fixed, no annotated object):</p>" + _table(["setting", "value", "source", "how"], cells))


def render(board: Leaderboard, figures: Figures, *, config_yaml: str, config_path: str,
           result_dirs: list[str], plans: dict[str, dict | None] | None = None,
           choices: dict[str, str] | None = None) -> str:
    """The report as one HTML string (see module docstring). ``plans``: per dataset the plan
    document (:meth:`seg.settings.plan.DataPlan.to_dict`, None = not ingested), shown after its figures.
    Paths (the result folders, the config, every metrics.json) are printed as ``board`` shows them:
    relative to the result folder it was built from (:meth:`Leaderboard.shown`). ``choices``: per
    dataset the val split's choice of the row handed on (:mod:`seg.report.selection`)."""
    esc = html.escape
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>seg: segmentation leaderboard</title>", f"<style>{CSS}</style></head><body>",
        "<h1>Segmentation leaderboard</h1>",
        f"<p>Generated {esc(now)} from {esc(', '.join(board.folders or map(board.shown, result_dirs)))} "
        f"with config <code>{esc(board.shown(config_path) if config_path else '')}</code>. "
        f"{esc(board.paths_note)} Variants are sorted by IoU (mean over classes, higher is "
        "better) on each dataset's held-out test split; <code>±</code> is the sample standard "
        "deviation over runs with different seeds (n runs).</p>",
        "<nav>" + "".join(f'<a href="#ds-{safe_name(ds)}">{esc(ds)}</a>' for ds in board.datasets)
        + '<a href="#runs">runs</a><a href="#settings">settings</a></nav>',
    ]
    for ds in board.datasets:
        kind = board.kinds.get(ds) or "unknown kind"
        header, cells = tables.table(board, ds)
        parts += [f'<section id="ds-{safe_name(ds)}"><h2>{esc(ds)} ({esc(kind)})</h2>',
                  _table(header, cells, best_first=True)]
        refs = references_for(board.identities.get(ds))
        if refs:
            rh, rc = tables.reference_table(board, ds, refs)
            parts += ['<div class="ref"><p><b>Published U-Net results</b> (' + esc(SOURCE) + "), "
                      "measured on the challenge's own test set: " + esc(refs[0].test_set) +
                      ". Ours are measured on held-out slices of the public training data, so "
                      "compare with care.</p>", _table(rh, rc), "</div>"]
        if choices and ds in choices:  # the row handed on, chosen on the val split
            parts.append(f'<p class="choice">{esc(choices[ds])}</p>')
        parts.append(_notes(figures.notes.get(ds, [])))
        for fig in figures.for_dataset(ds):
            parts.append(f"<figure>{_img(figures.folder / fig.name, f'{ds}: {fig.title}')}"
                         f"<figcaption><b>{esc(fig.title)}</b> ({esc(fig.name)}). "
                         f"{esc(fig.caption)}</figcaption></figure>")
        if plans is not None and ds in plans:
            parts.append(_plan_section(ds, plans[ds]))
        parts.append("</section>")
    parts += ['<section id="runs"><h2>Runs</h2>',
              "<p>Every metrics.json collected. Runs of the same variant and config hash with "
              "different seeds are merged; a second copy with the same seed is a duplicate and "
              "only the newest is kept.</p>", _table(*_runs_table(board))]
    if board.notes:
        parts += ["<h3>Notes</h3>", _notes(board.notes)]
    parts += ["</section>", '<section id="settings"><h2>Settings</h2>',
              "<p>The configuration of this report's run, with defaults filled in.</p>",
              f"<pre>{esc(config_yaml)}</pre></section>", "</body></html>"]
    return "\n".join(p for p in parts if p) + "\n"


def _runs_table(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    header = ["dataset", "variant", "config", "seed", "IoU", "date", "status", "metrics.json"]
    cells = []
    for row in board.rows:
        status = "merged" if row.n > 1 else "single"
        for r, st in [(r, status) for r in row.runs] + [(r, "duplicate seed, dropped") for r in row.dropped]:
            iou = r.metrics["iou_mean"]
            cells.append([row.dataset, row.label, row.config_hash, str(r.seed),
                          "-" if iou != iou else f"{iou:.4f}", r.date or "-", st, board.shown(r.path)])
    return header, cells


def write_html(path: str | os.PathLike, text: str) -> None:
    """Write the report atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
