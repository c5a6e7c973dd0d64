"""The per-slice measures of ``seg score``, one class per kind of prediction; a dataset kind
(:meth:`seg.kinds.base.Kind.measures`) picks one and tells it where its prediction files are.

Each class scores one slice at a time and pools what the split's aggregate needs:

- ``slice(e, shape, gt_sem, gt_inst, prob, prob_path)`` -> (predicted class map uint8 (H, W),
  confusion matrix int64 (C, C), the slice's measures). ``gt_sem`` uint8 (H, W) class map,
  ``gt_inst`` int32 (H, W) instances (0 = background / membrane), ``prob`` the ``<id>_prob.tif``
  array ((H, W) or (C, H, W), checked to be of the slice's shape).
- ``aggregate(agg)`` -> the split's measures: ``agg`` holds the pooled pixel measures
  (:func:`seg.metrics.overlap.overlap_scores` and ``edge_errors``), the class adds its own.

Classes:

- :class:`ClassMapMeasures`: a binary class map ``<id>_seg.tif`` (> 0 = class 1): pixel measures only.
- :class:`ThresholdMapMeasures`: that, plus V_rand / V_info, Rand error and the challenge pixel error
  of the class-1 probability map at its best threshold (ISBI 2012; pooled over the split, one
  threshold for the whole split).
- :class:`InstanceMeasures`: the class map ``p[1] >= decision`` of the probabilities, and SEG,
  precision / recall at IoU 0.5 and V_rand / V_info of the instance masks (CTC); with sparse
  annotations the measures over the whole frame are replaced by those over the predicted objects
  that overlap the annotated cells (:func:`sparse_scores`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from seg.errors import SegError
from seg.io import read_tiff
from seg.metrics.ctc import ObjectCounts, object_counts
from seg.metrics.overlap import confusion_matrix, overlap_scores
from seg.metrics.rand import PairStats, best_over_thresholds, pair_stats, probability_stats, thin_boundaries


def read_prediction(path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
    """Read a prediction TIFF and check its (H, W) or (C, H, W) shape (SegError naming the file)."""

    if not path.is_file():
        raise SegError(f"{path}: {what} not found (run seg predict for this split)")
    arr = read_tiff(path)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if tuple(arr.shape[-2:]) != tuple(shape) or arr.ndim not in (2, 3):
        raise SegError(f"{path}: {what} has shape {tuple(arr.shape)}, expected (H, W) = {tuple(shape)}")
    return arr


def interior_probability(arr: np.ndarray, path: Path) -> np.ndarray:
    """The class-1 probability float64 (H, W) of an (H, W) map or a (2, H, W) stack, in [0, 1]."""
    p = arr if arr.ndim == 2 else arr[1] if arr.shape[0] == 2 else None
    if p is None:
        raise SegError(f"{path}: expected an (H, W) interior probability or (2, H, W), got {arr.shape}")
    p = np.asarray(p, dtype=np.float64)
    if p.size and (np.nanmin(p) < 0 or np.nanmax(p) > 1 or np.isnan(p).any()):
        raise SegError(f"{path}: probabilities must be in [0, 1]")
    return p


def class_map(arr: np.ndarray, n_classes: int, path: Path, threshold: float = 0.5) -> np.ndarray:
    """Class map uint8 (H, W) from a (C, H, W) probability stack or an (H, W) foreground
    probability: two classes -> ``p[1] >= threshold``, more -> argmax; a three-class model's
    [background, interior, boundary] stack for a two-class dataset -> ``p[1] + p[2] >= threshold``."""
    if arr.ndim == 3:
        if arr.shape[0] == 3 and n_classes == 2:
            return (np.asarray(arr[1], np.float64) + arr[2] >= threshold).astype(np.uint8)
        if arr.shape[0] != n_classes:
            raise SegError(f"{path}: {arr.shape[0]} probability channels, expected {n_classes}")
        if n_classes != 2:
            return np.argmax(arr, axis=0).astype(np.uint8)
        arr = arr[1]
    return (np.asarray(arr, dtype=np.float64) >= threshold).astype(np.uint8)


def sparse_scores(scores: dict, oc: ObjectCounts) -> dict:
    """Sparse annotations: the measures that count unannotated cells as errors are replaced by their
    versions over the predicted objects that overlap the annotated cells (more than half of the
    object on them), or left out."""
    ann = oc.annotated_scores()
    keep = {k: v for k, v in scores.items()
            if k not in ("iou", "iou_mean", "dice", "dice_mean", "pixel_error", "f1_interior_error", "edge_errors")}
    return {**keep, "precision_iou50": ann["precision_iou50_annotated"], "iou": {"cell": ann["iou_cell_annotated"]},
            "precision_iou50_touching": ann["precision_iou50_touching"],
            "n_pred_annotated": oc.n_pred_annotated, "n_pred_touching": oc.n_pred_touching}


class ClassMapMeasures:
    """Pixel measures of a binary class map file: ``seg_path(entry)`` -> ``<id>_seg.tif`` ({0, 1}
    or any integers, > 0 = class 1)."""

    def __init__(self, classes: list[str], *, seg_path: Callable[[dict], Path]):
        self.classes, self.seg_path = list(classes), seg_path

    def _class_map(self, e: dict, shape: tuple, gt_sem: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class map uint8 (H, W) of ``<id>_seg.tif``, its confusion matrix with ``gt_sem``)."""
        path = self.seg_path(e)
        cls = read_prediction(path, shape, "segmentation")
        if cls.ndim != 2:
            raise SegError(f"{path}: segmentation must be 2D (H, W), got {cls.shape}")
        pred_cls = (cls > 0).astype(np.uint8)
        return pred_cls, confusion_matrix(gt_sem, pred_cls, len(self.classes))

    def slice(self, e: dict, shape: tuple, gt_sem: np.ndarray, gt_inst: np.ndarray, prob: np.ndarray,
              prob_path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
        pred_cls, cm = self._class_map(e, shape, gt_sem)
        return pred_cls, cm, overlap_scores(cm, self.classes)

    def aggregate(self, agg: dict) -> dict:
        return agg


class ThresholdMapMeasures(ClassMapMeasures):
    """:class:`ClassMapMeasures` plus the Rand and information scores of the class-1 probability
    map at the slice's own best threshold of ``thresholds`` (aggregate: pooled, one threshold)."""

    def __init__(self, classes: list[str], *, seg_path: Callable[[dict], Path], thresholds: list[float]):
        super().__init__(classes, seg_path=seg_path)
        self.thresholds = list(thresholds)
        self.stats: list = []

    def slice(self, e: dict, shape: tuple, gt_sem: np.ndarray, gt_inst: np.ndarray, prob: np.ndarray,
              prob_path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
        pred_cls, cm = self._class_map(e, shape, gt_sem)
        st = probability_stats(gt_inst, interior_probability(prob, prob_path), self.thresholds)
        self.stats.append(st)
        return pred_cls, cm, {**overlap_scores(cm, self.classes), **best_over_thresholds([st])}

    def aggregate(self, agg: dict) -> dict:
        return {**agg, **best_over_thresholds(self.stats)}


class InstanceMeasures:
    """Class map from the probabilities (``p[1] >= decision``), Rand and information scores of the
    instance mask ``mask_path(entry)`` and its object scores (SEG, precision, recall); with
    ``sparse`` annotations the restricted measures (:func:`sparse_scores`)."""

    def __init__(self, classes: list[str], *, mask_path: Callable[[dict], Path], decision: float, sparse: bool):
        self.classes, self.mask_path, self.decision, self.sparse = list(classes), mask_path, decision, sparse
        self.pairs, self.objects = PairStats(), ObjectCounts()

    def slice(self, e: dict, shape: tuple, gt_sem: np.ndarray, gt_inst: np.ndarray, prob: np.ndarray,
              prob_path: Path) -> tuple[np.ndarray, np.ndarray, dict]:
        mask_path = self.mask_path(e)
        inst = read_prediction(mask_path, shape, "instance mask")
        if inst.ndim != 2:
            raise SegError(f"{mask_path}: instance mask must be 2D (H, W), got {inst.shape}")
        pred_cls = class_map(prob, len(self.classes), prob_path, self.decision)
        cm = confusion_matrix(gt_sem, pred_cls, len(self.classes))
        ps = pair_stats(gt_inst, thin_boundaries(inst, gt_inst > 0))
        oc = object_counts(gt_inst, inst)
        self.pairs, self.objects = self.pairs + ps, self.objects + oc
        row = {**overlap_scores(cm, self.classes), **ps.rand(), **ps.info(), **oc.scores(),
               "n_ref": oc.n_ref, "n_pred": oc.n_pred}
        if self.sparse:
            row = sparse_scores(row, oc)
        return pred_cls, cm, row

    def aggregate(self, agg: dict) -> dict:
        agg = {**agg, **self.pairs.rand(), **self.pairs.info(), **self.objects.scores(),
               "n_ref": self.objects.n_ref, "n_pred": self.objects.n_pred}
        return sparse_scores(agg, self.objects) if self.sparse else agg
