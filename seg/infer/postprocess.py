"""From probabilities to the files the challenges expect.

* ISBI 2012: the challenge's convention is a membrane/interior map where 1 = interior (cell) and
  0 = membrane, as a probability. Our classes are ["membrane", "interior"], so the map is the
  interior-class probability, and the binary segmentation is ``interior >= threshold`` (uint8 0/1).
* Cell Tracking Challenge: an instance label image per frame (uint16, 0 = background, 1..N cells),
  from the foreground probability by connected components or a seeded watershed (seeds = h-maxima
  of the distance transform of the foreground mask), small objects removed, labels renumbered 1..N.
  Where the files go is the dataset kind's (:mod:`seg.kinds`; CTC: :func:`seg.kinds.ctc.result_mask_path`).
"""

from __future__ import annotations

import warnings

import numpy as np

from seg.errors import SegError

METHODS = ("connected_components", "watershed")


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
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import relabel_sequential

    if method not in METHODS:
        raise SegError(f"postprocess.method: unknown option {method!r} (choices: {', '.join(METHODS)})")
    fg = np.asarray(foreground)
    if fg.ndim != 2:
        raise SegError(f"postprocess: foreground probability must be (H, W), got shape {fg.shape}")
    if min_size < 0:
        raise SegError(f"postprocess.min_size: must be >= 0, got {min_size}")
    if not h > 0:
        raise SegError(f"postprocess.h: must be > 0 pixels, got {h}")
    labels = label_mask(fg >= threshold, method=method, h=h)
    if min_size > 1:
        with warnings.catch_warnings():  # skimage warns when the image holds a single object
            warnings.filterwarnings("ignore", message="Only one label was provided")
            labels = remove_small_objects(labels, max_size=min_size - 1)
    labels = relabel_sequential(labels)[0]
    if labels.max() > np.iinfo(np.uint16).max:
        raise SegError(f"postprocess: {labels.max()} objects do not fit uint16 labels")
    return labels.astype(np.uint16)


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

