"""Loading and validating the workflow config (``configs/*.yaml`` against ``configs/schema.yaml``).

The Snakefile validates with ``snakemake.utils.validate`` (the same schema); ``seg`` commands call
:func:`seg.settings.load_config`, which reads the file with :func:`read_config` (defaults filled from
the schema exactly as Snakemake does, and the checks of references a JSON schema cannot express:
variant overrides, dataset names, teachers) and then checks what depends on the registered dataset
kinds and targets (:mod:`seg.settings.checks`). Every error is a :class:`SegError` naming the key
path, e.g. ``config: train.optimiser: unknown key (allowed: ...)``.

Floors: this module knows the schema and the config's structure only (no dataset kind, target or
plan); library defaults live in ``configs/schema.yaml`` and reach code only through this module.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from seg.errors import SegError
from seg.io import atomic_path

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "configs" / "schema.yaml"
OVERRIDABLE = ("train", "augment", "inference")


def load_schema(path: str | os.PathLike = SCHEMA_PATH) -> dict:
    """The JSON schema (a fresh dict) read from the YAML file ``path``."""
    with open(path) as f:
        return yaml.safe_load(f)


@lru_cache(maxsize=1)
def _project_schema() -> dict:
    """configs/schema.yaml, read once per process (callers must not change it)."""
    return load_schema()


def _validator(schema: dict, *, set_default: bool):
    """A Draft 2020-12 validator that, like snakemake.utils.validate, fills in defaults."""
    base = jsonschema.Draft202012Validator
    if set_default:
        props_validator = base.VALIDATORS["properties"]

        def set_defaults(validator, properties, instance, schema_):
            if isinstance(instance, dict):
                for prop, sub in properties.items():
                    if "default" in sub and prop not in instance:
                        instance[prop] = copy.deepcopy(sub["default"])
            yield from props_validator(validator, properties, instance, schema_)

        base = jsonschema.validators.extend(base, {"properties": set_defaults})
    return base(schema)


@lru_cache(maxsize=None)
def _section_validator(section: str):
    """A defaults-filling validator of the top-level section ``section`` (``train``, ``inference``, ...)."""
    schema = _project_schema()
    sub = schema["properties"].get(section)
    if not isinstance(sub, dict) or "$ref" not in sub:
        sections = sorted(k for k, v in schema["properties"].items() if isinstance(v, dict) and "$ref" in v)
        raise SegError(f"config: {section!r} is not a section with defaults (sections: {', '.join(sections)})")
    return _validator({**schema["$defs"][sub["$ref"].removeprefix("#/$defs/")], "$defs": schema["$defs"]},
                      set_default=True)


def section_defaults(section: str) -> dict:
    """The schema's defaults of the top-level config section ``section`` (``train``, ``augment``,
    ``inference``, ``weights``, ``postprocess``, ...), nested sections filled; a fresh dict."""
    return complete_section(section, {})


def complete_section(section: str, values: dict | None) -> dict:
    """``values`` (a partial ``section`` of the config) over the schema defaults of that section,
    validated; a new dict (``values`` is not changed).

    Raises:
        SegError: an unknown key or a bad value, named by its path, e.g.
            ``config: augment.elastic.sigmaa: unknown key (allowed: ...)``.
    """
    out = copy.deepcopy(dict(values or {}))
    errors = sorted(_section_validator(section).iter_errors(out), key=lambda e: list(e.absolute_path))
    if errors:
        msg = _format_error(errors[0], "config")  # "config: <path in the section>: <problem>"
        top = "config: (top level)"
        raise SegError(msg.replace(top, f"config: {section}", 1) if msg.startswith(top)
                       else msg.replace("config: ", f"config: {section}.", 1))
    return out


def _format_error(err, where: str) -> str:
    path = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed)) if isinstance(err.instance, dict) else []
        keys = ", ".join(f"{path}.{k}" if path != "(top level)" else k for k in extra)
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"{where}: {keys}: unknown key{hint}"
    if err.validator == "enum":
        return f"{where}: {path}: {err.instance!r} is not one of {err.validator_value}"
    return f"{where}: {path}: {err.message}"


def check_structure(cfg: dict, *, where: str = "config", schema: dict | None = None) -> dict:
    """Validate ``cfg`` in place against the schema, fill defaults, and check its cross references
    (dataset overrides, variant overrides, dataset names, self-training teachers). What depends on
    the registered kinds and targets is :func:`seg.settings.checks.validate_config`'s.

    Returns:
        The same dict, with defaults filled in.

    Raises:
        SegError: naming the first offending key and what is allowed.
    """
    schema = schema or load_schema()
    v = _validator(schema, set_default=True)
    errors = sorted(v.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        raise SegError(_format_error(errors[0], where))
    # Dataset overrides of the postprocess section must be valid keys of that section.
    pp_check = _validator({**schema["$defs"]["postprocess"], "$defs": schema["$defs"]}, set_default=False)
    for name, entry in cfg["datasets"].items():
        errs = list(pp_check.iter_errors(_deep_merge(cfg["postprocess"], entry.get("postprocess") or {})))
        if errs:
            msg = _format_error(errs[0], where)
            raise SegError(msg.replace(f"{where}: ", f"{where}: datasets.{name}.postprocess.", 1))
    # Variant overrides must be valid keys of the section they override.
    for name, var in cfg["variants"].items():
        for ds in var.get("per_dataset") or {}:
            if ds not in cfg["datasets"]:
                raise SegError(
                    f"{where}: variants.{name}.per_dataset: unknown dataset {ds!r} "
                    f"(configured: {', '.join(cfg['datasets'])})"
                )
        for section in OVERRIDABLE:
            check = _validator({**schema["$defs"][section], "$defs": schema["$defs"]}, set_default=False)
            # the variant's own overrides, then each dataset's on top of them
            candidates = [(f"variants.{name}.{section}", variant_section(cfg, name, section))] + [
                (f"variants.{name}.per_dataset.{ds}.{section}", variant_section(cfg, name, section, ds))
                for ds in var.get("per_dataset") or {}
            ]
            for key, merged in candidates:
                errs = list(check.iter_errors(merged))
                if errs:
                    msg = _format_error(errs[0], where)
                    raise SegError(msg.replace(f"{where}: ", f"{where}: {key}.", 1))
        for ds in var.get("datasets") or []:
            if ds not in cfg["datasets"]:
                raise SegError(
                    f"{where}: variants.{name}.datasets: unknown dataset {ds!r} "
                    f"(configured: {', '.join(cfg['datasets'])})"
                )
    # Self-training: a teacher that exists, trains on every dataset of the student and is no student itself.
    for name, var in cfg["variants"].items():
        st = var.get("self_training")
        if not st:
            continue
        teacher = st["teacher"]
        key = f"{where}: variants.{name}.self_training.teacher"
        if teacher not in cfg["variants"] or teacher == name:
            raise SegError(f"{key}: {teacher!r} is not another configured variant "
                           f"(configured: {', '.join(cfg['variants'])})")
        if cfg["variants"][teacher].get("self_training"):
            raise SegError(f"{key}: {teacher!r} has self_training of its own; a teacher trains on the labels only")
        missing = sorted(set(variant_datasets(cfg, name)) - set(variant_datasets(cfg, teacher)))
        if missing:
            raise SegError(f"{key}: {teacher!r} does not run on {', '.join(missing)} (its datasets)")
    return cfg


def read_config(path: str | os.PathLike) -> dict:
    """Read a YAML config file, validate its structure and fill defaults (:func:`check_structure`;
    :func:`seg.settings.load_config` adds the checks of kinds and targets)."""
    p = Path(path)
    if not p.is_file():
        raise SegError(f"{p}: config file not found")
    try:
        cfg = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise SegError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise SegError(f"{p}: the config must be a mapping of keys to values")
    return check_structure(cfg, where=str(p))


def write_resolved_config(cfg: dict, path: str | os.PathLike) -> bool:
    """Write the validated config (defaults filled) as key-sorted YAML to ``path``, atomically, unless
    the file already holds exactly that text. Returns True when it wrote."""
    text = yaml.safe_dump(cfg, sort_keys=True)
    p = Path(path)
    if p.is_file() and p.read_text() == text:
        return False
    with atomic_path(p) as tmp:
        tmp.write_text(text)
    return True


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def variant_section(cfg: dict, variant: str, section: str, dataset: str | None = None) -> dict:
    """The ``section`` (train, augment or inference) settings of ``variant``: the top-level section,
    then the variant's overrides, then (given ``dataset``) the variant's ``per_dataset`` overrides."""
    if variant not in cfg["variants"]:
        raise SegError(f"config: unknown variant {variant!r} (configured: {', '.join(cfg['variants'])})")
    var = cfg["variants"][variant]
    out = _deep_merge(cfg[section], var.get(section, {}))
    if dataset is not None:
        out = _deep_merge(out, ((var.get("per_dataset") or {}).get(dataset) or {}).get(section, {}))
    return out


def variant_datasets(cfg: dict, variant: str) -> list[str]:
    """Enabled datasets the variant runs on, in config order."""
    wanted = cfg["variants"][variant].get("datasets")
    return [d for d, e in cfg["datasets"].items() if e.get("enabled", True) and (wanted is None or d in wanted)]


def dataset_entry(cfg: dict, dataset: str) -> dict:
    """The config entry of ``dataset`` (SegError listing the configured names if unknown)."""
    if dataset not in cfg["datasets"]:
        raise SegError(f"config: unknown dataset {dataset!r} (configured: {', '.join(cfg['datasets'])})")
    return cfg["datasets"][dataset]


def dataset_dir(cfg: dict, dataset: str, data_dir: str | os.PathLike | None = None) -> Path:
    """The canonical folder ``<data_dir>/<dataset>`` of a configured dataset (``data_dir`` default:
    the config's ``data_dir``); SegError if the dataset is not configured."""
    dataset_entry(cfg, dataset)
    return Path(data_dir if data_dir is not None else cfg.get("data_dir", "data")) / dataset


def postprocess_section(cfg: dict, dataset: str) -> dict:
    """The ``postprocess`` settings for ``dataset``: the top-level section, then the dataset's own
    ``postprocess`` overrides (e.g. a smaller ``min_size`` for a dataset of small nuclei), as
    configured: ``min_size``, ``h`` and ``search`` may be None (= from the plan); consumers take the
    resolved values from :meth:`seg.settings.plan.DataPlan.postprocess`."""
    own = dataset_entry(cfg, dataset).get("postprocess") or {}
    return _deep_merge(cfg["postprocess"], own)


def config_hash(obj: Any) -> str:
    """A 12-hex-digit hash of any JSON-serialisable object (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


