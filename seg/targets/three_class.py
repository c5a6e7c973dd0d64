"""The three-class instance target: background / cell interior / cell boundary.

The standard target of instance segmentation since the 2018 Data Science Bowl (nnU-Net's Cell
Tracking Challenge entry converts instances to it): every annotated object is split into its
boundary, the object pixels within ``width`` pixels (chessboard distance) of a pixel that is not of
the same object, and its interior, the rest. Touching objects therefore meet along two boundary
bands, and the interiors of different objects never touch, so connected components of the
interior are the objects' seeds (:func:`seg.infer.postprocess.three_class_objects`).

The target (:class:`ThreeClass`) trains on that map with the border weights (the gaps between cells,
and the 0 weights of sparse annotations), multiplies the weight of boundary pixels by
``boundary_weight``, and grows instances from interior seeds over interior + boundary. Its
boundary width comes from the variant's ``boundary_width``, else the plan (D / 15 px).

Class values (uint8): 0 = background (or, with sparse annotations, not annotated: the weight map
gives those pixels 0 and every loss ignores them), 1 = interior, 2 = boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
from scipy import ndimage

from seg.errors import SegError
from seg.infer.postprocess import three_class_objects
from seg.targets.base import SeededTarget, configured

BACKGROUND, INTERIOR, BOUNDARY = 0, 1, 2
CLASSES = ("background", "interior", "boundary")
#: The factor on the loss weight of boundary pixels when the variant leaves ``boundary_weight``
#: unset (measured: README, "Targets beyond the paper").
BOUNDARY_WEIGHT = 2.0
#: The planned boundary width: median diameter / BOUNDARY_DIAMETERS px, rounded, in BOUNDARY_BOUNDS.
#: 2 px (the Data Science Bowl's small nuclei) was too thin for both CTC datasets: D / 15 gives
#: GOWT1's nuclei (D = 61 px) 4 px and DIC-HeLa's cells (D = 120 px) 8 px, each in the range where
#: the test SEG over three seeds was best (README, "Targets beyond the paper"). Below D = 22.5 px
#: the rule gives 1 px: on GOWT1 shrunk to D = 15 and 7.6 px a 1 px boundary beat 2 px (a 2 px
#: ring is half of a 15 px nucleus and leaves the smallest ones no interior to seed from; README,
#: "Small objects").
BOUNDARY_DIAMETERS, BOUNDARY_BOUNDS = 15, (1, 8)


def three_class_map(instances: np.ndarray, *, width: int) -> np.ndarray:
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


@dataclass(frozen=True)
class ThreeClass(SeededTarget):
    """Background / interior / boundary (module docstring).

    Attributes:
        boundary_width: the boundary's width in px (:meth:`configure`: the variant's, else the
            plan's ``target.boundary_width``); None until configured.
        boundary_weight: the factor on the loss weight of boundary pixels.
    """

    name: ClassVar[str] = "three_class"
    description: ClassVar[str] = ("background / interior / boundary (the objects' outer pixels); instances grown "
                                  "from interior seeds over interior + boundary")
    channel_names: ClassVar[tuple[str, ...]] = CLASSES
    variant_keys: ClassVar[tuple[str, ...]] = ("boundary_width", "boundary_weight")
    planned: ClassVar[dict[str, str]] = {"boundary_width": "target.boundary_width"}

    boundary_width: int | None = None
    boundary_weight: float = BOUNDARY_WEIGHT

    def configure(self, variant: dict, planned: Callable[[str], Any]) -> "ThreeClass":
        width, weight = variant.get("boundary_width"), variant.get("boundary_weight")
        return configured(self, boundary_width=int(planned("target.boundary_width") if width is None else width),
                          boundary_weight=BOUNDARY_WEIGHT if weight is None else float(weight))

    plan_fallback: ClassVar[dict[str, Any]] = {"target.boundary_width": 2}

    def plan_rules(self, diameter):
        width = int(min(max(round(diameter / BOUNDARY_DIAMETERS), BOUNDARY_BOUNDS[0]), BOUNDARY_BOUNDS[1]))
        return {"target.boundary_width": (width, f"median diameter ({diameter:g} px) / {BOUNDARY_DIAMETERS}, "
                                                 f"rounded, in [{BOUNDARY_BOUNDS[0]}, {BOUNDARY_BOUNDS[1]}] px")}

    def settings(self) -> dict:
        return {} if self.boundary_width is None else {"boundary_width": self.boundary_width,
                                                       "boundary_weight": self.boundary_weight}

    def train_map(self, semantic, instances):
        """uint8 (H, W) three-class map of ``instances`` (:func:`three_class_map`)."""
        if self.boundary_width is None:
            raise SegError("target three_class: no boundary width (configure the target with its variant and plan)")
        return three_class_map(instances, width=self.boundary_width)

    def weigh(self, train_map, weights):
        """Boundary pixels' weights times ``boundary_weight`` (weight-0 pixels stay 0)."""
        if weights is None or self.boundary_weight == 1.0:
            return weights
        return np.where(train_map == BOUNDARY, weights * np.float32(self.boundary_weight), weights).astype(np.float32)

    def probability(self, out, *, foreground):
        """The cell probability interior + boundary, float32 (H, W) in [0, 1]."""
        out = np.asarray(out)
        if out.ndim != 3 or out.shape[0] != 3:
            raise SegError(f"postprocess {self.name}: expected probabilities (3, H, W), got shape {out.shape}")
        return np.ascontiguousarray(np.clip(out[INTERIOR] + out[BOUNDARY], 0.0, 1.0), dtype=np.float32)

    def objects(self, x, *, pp, threshold, second):
        """Seeds ``interior >= second`` grown over ``interior + boundary >= threshold``
        (:func:`seg.infer.postprocess.three_class_objects`)."""
        return three_class_objects(self._checked(x, threshold, second), threshold=threshold, seed_threshold=second)

    def outputs(self, outputs, channels):
        return {**outputs, "classes": list(channels),
                "probability": "float32, probability of a cell (interior + boundary of the three-class output) in [0, 1]",
                "segmentation": outputs["segmentation"] + "; instances grown from interior seeds (postprocess three_class)"}
