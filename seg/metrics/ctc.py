"""Cell Tracking Challenge object metrics: the SEG measure and object precision/recall at IoU 0.5.

SEG (Maska et al. 2014, "A benchmark for comparison of cell tracking algorithms", Bioinformatics
30(11); the CTC's SEGMeasure and ``py-ctcmetrics``): a reference object R is matched to the
result object S with |R n S| > 0.5 |R| (at most one S can satisfy this) and scores the Jaccard
index |R n S| / |R u S|; unmatched reference objects score 0. SEG is the mean over all
reference objects of all annotated frames (pooled, not a mean of per-frame means).

Object precision/recall at IoU 0.5: a reference and a result object match when their IoU > 0.5
(each object has at most one such partner, so matching is unique without assignment);
precision = matches / result objects, recall = matches / reference objects. With no result
objects, precision is 1.0 if there are no reference objects either, else 0.0 (same for recall).

Inputs are 2D (H, W) integer instance images, 0 = background, objects 1..N (labels need not be
consecutive).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from seg.errors import SegError


@dataclass(frozen=True)
class ObjectCounts:
    """Per-frame sums that pool over frames with ``+``.

    Attributes:
        seg_sum: sum of the SEG Jaccard scores of the reference objects.
        n_ref, n_pred: reference / result objects.
        matches_iou50: object pairs with IoU > 0.5.
    """

    seg_sum: float = 0.0
    n_ref: int = 0
    n_pred: int = 0
    matches_iou50: int = 0

    def __add__(self, other: "ObjectCounts") -> "ObjectCounts":
        return ObjectCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def scores(self) -> dict:
        """{"seg", "precision_iou50", "recall_iou50"}; SEG of zero reference objects is NaN."""
        def frac(k: int, n: int, other: int) -> float:
            if n:
                return k / n
            return 1.0 if other == 0 else 0.0

        return {
            "seg": self.seg_sum / self.n_ref if self.n_ref else float("nan"),
            "precision_iou50": frac(self.matches_iou50, self.n_pred, self.n_ref),
            "recall_iou50": frac(self.matches_iou50, self.n_ref, self.n_pred),
        }


def object_counts(ref: np.ndarray, pred: np.ndarray) -> ObjectCounts:
    """SEG and IoU-0.5 matching counts of one frame (see the module docstring).

    Args:
        ref: (H, W) int reference instances, 0 = background.
        pred: (H, W) int result instances, same shape.

    Raises:
        SegError: shapes differ or labels are negative.
    """
    ref = np.asarray(ref)
    pred = np.asarray(pred)
    if ref.shape != pred.shape:
        raise SegError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    if (ref.size and ref.min() < 0) or (pred.size and pred.min() < 0):
        raise SegError("instance labels must be non-negative")
    r = ref.astype(np.int64).ravel()
    p = pred.astype(np.int64).ravel()
    ref_ids, ref_size = np.unique(r[r > 0], return_counts=True)
    pred_ids, pred_size = np.unique(p[p > 0], return_counts=True)
    both = (r > 0) & (p > 0)
    base = int(p.max()) + 1 if p.size else 1
    keys, inter = np.unique(r[both] * base + p[both], return_counts=True)
    ri = np.searchsorted(ref_ids, keys // base)
    pi = np.searchsorted(pred_ids, keys % base)
    union = ref_size[ri] + pred_size[pi] - inter
    iou = inter / union
    seg_match = 2 * inter > ref_size[ri]  # |R n S| > 0.5 |R|, integer-exact
    return ObjectCounts(
        seg_sum=float(iou[seg_match].sum()),
        n_ref=int(ref_ids.size),
        n_pred=int(pred_ids.size),
        matches_iou50=int((2 * inter > union).sum()),  # IoU > 0.5, integer-exact
    )


def seg_measure(refs: list[np.ndarray], preds: list[np.ndarray]) -> float:
    """SEG over several frames: mean Jaccard over all reference objects (NaN if there are none)."""
    total = sum((object_counts(r, p) for r, p in zip(refs, preds, strict=True)), ObjectCounts())
    return total.scores()["seg"]
