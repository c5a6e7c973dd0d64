"""Leaderboard rendering: the CSV (stable columns), Markdown and the terminal table.

``results/leaderboard.csv`` has one row per dataset x variant (x config hash, when the same variant
was run with different settings) and exactly the columns of :data:`CSV_COLUMNS`:

- ``dataset``, ``kind`` (a registered kind name, e.g. isbi2012|ctc, or empty), ``annotations`` (full|sparse: with sparse,
  ``precision_iou50`` and ``iou_class1`` are over the predicted objects that overlap the annotated
  cells with more than half of their pixels, ``iou_mean`` and the other pixel measures are empty,
  rank by ``seg``), ``rank`` (1 = best within the dataset), ``variant``,
  ``label`` (display name), ``model``, ``config_hash``, ``primary`` (metric the rank is based on);
- ``n_runs`` (runs merged, distinct seeds), ``seeds`` (``;``-separated), ``duplicates_dropped``
  (same-seed copies left out);
- for each metric in :data:`seg.report.leaderboard.METRICS` (``iou_mean``, ``dice_mean``,
  ``pixel_error`` (misclassified fraction), ``f1_interior_error``, ``rand_error``,
  ``pixel_error_isbi`` (ISBI 2012 challenge pixel error), ``vrand``, ``vinfo``, ``seg``,
  ``precision_iou50``, ``recall_iou50``): ``<metric>`` (mean over runs) and ``<metric>_std``
  (sample std over runs, empty for a single run); all are unitless fractions;
- ``iou_class0``, ``iou_class1`` (and their ``_std``): IoU of class 0 (ISBI: membrane, CTC:
  background) and class 1 (ISBI: interior, CTC: cell, i.e. foreground IoU), classes as in the
  dataset's ``meta.json``;
- ``params`` (parameter count), ``iterations``, ``best_val_iou``, ``threshold`` (class-1
  probability threshold of the test predictions: ``postprocess.threshold`` or chosen on the val
  split by ``seg calibrate``), ``train_time_s`` and
  ``train_time_s_std`` (training wall-clock, seconds), ``seconds_per_slice`` and
  ``seconds_per_slice_std`` (inference, seconds per test slice), ``device``, ``date`` (newest run,
  ISO), ``sources`` (``;``-separated metrics.json paths, relative to the result folder the
  leaderboard was built from: :meth:`seg.report.leaderboard.Leaderboard.shown`).

Missing values are empty cells.
"""

from __future__ import annotations

import csv
import io
import math
import os

from seg.io import atomic_path
from seg.kinds import find_kind
from seg.report.leaderboard import METRICS, SPARSE_NOTE, Leaderboard, Row
from seg.report.references import references_for

CSV_COLUMNS = (
    "dataset", "kind", "annotations", "rank", "variant", "label", "model", "config_hash", "primary",
    "n_runs", "seeds", "duplicates_dropped",
    *[c for m in METRICS for c in (m, f"{m}_std")],
    "iou_class0", "iou_class0_std", "iou_class1", "iou_class1_std",
    "params", "iterations", "best_val_iou", "threshold", "train_time_s", "train_time_s_std",
    "seconds_per_slice", "seconds_per_slice_std", "device", "date", "sources", "target", "start",
)

METRIC_NAMES = {
    "iou_mean": "IoU", "vrand": "V_rand", "seg": "SEG", "rand_error": "Rand error",
    "pixel_error_isbi": "pixel error (1-F1)", "pixel_error": "misclassified",
    "dice_mean": "Dice", "f1_interior_error": "1-F1 interior",
    "vinfo": "V_info", "precision_iou50": "precision@IoU0.5", "recall_iou50": "recall@IoU0.5",
    "iou_membrane": "membrane IoU", "iou_interior": "interior IoU", "iou_cell": "foreground IoU",
    "iou_background": "background IoU",
}


def class_iou_keys(kind: str) -> tuple[str, ...]:
    """Per-class IoU keys of a leaderboard row (``iou_<class name>``) of a dataset kind, in class
    order (none for an unknown kind)."""
    k = find_kind(kind)
    return tuple(f"iou_{c}" for c in k.classes) if k is not None else ()


def _g(v: float) -> str:
    return "" if v is None or math.isnan(v) else format(v, ".6g")


def csv_records(board: Leaderboard) -> list[dict[str, str]]:
    """One dict per leaderboard row, keys exactly :data:`CSV_COLUMNS`, values as CSV strings."""
    out = []
    for row in board.rows:
        rec = {
            "dataset": row.dataset, "kind": row.kind, "annotations": board.annotations.get(row.dataset, "full"),
            "rank": str(row.rank),
            "variant": row.variant, "label": row.label, "model": row.model,
            "config_hash": row.config_hash, "primary": row.primary, "n_runs": str(row.n),
            "seeds": ";".join("" if s is None else str(s) for s in row.seeds),
            "duplicates_dropped": str(len(row.dropped)),
        }
        for m in METRICS:
            rec[m], rec[f"{m}_std"] = _g(row.mean[m]), _g(row.std[m])
        for i, key in enumerate(class_iou_keys(row.kind)):
            rec[f"iou_class{i}"], rec[f"iou_class{i}_std"] = _g(row.mean.get(key)), _g(row.std.get(key))
        for k in ("params", "iterations", "best_val_iou", "threshold"):
            rec[k] = _g(row.mean[k])
        for k in ("train_time_s", "seconds_per_slice"):
            rec[k], rec[f"{k}_std"] = _g(row.mean[k]), _g(row.std[k])
        rec.update(device=row.devices, date=row.date,
                   sources=";".join(board.shown(r.path) for r in row.runs), target=row.target,
                   start=row.start)
        out.append(rec)
    return out


def write_csv(path: str | os.PathLike, board: Leaderboard) -> None:
    """Write the leaderboard CSV atomically (columns :data:`CSV_COLUMNS`)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(csv_records(board))
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def fmt_value(row: Row, key: str, *, pm: str = "±", digits: int = 4) -> str:
    """``mean ± std`` (std only when several runs were merged), ``-`` when missing."""
    v, s = row.mean.get(key, math.nan), row.std.get(key, math.nan)
    if math.isnan(v):
        return "-"
    return f"{v:.{digits}f}" if math.isnan(s) else f"{v:.{digits}f} {pm} {s:.{digits}f}"


def _fmt_time(s: float) -> str:
    if math.isnan(s):
        return "-"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _fmt_params(p: float) -> str:
    return "-" if math.isnan(p) else f"{p / 1e6:.2f} M"


# Sparse annotations: what the restricted measures are called in the tables.
SPARSE_NAMES = {**METRIC_NAMES, "precision_iou50": "precision@IoU0.5 (annotated cells)",
                "iou_cell": "foreground IoU (annotated cells)"}


def metric_name(metric: str, *, sparse: bool = False) -> str:
    """A metric column's display name (:data:`METRIC_NAMES`, :data:`SPARSE_NAMES`); the IoU of a
    class no table names (``iou_<class>`` of another kind) is ``<class> IoU``."""
    names = SPARSE_NAMES if sparse else METRIC_NAMES
    if metric in names:
        return names[metric]
    return f"{metric.removeprefix('iou_')} IoU" if metric.startswith("iou_") else metric


def metric_columns(kind: str, *, sparse: bool = False) -> list[str]:
    """Sparse annotations (CTC): SEG first, then recall, and precision and foreground IoU over the
    predicted objects that overlap the annotated cells (more than half of the object on them); no
    mean IoU (see :data:`SPARSE_NAMES`)."""
    if sparse:
        return ["seg", "recall_iou50", "precision_iou50", "iou_cell"]
    return _metric_columns(kind)


def _metric_columns(kind: str) -> list[str]:
    """Metric columns shown for a dataset kind (:attr:`seg.kinds.base.Kind.report_columns`: mean IoU
    first, the class IoU that matters (ISBI: membrane, CTC: foreground), then the challenge's own
    measures); an unknown kind gets mean IoU, Dice and pixel error."""
    k = find_kind(kind)
    return list(k.report_columns) if k is not None else ["iou_mean", "dice_mean", "pixel_error"]


def table(board: Leaderboard, dataset: str, *, pm: str = "±") -> tuple[list[str], list[list[str]]]:
    """Header and display cells of one dataset's leaderboard (best first)."""
    kind = board.kinds.get(dataset, "")
    sparse = board.sparse(dataset)
    metrics = metric_columns(kind, sparse=sparse)
    # "starts from" only when a row starts from a package (a variant's init:), beside the target
    starts = any(row.start.startswith("package ") for row in board.datasets[dataset])
    header = ["#", "variant", "model", *[metric_name(m, sparse=sparse) for m in metrics], "n", "seeds", "target",
              *(["starts from"] if starts else []),
              "params", "train time", "device", "inference s/slice", "threshold", "config", "date"]
    cells = []
    for row in board.datasets[dataset]:
        cells.append([
            str(row.rank), row.label, row.model or "-",
            *[fmt_value(row, m, pm=pm) for m in metrics],
            str(row.n), ",".join("?" if s is None else str(s) for s in row.seeds), row.target,
            *([row.start] if starts else []),
            _fmt_params(row.mean["params"]), _fmt_time(row.mean["train_time_s"]),
            row.devices or "-", fmt_value(row, "seconds_per_slice", pm=pm, digits=2),
            fmt_value(row, "threshold", pm=pm, digits=2), row.config_hash, row.date[:16].replace("T", " ") or "-",
        ])
    return header, cells


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def markdown(board: Leaderboard, choices: dict[str, str] | None = None) -> str:
    """The whole leaderboard as Markdown: one table per dataset (with ``choices[dataset]``, the val
    split's choice of the row handed on: :mod:`seg.report.selection`), the runs (their metrics.json
    relative to the result folder, :meth:`~seg.report.leaderboard.Leaderboard.shown`), then the notes."""
    lines = ["# Leaderboard", "",
             "Sorted by IoU (mean over classes, higher is better) on each dataset's test split. "
             "`±` is the sample standard deviation over runs with different seeds (n = runs).", ""]
    for ds in board.datasets:
        kind = board.kinds.get(ds) or "unknown kind"
        header, cells = table(board, ds)
        lines += [f"## {ds} ({kind})", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join("---:" if h in ("#", "n") else "---" for h in header) + "|"]
        lines += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in cells]
        lines.append("")
        if choices and ds in choices:
            lines += [choices[ds], ""]
        if board.sparse(ds):  # the restricted measures are explained beside the table
            lines += [SPARSE_NOTE.format(dataset=ds), ""]
        refs = references_for(board.identities.get(ds))
        if refs:
            rh, rc = reference_table(board, ds, refs)
            lines += ["Published U-Net results for reference, measured on the challenge's own test "
                      "set (not our split):", "", "| " + " | ".join(rh) + " |",
                      "|" + "|".join("---" for _ in rh) + "|"]
            lines += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rc]
            lines.append("")
    lines += ["## Runs", "", *([board.paths_note, ""] if board.paths_note else []),
              "| dataset | variant | seed | IoU | date | status | metrics.json |",
              "|---|---|---:|---:|---|---|---|"]
    for row in board.rows:
        for r, status in [(r, "merged" if row.n > 1 else "single") for r in row.runs] + \
                         [(r, "duplicate seed, dropped") for r in row.dropped]:
            lines.append(f"| {row.dataset} | {_md_escape(row.label)} | {r.seed} | "
                         f"{_g(r.metrics['iou_mean']) or '-'} | {r.date or '-'} | {status} | "
                         f"`{_md_escape(board.shown(r.path))}` |")
    if board.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in board.notes]
    return "\n".join(lines) + "\n"


def terminal(board: Leaderboard) -> str:
    """Plain-text tables (ASCII only) for printing, one per dataset, columns aligned."""
    blocks = []
    for ds in board.datasets:
        header, cells = table(board, ds, pm="+-")
        widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
        line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
        kind = board.kinds.get(ds) or "unknown kind"
        order = "sorted by SEG (sparse annotations), best first" if board.sparse(ds) else "sorted by IoU, best first"
        blocks.append("\n".join([f"{ds} ({kind}): {order}", line(header),
                                 "  ".join("-" * w for w in widths), *map(line, cells)]))
    if board.notes:
        blocks.append("notes:\n" + "\n".join(f"  - {n}" for n in board.notes))
    return "\n\n".join(blocks) + "\n"


def reference_table(board: Leaderboard, dataset: str, refs) -> tuple[list[str], list[list[str]]]:
    """Published U-Net figures beside ours: one column per published metric, a first row for the
    publication (with its test set) and one row per variant. Metrics we do not compute show "-"."""
    names = {"warping_error": "warping error", **METRIC_NAMES}
    keys = list(dict.fromkeys(r.metric for r in refs))
    header = ["", "test set", *[names.get(k, k) for k in keys]]
    by_key = {r.metric: r for r in refs}
    cells = [["U-Net, published (Ronneberger et al. 2015)", refs[0].test_set,
              *[f"{by_key[k].value:g}" for k in keys]]]
    for row in board.datasets.get(dataset, []):
        cells.append([f"ours: {row.label}", "our held-out test split",
                      *[fmt_value(row, k) if k in row.mean else "not computed" for k in keys]])
    return header, cells
