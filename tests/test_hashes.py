"""The built-in configs' identities are pinned: every workflow step's hash and every run's config hash
of configs/config.yaml, quick.yaml and paper.yaml (tests/step_hashes.json, 182 hashes). A change of
code that moves one makes Snakemake rerun that step (and what follows) for every user, and the
leaderboard stop merging old and new rows: move one only on purpose, say why, and regenerate the
file with the test's ``write=True`` branch."""

from __future__ import annotations

import json
from pathlib import Path

from seg.config import variant_datasets
from seg.settings import load_config, run_config_hash, step_hash

ROOT = Path(__file__).resolve().parents[1]
PINNED = Path(__file__).with_name("step_hashes.json")


def hashes(name: str) -> dict[str, str]:
    cfg = load_config(ROOT / "configs" / name)
    out = {f"{step}/{d}": step_hash(cfg, step, d) for d in cfg["datasets"]
           for step in ("ingest", "weights", "augment", "pretrain")}
    for v, var in cfg["variants"].items():
        for d in variant_datasets(cfg, v):
            steps = ("train", "predict", "calibrate", "score") + (("pseudolabel",) if var.get("self_training") else ())
            out.update({f"{step}/{d}/{v}": step_hash(cfg, step, d, v) for step in steps})
            out[f"run/{d}/{v}"] = run_config_hash(cfg, d, v)
    return out


def test_builtin_config_hashes_are_unchanged(write: bool = False):
    now = {name: hashes(name) for name in ("config.yaml", "quick.yaml", "paper.yaml")}
    if write:
        PINNED.write_text(json.dumps(now, indent=1, sort_keys=True))
    pinned = json.loads(PINNED.read_text())
    moved = [f"{name}: {k}" for name in pinned for k in pinned[name] if now[name].get(k) != pinned[name][k]]
    assert not moved and now.keys() == pinned.keys() and all(now[n].keys() == pinned[n].keys() for n in now), moved
