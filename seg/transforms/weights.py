"""U-Net border-weight maps (Ronneberger et al. 2015, eq. 2) and class-frequency weights.

The map is, per pixel x,

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))

* d1 / d2: Euclidean distance (pixels) from x to the nearest / second-nearest instance, measured to
  the instance's pixels, i.e. the Euclidean distance transform of the complement of that instance's
  mask (``scipy.ndimage.distance_transform_edt(instances != k)``). This is the definition used by
  the common public implementations (MATLAB ``bwdist(cells == k)`` in the paper authors'
  successors' code, hover_net / torch-em style ``distance_transform_edt(mask != k)``). It is the sum
  ``d1 + d2`` as in the paper (not d1 - d2), so the term is large on thin gaps between two cells: on
  a straight gap of ``g`` background pixels between two cells, every gap pixel on the line between
  them has d1 + d2 = g + 1 (pixel-centre distances), so w = w_c + w0 * exp(-(g + 1)^2 / (2 sigma^2)).
* The border term is added only on background-class pixels (``semantic == 0``: ISBI membrane, CTC
  background and the 1-pixel separation lines between touching cells). On instance/foreground pixels
  w(x) = w_c(x) only. With fewer than two instances there is no second-nearest cell, so the border
  term is 0 everywhere and w = w_c.
* w_c: class-frequency balancing weights from the TRAINING split only (:func:`class_weights`):
  ``w_c[k] = N / (K * N_k)`` with N_k the number of training pixels of class k, N their sum and K the
  number of classes (the "balanced" weighting: the mean of w_c over the training pixels is 1 and
  every class contributes the same total weight). A class absent from the training split gets 1.
  Without class weights, w_c = 1.

Sparse annotations (dataset ``annotations: sparse``, e.g. DIC-HeLa, where only some cells of a
frame are annotated): an unannotated pixel may belong to an unannotated cell, so it is not known to
be background. :func:`annotated_region` is the set of pixels the loss counts: the annotated objects
and the background within ``band`` pixels (Euclidean distance to the nearest object pixel) of them.
:func:`border_weight_map` with ``band`` set multiplies the map by that region, so every other pixel
has weight 0, which every loss ignores (:mod:`seg.train.losses`). The border term is computed from
the annotated instances as before, so the separation lines between touching annotated cells (inside
the region) keep their high weights. Class weights are counted over the region only.

Speed: the straightforward computation runs one full-image EDT per instance. The term is below
``tol * w0`` wherever ``d1 + d2 > cutoff = sigma * sqrt(2 ln(1/tol))`` (21.5 px for sigma 5, tol
1e-4), and since d1 <= d2 it only matters where the second-nearest instance is within ``cutoff``.
So each instance's EDT is computed only on its bounding box expanded by ``ceil(cutoff)`` pixels
(exact there: all of the instance's pixels lie in the crop), keeping the two smallest distances per
pixel; outside a crop the distance to that instance exceeds the cutoff. The result equals the
full computation except where the exact term is below ``tol * w0`` (set to 0 there): max abs error
< ``tol * w0``.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from seg.errors import SegError

DEFAULT_TOL = 1e-4


def class_weights(semantic_maps: Iterable[np.ndarray], n_classes: int) -> np.ndarray:
    """Class-frequency balancing weights ``w_c[k] = N / (K * N_k)`` from training-split class maps.

    Args:
        semantic_maps: iterable of (H, W) integer class maps with values in ``0..n_classes-1``
            (training split only).
        n_classes: K, the number of classes.

    Returns:
        float64 (K,) weights; a class with no pixels gets 1.0.

    Raises:
        SegError: a map holds a value outside ``0..n_classes-1``, or there are no pixels at all.
    """
    counts = np.zeros(n_classes, dtype=np.int64)
    for i, sem in enumerate(semantic_maps):
        sem = np.asarray(sem)
        c = np.bincount(sem.ravel().astype(np.int64, copy=False), minlength=n_classes)
        if c.size > n_classes:
            raise SegError(f"semantic map {i}: class values must be in 0..{n_classes - 1}, found {sem.max()}")
        counts += c
    total = counts.sum()
    if total == 0:
        raise SegError("class weights: no training pixels (empty training split?)")
    w = np.ones(n_classes, dtype=np.float64)
    present = counts > 0
    w[present] = total / (n_classes * counts[present])
    return w


def border_cutoff(sigma: float, tol: float = DEFAULT_TOL) -> float:
    """Distance sum (pixels) beyond which ``exp(-(d1+d2)^2 / (2 sigma^2)) < tol``."""
    if not 0 < tol < 1:
        raise SegError(f"tol: must be in (0, 1), got {tol}")
    return float(sigma) * math.sqrt(2.0 * math.log(1.0 / tol))


def nearest_two_distances(instances: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Distances to the nearest and second-nearest instance, exact where they are <= ``cutoff``.

    Args:
        instances: (H, W) integer instance labels, 0 = background, 1..N objects (labels need not be
            consecutive).
        cutoff: pixels; distances are computed exactly within ``ceil(cutoff)`` of each instance's
            bounding box.

    Returns:
        ``(d1, d2)``, float64 (H, W): distance in pixels to the nearest / second-nearest instance's
        pixels (0 on the instance itself). Where an instance's crop does not reach, its distance is
        treated as ``inf``; so any value > cutoff may be ``inf`` instead of the exact distance.
    """
    from scipy import ndimage

    inst = np.asarray(instances)
    h, w = inst.shape
    d1 = np.full(inst.shape, np.inf)
    d2 = np.full(inst.shape, np.inf)
    m = int(math.ceil(cutoff))
    for k, box in enumerate(ndimage.find_objects(inst), start=1):
        if box is None:
            continue
        ys, xs = box
        crop = (slice(max(ys.start - m, 0), min(ys.stop + m, h)), slice(max(xs.start - m, 0), min(xs.stop + m, w)))
        d = ndimage.distance_transform_edt(inst[crop] != k)
        a = d1[crop]
        b = d2[crop]
        np.minimum(b, np.maximum(a, d), out=b)
        np.minimum(a, d, out=a)
    return d1, d2


def border_term(instances: np.ndarray, *, w0: float = 10.0, sigma: float = 5.0, tol: float = DEFAULT_TOL) -> np.ndarray:
    """``w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` on every pixel (float64 (H, W)); 0 with < 2 instances.

    Exact to within ``tol * w0`` (see the module docstring). Not masked: :func:`border_weight_map`
    keeps it on background-class pixels only.
    """
    if sigma <= 0:
        raise SegError(f"sigma: must be > 0, got {sigma}")
    inst = np.asarray(instances)
    if len(np.unique(inst[inst > 0])) < 2:
        return np.zeros(inst.shape, dtype=np.float64)
    cutoff = border_cutoff(sigma, tol)
    d1, d2 = nearest_two_distances(inst, cutoff)
    s = d1 + d2
    out = np.zeros(inst.shape, dtype=np.float64)
    near = s <= cutoff
    out[near] = w0 * np.exp(-(s[near] ** 2) / (2.0 * sigma**2))
    return out


def annotated_region(instances: np.ndarray, band: float) -> np.ndarray:
    """Pixels a sparse annotation vouches for: the objects and the background within ``band`` px.

    Args:
        instances: (H, W) integer instance labels, 0 = not annotated (background or an unannotated
            object), 1..N annotated objects.
        band: width in pixels (>= 0) of the background band around the objects: a background pixel
            counts when its Euclidean distance to the nearest object pixel is <= ``band``.

    Returns:
        bool (H, W), True = counted; all False when there is no object.

    Raises:
        SegError: negative band or a non-2D input.
    """
    from scipy import ndimage

    inst = np.asarray(instances)
    if inst.ndim != 2:
        raise SegError(f"instances: expected a 2D (H, W) array, got shape {inst.shape}")
    if not band >= 0:
        raise SegError(f"weights.sparse_band: must be >= 0 pixels, got {band}")
    objects = inst > 0
    if not objects.any():
        return objects
    return ndimage.distance_transform_edt(~objects) <= band


def border_weight_map(
    instances: np.ndarray,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: np.ndarray | list[float] | None = None,
    semantic: np.ndarray | None = None,
    tol: float = DEFAULT_TOL,
    band: float | None = None,
) -> np.ndarray:
    """The U-Net weight map ``w = w_c + w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` of one slice.

    Args:
        instances: (H, W) integer instance labels, 0 = background (ISBI: membrane), 1..N cells.
        w0: border weight amplitude (paper: 10).
        sigma: border width in pixels (paper: ~5).
        class_weights: (K,) per-class weights w_c (see :func:`class_weights`), or None for w_c = 1.
        semantic: (H, W) integer class map (0 = background/membrane); default ``instances > 0``.
            The border term is added where ``semantic == 0``; w_c is looked up by its class.
        tol: relative truncation of the border term (max abs error < ``tol * w0``).
        band: sparse annotations: weights are 0 outside :func:`annotated_region` ``(instances,
            band)``; None (full annotations) keeps every pixel.

    Returns:
        float32 (H, W) weights (>= min(w_c) > 0; exactly 0 outside the annotated region with ``band``).

    Raises:
        SegError: shapes differ, the input is not 2D, or a class value has no weight.
    """
    inst = np.asarray(instances)
    if inst.ndim != 2:
        raise SegError(f"instances: expected a 2D (H, W) array, got shape {inst.shape}")
    if not np.issubdtype(inst.dtype, np.integer):
        raise SegError(f"instances: expected an integer label image, got dtype {inst.dtype}")
    sem = (inst > 0).astype(np.uint8) if semantic is None else np.asarray(semantic)
    if sem.shape != inst.shape:
        raise SegError(f"semantic: shape {sem.shape} differs from instances shape {inst.shape}")
    if class_weights is None:
        wc = np.ones(inst.shape, dtype=np.float64)
    else:
        cw = np.asarray(class_weights, dtype=np.float64)
        if sem.max(initial=0) >= cw.size or sem.min(initial=0) < 0:
            raise SegError(f"class_weights: {cw.size} weights but class values up to {sem.max()}")
        wc = cw[sem]
    out = wc + border_term(inst, w0=w0, sigma=sigma, tol=tol) * (sem == 0)
    if band is not None:
        out = np.where(annotated_region(inst, band), out, 0.0)
    return out.astype(np.float32)
