"""Where a class map's errors lie: pixel errors binned by how far apart the predicted and the true edges run.

For thin structures (ISBI membranes are mostly 3-7 px wide) the question after "how good" is "what
kind of wrong". A prediction that traces every membrane but one pixel too wide or too narrow errs
only between two edges that run side by side; one that invents or misses a membrane errs where
only one of the two maps has an edge. Each misclassified pixel is binned by
``max(d_true, d_pred)``, rounded up: ``d_true`` is the Euclidean distance (px) from its centre to
the nearest pixel of another class in the ground truth, ``d_pred`` the same in the prediction
(``scipy.ndimage.distance_transform_edt``). Bins ``1`` (both edges pass next to the pixel: an edge
displaced by one pixel), ``2``, ``3-5`` and ``>5`` (a membrane missed or invented, or an edge off by
more than 5 px). A map with a single class has no edge (distance ``inf``).

Conventions: ``gt`` and ``pred`` are (H, W) integer class maps of the same shape (ISBI: 0 = membrane,
1 = interior; CTC: 0 = background, 1 = cell). Counts of several slices add up (pool them with ``+``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

from seg.errors import SegError

BINS = ("1", "2", "3-5", ">5")
_UPPER = (1, 2, 5)  # bin i: _UPPER[i-1] < ceil(distance) <= _UPPER[i]; the last bin the rest


def edge_distance(labels: np.ndarray) -> np.ndarray:
    """float64 (H, W): distance (px) from each pixel to the nearest pixel of another class in the
    class map ``labels`` (>= 1 everywhere; ``inf`` everywhere when it has one class only)."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise SegError(f"class map must be 2D (H, W), got shape {labels.shape}")
    out = np.full(labels.shape, np.inf)
    values = np.unique(labels)
    if len(values) < 2:
        return out
    for c in values:
        inside = labels == c
        out[inside] = ndi.distance_transform_edt(inside)[inside]
    return out


def edge_error_counts(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """int64 (4,): misclassified pixels of ``pred`` per bin :data:`BINS` of ``max(d_true, d_pred)``
    (see the module doc)."""
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise SegError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    wrong = gt != pred
    d = np.ceil(np.maximum(edge_distance(gt)[wrong], edge_distance(pred)[wrong]))
    return np.bincount(np.searchsorted(_UPPER, d), minlength=len(BINS)).astype(np.int64)


def edge_error_summary(counts: np.ndarray, cm: np.ndarray | None = None,
                       class_names: Sequence[str] | None = None) -> dict:
    """The metrics.json entry for edge-error ``counts`` (:func:`edge_error_counts`, possibly summed).

    Returns ``{"bins_px": [...], "count": [...], "share": [...]}`` (share = fraction of all errors,
    0 when there are none). With a two-class confusion matrix ``cm`` (rows = truth) and its class
    names, also ``"iou_without_bin1"``: each class's IoU if the bin-1 errors were right (in a
    two-class map every error is one class's false positive and the other's false negative, so it
    is TP_c / (TP_c + errors - bin-1 errors)): the score of the same prediction with every edge that
    is one pixel off put right.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    out = {"bins_px": list(BINS), "count": [int(v) for v in counts],
           "share": [float(v) / total if total else 0.0 for v in counts]}
    if cm is not None and class_names is not None and len(class_names) == 2:
        cm = np.asarray(cm, dtype=np.int64)
        rest = int(cm.sum() - np.trace(cm)) - int(counts[0])
        out["iou_without_bin1"] = {
            str(n): (float(cm[i, i]) / (cm[i, i] + rest) if cm[i, i] + rest else 1.0)
            for i, n in enumerate(class_names)
        }
    return out
