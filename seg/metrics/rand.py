"""Segment-level scores of the ISBI 2012 challenge: V_rand and V_info after border thinning, and the
older foreground-restricted Rand error.

References:
    [AC15] Arganda-Carreras et al. (2015), "Crowdsourcing the creation of image segmentation
        algorithms for connectomics", Front. Neuroanat. 9:142, eqs. 3 (V_rand) and 6 (V_info).
    [TWS]  Fiji Trainable Weka Segmentation, ``trainableSegmentation/metrics/RandError.java``
        (github.com/fiji/Trainable_Segmentation): binarisation, labelling and the foreground-
        restricted Rand statistics with N^2 normalisation; the challenge's scoring script calls
        ``RandError.getMaximalVRandAfterThinning(0.0, 1.0, 0.1, true)`` and
        ``VariationOfInformation.getMaximalVInfoAfterThinning(0.0, 1.0, 0.1)``.
    [PY]   The organisers' Python version ``segmentation_metrics(ground_truth, prediction)`` with
        ``thin_boundaries`` (the same metrics; used for the thinning step).

Conventions (each from the reference named):
    * Probability map: 1 = interior (cell), 0 = membrane. A pixel is foreground at threshold t
      iff ``p > t`` (strict, [TWS] ``getPixelValue(x, y) > binaryThreshold``), compared in float64
      as Java promotes the float pixel to double (a float32 comparison would round t).
    * Thresholds: ``t = start; while t <= stop: use t; t += step`` in double precision ([TWS]
      loop), so 0.0, 0.1, ..., 0.9999999999999999 (11 values; the last still counts p = 1.0).
    * Segments: 4-connected components of the foreground ([TWS] ``connectedComponents(..., 4)``);
      label 0 = membrane/boundary. The ground truth is labelled the same way.
    * Foreground restriction: only pixels whose ground-truth label is > 0 are counted ([TWS]
      "pruning out the zero component of the ground truth"; [PY] ``mask = gt > 0``).
    * Border thinning ([PY] ``thin_boundaries``): the prediction's boundary pixels (label 0) are
      given the largest label in their 3x3 neighbourhood, repeatedly, until no boundary pixel is
      left inside the ground-truth foreground. So every counted pixel belongs to a predicted
      segment and boundary width no longer matters. An all-boundary prediction becomes one segment.
    * Pair statistics use N^2 normalisation (ordered pairs, self-pairs included), [TWS]
      ``getForegroundRestrictedRandIndexStatsN2`` and [AC15] eq. 3 with p_ij = n_ij / n.
      Without thinning ([TWS] foreground-restricted Rand, used for ``rand_error``) each predicted
      boundary pixel inside the GT foreground is its own singleton segment ([TWS] the
      ``sum(p_i0) / n`` terms).
    * With c_ij the joint counts, a_i the GT segment sizes and b_j the predicted segment sizes:
      split score = sum c_ij^2 / sum a_i^2 (1 unless a GT segment is split), merge score =
      sum c_ij^2 / sum b_j^2 (1 unless GT segments are merged), V_rand = their harmonic mean
      (F-score) = 2 sum c^2 / (sum a^2 + sum b^2) ([AC15] eq. 3, alpha = 0.5).
    * V_info ([AC15] eq. 6): I = mutual information of GT and prediction labels (natural log),
      split = I / H(pred), merge = I / H(GT), V_info = 2 I / (H(GT) + H(pred)). A zero entropy in
      a denominator means that side has one segment, so it cannot split/merge: that score is 1.
    * Several slices (a stack) are pooled as one distribution with labels unique per slice: pair
      counts and entropies are summed over slices at a common threshold, then the best threshold
      is taken ([TWS] sums tp/fp/fn over slices before computing the F-score).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Iterable

import numpy as np

from seg.errors import SegError


def challenge_thresholds(start: float = 0.0, stop: float = 1.0, step: float = 0.1) -> list[float]:
    """The thresholds the Fiji loop ``for (th = start; th <= stop; th += step)`` visits (doubles)."""
    if step <= 0:
        raise SegError(f"scoring.vrand_thresholds.step: must be > 0, got {step}")
    out, t = [], float(start)
    while t <= stop:
        out.append(t)
        t += step
    return out


def label_components(foreground: np.ndarray) -> np.ndarray:
    """4-connected components of a boolean (H, W) mask as int32 labels 1..N (0 = background)."""
    from skimage.measure import label

    return label(np.asarray(foreground, dtype=bool), connectivity=1).astype(np.int32)


def thin_boundaries(pred: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Grow predicted segments over their boundary until no boundary pixel is left in ``mask``.

    Args:
        pred: (H, W) non-negative integer labels, 0 = boundary.
        mask: (H, W) bool, the pixels that must end up labelled (the GT foreground).

    Returns:
        int32 (H, W) labels: each 0 pixel takes the maximum label of its 3x3 neighbourhood, repeated
        until ``mask`` holds no 0 ([PY] ``thin_boundaries``). All-zero input becomes all 1.
    """
    from scipy.ndimage import maximum_filter

    lab = np.array(pred, dtype=np.int32, copy=True)
    if lab.min() < 0:
        raise SegError("label images must be non-negative")
    if not lab.any():
        lab[:] = 1
        return lab
    mask = np.asarray(mask, dtype=bool)
    while True:
        zeros = lab == 0
        if not (zeros & mask).any():
            return lab
        lab[zeros] = maximum_filter(lab, size=3, mode="constant", cval=0)[zeros]


def _pair_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Counts of the distinct (a, b) label pairs (1D, zeros omitted) of two int arrays."""
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    a = a.astype(np.int64)
    b = b.astype(np.int64)
    nb = int(b.max()) + 1
    span = (int(a.max()) + 1) * nb
    key = a * nb + b
    if span <= 4 * a.size + 1_000_000:
        c = np.bincount(key, minlength=0)
        return c[c > 0]
    return np.unique(key, return_counts=True)[1]


def _counts(x: np.ndarray) -> np.ndarray:
    return np.unique(x, return_counts=True)[1]


def _clogc(c: np.ndarray) -> float:
    c = c[c > 0].astype(np.float64)
    return float(np.sum(c * np.log(c)))


@dataclass(frozen=True)
class PairStats:
    """Sufficient statistics of one GT-vs-prediction contingency table; ``+`` pools slices.

    Attributes:
        n: counted pixels (GT foreground).
        sum_p2, sum_gt2, sum_pred2: sum of squared joint counts, GT segment sizes, predicted sizes.
        clogc_p, clogc_gt, clogc_pred: sum of c log c over the same counts (for entropies).
    """

    n: float = 0.0
    sum_p2: float = 0.0
    sum_gt2: float = 0.0
    sum_pred2: float = 0.0
    clogc_p: float = 0.0
    clogc_gt: float = 0.0
    clogc_pred: float = 0.0

    def __add__(self, other: "PairStats") -> "PairStats":
        return PairStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def rand(self, *, self_pairs: bool = True) -> dict:
        """{"vrand", "vrand_split", "vrand_merge"}; NaN if nothing was counted.

        ``self_pairs=False`` counts distinct pixel pairs only (n(n-1) normalisation, the convention
        of ``skimage.metrics.adapted_rand_error``).
        """
        if self.n == 0:
            return {"vrand": math.nan, "vrand_split": math.nan, "vrand_merge": math.nan}
        d = 0.0 if self_pairs else self.n
        p, g, q = self.sum_p2 - d, self.sum_gt2 - d, self.sum_pred2 - d
        split = 1.0 if g == 0 else p / g
        merge = 1.0 if q == 0 else p / q
        f = 1.0 if g + q == 0 else 2.0 * p / (g + q)
        return {"vrand": f, "vrand_split": split, "vrand_merge": merge}

    def info(self) -> dict:
        """{"vinfo", "vinfo_split", "vinfo_merge"} (natural-log entropies); NaN if nothing counted."""
        if self.n == 0:
            return {"vinfo": math.nan, "vinfo_split": math.nan, "vinfo_merge": math.nan}
        logn = math.log(self.n)
        h_p = logn - self.clogc_p / self.n
        h_gt = max(logn - self.clogc_gt / self.n, 0.0)
        h_pred = max(logn - self.clogc_pred / self.n, 0.0)
        mi = max(h_gt + h_pred - h_p, 0.0)
        eps = 1e-12
        split = 1.0 if h_pred < eps else min(mi / h_pred, 1.0)
        merge = 1.0 if h_gt < eps else min(mi / h_gt, 1.0)
        f = 1.0 if h_gt + h_pred < eps else min(2.0 * mi / (h_gt + h_pred), 1.0)
        return {"vinfo": f, "vinfo_split": split, "vinfo_merge": merge}


def pair_stats(gt: np.ndarray, pred: np.ndarray, *, pred_background: str = "segment") -> PairStats:
    """Contingency statistics over the GT foreground (``gt > 0``).

    Args:
        gt: (H, W) int GT segment labels, 0 = background (not counted).
        pred: (H, W) int predicted labels, same shape.
        pred_background: how predicted label 0 inside the GT foreground counts: "segment" (one
            ordinary segment, as any other label) or "singletons" (each such pixel is its own
            segment, [TWS] unthinned foreground-restricted Rand).

    Returns:
        A :class:`PairStats`.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise SegError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}")
    if pred_background not in ("segment", "singletons"):
        raise SegError(f"pred_background: {pred_background!r} is not one of ['segment', 'singletons']")
    mask = gt > 0
    g = gt[mask]
    q = pred[mask]
    if g.size == 0:
        return PairStats()
    gc = _counts(g)
    singles = 0
    if pred_background == "singletons":
        keep = q != 0
        singles = int(g.size - keep.sum())
        g_kept, q = g[keep], q[keep]
    else:
        g_kept = g
    pc = _pair_counts(g_kept, q)
    qc = _counts(q) if q.size else np.zeros(0, dtype=np.int64)
    sq = lambda c: float(np.dot(c.astype(np.float64), c.astype(np.float64)))  # noqa: E731
    return PairStats(
        n=float(g.size),
        sum_p2=sq(pc) + singles,
        sum_gt2=sq(gc),
        sum_pred2=sq(qc) + singles,
        clogc_p=_clogc(pc),
        clogc_gt=_clogc(gc),
        clogc_pred=_clogc(qc),
    )


def segment_scores(gt: np.ndarray, pred: np.ndarray, *, thin: bool = True) -> dict:
    """V_rand and V_info (with split/merge parts) of one labelled prediction vs GT labels.

    Args:
        gt: (H, W) int GT segments, 0 = background/boundary (not counted).
        pred: (H, W) int predicted segments, 0 = boundary.
        thin: thin the predicted boundaries first (challenge convention); without thinning,
            predicted label 0 is counted as one ordinary segment.
    """
    p = thin_boundaries(pred, np.asarray(gt) > 0) if thin else np.asarray(pred)
    s = pair_stats(gt, p)
    return {**s.rand(), **s.info()}


@dataclass(frozen=True)
class ThresholdStats:
    """Per-threshold statistics of one slice: ``thinned`` (V_rand, V_info), ``unthinned``
    (foreground-restricted Rand with singleton boundary pixels, for the Rand error) and ``pixel``
    (TP, FP, FN of interior-vs-membrane pixel classification, for the 2012 pixel error)."""

    thresholds: tuple[float, ...]
    thinned: tuple[PairStats, ...]
    unthinned: tuple[PairStats, ...]
    pixel: tuple[tuple[int, int, int], ...]


def probability_stats(gt_labels: np.ndarray, prob: np.ndarray, thresholds: Iterable[float]) -> ThresholdStats:
    """Statistics of a probability map (1 = interior) at each threshold, against GT segments.

    Args:
        gt_labels: (H, W) int GT segments (4-connected interior components), 0 = membrane.
        prob: (H, W) float interior probability in [0, 1].
        thresholds: e.g. :func:`challenge_thresholds`.
    """
    prob = np.asarray(prob, dtype=np.float64)
    gt_labels = np.asarray(gt_labels)
    if prob.shape != gt_labels.shape:
        raise SegError(f"probability map shape {prob.shape} differs from ground truth shape {gt_labels.shape}")
    mask = gt_labels > 0
    ts, thinned, raw, pix = [], [], [], []
    for t in thresholds:
        fg = prob > t
        lab = label_components(fg)
        ts.append(float(t))
        thinned.append(pair_stats(gt_labels, thin_boundaries(lab, mask)))
        raw.append(pair_stats(gt_labels, lab, pred_background="singletons"))
        tp = int(np.count_nonzero(fg & mask))
        pix.append((tp, int(np.count_nonzero(fg)) - tp, int(np.count_nonzero(mask)) - tp))
    return ThresholdStats(tuple(ts), tuple(thinned), tuple(raw), tuple(pix))


def best_over_thresholds(stats: list[ThresholdStats]) -> dict:
    """Challenge scores of one slice or a pooled stack: each maximised over the common thresholds.

    Args:
        stats: one :class:`ThresholdStats` per slice (same thresholds); slices are pooled.

    Returns:
        {"vrand", "vrand_split", "vrand_merge", "vrand_threshold", "vinfo", "vinfo_split",
        "vinfo_merge", "vinfo_threshold", "rand_error", "rand_error_threshold", "pixel_error_isbi",
        "pixel_error_isbi_threshold"}; each family taken at its own best threshold (first best on
        ties), as the separate Fiji calls do. ``rand_error`` = 1 - maximal F-score of the
        (unthinned) foreground-restricted Rand index and ``pixel_error_isbi`` = 1 - maximal F-score
        of interior pixel classification: the 2012 leaderboard's definitions.
    """
    if not stats:
        raise SegError("no slices to score")
    ts = stats[0].thresholds
    if any(s.thresholds != ts for s in stats):
        raise SegError("slices were scored at different thresholds")
    pooled_thin = [sum((s.thinned[k] for s in stats), PairStats()) for k in range(len(ts))]
    pooled_raw = [sum((s.unthinned[k] for s in stats), PairStats()) for k in range(len(ts))]

    def best(values: list[dict], key: str) -> tuple[int, dict]:
        scores = [v[key] for v in values]
        if all(math.isnan(x) for x in scores):
            return 0, values[0]
        k = int(np.nanargmax(scores))
        return k, values[k]

    kr, r = best([p.rand() for p in pooled_thin], "vrand")
    ki, i = best([p.info() for p in pooled_thin], "vinfo")
    ke, e = best([p.rand() for p in pooled_raw], "vrand")
    f1 = []
    for k in range(len(ts)):
        tp, fp, fn = (sum(s.pixel[k][i] for s in stats) for i in range(3))
        f1.append({"f1": 1.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)})
    kp, p = best(f1, "f1")
    return {
        **r, "vrand_threshold": ts[kr],
        **i, "vinfo_threshold": ts[ki],
        "rand_error": 1.0 - e["vrand"], "rand_error_threshold": ts[ke],
        "pixel_error_isbi": 1.0 - p["f1"], "pixel_error_isbi_threshold": ts[kp],
    }
