"""Loading and validating the workflow config (``configs/*.yaml`` against ``configs/schema.yaml``).

The Snakefile validates with ``snakemake.utils.validate`` (the same schema); ``seg`` commands call
:func:`load_config`, which fills defaults from the schema exactly as Snakemake does and adds the
checks a JSON schema cannot express (variant overrides, dataset references). Every error is a
:class:`SegError` naming the key path, e.g. ``config: train.optimiser: unknown key (allowed: ...)``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from seg.errors import SegError

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "configs" / "schema.yaml"
_OVERRIDABLE = ("train", "augment", "inference")


def load_schema(path: str | os.PathLike = SCHEMA_PATH) -> dict:
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


def _validator(schema: dict, *, set_default: bool):
    """A Draft 2020-12 validator that, like snakemake.utils.validate, fills in defaults."""
    import jsonschema

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


def validate_config(cfg: dict, *, where: str = "config", schema: dict | None = None) -> dict:
    """Validate ``cfg`` in place against the schema, fill defaults, and check cross references.

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
    # Variant overrides must be valid keys of the section they override.
    for name, var in cfg["variants"].items():
        for ds in var.get("per_dataset") or {}:
            if ds not in cfg["datasets"]:
                raise SegError(
                    f"{where}: variants.{name}.per_dataset: unknown dataset {ds!r} "
                    f"(configured: {', '.join(cfg['datasets'])})"
                )
        for section in _OVERRIDABLE:
            check = _validator({**schema["$defs"][section], "$defs": schema["$defs"]}, set_default=False)
            own = _deep_merge(cfg[section], var.get(section, {}))
            # the variant's own overrides, then each dataset's on top of them
            candidates = [(f"variants.{name}.{section}", own)] + [
                (f"variants.{name}.per_dataset.{ds}.{section}", _deep_merge(own, over.get(section, {})))
                for ds, over in (var.get("per_dataset") or {}).items()
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
    return cfg


def load_config(path: str | os.PathLike) -> dict:
    """Read a YAML config file, validate it and fill defaults (see :func:`validate_config`)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SegError(f"{p}: config file not found")
    try:
        cfg = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise SegError(f"{p}: not valid YAML ({e})") from None
    if not isinstance(cfg, dict):
        raise SegError(f"{p}: the config must be a mapping of keys to values")
    return validate_config(cfg, where=str(p))


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


def config_hash(obj: Any) -> str:
    """A 12-hex-digit hash of any JSON-serialisable object (key order does not matter)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def run_config_hash(cfg: dict, dataset: str, variant: str) -> str:
    """Hash of everything that determines a (dataset, variant) result: used for rerun triggers and
    to merge leaderboard rows of the same setting across runs (the seed is excluded so that runs with
    different seeds merge into mean +- spread)."""
    relevant = {
        "dataset": cfg["datasets"][dataset],
        "variant": {k: v for k, v in cfg["variants"][variant].items() if k not in ("label", "per_dataset")},
        **{s: variant_section(cfg, variant, s, dataset) for s in _OVERRIDABLE},
        "weights": cfg["weights"],
        "pretrain": cfg["pretrain"],
        "postprocess": cfg["postprocess"],
    }
    return config_hash(relevant)
