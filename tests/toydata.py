"""Test fixtures: small canonical datasets and configs for training tests and ``bench/train.py``.

Not part of the ``seg`` package: tests import it as ``from toydata import ...`` (pytest puts
``tests/`` on ``sys.path`` because it holds ``conftest.py`` and no ``__init__.py``); benches insert
``<repo>/tests`` into ``sys.path`` first.

- :func:`write_blob_dataset`: a seeded synthetic dataset in the canonical form (``kind: isbi2012``
  conventions: 0 = membrane/background, 1 = interior): bright disks on a noisy background, with
  instances, semantic maps and border-weight maps (``seg.transforms.weights.border_weight_map`` with
  the schema's default w0 and the plan's fixed fallback sigma, 5 px).
- :func:`write_isbi_subset`: the first slices of the real ISBI 2012 stacks, cropped, in the canonical
  form with weight maps (for one real-data test and ``bench/train.py``).
- :func:`tiny_config`: a validated config with one tiny classic U-Net variant for such a dataset.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np

from seg.config import section_defaults
from seg.settings import validate_config


def _write_weights(ds_dir: Path, ids_instances: list[tuple[str, np.ndarray]]) -> None:
    from seg.io import write_tiff
    from seg.transforms.weights import border_weight_map

    from seg.settings.plan import FALLBACK

    w = section_defaults("weights")  # sigma: null in the schema (from the plan); the fixed fallback here
    for sid, inst in ids_instances:
        write_tiff(ds_dir / "weights" / f"{sid}.tif",
                   border_weight_map(inst, w0=w["w0"], sigma=FALLBACK["weights.sigma"]).astype(np.float32))


def write_blob_dataset(ds_dir: str | os.PathLike, *, seed: int = 0, size: int = 64,
                       splits: tuple[int, int, int] = (4, 1, 1)) -> Path:
    """Write ``splits`` = (train, val, test) slices of ``size`` x ``size`` blobs to ``ds_dir``.

    Returns:
        ``ds_dir`` as a Path. Images uint8 (H, W); instances int32; semantic uint8 {0, 1}.
    """
    from scipy import ndimage

    from seg.data.canonical import canonical_writer
    from seg.kinds import get_kind

    ds_dir = Path(ds_dir)
    rng = np.random.default_rng(seed)
    insts = []
    with canonical_writer(ds_dir, name=ds_dir.name, kind=get_kind("isbi2012"), source={"toy": "blobs", "seed": seed}) as w:
        k = 0
        for split, n in zip(("train", "val", "test"), splits):
            for _ in range(n):
                yy, xx = np.mgrid[:size, :size]
                sem = np.zeros((size, size), bool)
                for _ in range(max(2, size // 12)):
                    cy, cx = rng.uniform(0, size, 2)
                    r = rng.uniform(size / 14, size / 7)
                    sem |= (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
                inst, _ = ndimage.label(sem)
                img = np.clip(60 + 120 * sem + rng.normal(0, 20, sem.shape), 0, 255).astype(np.uint8)
                sid = f"train_{k:02d}"
                w.add(sid, img, split=split, frame=k, instances=inst.astype(np.int32), semantic=sem.astype(np.uint8))
                insts.append((sid, inst.astype(np.int32)))
                k += 1
    _write_weights(ds_dir, insts)
    return ds_dir


def write_isbi_subset(ds_dir: str | os.PathLike, train_stack: np.ndarray, label_stack: np.ndarray, *,
                      splits: tuple[int, int, int] = (3, 1, 0), crop: int | None = None) -> Path:
    """Canonical ISBI slices 0.. of the real stacks (train (Z,H,W) uint8, labels {0,255}), optionally
    cropped to the top-left ``crop`` x ``crop``, with instances (4-connected interior components),
    semantic maps and weight maps."""
    from skimage.measure import label

    from seg.data.canonical import canonical_writer
    from seg.kinds import get_kind

    ds_dir = Path(ds_dir)
    insts = []
    with canonical_writer(ds_dir, name=ds_dir.name, kind=get_kind("isbi2012"), source={"subset_of": "isbi2012"}) as w:
        k = 0
        for split, n in zip(("train", "val", "test"), splits):
            for _ in range(n):
                img, lab = np.asarray(train_stack[k]), np.asarray(label_stack[k]) > 0
                if crop:
                    img, lab = img[:crop, :crop], lab[:crop, :crop]
                inst = label(lab, connectivity=1).astype(np.int32)
                sid = f"train_{k:02d}"
                w.add(sid, img, split=split, frame=k, instances=inst, semantic=lab.astype(np.uint8))
                insts.append((sid, inst))
                k += 1
    _write_weights(ds_dir, insts)
    return ds_dir


def tiny_config(dataset: str = "toy", *, train: dict | None = None, params: dict | None = None,
                model: str = "unet", augment: dict | None = None, seed: int = 0) -> dict:
    """A validated config: one dataset (kind isbi2012) and one variant ``tiny`` (a 2-level classic
    U-Net with 4 base channels unless ``model``/``params`` say otherwise), short training budget,
    in fp32 (``amp: none``: exact and the same on every CPU kind; tests of the bf16 branch ask for it).
    Everything not set here takes the schema defaults."""
    tr = {
        "iterations": 6, "batch_size": 2, "patch_size": 32, "val_every": 3, "checkpoint_every": 2,
        "log_every": 1, "num_workers": 0, "device": "cpu", "amp": "none",
        "optimizer": {"name": "adam", "lr": 0.01}, "schedule": {"name": "cosine", "warmup": 2},
    }
    tr.update(copy.deepcopy(train or {}))
    cfg = {
        "seed": seed,
        "datasets": {dataset: {"kind": "isbi2012"}},
        "variants": {"tiny": {"model": model, "params": params if params is not None else
                              {"base_channels": 4, "depth": 2, "padding": "same"}}},
        "train": tr,
        "augment": augment if augment is not None else {"elastic": {"sigma": 2.0}},
        "inference": {"tile": 32, "device": "cpu", "amp": "none"},
    }
    return validate_config(cfg)
