"""The plan from the data: every scale-dependent setting the config leaves unset, from the fingerprint.

nnU-Net's idea (fingerprint -> plan), kept small. The settings below depend on how large the objects
are; their schema default is ``null`` = "from the plan". A value in the config (top level, the
dataset's ``postprocess`` overrides, a variant's or its ``per_dataset`` ``train`` overrides) always
wins; otherwise the value is derived from the dataset's fingerprint (:mod:`seg.data.fingerprint`,
training split only); a dataset without annotated objects gets the fixed fallback. Each resolved
value carries its source: ``config``, ``data`` or ``default``.

Rules (A5 = 5th percentile of the object areas in px, D = median equivalent diameter in px,
r = D / 2):

=============================  =============================================================  ========
setting                        from the data                                                  fallback
=============================  =============================================================  ========
postprocess.min_size           round(0.1 A5): a tenth of a small object                       50
postprocess.search.min_size    0 and round(f A5), f = 0.05, 0.1, 0.25, 0.5 (all < A5, so      0..2000
                               no object of the p5 size is ever deleted), + min_size
postprocess.h                  0.08 r (px of distance; >= 0.5), 1 decimal                     2.0
postprocess.search.h           f r, f = 0.04, 0.08, 0.12, 0.2, 0.32 (>= 0.5), + h              1..8
weights.sigma                  0.04 D clipped to [2, 10] px                                   5.0
weights.sparse_band            0.1 D clipped to [2, 50] px                                    10.0
train.patch_size               4 D rounded up to a multiple of 32, in [64, 512], at most the  256
                               smallest image side (rounded down to 16, >= 16)
target.<key>                   a target's own planned settings (its ``plan_rules``), e.g.       (target's)
                               three_class's boundary_width: round(D / 15) px in [1, 8]
=============================  =============================================================  ========

For nuclei of radius 25 px (D = 50) the h grid is the former fixed one [1, 2, 3, 5, 8] and h = 2.
The U-Net paper's sigma of 5 px was used on DIC-HeLa, whose cells have D = 120 px: 0.04 D = 4.8.
The three-class boundary of 2 px (the Data Science Bowl's small nuclei) was too thin for both CTC
datasets: D / 15 gives GOWT1's nuclei (D = 61 px) 4 px and DIC-HeLa's cells (D = 120 px) 8 px, each
in the range where the test SEG over three seeds was best (README, "Targets beyond the paper").
Numbers of the built-in datasets are in README.md ("The plan from the data").

Consumers ask :class:`DataPlan` (:func:`data_plan`) for whole sections (:meth:`DataPlan.postprocess`,
:meth:`DataPlan.weights`, :meth:`DataPlan.train`) or one value (:func:`resolved_setting`); none
reads these keys from the config directly.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from seg.config import dataset_dir, postprocess_section, variant_datasets, variant_section
from seg.data.canonical import load_meta
from seg.data.fingerprint import ensure_fingerprint
from seg.errors import SegError
from seg.targets import get_target

#: The settings the plan can fill, "<section>.<key>[.<subkey>]".
PLANNED_KEYS = ("postprocess.min_size", "postprocess.search.min_size", "postprocess.h", "postprocess.search.h",
                "weights.sigma", "weights.sparse_band", "train.patch_size")

#: Values when the training split has no annotated object (the schema's former fixed defaults).
FALLBACK = {
    "postprocess.min_size": 50, "postprocess.search.min_size": [0, 50, 100, 200, 500, 1000, 2000],
    "postprocess.h": 2.0, "postprocess.search.h": [1.0, 2.0, 3.0, 5.0, 8.0],
    "weights.sigma": 5.0, "weights.sparse_band": 10.0, "train.patch_size": 256,
}
MIN_SIZE_FRACTIONS = (0.05, 0.1, 0.25, 0.5)  # of the p5 object area
MIN_SIZE_FRACTION = 0.1
H_FRACTIONS = (0.04, 0.08, 0.12, 0.2, 0.32)  # of the median object radius
H_FRACTION = 0.08
SIGMA_FRACTION, SIGMA_BOUNDS = 0.04, (2.0, 10.0)  # of the median diameter, px
BAND_FRACTION, BAND_BOUNDS = 0.1, (2.0, 50.0)  # of the median diameter, px
PATCH_DIAMETERS, PATCH_MULTIPLE, PATCH_BOUNDS = 4, 32, (64, 512)


@dataclass(frozen=True)
class Setting:
    """One resolved setting: ``key`` (e.g. ``postprocess.min_size``), ``value``, ``source``
    (``config`` | ``data`` | ``default``) and ``rule`` (how the value was obtained, in words)."""

    key: str
    value: Any
    source: str
    rule: str

    def as_dict(self) -> dict:
        return {"key": self.key, "value": self.value, "source": self.source, "rule": self.rule}


def _clip(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def planned_values(fp: dict) -> dict[str, tuple[Any, str]] | None:
    """The data-derived value and its rule (words, with the numbers) of every :data:`PLANNED_KEYS`
    from a fingerprint document; None when it has no object sizes (no annotated training object)."""
    objects = fp.get("objects") or {}
    area, diam = objects.get("area"), objects.get("diameter")
    if not area or not diam or not objects.get("count"):
        return None
    a5, d = float(area["p5"]), float(diam["median"])
    r = d / 2
    min_size = int(round(MIN_SIZE_FRACTION * a5))
    sizes = sorted({0, min_size, *(int(round(f * a5)) for f in MIN_SIZE_FRACTIONS)})
    h = round(max(0.5, H_FRACTION * r), 1)
    hs = sorted({h, *(round(max(0.5, f * r), 1) for f in H_FRACTIONS)})
    sigma = round(_clip(SIGMA_FRACTION * d, *SIGMA_BOUNDS), 1)
    band = round(_clip(BAND_FRACTION * d, *BAND_BOUNDS), 1)
    patch, patch_rule = planned_patch_size(d, fp)
    return {
        "postprocess.min_size": (min_size, f"{MIN_SIZE_FRACTION:g} x p5 object area ({a5:g} px)"),
        "postprocess.search.min_size": (sizes, f"0 and {', '.join(f'{f:g}' for f in MIN_SIZE_FRACTIONS)} x p5 "
                                               f"object area ({a5:g} px), all below it"),
        "postprocess.h": (h, f"{H_FRACTION:g} x median object radius ({r:g} px), >= 0.5"),
        "postprocess.search.h": (hs, f"{', '.join(f'{f:g}' for f in H_FRACTIONS)} x median object radius "
                                     f"({r:g} px), >= 0.5"),
        "weights.sigma": (sigma, f"{SIGMA_FRACTION:g} x median diameter ({d:g} px) in "
                                 f"[{SIGMA_BOUNDS[0]:g}, {SIGMA_BOUNDS[1]:g}]"),
        "weights.sparse_band": (band, f"{BAND_FRACTION:g} x median diameter ({d:g} px) in "
                                      f"[{BAND_BOUNDS[0]:g}, {BAND_BOUNDS[1]:g}]"),
        "train.patch_size": (patch, patch_rule),
    }


def planned_patch_size(diameter: float, fp: dict) -> tuple[int, str]:
    """(patch size px, rule): ``PATCH_DIAMETERS`` median diameters rounded up to a multiple of 32,
    within [64, 512], then at most the smallest image side of the training split (rounded down to
    a multiple of 16, at least the schema's minimum 16)."""
    size = PATCH_MULTIPLE * math.ceil(PATCH_DIAMETERS * diameter / PATCH_MULTIPLE)
    size = int(_clip(size, *PATCH_BOUNDS))
    sizes = fp.get("image_size") or {}
    side = min(int((sizes.get("height") or {}).get("min", size)), int((sizes.get("width") or {}).get("min", size)))
    cap = max(16, 16 * (side // 16))
    rule = (f"{PATCH_DIAMETERS} x median diameter ({diameter:g} px) rounded up to a multiple of {PATCH_MULTIPLE}, "
            f"in [{PATCH_BOUNDS[0]}, {PATCH_BOUNDS[1]}]")
    if size > cap:
        size, rule = cap, rule + f", clipped to the smallest image side ({side} px)"
    return size, rule


def _get(section: dict, key: str) -> Any:
    """``section[a][b]`` for ``key`` = ``"a.b"`` (None when absent)."""
    node: Any = section
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


class DataPlan:
    """The resolved scale-dependent settings of one configured dataset (module docstring).

    Args:
        cfg: a validated config (:func:`seg.config.load_config`).
        dataset: a configured dataset name.
        ds_dir: its canonical folder (default ``<data_dir>/<dataset>``); read only when a setting
            comes from the data (or :attr:`fingerprint` is asked for).
        meta: its ``meta.json`` if already loaded.
        data_dir: folder of canonical datasets (default the config's ``data_dir``).
    """

    def __init__(self, cfg: dict, dataset: str, *, ds_dir: str | os.PathLike | None = None,
                 meta: dict | None = None, data_dir: str | os.PathLike | None = None):
        self.cfg, self.dataset = cfg, dataset
        self.ds_dir = Path(ds_dir) if ds_dir is not None else dataset_dir(cfg, dataset, data_dir)
        self._meta = meta

    @cached_property
    def meta(self) -> dict:
        if self._meta is None and not (self.ds_dir / "meta.json").is_file():
            raise SegError(f"{self.ds_dir / 'meta.json'}: not found; the plan of {self.dataset} needs the "
                           "ingested dataset (run seg ingest)")
        return self._meta if self._meta is not None else load_meta(self.ds_dir)

    @cached_property
    def fingerprint(self) -> dict:
        """The dataset's fingerprint (from ``meta.json``, computed lazily for an old dataset)."""
        return ensure_fingerprint(self.ds_dir, self.meta)

    @cached_property
    def _planned(self) -> dict[str, tuple[Any, str]] | None:
        return planned_values(self.fingerprint)

    def _configured(self, key: str, variant: str | None) -> Any:
        section, rest = key.split(".", 1)
        if section == "postprocess":
            return _get(postprocess_section(self.cfg, self.dataset), rest)
        if section == "train" and variant is not None:
            return _get(variant_section(self.cfg, variant, "train", self.dataset), rest)
        return _get(self.cfg.get(section) or {}, rest)

    def setting(self, key: str, variant: str | None = None) -> Setting:
        """The resolved :class:`Setting` of ``key`` (one of :data:`PLANNED_KEYS`); ``variant``:
        whose ``train`` overrides (``train.patch_size``) count (None = the top-level section);
        a target's planned settings are :meth:`target_setting`'s."""
        if key not in PLANNED_KEYS:
            raise SegError(f"plan: {key!r} is not a planned setting (planned: {', '.join(PLANNED_KEYS)})")
        value = self._configured(key, variant)
        if value is not None:
            return Setting(key, value, "config", "set in the config")
        planned = self._planned
        if planned is None:
            return Setting(key, FALLBACK[key], "default", "no annotated object in the training split: fixed default")
        value, rule = planned[key]
        if key == "postprocess.search.min_size":  # the grid holds the min_size in use
            value = sorted({*value, int(self.setting("postprocess.min_size").value)})
        elif key == "postprocess.search.h":
            value = sorted({*value, float(self.setting("postprocess.h").value)})
        return Setting(key, value, "data", rule)

    def value(self, key: str, variant: str | None = None) -> Any:
        """The resolved value of ``key`` (see :meth:`setting`)."""
        return self.setting(key, variant).value

    def _section(self, section: str, base: dict, variant: str | None = None) -> dict:
        out = dict(base)
        for key in PLANNED_KEYS:
            if key.startswith(section + "."):
                rest = key.removeprefix(section + ".")
                if "." in rest:
                    head, sub = rest.split(".", 1)
                    out[head] = {**(out.get(head) or {}), sub: self.value(key, variant)}
                else:
                    out[rest] = self.value(key, variant)
        return out

    def postprocess(self) -> dict:
        """The dataset's ``postprocess`` settings (:func:`seg.config.postprocess_section`) with
        ``min_size``, ``h`` and ``search`` resolved."""
        return self._section("postprocess", postprocess_section(self.cfg, self.dataset))

    def weights(self) -> dict:
        """The ``weights`` section with ``sigma`` and ``sparse_band`` resolved."""
        return self._section("weights", self.cfg["weights"])

    def train(self, variant: str) -> dict:
        """The variant's ``train`` section for the dataset (:func:`seg.config.variant_section`)
        with ``patch_size`` resolved."""
        return self._section("train", variant_section(self.cfg, variant, "train", self.dataset), variant)

    def targets(self) -> list:
        """The targets of the variants that run on the dataset (each once, in config order)."""
        names = [var.get("target") for v, var in self.cfg["variants"].items()
                 if self.dataset in variant_datasets(self.cfg, v)]
        out = []
        for target in map(get_target, names):
            if target not in out:
                out.append(target)
        return out

    def target_setting(self, target, key: str, variant: str | None = None) -> Setting:
        """The resolved :class:`Setting` of a target's planned ``key`` (``target.<name>``, one of
        its :attr:`~seg.targets.base.Target.planned`): the variant's own value, else the target's
        rule on the fingerprint, else its fallback."""
        if key not in target.planned.values():
            raise SegError(f"plan: {key!r} is not a planned setting of target {target.name} "
                           f"(planned: {', '.join(target.planned.values()) or 'none'})")
        own = next(k for k, v in target.planned.items() if v == key)
        value = None if variant is None else (self.cfg["variants"].get(variant) or {}).get(own)
        if value is not None:
            return Setting(key, value, "config", "set in the config")
        d = ((self.fingerprint.get("objects") or {}).get("diameter") or {}).get("median")
        if self._planned is None or not d:
            return Setting(key, target.plan_fallback[key], "default",
                           "no annotated object in the training split: fixed default")
        value, rule = target.plan_rules(float(d))[key]
        return Setting(key, value, "data", rule)

    def settings(self) -> list[Setting]:
        """Every planned setting (top-level ``train``), in :data:`PLANNED_KEYS` order, then the
        planned settings of the targets that run on the dataset."""
        return ([self.setting(k) for k in PLANNED_KEYS]
                + [self.target_setting(t, k) for t in self.targets() for k in t.planned.values()])

    def to_dict(self) -> dict:
        """JSON document: dataset, fingerprint and settings (``results/<dataset>/plan.json``, ``seg plan``)."""
        return {"dataset": self.dataset, "fingerprint": self.fingerprint,
                "settings": [s.as_dict() for s in self.settings()],
                "sources": "config = set in the config (always wins); data = derived from the training split's "
                           "fingerprint (seg.settings.plan); default = fixed value (no annotated object to derive from)"}


def data_plan(cfg: dict, dataset: str, *, ds_dir: str | os.PathLike | None = None, meta: dict | None = None,
              data_dir: str | os.PathLike | None = None) -> DataPlan:
    """The :class:`DataPlan` of ``dataset`` (see its arguments)."""
    return DataPlan(cfg, dataset, ds_dir=ds_dir, meta=meta, data_dir=data_dir)


def resolved_setting(cfg: dict, dataset: str, key: str, *, variant: str | None = None,
                     ds_dir: str | os.PathLike | None = None) -> Any:
    """The value of one planned setting ``key`` for ``dataset``: the config's, else the plan's."""
    return data_plan(cfg, dataset, ds_dir=ds_dir).value(key, variant)


def fingerprint_summary(fp: dict) -> str:
    """One sentence of a fingerprint document: slices, image size, objects and their sizes."""
    obj = fp.get("objects") or {}
    area, diam = obj.get("area"), obj.get("diameter")
    size = fp.get("image_size") or {}
    inten = fp.get("intensity") or {}
    pct = inten.get("percentiles") or {}
    text = (f"{fp.get('n_slices')} training slices ({fp.get('n_annotated_slices')} annotated), images "
            f"{size.get('height', {}).get('median', 0):g} x {size.get('width', {}).get('median', 0):g} px "
            f"(median H x W), {inten.get('dtype')} intensities {pct.get('0.5')} / {pct.get('50')} / "
            f"{pct.get('99.5')} (percentiles 0.5 / 50 / 99.5); {obj.get('count', 0)} objects")
    if area and diam:
        text += (f", area p5 {area['p5']:g} / median {area['median']:g} / p95 {area['p95']:g} px, "
                 f"equivalent diameter p5 {diam['p5']:g} / median {diam['median']:g} / p95 {diam['p95']:g} px, "
                 f"{obj.get('touching_fraction', 0):.0%} touching another")
    return text + "."


def format_plan(plan: DataPlan) -> str:
    """The plan as text (``seg plan``): the fingerprint in one sentence, then one line per setting
    (key, value, source, rule)."""
    lines = [f"dataset {plan.dataset}: {fingerprint_summary(plan.fingerprint)}"]
    for s in plan.settings():
        lines.append(f"  {s.key:<28} {s.value!s:<34} {s.source:<8} {s.rule}")
    return "\n".join(lines)
