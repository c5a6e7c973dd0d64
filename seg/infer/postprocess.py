"""From a network's maps to objects: the algorithms every target's decoding chooses from.

* :func:`foreground_maps`: one class's probability and its thresholded class map (ISBI 2012's
  interior map, 1 = interior, 0 = membrane; any binary class map).
* :func:`label_mask`: objects of a foreground mask: 4-connected components, or a seeded watershed
  (seeds = h-maxima of the distance transform of the mask), which splits touching round cells.
* :func:`three_class_objects`: seeds of an interior probability grown over interior + boundary.
* :func:`distance_objects`: seeds where cell - neighbour distance is high, grown over the cell mask.
* :func:`finish_labels`: small objects removed, labels renumbered 1..N (uint16).

Which algorithm a model's output needs, and with which settings, is its target's
(:meth:`seg.targets.base.Target.decode`); where the files go is the dataset kind's
(:mod:`seg.kinds`). Every setting is an argument without a default: the values come from the
config, the plan and calibration (:class:`seg.settings.RunSettings`).
"""

from __future__ import annotations

import warnings

import numpy as np

from seg.errors import SegError

#: ``postprocess.method`` values of a foreground probability (the default target's); a seeded
#: target's method is its own name.
FOREGROUND_METHODS = ("connected_components", "watershed")


def foreground_maps(probs: np.ndarray, *, foreground: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
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




def instances_from_probability(
    foreground: np.ndarray,
    *,
    method: str,
    threshold: float,
    min_size: int,
    h: float,
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
    return finish_labels(foreground_objects(foreground, method=method, threshold=threshold, h=h), min_size)


def foreground_objects(foreground: np.ndarray, *, method: str, threshold: float, h: float) -> np.ndarray:
    """Objects of ``foreground >= threshold`` before any size filter (:func:`label_mask`), int (H, W),
    the arguments checked first (see :func:`instances_from_probability`).

    Raises:
        SegError: unknown method (names the choices), not (H, W), h <= 0.
    """
    if method not in FOREGROUND_METHODS:
        raise SegError(f"postprocess.method: unknown option {method!r} for a foreground probability "
                       f"(choices: {', '.join(FOREGROUND_METHODS)})")
    fg = np.asarray(foreground)
    if fg.ndim != 2:
        raise SegError(f"postprocess: foreground probability must be (H, W), got shape {fg.shape}")
    if not h > 0:
        raise SegError(f"postprocess.h: must be > 0 pixels, got {h}")
    return label_mask(fg >= threshold, method=method, h=h)


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


def three_class_objects(probs: np.ndarray, *, threshold: float, seed_threshold: float) -> np.ndarray:
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



def distance_objects(maps: np.ndarray, *, threshold: float, seed_threshold: float) -> np.ndarray:
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



def label_mask(mask: np.ndarray, *, method: str, h: float) -> np.ndarray:
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

