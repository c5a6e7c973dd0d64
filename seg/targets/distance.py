"""The distance target (KIT-Sch-GE's, Scherr et al. 2020): a cell-distance and a neighbour-distance map.

Per annotated object, in [0, 1], 0 on background (and on unannotated pixels, which the weight map
masks out of the loss):

* **cell distance** ``c``: from the Euclidean distance ``e`` of each object pixel to the nearest pixel
  outside the object (background or another object; 1 on the outline) and the object's largest
  such distance ``r``: ``c = FLOOR + (1 - FLOOR) (e - 1) / (r - 1)``, so 1 at the object's centre
  falling to :data:`FLOOR` (0.2) on its outline, 0 outside. Touching objects have a valley of
  ``c`` between them; the floor keeps the outline well above the mask threshold (0.1), where KIT's
  ``e / r`` falls to ~1/r and a threshold cuts a ring off every cell.
* **neighbour distance** ``n``: ``clip(1 - d / r, 0, 1) ** 2`` with ``d`` the distance of the pixel to
  the nearest pixel of another object minus one (0 on a pixel next to a neighbour) and ``r`` the
  object's largest inner distance (its radius): 1 where the object touches a neighbour, 0 farther
  than a radius from any neighbour and on isolated objects.

Channels in the order the network predicts them: 0 = neighbour distance, 1 = cell distance. Channel
1 is thus the "cell" channel every consumer that reads class 1 of a two-channel output takes (the
probability file, the threshold calibration, the report's masks), and ``c >= threshold`` is the
cell mask. Instances: seeds where ``c - n >= seed_threshold``, grown over the mask
(:func:`seg.infer.postprocess.instances_from_distance`).

The maps are computed once per training slice and deformed with it (linear interpolation, as the
weight maps): both are normalised per object by its radius, so a zoom leaves them as they are, and
the mild elastic deformation changes them little. The image edge counts as outside every object.
"""

from __future__ import annotations

import math

import numpy as np

from seg.errors import SegError

CLASSES = ("neighbour distance", "cell distance")
NEIGHBOUR, CELL = 0, 1
FLOOR = 0.2  # cell distance on an object's outline


def distance_maps(instances: np.ndarray) -> np.ndarray:
    """The two distance maps of an instance image.

    Args:
        instances: int (H, W) labels, 0 = background / not annotated, 1..N objects (any integers).

    Returns:
        float32 (2, H, W): [neighbour distance, cell distance], both in [0, 1] and 0 outside the
        objects; every object has cell distance 1 at its most interior pixel(s) and >= FLOOR on
        all of its pixels.

    Raises:
        SegError: not a 2D integer array.
    """
    from scipy import ndimage

    inst = np.asarray(instances)
    if inst.ndim != 2 or not np.issubdtype(inst.dtype, np.integer):
        raise SegError(f"distance_maps: expected 2D integer instance labels, got {inst.dtype} {inst.shape}")
    out = np.zeros((2, *inst.shape), np.float32)
    h, w = inst.shape
    for k, box in enumerate(ndimage.find_objects(inst), start=1):
        if box is None:
            continue
        ys, xs = box
        # the object's crop plus a one-pixel frame (so its outline is at distance >= 1 from "outside")
        crop = (slice(max(ys.start - 1, 0), min(ys.stop + 1, h)), slice(max(xs.start - 1, 0), min(xs.stop + 1, w)))
        obj = inst[crop] == k
        inner = ndimage.distance_transform_edt(np.pad(obj, 1))[1:-1, 1:-1]  # the image edge is outside
        r = float(inner.max())
        if r <= 0:
            continue
        cell = out[CELL][crop]
        cell[obj] = (FLOOR + (1.0 - FLOOR) * (inner[obj] - 1.0) / (r - 1.0) if r > 1 else 1.0)
        # neighbours within one radius: the crop widened by r
        m = int(math.ceil(r)) + 1
        wide = (slice(max(ys.start - m, 0), min(ys.stop + m, h)), slice(max(xs.start - m, 0), min(xs.stop + m, w)))
        others = (inst[wide] > 0) & (inst[wide] != k)
        if not others.any():
            continue
        d = ndimage.distance_transform_edt(~others)
        here = inst[wide] == k
        near = np.clip(1.0 - (d[here] - 1.0) / r, 0.0, 1.0) ** 2
        nb = out[NEIGHBOUR][wide]
        nb[here] = near.astype(np.float32)
    return out
