"""``seg calibrate``: choose the post-processing on the validation split, never on the test split.

A loss that weights membranes and borders (the U-Net paper's weight maps, class balancing) shifts
the probabilities toward the boundary class, so ``p >= 0.5`` is rarely the threshold that maximises
overlap. With ``postprocess.calibrate: true`` the workflow predicts the val split, this module picks
the settings by the dataset's own measure on it, and ``seg predict --threshold-file`` applies them
to the test split:

- ISBI 2012: the threshold with the best mean IoU of the two classes, pixels of all val slices pooled
  (one threshold per split, as a stack is scored).
- CTC data: the threshold, the watershed seed depth ``h`` and the minimum object size with the best
  SEG (the challenge's measure, pooled over all annotated cells of the val frames), over the grid
  thresholds x ``postprocess.search.h`` x ``postprocess.search.min_size``. Pixel mean IoU would count
  every unannotated cell of sparsely annotated data (DIC-HeLa) as an error and push the threshold up
  until half the cells vanish; SEG counts annotated cells only. SEG ties are broken by closeness to
  the configured settings (``min_size``, then ``h``, then ``threshold``), then by object precision
  at IoU 0.5. So a setting moves away from the configured one only for a better SEG: a larger
  minimum size never raises SEG, and choosing the largest one that costs no val cell (as precision
  would) deletes the smaller cells of other frames (GOWT1: min_size 2000 on its one val frame, test
  SEG 0.809 instead of 0.890 at the configured 200); a smaller one wins when the configured size
  deletes annotated cells. "Configured" means resolved: the config's value, else the plan's from the
  dataset's fingerprint (:mod:`seg.settings.plan`; the grids too).

Conventions: two classes, class 1 = interior (ISBI) or cell (CTC); the probability is that of
class 1, the prediction is ``p >= threshold``. The calibration file carries every chosen setting
(``threshold``, and for CTC data ``h`` and ``min_size``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from seg.data import canonical
from seg.errors import SegError
from seg.io import read_json, read_tiff, write_json
from seg.metrics.ctc import ObjectCounts, overlap_table
from seg.metrics.overlap import overlap_scores
from seg.settings import RunSettings
from seg.settings.calibration import read_calibration, read_threshold

__all__ = ["GRID", "ThresholdCounts", "choose_postprocess", "choose_threshold", "read_calibration", "read_threshold",
           "run_calibrate", "seg_table"]

GRID = tuple(round(t, 2) for t in np.arange(0.05, 0.951, 0.05))
_BINS = 1000  # probability histogram resolution (the grid's thresholds fall on bin edges)


class ThresholdCounts:
    """Pooled histograms of the class-1 probability of class-1 and class-0 pixels (1000 bins)."""

    def __init__(self) -> None:
        self.pos = np.zeros(_BINS, dtype=np.int64)
        self.neg = np.zeros(_BINS, dtype=np.int64)

    def add(self, prob: np.ndarray, truth: np.ndarray) -> None:
        """Add one slice: ``prob`` float (H, W) in [0, 1], ``truth`` bool/int (H, W), True/1 = class 1."""
        prob, truth = np.asarray(prob), np.asarray(truth).astype(bool)
        if prob.shape != truth.shape:
            raise SegError(f"calibrate: probability {prob.shape} and ground truth {truth.shape} differ in shape")
        idx = np.clip((prob.astype(np.float64) * _BINS).astype(np.int64), 0, _BINS - 1)
        self.pos += np.bincount(idx[truth], minlength=_BINS)
        self.neg += np.bincount(idx[~truth], minlength=_BINS)

    def scores(self, threshold: float) -> dict:
        """Pooled IoU of class 0, class 1 and their mean for the prediction ``p >= threshold``
        (``seg.metrics.overlap.overlap_scores`` of the pooled 2x2 confusion matrix)."""

        k = int(round(threshold * _BINS))
        cm = np.array([[self.neg[:k].sum(), self.neg[k:].sum()], [self.pos[:k].sum(), self.pos[k:].sum()]])
        s = overlap_scores(cm, ["class0", "class1"])
        return {"threshold": float(threshold), "iou_class0": s["iou"]["class0"],
                "iou_class1": s["iou"]["class1"], "iou_mean": s["iou_mean"]}


def choose_threshold(counts: ThresholdCounts, grid: tuple[float, ...] = GRID) -> tuple[float, list[dict]]:
    """The grid threshold with the highest pooled mean IoU (ties: the one closest to 0.5), and the
    table of scores for every grid threshold."""
    table = [counts.scores(t) for t in grid]
    best = max(table, key=lambda r: (round(r["iou_mean"], 12), -abs(r["threshold"] - 0.5)))
    return best["threshold"], table


def seg_table(fgs: list[np.ndarray], refs: list[np.ndarray], *, target, pp: dict, thresholds, hs, min_sizes,
              sparse: bool = False) -> list[dict]:
    """SEG, recall and precision (IoU 0.5) pooled over frames for every post-processing setting.

    Args:
        fgs: per frame, what the target's objects are made of
            (:meth:`seg.targets.base.Target.calibration_input`: the cell probability (H, W), or a
            seeded target's whole output (channels, H, W)).
        refs: per frame, int (H, W) reference instances (annotated cells; 0 = not annotated).
        target: the run's target (:class:`seg.targets.base.Target`); pp: its post-processing
            settings (their ``method``).
        thresholds, hs, min_sizes: the grid; ``hs`` are values of the target's
            :attr:`~seg.targets.base.Target.second_key` (``h``, ``seed_threshold``).
        sparse: report precision over the predicted objects that overlap the annotated cells (more
            than half of the object on them), and the foreground IoU of those objects with them.

    Returns:
        One row per (threshold, h, min_size): {"threshold", the second key ("h", "seed_threshold"),
        "min_size", "seg", "recall_iou50", "precision_iou50", "n_pred"} (+ "iou_cell_annotated"
        when sparse).
    """
    second = target.second_key
    rows = []
    for t in thresholds:
        for h in hs:
            tables = [overlap_table(r, target.objects(p, pp=pp, threshold=t, second=h))
                      for p, r in zip(fgs, refs, strict=True)]
            for m in min_sizes:
                c = sum((tb.counts(tb.pred_size >= m) for tb in tables), ObjectCounts())
                sc = c.scores()
                row = {"threshold": float(t), second: float(h), "min_size": int(m), "seg": sc["seg"],
                       "recall_iou50": sc["recall_iou50"], "precision_iou50": sc["precision_iou50"],
                       "n_pred": c.n_pred}
                if sparse:
                    ann = c.annotated_scores()
                    row.update(precision_iou50=ann["precision_iou50_annotated"],
                               iou_cell_annotated=ann["iou_cell_annotated"])
                rows.append(row)
    return rows


def choose_postprocess(rows: list[dict], *, threshold: float, h: float, min_size: int) -> dict:
    """The row of :func:`seg_table` with the best SEG; ties by closeness to the configured
    ``min_size``, ``h`` (three_class: ``seed_threshold``) and ``threshold`` (in that order), then
    by precision."""
    def key(r):
        seg = r["seg"] if r["seg"] == r["seg"] else -1.0  # NaN (no annotated cell) last
        second = r["h"] if "h" in r else r["seed_threshold"]
        return (round(seg, 12), -abs(r["min_size"] - min_size), -abs(second - h),
                -abs(r["threshold"] - threshold), round(r["precision_iou50"], 12))

    return max(rows, key=key)


def _calibrate_ctc(settings, pred: Path, entries: list[dict]) -> dict:
    """The instance document of :func:`run_calibrate`: settings chosen by SEG on the val frames (the
    run's target decides the objects and the grid's second axis: h or the seed threshold)."""
    target, plan, ds_dir, meta = settings.target, settings.plan, settings.ds_dir, settings.meta
    pp = settings.configured_postprocess  # min_size, h, grids: config, else plan; method: target's
    seeded = target.second_key != "h"  # the maps' every channel is read (not the cell probability alone)
    second = target.second_key
    sparse = meta.get("annotations", "full") == "sparse"
    fgs, refs, counts = [], [], ThresholdCounts()
    for e in entries:
        p = _read_probability(pred, e, channels=len(settings.channels) if seeded else 2, full=seeded)
        fgs.append(p)
        refs.append(canonical.load_instances(ds_dir, e))
        counts.add(target.probability(p, foreground=1) if seeded else p, canonical.load_semantic(ds_dir, e) == 1)
    search = pp.get("search") or {}
    hs = target.second_grid(pp)
    configured = float(pp[second])
    sizes = [int(x) for x in search.get("min_size", [pp["min_size"]])]
    table = seg_table(fgs, refs, target=target, pp=pp, thresholds=GRID, hs=hs, min_sizes=sizes, sparse=sparse)
    best = dict(choose_postprocess(table, threshold=float(pp["threshold"]), h=configured,
                                   min_size=int(pp["min_size"])))
    fixed = seg_table(fgs, refs, target=target, pp=pp, thresholds=[float(pp["threshold"])], hs=[configured],
                      min_sizes=[int(pp["min_size"])], sparse=sparse)[0]
    if not sparse:  # pixel IoU is meaningful only when every cell is annotated
        best.update(counts.scores(best["threshold"]))
        fixed.update(counts.scores(fixed["threshold"]))
    doc = {"criterion": "seg", "method": pp["method"], "annotations": "sparse" if sparse else "full",
           "threshold": best["threshold"], "h": best.get("h", float(pp["h"])), "min_size": best["min_size"],
           "tie_break": f"closeness to the configured min_size, {second}, threshold; then precision_iou50",
           "sources": {k: plan.setting(f"postprocess.{k}").source for k in ("min_size", "h", "search.h", "search.min_size")},
           "at_chosen": best, "at_fixed": fixed, "table": table}
    if seeded:
        doc.update(target=target.name, seed_threshold=best["seed_threshold"])
    if sparse:
        doc["precision"] = ("over the predicted objects that overlap the annotated cells (more than half "
                            "of the object on them)")
    return doc


def _read_probability(pred: Path, e: dict, *, channels: int = 2, full: bool = False) -> np.ndarray:
    """From ``<pred>/<id>_prob.tif``: the class-1 probability (H, W) of slice ``e``; with ``full``
    the whole (channels, H, W) stack (a three-class model's probabilities, a distance model's maps)."""
    path = pred / f"{e['id']}_prob.tif"
    if not path.is_file():
        raise SegError(f"{path}: probability map not found (run seg predict --split val)")
    p = read_tiff(path)
    if full:
        if p.ndim != 3 or p.shape[0] != channels or p.shape[1:] != tuple(e["shape"]):
            raise SegError(f"{path}: expected the model's {channels} maps ({channels}, H, W) with (H, W) = "
                           f"{tuple(e['shape'])}, got {p.shape}")
        return p
    p = p[1] if p.ndim == 3 and p.shape[0] == 2 else p
    if p.shape != tuple(e["shape"]):
        raise SegError(f"{path}: probability map has shape {p.shape}, expected (H, W) = {tuple(e['shape'])}")
    return p


def run_calibrate(cfg: dict, *, dataset: str, variant: str, pred: str | os.PathLike, out: str | os.PathLike,
                  data_dir: str | os.PathLike | None = None) -> dict:
    """Choose the threshold from the val-split predictions in ``pred`` and write ``out`` (JSON).

    Args:
        pred: folder of ``seg predict --split val`` (``<id>_prob.tif``: ISBI (H, W) interior
            probability; CTC (classes, H, W) probabilities, class 1 = cell).

    Returns:
        The document written: the chosen settings (threshold; CTC also h and min_size), criterion
        (iou_mean for ISBI, seg for CTC), split, the scores at the chosen and at the configured
        settings and the table over the grid.

    Raises:
        SegError: the predictions are not of the val split, a file is missing or of the wrong shape,
            or the split has no annotated slice.
    """
    settings = RunSettings(cfg, dataset, variant, data_dir=data_dir)  # SegError for an unknown dataset
    ds_dir = settings.ds_dir
    pred = Path(pred)
    summary_path = pred / "predict_summary.json"
    if not summary_path.is_file():
        raise SegError(f"{summary_path}: not found (run seg predict --split val first)")
    split = read_json(summary_path).get("split")
    if split != "val":
        raise SegError(f"{summary_path}: predictions of split {split!r}; the threshold is chosen on 'val' only")
    meta = canonical.load_meta(ds_dir)
    if len(meta["classes"]) != 2:
        raise SegError(f"{ds_dir / 'meta.json'}: calibration needs two classes, got {meta['classes']}")
    entries = [e for e in canonical.slices(meta, "val") if e.get("semantic")]
    if not entries:
        raise SegError(f"{ds_dir / 'meta.json'}: split 'val' has no annotated slices to calibrate on")
    head = {"dataset": dataset, "variant": variant, "split": "val", "n_slices": len(entries)}
    if settings.kind.instances:  # instances: threshold, h and min_size chosen by val SEG
        doc = {**head, **_calibrate_ctc(settings, pred, entries)}
    else:
        counts = ThresholdCounts()
        for e in entries:
            counts.add(_read_probability(pred, e), canonical.load_semantic(ds_dir, e) == 1)
        threshold, table = choose_threshold(counts)
        fixed = float(settings.configured_postprocess["threshold"])
        doc = {**head, "criterion": "iou_mean", "threshold": threshold, "at_chosen": counts.scores(threshold),
               "at_fixed": counts.scores(fixed), "table": table}
    write_json(out, doc)
    return doc
