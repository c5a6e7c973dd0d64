"""Pixel-level overlap metrics from class maps: IoU (Jaccard) per class and mean, Dice, pixel error.

All functions take 2D (H, W) integer class maps (``0..n_classes-1``; ISBI: 0 = membrane,
1 = interior; CTC: 0 = background, 1 = cell) and work through one confusion matrix, so that
aggregates over several slices are computed by summing the slices' confusion matrices (metrics
*pooled over all pixels*, not averaged per slice).

Conventions:
    * IoU_c = TP_c / (TP_c + FP_c + FN_c); Dice_c = 2 TP_c / (2 TP_c + FP_c + FN_c) (= F1 of class c).
    * A class absent from both the prediction and the ground truth (0 / 0) scores 1.0: the two
      agree that it is not there.
    * ``iou_mean`` / ``dice_mean`` are the unweighted means over classes.
    * ``pixel_error`` = fraction of pixels whose class differs (1 - accuracy).
    * ``f1_interior_error`` = 1 - F1 of class 1 (the ISBI 2012 leaderboard's "pixel error" is 1 - the
      F-score of pixel classification with the interior as the positive class; here on the given
      class map. The leaderboard's version maximised over probability thresholds is
      ``pixel_error_isbi`` in :mod:`seg.metrics.rand`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from seg.errors import SegError


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix of two class maps.

    Args:
        gt: (H, W) integer ground-truth classes in ``[0, n_classes)``.
        pred: (H, W) integer predicted classes in ``[0, n_classes)``, same shape.
        n_classes: number of classes.

    Returns:
        (n_classes, n_classes) int64, ``cm[i, j]`` = pixels of true class i predicted as class j.

    Raises:
        SegError: shapes differ or a value is outside ``[0, n_classes)``.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise SegError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    for name, a in (("ground truth", gt), ("prediction", pred)):
        if a.size and (a.min() < 0 or a.max() >= n_classes):
            raise SegError(f"{name} classes must be in [0, {n_classes - 1}], found [{a.min()}, {a.max()}]")
    idx = gt.astype(np.int64).ravel() * n_classes + pred.astype(np.int64).ravel()
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ratio(num: float, den: float) -> float:
    return 1.0 if den == 0 else float(num) / float(den)


def overlap_scores(cm: np.ndarray, class_names: Sequence[str]) -> dict:
    """IoU, Dice and pixel errors from a confusion matrix (see the module docstring).

    Args:
        cm: (C, C) confusion matrix (rows = truth, columns = prediction), e.g. the sum over slices.
        class_names: C names, used as keys of ``iou`` and ``dice``.

    Returns:
        {"iou": {name: float}, "iou_mean", "dice": {name: float}, "dice_mean", "pixel_error",
        "f1_interior_error"} (the last only when C == 2, for class 1).
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.shape != (len(class_names), len(class_names)):
        raise SegError(f"confusion matrix shape {cm.shape} does not match {len(class_names)} classes")
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    iou = {n: _ratio(tp[i], tp[i] + fp[i] + fn[i]) for i, n in enumerate(class_names)}
    dice = {n: _ratio(2 * tp[i], 2 * tp[i] + fp[i] + fn[i]) for i, n in enumerate(class_names)}
    total = int(cm.sum())
    out = {
        "iou": iou,
        "iou_mean": float(np.mean(list(iou.values()))),
        "dice": dice,
        "dice_mean": float(np.mean(list(dice.values()))),
        "pixel_error": _ratio(total - int(tp.sum()), total) if total else 0.0,
    }
    if len(class_names) == 2:
        out["f1_interior_error"] = 1.0 - dice[class_names[1]]
    return out
