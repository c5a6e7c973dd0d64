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

Sparse annotations (only some cells of a frame annotated): SEG and recall count reference objects
only, so an unannotated cell cannot lower them. Precision and pixel IoU would count every correctly
found unannotated cell as an error, so for such data they are computed over the predicted objects
that overlap the annotated cells, i.e. lie mainly on them (more than half of the object's pixels on
annotated cells): ``precision_iou50_annotated`` = matches / such objects, ``iou_cell_annotated`` =
|P n G| / |P u G| with G the annotated cells' pixels and P the pixels of such objects (an object
that merges an annotated cell with a smaller unannotated neighbour counts the neighbour's pixels as
errors; one that is mostly an unannotated cell is not counted here, and the annotated cell it
swallowed is missed in recall and SEG). Why not every object touching an annotated cell: a correctly
found unannotated cell that touches an annotated one along a few boundary pixels would be a false
positive. That looser count is reported as ``precision_iou50_touching``.

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
        n_pred_annotated: result objects with more than half of their pixels on reference objects.
        n_pred_touching: result objects sharing at least one pixel with a reference object.
        ref_px: pixels of the reference objects.
        pred_px_annotated, inter_px_annotated: pixels of the ``n_pred_annotated`` objects, and those
            of them on reference objects.
    """

    seg_sum: float = 0.0
    n_ref: int = 0
    n_pred: int = 0
    matches_iou50: int = 0
    n_pred_annotated: int = 0
    n_pred_touching: int = 0
    ref_px: int = 0
    pred_px_annotated: int = 0
    inter_px_annotated: int = 0

    def __add__(self, other: "ObjectCounts") -> "ObjectCounts":
        return ObjectCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def scores(self) -> dict:
        """{"seg", "precision_iou50", "recall_iou50"}; SEG of zero reference objects is NaN."""
        return {
            "seg": self.seg_sum / self.n_ref if self.n_ref else float("nan"),
            "precision_iou50": _frac(self.matches_iou50, self.n_pred, self.n_ref),
            "recall_iou50": _frac(self.matches_iou50, self.n_ref, self.n_pred),
        }

    def annotated_scores(self) -> dict:
        """Sparse annotations: {"precision_iou50_annotated", "iou_cell_annotated"} over the predicted
        objects that lie mainly on annotated (reference) objects, and "precision_iou50_touching" over
        those touching one (see the module docstring). Every IoU-0.5 match lies mainly on its
        reference object, so the matches are the same for both."""
        union = self.ref_px + self.pred_px_annotated - self.inter_px_annotated
        return {
            "precision_iou50_annotated": _frac(self.matches_iou50, self.n_pred_annotated, self.n_ref),
            "iou_cell_annotated": self.inter_px_annotated / union if union else 1.0,
            "precision_iou50_touching": _frac(self.matches_iou50, self.n_pred_touching, self.n_ref),
        }


def _frac(k: int, n: int, other: int) -> float:
    """k / n; with n = 0: 1.0 if ``other`` (the opposite count) is 0 too, else 0.0."""
    if n:
        return k / n
    return 1.0 if other == 0 else 0.0


@dataclass(frozen=True)
class OverlapTable:
    """Object sizes and pairwise overlaps of one frame, from which :class:`ObjectCounts` of any
    subset of the result objects follow without recounting pixels (e.g. for every minimum object
    size of a calibration grid).

    Attributes:
        ref_size, pred_size: int64 pixel counts of the reference / result objects.
        ri, pi: int64 indices into ``ref_size`` / ``pred_size`` of each overlapping pair.
        inter: int64 shared pixels of each pair (> 0).
    """

    ref_size: np.ndarray
    pred_size: np.ndarray
    ri: np.ndarray
    pi: np.ndarray
    inter: np.ndarray

    def counts(self, keep: np.ndarray | None = None) -> ObjectCounts:
        """Counts with only the result objects where ``keep`` (bool, one per result object) is True
        (the others treated as background); None keeps all."""
        keep = np.ones(self.pred_size.size, bool) if keep is None else np.asarray(keep, bool)
        pair = keep[self.pi]
        ri, pi, inter = self.ri[pair], self.pi[pair], self.inter[pair]
        union = self.ref_size[ri] + self.pred_size[pi] - inter
        iou = inter / union
        seg_match = 2 * inter > self.ref_size[ri]  # |R n S| > 0.5 |R|, integer-exact
        on_ref = np.bincount(pi, weights=inter, minlength=self.pred_size.size).astype(np.int64)
        mainly = keep & (2 * on_ref > self.pred_size)  # more than half of the object on annotated cells
        return ObjectCounts(
            seg_sum=float(iou[seg_match].sum()),
            n_ref=int(self.ref_size.size),
            n_pred=int(keep.sum()),
            matches_iou50=int((2 * inter > union).sum()),  # IoU > 0.5, integer-exact
            n_pred_annotated=int(mainly.sum()),
            n_pred_touching=int((keep & (on_ref > 0)).sum()),
            ref_px=int(self.ref_size.sum()),
            pred_px_annotated=int(self.pred_size[mainly].sum()),
            inter_px_annotated=int(on_ref[mainly].sum()),
        )


def overlap_table(ref: np.ndarray, pred: np.ndarray) -> OverlapTable:
    """The :class:`OverlapTable` of one frame (result objects in ascending label order).

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
    return OverlapTable(ref_size.astype(np.int64), pred_size.astype(np.int64), ri.astype(np.int64),
                        pi.astype(np.int64), inter.astype(np.int64))


def object_counts(ref: np.ndarray, pred: np.ndarray) -> ObjectCounts:
    """SEG and IoU-0.5 matching counts of one frame (see the module docstring).

    Args:
        ref: (H, W) int reference instances, 0 = background.
        pred: (H, W) int result instances, same shape.

    Raises:
        SegError: shapes differ or labels are negative.
    """
    return overlap_table(ref, pred).counts()


def seg_measure(refs: list[np.ndarray], preds: list[np.ndarray]) -> float:
    """SEG over several frames: mean Jaccard over all reference objects (NaN if there are none)."""
    total = sum((object_counts(r, p) for r, p in zip(refs, preds, strict=True)), ObjectCounts())
    return total.scores()["seg"]
