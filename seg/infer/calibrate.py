"""``seg calibrate``: choose the decision threshold on the validation split, never on the test split.

A loss that weights membranes and borders (the U-Net paper's weight maps, class balancing) shifts
the probabilities toward the boundary class, so ``p >= 0.5`` is rarely the threshold that maximises
overlap. With ``postprocess.calibrate: true`` the workflow predicts the val split, this module picks
the threshold with the best mean IoU of the two classes on it, and ``seg predict --threshold-file``
applies that threshold to the test split (ISBI segmentation maps; CTC foreground masks, instances
and class maps).

Conventions: two classes, class 1 = interior (ISBI) or cell (CTC); the probability is that of
class 1, the prediction is ``p >= threshold``. IoU and the choice pool the pixels of all val
slices (one threshold per split, as a stack is scored).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from seg.errors import SegError

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
        from seg.metrics.overlap import overlap_scores

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


def run_calibrate(cfg: dict, *, dataset: str, variant: str, pred: str | os.PathLike, out: str | os.PathLike,
                  data_dir: str | os.PathLike | None = None) -> dict:
    """Choose the threshold from the val-split predictions in ``pred`` and write ``out`` (JSON).

    Args:
        pred: folder of ``seg predict --split val`` (``<id>_prob.tif``: ISBI (H, W) interior
            probability; CTC (classes, H, W) probabilities, class 1 = cell).

    Returns:
        The document written: threshold, criterion, split, the score at the configured fixed
        threshold and the table over the grid.

    Raises:
        SegError: the predictions are not of the val split, a file is missing or of the wrong shape,
            or the split has no annotated slice.
    """
    from seg.data import canonical
    from seg.io import read_json, read_tiff, write_json

    if dataset not in cfg["datasets"]:
        raise SegError(f"config: unknown dataset {dataset!r} (configured: {', '.join(cfg['datasets'])})")
    pred = Path(pred)
    summary_path = pred / "predict_summary.json"
    if not summary_path.is_file():
        raise SegError(f"{summary_path}: not found (run seg predict --split val first)")
    split = read_json(summary_path).get("split")
    if split != "val":
        raise SegError(f"{summary_path}: predictions of split {split!r}; the threshold is chosen on 'val' only")
    ds_dir = Path(data_dir if data_dir is not None else cfg.get("data_dir", "data")) / dataset
    meta = canonical.load_meta(ds_dir)
    if len(meta["classes"]) != 2:
        raise SegError(f"{ds_dir / 'meta.json'}: calibration needs two classes, got {meta['classes']}")
    entries = [e for e in canonical.slices(meta, "val") if e.get("semantic")]
    if not entries:
        raise SegError(f"{ds_dir / 'meta.json'}: split 'val' has no annotated slices to calibrate on")
    counts = ThresholdCounts()
    for e in entries:
        path = pred / f"{e['id']}_prob.tif"
        if not path.is_file():
            raise SegError(f"{path}: probability map not found (run seg predict --split val)")
        p = read_tiff(path)
        p = p[1] if p.ndim == 3 and p.shape[0] == 2 else p
        if p.shape != tuple(e["shape"]):
            raise SegError(f"{path}: probability map has shape {p.shape}, expected (H, W) = {tuple(e['shape'])}")
        counts.add(p, canonical.load_semantic(ds_dir, e) == 1)
    threshold, table = choose_threshold(counts)
    fixed = float((cfg.get("postprocess") or {}).get("threshold", 0.5))
    doc = {"dataset": dataset, "variant": variant, "split": "val", "criterion": "iou_mean",
           "threshold": threshold, "n_slices": len(entries), "at_chosen": counts.scores(threshold),
           "at_fixed": counts.scores(fixed), "table": table}
    write_json(out, doc)
    return doc


def read_threshold(path: str | os.PathLike) -> float:
    """The threshold of a ``seg calibrate`` file (SegError naming the file if absent or invalid)."""
    from seg.io import read_json

    p = Path(path)
    if not p.is_file():
        raise SegError(f"{p}: threshold file not found (run seg calibrate)")
    doc = read_json(p)
    t = doc.get("threshold") if isinstance(doc, dict) else None
    if not isinstance(t, (int, float)) or not 0 <= t <= 1:
        raise SegError(f"{p}: 'threshold' must be a number in [0, 1], got {t!r}")
    return float(t)
