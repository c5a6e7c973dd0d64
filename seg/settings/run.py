"""One resolver of a run's settings: config, then the plan from the data, then the target, then calibration.

As nnU-Net's ``PlansManager.get_configuration()`` returns one ``ConfigurationManager`` whose typed
properties every consumer reads, :func:`run_settings` returns one :class:`RunSettings` per
(dataset, variant), and every stage asks it: ``seg weights`` and ``seg augment`` (:attr:`weights`,
:attr:`augment`, :attr:`target`), training and its checkpoint selection (:attr:`train`,
:attr:`val_postprocess`), calibration, prediction, self-training labels, packaging and the report
(:meth:`postprocess`, :meth:`decode`). Nobody merges sections on the way:

1. the config: the top-level section, the dataset's own ``postprocess`` overrides, the variant's
   ``train`` / ``augment`` / ``inference`` overrides and their ``per_dataset`` ones
   (:func:`seg.config.variant_section`, :func:`seg.config.postprocess_section`);
2. the plan (:mod:`seg.settings.plan`): every scale-dependent setting the config leaves unset;
3. the target (:mod:`seg.targets`): its own settings (configured from the variant and the plan)
   and what it does to the post-processing (its method, seed threshold);
4. calibration (:mod:`seg.settings.calibration`): what ``seg calibrate`` chose on the val split.

Library defaults come only from ``configs/schema.yaml`` (through :mod:`seg.config`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from seg.config import complete_section, dataset_entry, variant_section
from seg.errors import SegError
from seg.kinds import get_kind
from seg.settings.calibration import read_calibration
from seg.settings.plan import DataPlan, planned_patch_size
from seg.settings.start import StartPackage, check_fits, start_package
from seg.targets import get_target

#: The post-processing settings a package records and ``seg segment`` applies (besides the threshold).
POSTPROCESS_KEYS = ("method", "min_size", "h", "seed_threshold")


@dataclass(frozen=True)
class Postprocess:
    """The post-processing of one run as applied: ``settings`` (method, threshold, min_size, h,
    seed_threshold, search, calibrate), the decision ``threshold`` in [0, 1], where it came from
    (``source``: ``config`` or the calibration file's path) and what calibration chose
    (``chosen``: the file's settings, empty without one)."""

    settings: dict
    threshold: float
    source: str
    chosen: dict = field(default_factory=dict)

    def recorded(self) -> dict:
        """The settings a package records (:data:`POSTPROCESS_KEYS` present)."""
        return {k: self.settings[k] for k in POSTPROCESS_KEYS if k in self.settings}


class RunSettings:
    """Every setting of one (dataset, variant), resolved once (module docstring).

    Args:
        cfg: a validated config (:func:`seg.settings.load_config`).
        dataset: a configured dataset name.
        variant: a configured variant (None: the dataset-level settings only: :attr:`plan`,
            :attr:`weights`, :attr:`kind`).
        data_dir, ds_dir, meta: where the canonical dataset is (default ``<data_dir>/<dataset>``,
            the config's ``data_dir``) and its ``meta.json`` if already loaded; read only when a
            setting comes from the data.
    """

    def __init__(self, cfg: dict, dataset: str, variant: str | None = None, *,
                 data_dir: str | os.PathLike | None = None, ds_dir: str | os.PathLike | None = None,
                 meta: dict | None = None):
        dataset_entry(cfg, dataset)
        if variant is not None and variant not in cfg["variants"]:
            raise SegError(f"config: unknown variant {variant!r} (configured: {', '.join(cfg['variants'])})")
        self.cfg, self.dataset, self.variant = cfg, dataset, variant
        self.plan = DataPlan(cfg, dataset, ds_dir=ds_dir, meta=meta, data_dir=data_dir)
        self.ds_dir: Path = self.plan.ds_dir

    def _variant(self) -> str:
        if self.variant is None:
            raise SegError(f"settings of {self.dataset}: this setting is a variant's (none given)")
        return self.variant

    @property
    def meta(self) -> dict:
        """The dataset's ``meta.json``."""
        return self.plan.meta

    @cached_property
    def kind(self):
        """The dataset's kind (:class:`seg.kinds.base.Kind`) as ingested (``meta.json``: a folder of
        semantic masks is ``folder-semantic`` under the config's ``folder``)."""
        return get_kind(self.meta["kind"])

    # ------------------------------------------------------------------ training
    @cached_property
    def start(self) -> StartPackage | None:
        """The package the variant's training starts from (``init:``), with the scale the dataset's
        images take for it (:mod:`seg.settings.start`), or None (weights from scratch or ``pretrained``).

        Raises:
            SegError: the package is missing or damaged, its model or target is not the variant's,
                or the resize factor is out of range (naming ``variants.<name>.init``).
        """
        variant = self._variant()
        var = self.cfg["variants"][variant]
        if not var.get("init"):
            return None
        where = f"variants.{variant}.init"
        d = ((self.plan.fingerprint.get("objects") or {}).get("diameter") or {}).get("median")
        start = start_package(var["init"], d, where=where, rescale=var.get("init_rescale", True))
        check_fits(start, var["model"], var.get("params") or {}, var.get("target"), where=where)
        return start

    @property
    def scale(self) -> float:
        """The resize factor of the dataset's images before the network (:mod:`seg.infer.rescale`):
        1, or the :attr:`start` package's."""
        return 1.0 if self.variant is None or self.start is None else self.start.factor

    @cached_property
    def target(self):
        """The variant's target configured for the dataset: its own settings from the variant, else
        the plan (three_class: boundary width and weight); a run that starts from a package: the
        package's target with its settings."""
        variant = self._variant()
        if self.start is not None:
            return self.start.target
        var = self.cfg["variants"][variant]
        target = get_target(var.get("target"))
        return target.configure(var, lambda key: self.plan.target_setting(target, key, variant).value)

    @cached_property
    def channels(self) -> list[str]:
        """The network's output channel names (the target's, of the dataset's classes)."""
        return self.target.channels(self.meta["classes"])

    @cached_property
    def train(self) -> dict:
        """The variant's ``train`` section for the dataset with ``patch_size`` resolved; a run whose
        images are resized (:attr:`scale`) gets the patch size planned for its objects and images as
        the network sees them, unless the config sets one."""
        variant = self._variant()
        section = self.plan.train(variant)
        if self.scale == 1.0 or self.plan.setting("train.patch_size", variant).source != "data":
            return section
        fp = self.plan.fingerprint
        sizes = fp.get("image_size") or {}
        scaled = {"image_size": {k: {"min": max(1, int(round(float(v["min"]) * self.scale)))}
                                 for k, v in sizes.items() if isinstance(v, dict) and "min" in v}}
        d = float(fp["objects"]["diameter"]["median"]) * self.scale
        return {**section, "patch_size": planned_patch_size(d, scaled)[0]}

    @cached_property
    def augment(self) -> dict:
        """The variant's ``augment`` section for the dataset."""
        return variant_section(self.cfg, self._variant(), "augment", self.dataset)

    @cached_property
    def weights(self) -> dict:
        """The ``weights`` section with ``sigma`` and ``sparse_band`` resolved."""
        return self.plan.weights()

    @cached_property
    def inference(self) -> dict:
        """The variant's ``inference`` section for the dataset, complete (schema defaults)."""
        return complete_section("inference", variant_section(self.cfg, self._variant(), "inference", self.dataset))

    # ------------------------------------------------------------------ post-processing
    @cached_property
    def configured_postprocess(self) -> dict:
        """The dataset's ``postprocess`` settings (config, then plan) as the target applies them,
        before calibration."""
        return self.target.postprocess(self.plan.postprocess())

    @cached_property
    def val_postprocess(self) -> dict | None:
        """The post-processing whose val SEG picks the best checkpoint (instance kinds), or None:
        the val mean IoU picks it (:meth:`seg.kinds.base.Kind.validation_postprocess`)."""
        pp = self.kind.validation_postprocess(self.plan.postprocess(), len(self.meta["classes"]))
        return None if pp is None else self.target.postprocess(pp)

    @property
    def calibrate(self) -> bool:
        """Whether ``postprocess.calibrate`` is on for the dataset."""
        return bool(self.plan.postprocess()["calibrate"])

    def postprocess(self, calibration: str | os.PathLike | None = None) -> Postprocess:
        """The post-processing as applied: :attr:`configured_postprocess`, with what the calibration
        file ``calibration`` chose merged over it (threshold; instance kinds also h, min_size,
        seed_threshold). None: the configured threshold.

        Raises:
            SegError: an invalid or missing calibration file (named).
        """
        pp = dict(self.configured_postprocess)
        if calibration is None:
            return Postprocess(pp, float(pp["threshold"]), "config")
        chosen = read_calibration(calibration)
        return Postprocess({**pp, **chosen}, float(chosen["threshold"]), str(calibration),
                           {k: v for k, v in chosen.items() if k != "threshold"})

    def decode(self, out: np.ndarray, post: Postprocess) -> tuple[np.ndarray, np.ndarray]:
        """(probability float32 (H, W), segmentation) of the network's activated maps ``out``
        (channels, H, W): the target's decoding for the dataset's kind (instances or class map)."""
        return self.target.decode(out, post.settings, threshold=post.threshold, instances=self.kind.instances,
                                  foreground=self.kind.foreground)


def run_settings(cfg: dict, dataset: str, variant: str | None = None, *, data_dir: str | os.PathLike | None = None,
                 ds_dir: str | os.PathLike | None = None, meta: dict | None = None) -> RunSettings:
    """The :class:`RunSettings` of ``dataset`` / ``variant`` (see its arguments)."""
    return RunSettings(cfg, dataset, variant, data_dir=data_dir, ds_dir=ds_dir, meta=meta)
