"""The three-class instance target: background / cell interior / cell boundary.

The standard target of instance segmentation since the 2018 Data Science Bowl (nnU-Net's Cell
Tracking Challenge entry converts instances to it): every annotated object is split into its
boundary, the object pixels within ``width`` pixels (chessboard distance) of a pixel that is not of
the same object, and its interior, the rest. Touching objects therefore meet along two boundary
bands, and the interiors of different objects never touch, so connected components of the
interior are the objects' seeds (:func:`seg.infer.postprocess.instances_from_three_class`).

Class values (uint8): 0 = background (or, with sparse annotations, not annotated: the weight map
gives those pixels 0 and every loss ignores them), 1 = interior, 2 = boundary.
"""

from __future__ import annotations

import numpy as np

from seg.errors import SegError

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
CLASSES = ("background", "interior", "boundary")
#: Boundary width in pixels: wide enough that the interiors of touching objects are >= 3 px apart
#: (a seed survives a one-pixel prediction error on either side), narrow enough that an object of
#: 50 px area keeps an interior.
DEFAULT_WIDTH = 2


def three_class_map(instances: np.ndarray, *, width: int = DEFAULT_WIDTH) -> np.ndarray:
    """The three-class map of an instance image.

    Args:
        instances: int (H, W) labels, 0 = background / not annotated, 1..N objects (any integers).
        width: boundary width in pixels (>= 1): an object pixel is boundary when a pixel within
            chessboard distance ``width`` (a (2 width + 1)^2 square) is not of the same object; the
            image edge does not count as a different object.

    Returns:
        uint8 (H, W): 0 background, 1 interior, 2 boundary. Interior and boundary partition every
        object: ``(out > 0) == (instances > 0)``; each object's interior is one 8-connected part
        (the largest; pixels cut off from it by the outline's pixel steps are boundary).

    Raises:
        SegError: not a 2D integer array, or width < 1.
    """
    from scipy import ndimage

    inst = np.asarray(instances)
    if inst.ndim != 2 or not np.issubdtype(inst.dtype, np.integer):
        raise SegError(f"three_class_map: expected 2D integer instance labels, got {inst.dtype} {inst.shape}")
    if int(width) < 1:
        raise SegError(f"three_class_map: boundary width must be >= 1 px, got {width}")
    size = 2 * int(width) + 1
    # A pixel is interior when every pixel of its square has its own label: the square's max and
    # min of the labels then both equal it (the edge is padded with the pixel's nearest value).
    hi = ndimage.maximum_filter(inst, size=size, mode="nearest")
    lo = ndimage.minimum_filter(inst, size=size, mode="nearest")
    obj = inst > 0
    out = np.zeros(inst.shape, np.uint8)
    out[obj] = BOUNDARY
    interior = obj & (hi == inst) & (lo == inst)
    # A pixelated outline can leave a few interior pixels cut off from the object's main interior;
    # they would seed an object of their own, so each object keeps its largest interior part.
    comp, n = ndimage.label(interior, structure=np.ones((3, 3)))
    if n:
        size = np.bincount(comp.ravel(), minlength=n + 1)
        owner = np.zeros(n + 1, inst.dtype)
        owner[comp.ravel()] = inst.ravel()
        order = np.lexsort((size[1:], owner[1:])) + 1  # by object, then size: the last of each object wins
        largest = np.zeros(n + 1, bool)
        last_of_object = np.r_[owner[order][1:] != owner[order][:-1], True]
        largest[order[last_of_object]] = True
        interior &= largest[comp]
    out[interior] = INTERIOR
    return out
