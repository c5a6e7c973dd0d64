"""``seg init``: look at a folder of images and masks and write a workflow config for it.

:func:`inspect_folder` detects the layout and reads every pair with the same checks as ``seg ingest``
(:mod:`seg.data.folder`), guesses what the masks are and proposes the default split;
:func:`summary_lines` says what it found; :func:`init_config` is the config that trains, scores,
packages and exports the folder with the workflow (a ``kind: folder`` dataset entry, one U-Net
variant, the default sections of ``configs/config.yaml`` at CPU budgets); :func:`write_config`
writes it.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from seg.settings.checks import validate_config
from seg.data.folder import check_folder, load_image, read_pair, split_pairs
from seg.errors import SegError
from seg.io import atomic_path

#: Training budgets written by ``seg init --budget``: ``cpu`` (minutes per dataset on a laptop CPU,
#: the default config's U-Net) and ``tiny`` (seconds; a smoke test, accuracy means nothing).
BUDGETS = {
    "cpu": {
        "variant": {"model": "unet", "label": "U-Net (same padding)",
                    "params": {"padding": "same", "base_channels": 16, "depth": 4, "batch_norm": True}},
        "augment": {"copies": 2},
        "train": {"iterations": 250, "batch_size": 4, "val_every": 50, "num_workers": 1},
        "inference": {"tile": 256},
    },
    "tiny": {
        "variant": {"model": "unet", "label": "U-Net (tiny)",
                    "params": {"padding": "same", "base_channels": 8, "depth": 3, "batch_norm": True}},
        "augment": {"copies": 1},
        "train": {"iterations": 12, "batch_size": 2, "patch_size": 64, "val_every": 6, "checkpoint_every": 6,
                  "log_every": 2, "num_workers": 0},
        "inference": {"tile": 128, "batch_size": 4},
    },
}


def dataset_name(folder: Path) -> str:
    """A dataset name from the folder's name (letters, digits, ``.``, ``_``, ``-``)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(folder).resolve().name).strip("._-")
    return name or "mydata"


def guess_labels(masks: list[np.ndarray]) -> tuple[str, str]:
    """("instance" | "semantic", why) from the masks (int (H, W) each).

    Instance masks give each object its own value, so a value is (nearly always) one connected
    region; a class map repeats a value over many separate regions. Instance when the values of
    all masks average at most 1.5 connected regions (8-connected) each, else semantic.
    """
    from scipy import ndimage as ndi

    regions = values = 0
    distinct: set[int] = set()
    for m in masks:
        for v in np.unique(m):
            if v == 0:
                continue
            values += 1
            distinct.add(int(v))
            regions += ndi.label(m == v, structure=np.ones((3, 3)))[1]
    if values == 0:
        return "instance", "the masks are empty"
    per = regions / values
    if per <= 1.5:
        return "instance", f"{values} object values, {per:.2f} connected regions per value"
    shown = ", ".join(map(str, sorted(distinct)[:5])) + (", ..." if len(distinct) > 5 else "")
    what = ("one foreground value" if len(distinct) == 1 else f"{len(distinct)} class values") + f" ({shown})"
    return "semantic", (f"class maps: {what} beside 0 = background, {per:.1f} separate regions per mask and "
                        "value (an object has no value of its own); trained and scored as foreground / background")


def inspect_folder(folder: str | os.PathLike, *, layout: str = "auto", mask_suffix: str = "_masks",
                   unlabelled: str | None = None, labels: str | None = None, annotations: str = "full") -> dict:
    """Check every pair of ``folder`` as ``seg ingest`` does and describe it.

    Returns:
        ``{"folder", "layout", "pairs", "unlabelled", "sizes" ({(H, W): count}), "dtypes"
        ({dtype: count}), "labels", "labels_why", "classes" (semantic: 2), "objects" (instance:
        per-object areas in px), "split" ({name: train|val|test}, the default rule), "annotations",
        "unlabelled_folder"}``.

    Raises:
        SegError: any bad input (naming the file), as ``seg ingest``; semantic masks of more than
            2 classes.
    """

    folder = Path(folder)
    if not folder.is_dir():
        raise SegError(f"{folder}: not a folder")
    entry = {"layout": layout, "mask_suffix": mask_suffix, "unlabelled": unlabelled, "annotations": annotations,
             "labels": labels or "instance"}
    found_layout, pairs, extra, o = check_folder(folder, entry, where="seg init")
    masks, sizes, dtypes = [], Counter(), Counter()
    for p in pairs:
        image, mask = read_pair(p, {**o, "labels": "instance"})
        sizes[image.shape] += 1
        dtypes[str(image.dtype)] += 1
        masks.append(mask)
    for p in extra:
        load_image(p.image)
    why = "given (--labels)"
    if labels is None:
        labels, why = guess_labels(masks)
    areas: list[int] = []
    if labels == "semantic":
        for p in pairs:  # ingest's checks for class maps: values 0..1 (or 0 / 255), else SegError
            read_pair(p, {**o, "labels": "semantic"})
    else:
        for m in masks:
            areas += np.bincount(m.ravel())[1:][np.bincount(m.ravel())[1:] > 0].tolist()
    split = split_pairs([p.name for p in pairs], None, where="seg init: split")
    return {"folder": folder.resolve(), "layout": found_layout, "pairs": [p.name for p in pairs],
            "unlabelled": [p.name for p in extra], "sizes": dict(sizes), "dtypes": dict(dtypes),
            "labels": labels, "labels_why": why, "classes": 2, "objects": areas, "split": split,
            "annotations": annotations, "unlabelled_folder": unlabelled}


def summary_lines(info: dict) -> list[str]:
    """What :func:`inspect_folder` found, one fact a line."""
    sizes = ", ".join(f"{h}x{w} ({n})" for (h, w), n in sorted(info["sizes"].items()))
    dtypes = ", ".join(f"{d} ({n})" for d, n in sorted(info["dtypes"].items()))
    by = {s: sorted(n for n, v in info["split"].items() if v == s) for s in ("train", "val", "test")}
    lines = [f"folder: {info['folder']}",
             f"layout: {info['layout']}",
             f"pairs: {len(info['pairs'])} image/mask pairs, {len(info['unlabelled'])} unlabelled images",
             f"image sizes (H x W): {sizes}",
             f"image dtype: {dtypes}",
             f"labels: {info['labels']} ({info['labels_why']})"]
    if info["objects"]:
        a = np.asarray(info["objects"])
        lines.append(f"objects: {a.size}, area median {int(np.median(a))} px (min {a.min()}, max {a.max()})")
    lines.append("proposed split (seeded random: val 0.2, test 0.2, seed 0): "
                 + "; ".join(f"{s} {len(by[s])} ({', '.join(by[s])})" for s in ("train", "val", "test")))
    return lines


def init_config(info: dict, *, name: str, budget: str = "cpu") -> dict:
    """The workflow config of the inspected folder: a ``kind: folder`` entry (absolute ``path``),
    the U-Net variant with the paper's target and, for instance masks, the same U-Net with the
    three-class target (the workflow packages the row that wins on the val split: fg_border leads
    on small objects, three_class on large ones), and the training sections at ``budget``
    (:data:`BUDGETS`). The scale-dependent
    settings (``weights.sigma`` and ``sparse_band``, ``postprocess.min_size``, ``h`` and their
    search grids, and at the ``cpu`` budget ``train.patch_size``) are left out: the plan derives
    them from the ingested data (:mod:`seg.settings.plan`; ``seg plan`` shows them), and a value written
    into the config wins over it. The ``tiny`` budget pins a small patch (a smoke test)."""
    if budget not in BUDGETS:
        raise SegError(f"--budget: {budget!r} is not one of {list(BUDGETS)}")
    b = BUDGETS[budget]
    entry = {"kind": "folder", "path": str(info["folder"]), "layout": info["layout"], "labels": info["labels"]}
    if info.get("unlabelled_folder"):
        entry["unlabelled"] = info["unlabelled_folder"]
    if info.get("annotations") == "sparse":
        entry["annotations"] = "sparse"
    entry["split"] = {"val": 0.2, "test": 0.2, "seed": 0}
    smallest = min(min(h, w) for h, w in info["sizes"])
    train = dict(b["train"])
    if "patch_size" in train:
        train["patch_size"] = min(train["patch_size"], max(16, smallest // 16 * 16))
    cfg = {
        "seed": 0,
        "datasets": {name: entry},
        "variants": _variants(b["variant"], info["labels"]),
        "weights": {"w0": 10.0, "class_balance": True},
        "augment": dict(b["augment"]),
        "train": train,
        "inference": {**b["inference"], "tile": min(b["inference"]["tile"], max(32, smallest // 16 * 16))},
        "postprocess": {"method": "watershed", "calibrate": True},
        "report": {"examples": 1 if budget == "tiny" else 3},
    }
    return cfg


def _variants(variant: dict, labels: str) -> dict:
    """The proposed rows: the U-Net with the paper's target, and for instance masks the same U-Net
    with the three-class target (its boundary width planned from the data)."""
    rows = {"unet": dict(variant)}
    if labels == "instance":
        rows["unet-3c"] = {**variant, "label": f"{variant['label']}, three-class", "target": "three_class"}
    return rows


def write_config(cfg: dict, out: str | os.PathLike, *, header: list[str]) -> Path:
    """Write ``cfg`` as YAML to ``out`` (atomically), ``header`` as comment lines; returns the path.

    Raises:
        SegError: the config does not validate (:func:`seg.settings.checks.validate_config`).
    """
    import copy

    import yaml


    validate_config(copy.deepcopy(cfg), where=str(out))
    text = "".join(f"# {h}\n" for h in header) + yaml.safe_dump(cfg, sort_keys=False)
    out = Path(out)
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    return out
