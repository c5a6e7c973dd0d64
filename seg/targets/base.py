"""The target contract: what a variant's network is asked to predict, and everything that follows from it.

A target is one object (a subclass of :class:`Target`, registered in :mod:`seg.targets`). Callers
look it up by a variant's ``target`` (:func:`seg.targets.get_target`) or a package's ``target``
record (:func:`seg.targets.target_from_record`) and ask it; no module outside :mod:`seg.targets`
compares a target's name. As nnU-Net's ``LabelManager`` owns the inference nonlinearity and the
conversion of probabilities to a segmentation, a target owns:

* its output channels (:meth:`Target.channels`) and their activation (:attr:`Target.activation`:
  ``softmax`` over the channels or ``sigmoid`` per channel, applied per tile by
  :mod:`seg.infer.tiling`);
* what a training slice is trained on (:meth:`Target.train_map`: a class map, or float maps for
  a regression target, :attr:`Target.regression`) and how its loss weights are changed
  (:meth:`Target.weigh`);
* the post-processing it implies (:meth:`Target.postprocess`), the probability map written and
  thresholded (:meth:`Target.probability`), the decoding of the network's maps into a
  segmentation (:meth:`Target.decode`: instances or a class map, by the dataset kind), and the
  grid calibration searches (:meth:`Target.calibration_input`, :meth:`Target.objects`,
  :attr:`Target.second_key`, :meth:`Target.second_grid`);
* its own variant settings and their planned values (:attr:`Target.variant_keys`,
  :attr:`Target.planned`, :meth:`Target.configure`), and how the package, the train summary and
  the report record it (:meth:`Target.record`, :meth:`Target.outputs`).

The algorithms (thresholds, watersheds) are :mod:`seg.infer.postprocess`'s; a target chooses and
parametrises them. Array conventions: the network's maps ``out`` are float32 (channels, H, W);
probabilities are float32 (H, W) in [0, 1]; instance labels uint16 (H, W), 0 = background, 1..N;
class maps uint8 (H, W), 1 = foreground.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import Any, Callable, ClassVar

import numpy as np

from seg.errors import SegError
from seg.infer.postprocess import finish_labels

#: The seed thresholds a seeded target's calibration tries, when the config leaves them unset.
SEED_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
#: A seeded target's seed threshold when the config leaves ``postprocess.seed_threshold`` unset.
SEED_THRESHOLD = 0.5


@dataclass(frozen=True)
class Target(ABC):
    """One training target (see the module docstring). Instances are frozen: the settings a variant
    and the plan give a target (:meth:`configure`) make a new instance.

    Class attributes:
        name: the variant's ``target`` value and the registry key.
        description: one sentence for the report and the package.
        channel_names: output channel names; None = the dataset's classes (``meta.json``).
        activation: ``softmax`` (class probabilities) or ``sigmoid`` (regressed maps in [0, 1]).
        regression: the training targets are float maps (:meth:`train_map`) trained with a
            weighted mean squared error, not class indices with the configured loss.
        instances_only: only for datasets whose kind has instances.
        needs_instances: the training map is built from the instance labels, not the semantic map.
        second_key: the post-processing setting of calibration's second grid axis (``h``,
            ``seed_threshold``).
        variant_keys: the variant keys this target reads (a config error on any other target).
        planned: ``{variant key: plan key}`` of those the plan fills when the variant leaves them
            unset (:mod:`seg.settings.plan`).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    channel_names: ClassVar[tuple[str, ...] | None] = None
    activation: ClassVar[str] = "softmax"
    regression: ClassVar[bool] = False
    instances_only: ClassVar[bool] = False
    needs_instances: ClassVar[bool] = False
    second_key: ClassVar[str] = "h"
    variant_keys: ClassVar[tuple[str, ...]] = ()
    planned: ClassVar[dict[str, str]] = {}

    # ------------------------------------------------------------------ settings
    def configure(self, variant: dict, planned: Callable[[str], Any]) -> "Target":
        """This target with a variant's own settings (:attr:`variant_keys`), each the variant's
        value, else ``planned(plan key)`` for the keys in :attr:`planned`. Here: itself."""
        return self

    def plan_rules(self, diameter: float) -> dict[str, tuple[Any, str]]:
        """``{plan key: (value, rule in words)}`` of the keys in :attr:`planned`, from the training
        objects' median equivalent diameter ``diameter`` px (:mod:`seg.settings.plan`). Here: none."""
        return {}

    #: ``{plan key: value}`` when the training split has no annotated object.
    plan_fallback: ClassVar[dict[str, Any]] = {}

    def check_variant(self, variant: dict, key: str) -> list[str]:
        """Config errors of the variant's own settings (``key``: the variant's config path). Here: none."""
        return []

    def settings(self) -> dict:
        """The target's own resolved settings (recorded with it). Here: none."""
        return {}

    # ------------------------------------------------------------------ training
    def channels(self, dataset_classes: list[str]) -> list[str]:
        """Names of the network's output channels."""
        return list(self.channel_names) if self.channel_names is not None else list(dataset_classes)

    def train_map(self, semantic: np.ndarray | None, instances: np.ndarray | None) -> np.ndarray:
        """What one training slice is trained on: here the canonical ``semantic`` class map, uint8 (H, W)."""
        return semantic

    def weigh(self, train_map: np.ndarray, weights: np.ndarray | None) -> np.ndarray | None:
        """The loss weights float32 (H, W) of a training slice as this target trains on them (pixels
        of weight 0 stay ignored). Here: as they are."""
        return weights

    # ------------------------------------------------------------------ inference
    def postprocess(self, pp: dict) -> dict:
        """The dataset's resolved ``postprocess`` settings as this target applies them. Here: as they are."""
        return dict(pp)

    @abstractmethod
    def probability(self, out: np.ndarray, *, foreground: int) -> np.ndarray:
        """The probability map written and thresholded, float32 (H, W) in [0, 1], of the network's
        activated maps ``out`` (channels, H, W); ``foreground``: the dataset kind's foreground class."""

    @abstractmethod
    def objects(self, x: np.ndarray, *, pp: dict, threshold: float, second: float) -> np.ndarray:
        """Objects before any size filter, int (H, W), 0 = background, of :meth:`calibration_input`
        ``x`` at ``threshold`` and the second setting ``second`` (:attr:`second_key`); ``pp``: the
        post-processing settings (their ``method``)."""

    def calibration_input(self, out: np.ndarray, *, foreground: int = 1) -> np.ndarray:
        """What :meth:`objects` reads of the activated maps: here the probability (H, W)."""
        return self.probability(out, foreground=foreground)

    def second_grid(self, pp: dict) -> list[float]:
        """The values of :attr:`second_key` calibration tries (with the configured one)."""
        return [float(pp[self.second_key])]

    def decode(self, out: np.ndarray, pp: dict, *, threshold: float, instances: bool,
               foreground: int) -> tuple[np.ndarray, np.ndarray]:
        """(probability float32 (H, W), segmentation) of the activated maps ``out`` (channels, H, W).

        ``instances`` (the dataset kind's): the segmentation is uint16 instance labels, 0 =
        background, 1..N (:meth:`objects`, then objects under ``pp["min_size"]`` px removed);
        otherwise the uint8 class map ``probability >= threshold``.
        """
        prob = self.probability(out, foreground=foreground)
        if not instances:
            return prob, (prob >= threshold).astype(np.uint8)
        x = self.calibration_input(out, foreground=foreground)
        return prob, finish_labels(self.objects(x, pp=pp, threshold=threshold, second=float(pp[self.second_key])),
                                   int(pp["min_size"]))

    # ------------------------------------------------------------------ records
    def record(self, dataset_classes: list[str]) -> dict:
        """The target as the package, the train summary and the report record it (name, channels,
        description, activation and :meth:`settings`); :func:`seg.targets.target_from_record` reads it."""
        return {"name": self.name, "channels": self.channels(dataset_classes), "description": self.description,
                "activation": self.activation, **self.settings()}

    def outputs(self, outputs: dict, channels: list[str]) -> dict:
        """The package's ``outputs`` section (the dataset kind's) for a model of this target whose
        channels are ``channels``. Here: the kind's, with the target's own channel names if it has them."""
        return outputs if self.channel_names is None else {**outputs, "classes": list(channels)}


@dataclass(frozen=True)
class SeededTarget(Target):
    """A target whose instances grow from seeds (:attr:`second_key` ``seed_threshold``): its
    post-processing method is its own name, calibration searches seed thresholds."""

    second_key: ClassVar[str] = "seed_threshold"
    instances_only: ClassVar[bool] = True
    needs_instances: ClassVar[bool] = True

    def postprocess(self, pp: dict) -> dict:
        """The settings with ``method`` = the target's name and ``seed_threshold`` (the config's, else
        :data:`SEED_THRESHOLD`)."""
        seed = pp.get("seed_threshold")
        return {**pp, "method": self.name, "seed_threshold": SEED_THRESHOLD if seed is None else float(seed)}

    def calibration_input(self, out: np.ndarray, *, foreground: int = 1) -> np.ndarray:
        """The whole activated output (channels, H, W): seeds and mask come from different channels."""
        return np.asarray(out, np.float32)

    def second_grid(self, pp: dict) -> list[float]:
        """``search.seed_threshold``, else :data:`SEED_GRID`, with the configured seed threshold."""
        grid = (pp.get("search") or {}).get("seed_threshold") or SEED_GRID
        seed = pp.get("seed_threshold")
        return sorted({float(x) for x in grid} | ({float(seed)} if seed is not None else set()))

    def _checked(self, out: np.ndarray, threshold: float, second: float) -> np.ndarray:
        out = np.asarray(out)
        n = len(self.channel_names or ())
        if out.ndim != 3 or out.shape[0] != n:
            raise SegError(f"postprocess {self.name}: expected maps ({n}, H, W) "
                           f"[{', '.join(self.channel_names or ())}], got shape {out.shape}")
        for key, v in (("threshold", threshold), ("seed_threshold", second)):
            if not 0 <= v <= 1:
                raise SegError(f"postprocess.{key}: must be in [0, 1], got {v}")
        return out


def check_name(name: str) -> str:
    """``name`` if it can be a target's registry key (a non-empty identifier)."""
    if not isinstance(name, str) or not name.isidentifier():
        raise SegError(f"target name {name!r}: must be a non-empty identifier")
    return name


def configured(target: Target, **settings) -> Target:
    """``target`` with its dataclass fields ``settings`` replaced (a helper for :meth:`Target.configure`)."""
    return replace(target, **settings)
