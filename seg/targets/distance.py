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
(:func:`seg.infer.postprocess.distance_objects`; the target is :class:`Distance`).

The maps are computed once per training slice and deformed with it (linear interpolation, as the
weight maps): both are normalised per object by its radius, so a zoom leaves them as they are, and
the mild elastic deformation changes them little. The image edge counts as outside every object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from seg.errors import SegError
from seg.infer.postprocess import distance_objects
from seg.targets.base import SeededTarget

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


#: The cell-distance threshold of the cell mask (KIT-Sch-GE: 0.09) unless calibrated: the cell
#: distance falls to FLOOR at an object's outline, so a class threshold of 0.5 would halve it.
THRESHOLD = 0.1


@dataclass(frozen=True)
class Distance(SeededTarget):
    """Neighbour and cell distance maps, sigmoid outputs, a border-weighted MSE (module docstring)."""

    name: ClassVar[str] = "distance"
    description: ClassVar[str] = ("cell and neighbour distance maps (sigmoid, border-weighted MSE); instances grown "
                                  "from seeds cell - neighbour >= seed_threshold over cell >= threshold")
    channel_names: ClassVar[tuple[str, ...]] = CLASSES
    activation: ClassVar[str] = "sigmoid"
    regression: ClassVar[bool] = True

    def train_map(self, semantic, instances):
        """float32 (2, H, W) maps of ``instances`` (:func:`distance_maps`), deformed with the slice."""
        return distance_maps(instances)

    def postprocess(self, pp):
        """Seeded settings with the cell-mask threshold :data:`THRESHOLD` (a cell distance, not a probability)."""
        return {**super().postprocess(pp), "threshold": THRESHOLD}

    def probability(self, out, *, foreground):
        """The cell distance (channel 1), float32 (H, W) in [0, 1]."""
        out = np.asarray(out)
        if out.ndim != 3 or out.shape[0] != 2:
            raise SegError(f"postprocess {self.name}: expected maps (2, H, W) [neighbour, cell], got shape {out.shape}")
        return np.ascontiguousarray(np.clip(out[CELL], 0.0, 1.0), dtype=np.float32)

    def objects(self, x, *, pp, threshold, second):
        """Seeds ``cell - neighbour >= second`` grown over ``cell >= threshold``
        (:func:`seg.infer.postprocess.distance_objects`)."""
        return distance_objects(self._checked(x, threshold, second), threshold=threshold, seed_threshold=second)

    def outputs(self, outputs, channels):
        return {**outputs, "classes": list(channels),
                "probability": "float32, the cell distance (channel 1 of the sigmoid maps; 1 at a cell's centre, "
                               "~0 at its outline) in [0, 1]",
                "segmentation": outputs["segmentation"] + "; instances grown from seeds cell - neighbour distance "
                                ">= seed_threshold over cell distance >= threshold (postprocess distance)"}
