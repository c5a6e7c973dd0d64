"""From probabilities to the files the challenges expect.

* ISBI 2012: the challenge's convention is a membrane/interior map where 1 = interior (cell) and
  0 = membrane, as a probability. Our classes are ["membrane", "interior"], so the map is the
  interior-class probability, and the binary segmentation is ``interior >= threshold`` (uint8 0/1).
* Cell Tracking Challenge: an instance label image per frame (uint16, 0 = background, 1..N cells),
  from the foreground probability by connected components or a seeded watershed (seeds = h-maxima
  of the distance transform of the foreground mask), small objects removed, labels renumbered 1..N.
  Where the files go is the dataset kind's (:mod:`seg.kinds`; CTC: :func:`seg.kinds.ctc.result_mask_path`).
* Three-class models (variant ``target: three_class``, :mod:`seg.targets.three_class`): probabilities
  (3, H, W) of background / interior / boundary; the cell probability is interior + boundary, and
  the instances grow from seeds of the interior probability (method ``three_class``,
  :func:`instances_from_three_class`).
* Distance models (``target: distance``, :mod:`seg.targets.distance`): sigmoid maps (2, H, W) of
  neighbour and cell distance; channel 1 (cell distance) is the map written and thresholded, seeds
  are where cell - neighbour is high (method ``distance``, :func:`instances_from_distance`).

:func:`instances_from_probs` is the one entry point for all of them: it takes the softmax
probabilities (classes, H, W) and the ``postprocess`` settings and dispatches on ``method``.
"""

from __future__ import annotations

import warnings

import numpy as np

from seg.errors import SegError

METHODS = ("connected_components", "watershed", "three_class", "distance")
#: Methods that read the model's whole output (not one foreground map) and seed by ``seed_threshold``.
SEEDED = ("three_class", "distance")


def foreground_maps(probs: np.ndarray, *, foreground: int = 1, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The probability of class ``foreground`` and its thresholded class map, from softmax
    probabilities float (classes, H, W).

    Returns:
        (probability float32 (H, W) in [0, 1], segmentation uint8 (H, W): 1 where p >= threshold).
    """
    probs = np.asarray(probs)
    if probs.ndim != 3 or not 0 <= foreground < probs.shape[0]:
        raise SegError(f"foreground_maps: expected probabilities (classes, H, W) with a class {foreground}, "
                       f"got {probs.shape}")
    p = np.ascontiguousarray(probs[foreground], dtype=np.float32)
    return p, (p >= threshold).astype(np.uint8)


def foreground_probability(probs: np.ndarray) -> np.ndarray:
    """The object ("cell") probability float32 (H, W) of softmax probabilities (classes, H, W):
    class 1 for two classes; interior + boundary (classes 1 and 2) for a three-class model."""
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] not in (2, 3):
        raise SegError(f"postprocess: expected probabilities (2 or 3 classes, H, W), got {probs.shape}")
    fg = probs[1] if probs.shape[0] == 2 else probs[1] + probs[2]
    return np.ascontiguousarray(np.clip(fg, 0.0, 1.0), dtype=np.float32)


def isbi_maps(probs: np.ndarray, *, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """ISBI outputs from (2, H, W) probabilities of classes [membrane, interior].

    Returns:
        (interior probability float32 (H, W) in [0, 1] with 1 = interior,
         segmentation uint8 (H, W) with 1 = interior (p >= threshold), 0 = membrane).
    """
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] != 2:
        raise SegError(f"isbi_maps: expected probabilities (2, H, W) [membrane, interior], got {probs.shape}")
    return foreground_maps(probs, foreground=1, threshold=threshold)


def instances_from_probability(
    foreground: np.ndarray,
    *,
    method: str = "connected_components",
    threshold: float = 0.5,
    min_size: int = 50,
    h: float = 2.0,
) -> np.ndarray:
    """Instance labels from a foreground probability map.

    Args:
        foreground: float (H, W) probability of the cell class.
        method: ``connected_components`` (4-connected components of ``p >= threshold``) or
            ``watershed`` (markers = h-maxima of the Euclidean distance transform of the mask, depth
            ``h`` pixels; flooding ``-distance`` inside the mask), which splits touching round cells.
        threshold: foreground threshold in [0, 1].
        min_size: objects with fewer pixels are removed (0 keeps all).
        h: minimal depth (pixels of distance) of a distance maximum to seed its own object
            (``postprocess.h``; larger merges more, smaller splits more).

    Returns:
        uint16 (H, W) labels, 0 = background, objects numbered 1..N (sequential).

    Raises:
        SegError: unknown method (names the choices), bad shape, more than 65535 objects.
    """
    if method not in METHODS[:2]:
        raise SegError(f"postprocess.method: unknown option {method!r} for a foreground probability "
                       f"(choices: {', '.join(METHODS[:2])}; three_class needs a three-class model)")
    fg = np.asarray(foreground)
    if fg.ndim != 2:
        raise SegError(f"postprocess: foreground probability must be (H, W), got shape {fg.shape}")
    if min_size < 0:
        raise SegError(f"postprocess.min_size: must be >= 0, got {min_size}")
    if not h > 0:
        raise SegError(f"postprocess.h: must be > 0 pixels, got {h}")
    return finish_labels(label_mask(fg >= threshold, method=method, h=h), min_size)


def finish_labels(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Objects of fewer than ``min_size`` pixels removed, the rest renumbered 1..N: uint16 (H, W).

    Raises:
        SegError: min_size < 0, or more than 65535 objects.
    """
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import relabel_sequential

    if min_size < 0:
        raise SegError(f"postprocess.min_size: must be >= 0, got {min_size}")
    if min_size > 1:
        with warnings.catch_warnings():  # skimage warns when the image holds a single object
            warnings.filterwarnings("ignore", message="Only one label was provided")
            labels = remove_small_objects(labels, max_size=min_size - 1)
    labels = relabel_sequential(labels)[0]
    if labels.max() > np.iinfo(np.uint16).max:
        raise SegError(f"postprocess: {labels.max()} objects do not fit uint16 labels")
    return labels.astype(np.uint16)


def three_class_objects(probs: np.ndarray, *, threshold: float = 0.5, seed_threshold: float = 0.5) -> np.ndarray:
    """Objects of three-class probabilities before any size filter: int (H, W), 0 = background.

    The cell mask is ``interior + boundary >= threshold``; the seeds are the components
    (8-connected) of ``interior >= seed_threshold`` inside it; a seeded watershed (8-connected) grows them over
    the mask by distance from the seeds (each mask pixel goes to the seed nearest to it through the
    mask: the boundary band between two touching cells is split where the two growths meet, which a
    pixel's noise in the probabilities cannot move); an 8-connected part of the mask that holds no seed (a small or faint cell with no confident
    interior) becomes an object of its own.
    """
    from scipy import ndimage as ndi
    from skimage.measure import label
    from skimage.segmentation import watershed

    probs = np.asarray(probs, np.float32)
    interior = probs[1]
    mask = (probs[1] + probs[2]) >= threshold
    seeds = label((interior >= seed_threshold) & mask, connectivity=2)
    out = seeds
    if seeds.max():
        out = watershed(ndi.distance_transform_edt(seeds == 0), seeds, mask=mask, connectivity=2)
    rest = label(mask & (out == 0), connectivity=2)
    return np.where(rest > 0, rest + out.max(), out)


def instances_from_three_class(probs: np.ndarray, *, threshold: float = 0.5, seed_threshold: float = 0.5,
                               min_size: int = 50) -> np.ndarray:
    """Instance labels from three-class softmax probabilities (3, H, W) [background, interior,
    boundary] (:func:`three_class_objects`, then :func:`finish_labels`): uint16 (H, W), 0 =
    background, objects 1..N.

    Raises:
        SegError: not (3, H, W), or a threshold outside [0, 1].
    """
    probs = _seeded_input(probs, 3, "three_class", "probabilities (3, H, W)", threshold, seed_threshold)
    return finish_labels(three_class_objects(probs, threshold=threshold, seed_threshold=seed_threshold), min_size)


def _seeded_input(maps, channels: int, method: str, what: str, threshold: float, seed_threshold: float) -> np.ndarray:
    """``maps`` as an array, checked to be (``channels``, H, W) with both thresholds in [0, 1]
    (SegError naming the method or the setting otherwise)."""
    maps = np.asarray(maps)
    if maps.ndim != 3 or maps.shape[0] != channels:
        raise SegError(f"postprocess {method}: expected {what}, got shape {maps.shape}")
    for name, v in (("threshold", threshold), ("seed_threshold", seed_threshold)):
        if not 0 <= v <= 1:
            raise SegError(f"postprocess.{name}: must be in [0, 1], got {v}")
    return maps


def distance_objects(maps: np.ndarray, *, threshold: float = 0.1, seed_threshold: float = 0.5) -> np.ndarray:
    """Objects of distance maps (2, H, W) [neighbour distance, cell distance] before any size
    filter: int (H, W), 0 = background.

    The cell mask is ``cell >= threshold``; the seeds are the 8-connected components of ``cell -
    neighbour >= seed_threshold`` inside it (the neighbour distance cuts the ridge between touching
    cells); a seeded watershed (8-connected) on ``-cell`` grows them over the mask, and an
    8-connected part of the mask without a seed becomes an object of its own.
    """
    from skimage.measure import label
    from skimage.segmentation import watershed

    maps = np.asarray(maps, np.float32)
    neighbour, cell = maps[0], maps[1]
    mask = cell >= threshold
    seeds = label(((cell - neighbour) >= seed_threshold) & mask, connectivity=2)
    out = watershed(-cell, seeds, mask=mask, connectivity=2) if seeds.max() else seeds
    rest = label(mask & (out == 0), connectivity=2)
    return np.where(rest > 0, rest + out.max(), out)


def instances_from_distance(maps: np.ndarray, *, threshold: float = 0.1, seed_threshold: float = 0.5,
                            min_size: int = 50) -> np.ndarray:
    """Instance labels from distance maps (2, H, W) [neighbour, cell] (:func:`distance_objects`,
    then :func:`finish_labels`): uint16 (H, W), 0 = background, objects 1..N.

    Raises:
        SegError: not (2, H, W), or a threshold outside [0, 1].
    """
    maps = _seeded_input(maps, 2, "distance", "maps (2, H, W) [neighbour, cell]", threshold, seed_threshold)
    return finish_labels(distance_objects(maps, threshold=threshold, seed_threshold=seed_threshold), min_size)


def instances_from_probs(probs: np.ndarray, postprocess: dict, *, threshold: float | None = None) -> np.ndarray:
    """Instance labels uint16 (H, W) from softmax probabilities (classes, H, W) (method distance:
    the sigmoid maps (2, H, W)) by the ``postprocess`` settings (``method``, ``threshold``
    (overridden by ``threshold`` if given), ``min_size``; watershed ``h``; three_class and
    distance ``seed_threshold``)."""
    t = float(postprocess["threshold"] if threshold is None else threshold)
    method = postprocess["method"]
    if method == "three_class":
        return instances_from_three_class(probs, threshold=t, seed_threshold=float(postprocess["seed_threshold"]),
                                          min_size=int(postprocess["min_size"]))
    if method == "distance":
        return instances_from_distance(probs, threshold=t, seed_threshold=float(postprocess["seed_threshold"]),
                                       min_size=int(postprocess["min_size"]))
    probs = np.asarray(probs)
    if probs.ndim == 3 and probs.shape[0] == 3:
        raise SegError(f"postprocess.method {method!r}: a three-class model's probabilities need method three_class")
    return instances_from_probability(foreground_probability(probs), method=method, threshold=t,
                                      min_size=int(postprocess["min_size"]), h=float(postprocess["h"]))


def method_objects(p: np.ndarray, *, method: str, threshold: float, second: float) -> np.ndarray:
    """Objects of one frame before any size filter, int (H, W), by ``method``: ``p`` is the
    foreground probability (H, W) and ``second`` the watershed's ``h`` for the foreground methods,
    or the whole output (:data:`SEEDED` methods) and ``second`` the seed threshold. What
    calibration and validation grid over (they filter sizes themselves)."""
    if method == "three_class":
        return three_class_objects(p, threshold=threshold, seed_threshold=second)
    if method == "distance":
        return distance_objects(p, threshold=threshold, seed_threshold=second)
    return label_mask(p >= threshold, method=method, h=second)


def label_mask(mask: np.ndarray, *, method: str = "connected_components", h: float = 2.0) -> np.ndarray:
    """Objects of a foreground mask, before any size filter: int (H, W) labels, 0 = background.

    ``connected_components``: 4-connected components; ``watershed``: markers = h-maxima of depth
    ``h`` px of the mask's Euclidean distance transform, flooding ``-distance`` inside the mask (see
    :func:`instances_from_probability`, which validates the arguments).
    """
    from scipy import ndimage as ndi
    from skimage.measure import label
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    mask = np.asarray(mask, bool)
    if method == "connected_components":
        return label(mask, connectivity=1)
    dist = ndi.distance_transform_edt(mask)
    markers = label(h_maxima(dist, h) & mask, connectivity=2)
    return watershed(-dist, markers, mask=mask)

