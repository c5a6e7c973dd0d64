"""What the network is asked to predict: a variant's ``target``, one object per choice.

* ``fg_border`` (the default; the U-Net paper's recipe): the dataset's own classes (ISBI
  membrane/interior, CTC background/cell with a 0-line between touching cells), trained with the
  border-weight maps; instances come from the foreground probability by the dataset's
  ``postprocess.method`` (connected components or the distance-transform watershed).
* ``three_class`` (instance datasets only): background / interior / boundary
  (:mod:`seg.targets.three_class`); instances come from seeds of the interior probability grown
  over interior + boundary (:func:`seg.infer.postprocess.instances_from_three_class`). The border
  weight maps still weight the loss (the gaps between cells, and the 0 weights of sparse
  annotations, which keep unannotated pixels ignored).
* ``distance`` (instance datasets only; KIT-Sch-GE): a neighbour-distance and a cell-distance map
  regressed per pixel (:mod:`seg.targets.distance`, computed per training slice), sigmoid
  outputs, a border-weighted mean squared error; instances from seeds ``cell - neighbour >=
  seed_threshold`` grown over ``cell >= threshold`` (threshold 0.1 unless calibrated:
  :func:`seg.infer.postprocess.instances_from_distance`).

A target decides: the network's output channels (:meth:`Target.channels`), the class map a training
slice is trained on (:meth:`Target.train_map`), the probability that is thresholded (the sum of the
object channels, :func:`seg.infer.postprocess.foreground_probability`), and the post-processing
method with its settings (:meth:`Target.postprocess`). The variant's ``target`` is part of its run
identity only when it is not the default, so a config without it keeps its hashes.

Imports: the map builders, torch and the losses load inside the methods.
"""

from __future__ import annotations

from dataclasses import dataclass

from seg.errors import SegError

DEFAULT = "fg_border"
#: three_class: interior-probability threshold of a seed, when the config leaves it unset.
SEED_THRESHOLD = 0.5
#: three_class, distance: the seed thresholds ``seg calibrate`` tries, when the config leaves them unset.
SEED_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
#: distance: the cell-distance threshold of the cell mask (KIT-Sch-GE: 0.09) unless calibrated; the
#: cell distance falls to ~1/radius at an object's outline, so the class threshold 0.5 would halve it.
DISTANCE_THRESHOLD = 0.1
#: three_class: the factor on the loss weight of the boundary class's pixels, when the variant leaves
#: ``boundary_weight`` unset (measured: README, "Targets beyond the paper").
BOUNDARY_WEIGHT = 2.0


@dataclass(frozen=True)
class Target:
    """One training target.

    Attributes:
        name: the variant's ``target`` value.
        classes: output channel names; None = the dataset's classes (``meta.json``).
        method: the post-processing method the target implies; None = the dataset's
            ``postprocess.method``.
        instances_only: only for instance datasets (a kind with ``instances``).
        needs_instances: the training map is built from the instance labels, not the semantic map.
        description: one sentence for the report and the package.
        activation: what turns the network's outputs into the maps every consumer reads:
            ``softmax`` over the channels (class probabilities) or ``sigmoid`` per channel
            (regressed maps in [0, 1]).
        regression: the training targets are float maps (:meth:`train_map`), deformed with the
            slice and trained with :func:`seg.train.losses.weighted_mse`, not class indices.
        boundary_width: three_class: the boundary's width in px (:meth:`seg.data.plan.DataPlan.target`
            resolves it per dataset: the variant's ``boundary_width``, else the plan's); None = the
            map builder's default (:data:`seg.targets.three_class.DEFAULT_WIDTH`).
        boundary_weight: three_class: the factor on the loss weight of boundary pixels
            (:meth:`weigh`; :meth:`seg.data.plan.DataPlan.target` sets the variant's, else
            :data:`BOUNDARY_WEIGHT`).
    """

    name: str
    classes: tuple[str, ...] | None
    method: str | None
    instances_only: bool
    needs_instances: bool
    description: str
    activation: str = "softmax"
    regression: bool = False
    boundary_width: int | None = None
    boundary_weight: float = 1.0

    def channels(self, dataset_classes: list[str]) -> list[str]:
        """Names of the network's output channels (softmax classes)."""
        return list(self.classes) if self.classes is not None else list(dataset_classes)

    def train_map(self, semantic, instances):
        """What one training slice is trained on: the uint8 (H, W) class map (the canonical
        ``semantic`` map, or (three_class) the map of the ``instances``, int (H, W), 0 =
        background), or (distance) the float32 (2, H, W) maps of the instances."""
        if self.regression:  # float32 (2, H, W), deformed with the slice (linear interpolation)
            from seg.targets.distance import distance_maps

            return distance_maps(instances)
        if self.needs_instances:
            from seg.targets.three_class import DEFAULT_WIDTH, three_class_map

            return three_class_map(instances, width=self.boundary_width or DEFAULT_WIDTH)
        return semantic

    def weigh(self, train_map, weights):
        """The loss weights of a training slice as this target trains on them: three_class
        multiplies the weight of its boundary pixels (``train_map == 2``) by ``boundary_weight``;
        pixels of weight 0 (ignored) stay 0. ``weights``: float32 (H, W) or None (returned as is)."""
        if weights is None or self.name != "three_class" or self.boundary_weight == 1.0:
            return weights
        import numpy as np

        from seg.targets.three_class import BOUNDARY

        return np.where(train_map == BOUNDARY, weights * np.float32(self.boundary_weight), weights).astype(np.float32)

    def postprocess(self, pp: dict) -> dict:
        """The dataset's resolved ``postprocess`` settings as this target applies them: three_class
        sets ``method: three_class`` and ``seed_threshold`` (the config's, else 0.5); fg_border
        leaves them as they are."""
        if self.method is None:
            return dict(pp)
        seed = pp.get("seed_threshold")
        out = {**pp, "method": self.method, "seed_threshold": SEED_THRESHOLD if seed is None else float(seed)}
        if self.regression:  # the cell mask is a threshold on the cell distance, not a probability
            out["threshold"] = DISTANCE_THRESHOLD
        return out

    def seed_grid(self, pp: dict) -> list[float]:
        """three_class, distance: the seed thresholds calibration tries (``search.seed_threshold``, else
        :data:`SEED_GRID`), with the configured one."""
        grid = (pp.get("search") or {}).get("seed_threshold") or SEED_GRID
        seed = pp.get("seed_threshold")
        return sorted({float(x) for x in grid} | ({float(seed)} if seed is not None else set()))

    def record(self, dataset_classes: list[str]) -> dict:
        """The target as the package, the train summary and the report record it."""
        out = {"name": self.name, "channels": self.channels(dataset_classes), "description": self.description,
               "activation": self.activation}
        if self.name == "three_class" and self.boundary_width is not None:
            out.update(boundary_width=self.boundary_width, boundary_weight=self.boundary_weight)
        return out


TARGETS: dict[str, Target] = {
    "fg_border": Target(
        "fg_border", None, None, False, False,
        "the dataset's classes with the U-Net paper's border-weighted loss; instances from the "
        "foreground probability by the dataset's post-processing method"),
    "three_class": Target(
        "three_class", ("background", "interior", "boundary"), "three_class", True, True,
        "background / interior / boundary (the objects' outer pixels); instances grown from interior seeds over "
        "interior + boundary"),
    "distance": Target(
        "distance", ("neighbour distance", "cell distance"), "distance", True, True,
        "cell and neighbour distance maps (sigmoid, border-weighted MSE); instances grown from seeds "
        "cell - neighbour >= seed_threshold over cell >= threshold", activation="sigmoid", regression=True),
}


def get_target(name: str | None) -> Target:
    """The target called ``name`` (None = the default); SegError listing the choices if unknown."""
    name = DEFAULT if name is None else name
    if name not in TARGETS:
        raise SegError(f"target: unknown target {name!r} (choices: {', '.join(TARGETS)})")
    return TARGETS[name]


def variant_target(cfg: dict, variant: str) -> Target:
    """The ``target`` of a configured variant (default fg_border)."""
    var = cfg["variants"].get(variant)
    if var is None:
        raise SegError(f"config: unknown variant {variant!r} (configured: {', '.join(cfg['variants'])})")
    return get_target(var.get("target"))


def check_targets(cfg: dict, instance_kind, datasets_of) -> list[str]:
    """Config errors of the variants' targets: an unknown target, an instance-only target on a
    dataset whose kind has no instances, or a three_class setting (``boundary_width``,
    ``boundary_weight``) on a variant of another target. ``instance_kind(dataset) -> bool``;
    ``datasets_of(cfg, variant) -> list`` the datasets a variant runs on
    (:func:`seg.config.variant_datasets`)."""
    errors = []
    for v, var in cfg["variants"].items():
        name = var.get("target")
        for key in ("boundary_width", "boundary_weight"):
            if var.get(key) is not None and name != "three_class":
                errors.append(f"variants.{v}.{key}: only for target three_class (the variant's target is "
                              f"{name or DEFAULT})")
        if name is None:
            continue
        if name not in TARGETS:
            errors.append(f"variants.{v}.target: unknown target {name!r} (choices: {', '.join(TARGETS)})")
            continue
        if TARGETS[name].instances_only:
            bad = [d for d in datasets_of(cfg, v) if not instance_kind(d)]
            if bad:
                errors.append(f"variants.{v}.target: {name} needs instance labels; datasets {', '.join(bad)} have "
                              "none (set the variant's datasets to instance datasets only)")
    return errors
