"""Collect ``metrics.json`` files of one or more result folders into one leaderboard per dataset.

A *run* is one ``metrics.json`` (written by ``seg score`` into ``results/<dataset>/<variant>/``).
Runs are grouped by (dataset, variant, config hash); within a group:

- runs with the **same seed** are duplicates (e.g. the same folder copied back twice): the newest
  (by its ``date``, else file time) is kept and the others are listed in :attr:`Row.dropped`;
- runs with **different seeds** are merged: every metric becomes the mean over the runs, with the
  sample standard deviation (ddof=1) as the spread and ``n`` the number of runs.

Rows are sorted per dataset by the runs' primary metric (``iou_mean``, higher is better; ``seg``
for sparsely annotated data), best first. Table rendering (CSV, Markdown, terminal) is in
:mod:`seg.report.tables`.

Paths are printed relative to the result folder the leaderboard was built from (with several, the
deepest folder holding them all; :attr:`Leaderboard.root`, :meth:`Leaderboard.shown`), never as the
machine's absolute paths, so a leaderboard or report can be shared and merged across machines.

Sparse annotations (dataset ``annotations: sparse``, e.g. DIC-HeLa): the runs' precision and pixel
IoU are computed over the predicted objects that overlap the annotated cells (more than half of the
object on them; ``seg score``), the rows are ranked by SEG, and the leaderboard carries a note saying so (:data:`SPARSE_NOTE`).
"""

from __future__ import annotations

import math
import os
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from seg.errors import SegError
from seg.targets import DEFAULT as DEFAULT_TARGET
from seg.io import read_json
from seg.kinds import find_kind, kinds as registered_kinds
from seg.report.references import dataset_identity

# Aggregate metrics carried into the leaderboard, in column order. Errors: lower is better.
# pixel_error = fraction of misclassified pixels; pixel_error_isbi = the ISBI 2012 challenge's
# "pixel error" (1 - best F-score of interior pixels), the one comparable to the published value.
METRICS = (
    "iou_mean", "dice_mean", "pixel_error", "f1_interior_error", "rand_error", "pixel_error_isbi",
    "vrand", "vinfo", "seg", "precision_iou50", "recall_iou50",
)
LOWER_IS_BETTER = {"pixel_error", "f1_interior_error", "rand_error", "pixel_error_isbi"}
SPARSE_NOTE = ("{dataset}: sparse annotations (only some cells of a frame are annotated; an "
               "unannotated cell is not background). Ranked by SEG (annotated cells only); recall "
               "counts annotated cells; precision@IoU0.5 and foreground IoU are computed only over the "
               "predicted objects that overlap the annotated cells (more than half of the object on "
               "them); mean IoU over the whole frame is left out (it would count every unannotated "
               "cell found as an error).")
# Run facts averaged over merged runs (seconds, counts).
NUMERIC_FACTS = ("train_time_s", "seconds_per_slice", "params", "iterations", "best_val_iou", "threshold")


@dataclass
class Run:
    """One scored run (one metrics.json).

    Attributes:
        path: the metrics.json file; ``run_dir`` is its folder (holds train_log.csv and pred/).
        metrics: aggregate metric values (floats; NaN where the run did not report the metric).
        facts: ``train_time_s`` (wall-clock training, s), ``seconds_per_slice`` (inference, s),
            ``params`` (parameter count), ``iterations``, ``best_val_iou``, ``threshold`` (the
            class-1 probability threshold of the test predictions) (floats or NaN).
        date: ISO date string of the scoring (may be empty); ``mtime`` the file's modification time.
    """

    path: Path
    dataset: str
    variant: str
    label: str
    config_hash: str
    seed: int | None
    date: str
    mtime: float
    primary: str
    metrics: dict[str, float]
    facts: dict[str, float]
    device: str
    model: str
    class_iou: dict[str, float]
    kind: str = ""
    annotations: str = "full"
    target: str = DEFAULT_TARGET
    start: str = "scratch"  # :func:`start_of`

    @property
    def run_dir(self) -> Path:
        return self.path.parent

    @property
    def sort_time(self) -> tuple[str, float]:
        return (self.date or "", self.mtime)


@dataclass
class Row:
    """One leaderboard row: a (dataset, variant, config hash) group of merged runs.

    Attributes:
        runs: the merged runs (distinct seeds), newest first.
        dropped: same-seed duplicates that were left out (older copies).
        mean, std: per metric/fact; ``std`` is NaN when only one run was merged.
        kind: the dataset kind's name (:mod:`seg.kinds`), or ``""`` when it cannot be told.
        target: what the network predicts (the variant's ``target``, :mod:`seg.targets`).
        start: the weights its training started from (:func:`start_of`).
        rank: 1 = best within its dataset (set by :func:`build_leaderboard`).
    """

    dataset: str
    variant: str
    label: str
    config_hash: str
    kind: str
    model: str
    primary: str
    runs: list[Run]
    target: str = DEFAULT_TARGET
    start: str = "scratch"  # :func:`start_of`
    dropped: list[Run] = field(default_factory=list)
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    rank: int = 0

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def seeds(self) -> list[int | None]:
        """Seeds of the merged runs, ascending (None last)."""
        return sorted((r.seed for r in self.runs), key=lambda s: (s is None, s or 0))

    @property
    def devices(self) -> str:
        return "; ".join(dict.fromkeys(r.device for r in self.runs if r.device))

    @property
    def date(self) -> str:
        return max(r.date for r in self.runs)

    @property
    def secondary(self) -> str | None:
        """The measure shown beside IoU: the kind's (ISBI V_rand, CTC SEG), None if unknown."""
        kind = find_kind(self.kind)
        return kind.secondary if kind is not None else None


def find_metrics(result_dirs: Iterable[str | os.PathLike]) -> list[Path]:
    """All ``metrics.json`` files under the given folders (or the files themselves), deduplicated
    by resolved path, in sorted order. A folder that does not exist is a SegError."""
    found: dict[Path, None] = {}
    for d in result_dirs:
        p = Path(d)
        if p.is_file() and p.name == "metrics.json":
            found[p.resolve()] = None
            continue
        if not p.is_dir():
            raise SegError(f"{p}: result folder not found")
        for m in sorted(p.rglob("metrics.json")):
            if not any(part.startswith(".") for part in m.relative_to(p).parts):
                found[m.resolve()] = None
    return list(found)


def result_root(result_dirs: Iterable[str | os.PathLike]) -> Path:
    """The folder a leaderboard's paths are relative to: the result folder it was built from (for a
    metrics.json file given instead: its folder), with several the deepest folder holding them all
    (e.g. ``results/targets`` for ``results/targets/seed0`` and ``results/targets/seed1``).
    Absolute and resolved, as :func:`find_metrics`' paths are."""
    folders = [p.resolve() if p.is_dir() else p.resolve().parent for p in map(Path, result_dirs)]
    return Path(os.path.commonpath(folders))


def relative_to_root(path: str | os.PathLike, root: Path | None) -> str:
    """``path`` as a leaderboard prints it: relative to ``root`` (POSIX separators) when it lies in
    it, ``root`` itself by its name; any other path as given when relative, else by its name (no
    machine-absolute path is printed)."""
    p = Path(path)
    if root is not None:
        try:
            rel = p.resolve().relative_to(root)
        except ValueError:
            pass
        else:
            return rel.as_posix() if rel.parts else root.name
    return p.as_posix() if not p.is_absolute() else p.name


def _num(x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def device_label(train: dict) -> str:
    """The leaderboard's device text of a run's ``train_summary.json``: device, precision and why,
    e.g. ``cpu (2 threads), bf16 (measured, bf16/fp32 speed 1.68)`` ("" when unknown)."""
    device = str(train.get("device") or "")
    prec = train.get("precision") or {}
    amp = prec.get("amp") or train.get("amp")
    if not amp:
        return device
    why = prec.get("source")
    ratio = prec.get("bf16_vs_fp32_speed")
    if why and ratio is not None:
        why = f"{why}, bf16/fp32 speed {float(ratio):.2f}"
    text = f"{amp} ({why})" if why else str(amp)
    return f"{device}, {text}" if device else text


def load_run(path: Path, cfg: dict | None = None) -> Run:
    """Read one metrics.json; fields missing from it are taken from the folder layout
    (``<dataset>/<variant>/metrics.json``) or left empty/NaN. Raises SegError if it is not JSON."""
    m = read_json(path)
    if not isinstance(m, dict):
        raise SegError(f"{path}: metrics.json must be a JSON object")
    agg = m.get("aggregate") or {}
    train = m.get("train") or {}
    inference = m.get("inference") or {}
    dataset = str(m.get("dataset") or path.parent.parent.name)
    variant = str(m.get("variant") or path.parent.name)
    var_cfg = ((cfg or {}).get("variants") or {}).get(variant) or {}
    seed = m.get("seed", train.get("seed"))
    return Run(
        path=path,
        dataset=dataset,
        variant=variant,
        label=str(var_cfg.get("label") or m.get("label") or variant),
        config_hash=str(m.get("config_hash") or train.get("config_hash") or "?"),
        seed=int(seed) if isinstance(seed, (int, float)) else None,
        date=str(m.get("date") or ""),
        mtime=path.stat().st_mtime,
        primary=str(m.get("primary") or "iou_mean"),
        metrics={k: _num(agg.get(k)) for k in METRICS},
        facts={
            "train_time_s": _num(train.get("wall_time_s")),
            "seconds_per_slice": _num(inference.get("seconds_per_slice")),
            "params": _num(train.get("params")),
            "iterations": _num(train.get("iterations")),
            "best_val_iou": _num(train.get("best_val_iou")),
            "threshold": _num(inference.get("threshold")),
        },
        device=device_label(train),
        model=str(var_cfg.get("model") or train.get("model") or ""),
        class_iou={str(k): _num(v) for k, v in (agg.get("iou") or {}).items()},
        kind=str(m.get("kind") or ""),
        annotations=str(m.get("annotations") or "full"),
        target=str(var_cfg.get("target") or (train.get("target") or {}).get("name") or DEFAULT_TARGET),
        start=start_of(var_cfg, train),
    )


#: :func:`start_of` of a run trained from random weights.
SCRATCH = "scratch"


def start_of(var_cfg: dict, train: dict) -> str:
    """What a run's training started from, in words: ``package <name> (x<factor>)`` (a variant's
    ``init:``, from its train summary), ``pretrained <source>`` (encoder weights), else ``scratch``."""
    init = train.get("init") or {}
    if init or var_cfg.get("init"):
        name = init.get("name") or Path(str(var_cfg.get("init"))).name
        factor = init.get("factor")
        return f"package {name}" + (f" (x{factor:.3g})" if isinstance(factor, (int, float)) and factor != 1 else "")
    pre = var_cfg.get("pretrained") or "none"
    return SCRATCH if pre == "none" else f"pretrained {pre}"


def _meta(data_dir: Path | None, dataset: str) -> dict | None:
    """The dataset's canonical meta.json, or None if there is none (or it is unreadable)."""
    path = data_dir / dataset / "meta.json" if data_dir else None
    if path is None or not path.is_file():
        return None
    try:
        meta = read_json(path)
    except SegError:
        return None
    return meta if isinstance(meta, dict) else None


def dataset_kind(dataset: str, runs: list[Run], cfg: dict | None, data_dir: Path | None) -> str:
    """The dataset's kind name from the config, else the metrics.json ``kind``, else the dataset's
    meta.json, else the first registered kind whose signature metric the runs have (Rand error:
    ISBI; SEG: CTC), else ``""``."""
    ds_cfg = ((cfg or {}).get("datasets") or {}).get(dataset)
    if ds_cfg and ds_cfg.get("kind"):
        return str(ds_cfg["kind"])
    for r in runs:
        if r.kind:
            return r.kind
    kind = (_meta(data_dir, dataset) or {}).get("kind")
    if kind:
        return str(kind)
    for k in registered_kinds():
        if k.signature_metric and any(not math.isnan(r.metrics.get(k.signature_metric, math.nan)) for r in runs):
            return k.name
    return ""


def dataset_annotations(dataset: str, runs: list[Run], cfg: dict | None) -> str:
    """``sparse`` if the config says so for ``dataset`` or any run's metrics.json was scored as
    sparse (the metrics then are the restricted ones), else ``full``."""
    ds_cfg = ((cfg or {}).get("datasets") or {}).get(dataset) or {}
    if ds_cfg.get("annotations") == "sparse" or any(r.annotations == "sparse" for r in runs):
        return "sparse"
    return "full"


def _mean_std(values: list[float]) -> tuple[float, float]:
    v = np.array([x for x in values if not math.isnan(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan


def merge_group(runs: list[Run], kind: str) -> Row:
    """Merge runs of one (dataset, variant, config hash): drop same-seed duplicates (keep the
    newest), then mean and sample std over the remaining runs."""
    newest_first = sorted(runs, key=lambda r: r.sort_time, reverse=True)
    kept: dict[object, Run] = {}
    dropped: list[Run] = []
    for r in newest_first:
        key = r.seed if r.seed is not None else ("no-seed", r.path)
        if key in kept:
            dropped.append(r)
        else:
            kept[key] = r
    merged = list(kept.values())
    first = merged[0]
    row = Row(
        dataset=first.dataset, variant=first.variant, label=first.label,
        config_hash=first.config_hash, kind=kind, model=first.model, target=first.target, start=first.start,
        primary=first.primary,
        runs=merged, dropped=dropped,
    )
    for key in METRICS:
        row.mean[key], row.std[key] = _mean_std([r.metrics[key] for r in merged])
    for key in NUMERIC_FACTS:
        row.mean[key], row.std[key] = _mean_std([r.facts[key] for r in merged])
    for cls in first.class_iou:
        row.mean[f"iou_{cls}"], row.std[f"iou_{cls}"] = _mean_std(
            [r.class_iou.get(cls, math.nan) for r in merged])
    return row


def sort_rows(rows: list[Row]) -> list[Row]:
    """Best first by the primary metric (NaN last), ties by label; sets ``rank`` from 1."""
    def key(row: Row):
        v = row.mean.get(row.primary, math.nan)
        if math.isnan(v):
            return (1, 0.0, row.label)
        return (0, v if row.primary in LOWER_IS_BETTER else -v, row.label)

    out = sorted(rows, key=key)
    for i, row in enumerate(out, 1):
        row.rank = i
    return out


@dataclass
class Leaderboard:
    """Rows per dataset (datasets in config order, then others alphabetically) and notes for the
    reader (duplicates dropped, unreadable files)."""

    datasets: dict[str, list[Row]]
    kinds: dict[str, str]
    notes: list[str]
    # dataset -> identity for published references (seg.report.references.dataset_identity)
    identities: dict[str, str | None] = field(default_factory=dict)
    # dataset -> "full" | "sparse" (sparse: precision and IoU restricted, ranked by SEG)
    annotations: dict[str, str] = field(default_factory=dict)
    # what the printed paths are relative to (result_root); None: paths print as given
    root: Path | None = None
    # the result folders it was built from, as printed (shown)
    folders: list[str] = field(default_factory=list)

    def shown(self, path: str | os.PathLike) -> str:
        """``path`` as the tables and the report print it (:func:`relative_to_root`)."""
        return relative_to_root(path, self.root)

    def relative(self, text: str) -> str:
        """``text`` (a note) with every path inside :attr:`root` written relative to it."""
        if self.root is None or self.root.parent == self.root:
            return text
        return text.replace(f"{self.root}{os.sep}", "")

    @property
    def paths_note(self) -> str:
        """What the printed paths are relative to, in words ("" when built without folders)."""
        if not self.folders:
            return ""
        if len(self.folders) == 1:
            return f"Paths are relative to the result folder {self.folders[0]}."
        return f"Paths are relative to the folder holding the result folders {', '.join(self.folders)}."

    def sparse(self, dataset: str) -> bool:
        """Whether ``dataset`` is sparsely annotated (its precision and IoU are restricted)."""
        return self.annotations.get(dataset) == "sparse"

    @property
    def rows(self) -> list[Row]:
        return [r for rows in self.datasets.values() for r in rows]


def build_leaderboard(result_dirs: Iterable[str | os.PathLike], cfg: dict | None = None,
                      data_dir: str | os.PathLike | None = None) -> Leaderboard:
    """Collect, merge and sort every metrics.json under ``result_dirs``.

    An unreadable metrics.json is skipped with a note (and a warning on stderr), so one broken
    copy does not hide the other results. No metrics.json at all is a SegError. The notes print
    paths relative to :func:`result_root` of ``result_dirs``, as the tables do.
    """
    result_dirs = list(result_dirs)
    notes: list[str] = []
    runs: list[Run] = []
    paths = find_metrics(result_dirs)
    if not paths:
        raise SegError(f"{', '.join(map(str, result_dirs))}: no metrics.json found (run `seg score` first)")
    root = result_root(result_dirs)
    for p in paths:
        try:
            runs.append(load_run(p, cfg))
        except SegError as e:
            notes.append(f"skipped {str(e).replace(str(p), relative_to_root(p, root))}")
            print(f"seg leaderboard: warning: skipped {e}", file=sys.stderr)
    groups: dict[str, dict[tuple[str, str], list[Run]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        groups[r.dataset][(r.variant, r.config_hash)].append(r)
    order = list(((cfg or {}).get("datasets") or {}))
    names = [d for d in order if d in groups] + sorted(d for d in groups if d not in order)
    data = Path(data_dir) if data_dir is not None else None
    out: dict[str, list[Row]] = {}
    kinds: dict[str, str] = {}
    identities: dict[str, str | None] = {}
    annotations: dict[str, str] = {}
    for ds in names:
        ds_runs = [r for g in groups[ds].values() for r in g]
        kinds[ds] = dataset_kind(ds, ds_runs, cfg, data)
        identities[ds] = dataset_identity(ds, _meta(data, ds))
        annotations[ds] = dataset_annotations(ds, ds_runs, cfg)
        if annotations[ds] == "sparse":
            notes.append(SPARSE_NOTE.format(dataset=ds))
        rows = [merge_group(g, kinds[ds]) for g in groups[ds].values()]
        for row in rows:
            for d in row.dropped:
                keep = next(r for r in row.runs if r.seed == d.seed)
                notes.append(f"{ds} / {row.label}: {relative_to_root(d.path, root)} duplicates seed "
                             f"{d.seed} of {relative_to_root(keep.path, root)} (same config hash "
                             f"{row.config_hash}); kept the newer one")
        out[ds] = sort_rows(rows)
    folders = list(dict.fromkeys(relative_to_root(d, root) for d in result_dirs))
    return Leaderboard(datasets=out, kinds=kinds, notes=notes, identities=identities,
                       annotations=annotations, root=root, folders=folders)
