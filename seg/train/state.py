"""A training run's identity and completion state (light: no torch import, so a finished run's
``seg train`` returns at once).

The identity of a run is ``seg.settings.run_config_hash`` of the config with the command-line budget
override folded in, plus the seed. A run is complete when ``train_summary.json`` exists with the
same identity beside ``checkpoints/last.pt``; then ``seg train`` is a no-op.
"""

from __future__ import annotations

import copy
from pathlib import Path

from seg.config import dataset_entry
from seg.errors import SegError
from seg.io import read_json
from seg.settings import run_config_hash


def effective_config(cfg: dict, variant: str, *, iterations: int | None = None) -> dict:
    """A copy of ``cfg`` with ``--iterations`` folded into the variant's train section (sets
    ``iterations``, clears ``epochs``), so the override is part of the config hash. The device is a
    runtime choice, not part of the hash."""
    if variant not in cfg["variants"]:
        raise SegError(f"config: unknown variant {variant!r} (configured: {', '.join(cfg['variants'])})")
    cfg = copy.deepcopy(cfg)
    if iterations is not None:
        if iterations < 1:
            raise SegError(f"--iterations: must be >= 1, got {iterations}")
        var = cfg["variants"][variant]
        tr = var.setdefault("train", {})
        tr["iterations"], tr["epochs"] = int(iterations), None
        for over in (var.get("per_dataset") or {}).values():  # the command line wins over these too
            for key in ("iterations", "epochs"):
                (over or {}).get("train", {}).pop(key, None)
    return cfg


def run_identity(cfg: dict, dataset: str, variant: str) -> tuple[str, int]:
    """(config hash, seed) of an effective config."""
    dataset_entry(cfg, dataset)  # SegError listing the configured datasets if unknown
    return run_config_hash(cfg, dataset, variant), int(cfg.get("seed", 0))


def completed_summary(cfg: dict, dataset: str, variant: str, out_dir: str | Path) -> dict | None:
    """The run's ``train_summary.json`` if it is complete for this effective config, else None."""
    out = Path(out_dir)
    path = out / "train_summary.json"
    if not (path.is_file() and (out / "checkpoints" / "last.pt").is_file()):
        return None
    chash, seed = run_identity(cfg, dataset, variant)
    try:
        done = read_json(path)
    except SegError:
        return None
    return done if done.get("config_hash") == chash and done.get("seed") == seed else None
