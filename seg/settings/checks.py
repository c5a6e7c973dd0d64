"""The config checks that depend on what is registered: dataset kinds (:mod:`seg.kinds`) and targets
(:mod:`seg.targets`), on top of :func:`seg.config.check_structure`. :func:`load_config` is what every
``seg`` command reads a config with."""

from __future__ import annotations

import os

from seg.config import check_structure, read_config, variant_datasets
from seg.errors import SegError
from seg.kinds import find_kind, get_kind, kind_names
from seg.targets import check_targets


def check_registered(cfg: dict, *, where: str = "config") -> dict:
    """Check a structurally valid config (:func:`seg.config.check_structure`) against the registries:
    every dataset's kind is registered (the schema leaves it open, so that a kind registered by a
    plugin validates without editing it), every variant's target is registered, fits the datasets it
    runs on and gets only its own settings, and self-training students run on instance datasets.

    Raises:
        SegError: naming the first offending key and what is allowed.
    """
    for name, entry in cfg["datasets"].items():
        if find_kind(entry["kind"]) is None:
            raise SegError(f"{where}: datasets.{name}.kind: {entry['kind']!r} is not one of {kind_names()}")

    def flat(variant: str) -> list[str]:
        return [d for d in variant_datasets(cfg, variant) if not get_kind(cfg["datasets"][d]["kind"]).instances]

    errors = check_targets(cfg["variants"], flat)
    if errors:
        raise SegError(f"{where}: {errors[0]}")
    for name, var in cfg["variants"].items():
        if var.get("self_training") and flat(name):
            raise SegError(f"{where}: variants.{name}.self_training: needs instance datasets; "
                           f"{', '.join(flat(name))} have none (set the variant's datasets)")
    return cfg


def validate_config(cfg: dict, *, where: str = "config", schema: dict | None = None) -> dict:
    """Validate ``cfg`` in place (schema, defaults, references: :func:`seg.config.check_structure`;
    kinds and targets: :func:`check_registered`); returns it."""
    return check_registered(check_structure(cfg, where=where, schema=schema), where=where)


def load_config(path: str | os.PathLike) -> dict:
    """Read a YAML config file, validate it and fill defaults (:func:`validate_config`)."""
    return check_registered(read_config(path), where=str(path))
