"""seg.targets: the registry of training targets (``fg_border``, ``three_class``, ``distance``), one module each.

A variant's ``target`` (default :data:`DEFAULT`, the U-Net paper's recipe) names what its network
predicts; the target object answers every question that depends on it (the contract is
:class:`seg.targets.base.Target`): channels and activation, training map and loss weights,
post-processing, decoding into instances, calibration grid, planned settings and records.
Callers look it up and ask it::

    from seg.targets import get_target
    target = get_target(variant.get("target"))
    prob, labels = target.decode(out, pp, threshold=t, instances=kind.instances, foreground=kind.foreground)

A new target is one module with a :class:`~seg.targets.base.Target` subclass and one
:func:`register_target` call (below for the built-in ones; anywhere before use for others). The
variant's ``target`` is part of its run identity only when it is not the default, so a config
without it keeps its hashes.

Floors: this package imports :mod:`seg.errors` and :mod:`seg.infer.postprocess` (the algorithms),
nothing above them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from seg.errors import SegError
from seg.targets.base import Target, check_name
from seg.targets.distance import Distance
from seg.targets.fg_border import FgBorder
from seg.targets.three_class import ThreeClass

#: The target of a variant that names none (the U-Net paper's).
DEFAULT = FgBorder.name

_TARGETS: dict[str, Target] = {}


def register_target(target: Target, *, replace: bool = False) -> Target:
    """Add ``target`` (an unconfigured instance) to the registry under ``target.name``; returns it.

    Raises:
        SegError: not a Target, a malformed name, or already registered (unless ``replace``).
    """
    if not isinstance(target, Target):
        raise SegError(f"register_target: {target!r} is not a seg.targets.base.Target")
    name = check_name(target.name)
    if name in _TARGETS and not replace:
        raise SegError(f"target {name!r} is already registered")
    _TARGETS[name] = target
    return target


def unregister_target(name: str) -> Target:
    """Remove target ``name`` from the registry and return it (SegError if unknown)."""
    target = get_target(name)
    del _TARGETS[name]
    return target


def get_target(name: str | None) -> Target:
    """The registered target ``name`` (None = :data:`DEFAULT`), unconfigured.

    Raises:
        SegError: no target of that name; the message lists the registered ones.
    """
    name = DEFAULT if name is None else name
    if name not in _TARGETS:
        raise SegError(f"target: unknown target {name!r} (choices: {', '.join(_TARGETS)})")
    return _TARGETS[name]


def target_names() -> list[str]:
    """Names of the registered targets, in registration order."""
    return list(_TARGETS)


def is_default(name: str | None) -> bool:
    """Whether a variant's ``target`` value means the default target (unset or :data:`DEFAULT`)."""
    return name is None or name == DEFAULT


def target_from_record(record: dict | None) -> Target:
    """The configured target a :meth:`~seg.targets.base.Target.record` describes (a package's or a
    train summary's ``target``; None or a record without a name = the default)."""
    record = record or {}
    target = get_target(record.get("name"))
    # a target's variant keys are its dataclass fields; decoding never needs them, so a record
    # without them (an older package) gives the target as registered
    fields = {k: record[k] for k in target.variant_keys if record.get(k) is not None}
    return replace(target, **fields) if fields else target


def check_targets(variants: dict, fits: Callable[[str], list[str]]) -> list[str]:
    """Config errors of the variants' targets: an unknown target, a target setting
    (:attr:`~seg.targets.base.Target.variant_keys`) on a variant of another target, or an
    instance-only target on a dataset without instances. ``variants``: the config's ``variants``;
    ``fits(variant)``: the variant's datasets whose kind has no instances."""
    errors = []
    own = {k: t.name for t in _TARGETS.values() for k in t.variant_keys}
    for v, var in variants.items():
        name = var.get("target")
        for key, owner in own.items():
            if var.get(key) is not None and (name or DEFAULT) != owner:
                errors.append(f"variants.{v}.{key}: only for target {owner} (the variant's target is {name or DEFAULT})")
        if name is None:
            continue
        if name not in _TARGETS:
            errors.append(f"variants.{v}.target: unknown target {name!r} (choices: {', '.join(_TARGETS)})")
            continue
        errors += _TARGETS[name].check_variant(var, f"variants.{v}")
        if _TARGETS[name].instances_only:
            bad = fits(v)
            if bad:
                errors.append(f"variants.{v}.target: {name} needs instance labels; datasets {', '.join(bad)} have "
                              "none (set the variant's datasets to instance datasets only)")
    return errors


register_target(FgBorder())
register_target(ThreeClass())
register_target(Distance())

__all__ = ["DEFAULT", "Target", "check_targets", "get_target", "is_default", "register_target", "target_from_record",
           "target_names", "unregister_target"]
