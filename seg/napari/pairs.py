"""Teaching pairs: an image and the labels a user corrected, saved into a training folder.

The folder is in cellpose's layout (:mod:`seg.data.folder`: ``<name>.tif`` + ``<name>_masks.tif``),
so ``seg init`` / ``kind: folder`` and ``seg finetune`` read it as it is. One pair per save; a pair
is never overwritten: each save takes the next free ``<prefix>_NNN``.

Two ways to save a corrected frame:

- **dense** (``annotations: full``): the whole mask is the truth (every cell annotated, 0 = background).
- **sparse**: only the cells the user touched are annotated (:func:`touched_labels`: a label whose
  pixels differ between the corrected labels and the segmentation the plugin produced); every other
  pixel gets :data:`UNANNOTATED` (65535 in the uint16 mask) = "not annotated", except pixels the
  user erased (set to 0), which stay 0. Only instance masks are saved sparse.

``dataset.json`` beside the pairs (a file the folder reader ignores) records what the folder is, in
the keys of a ``kind: folder`` dataset entry (``layout``, ``mask_suffix``, ``labels``,
``annotations``, ``unannotated_value``) plus one record per pair (how it was saved, where it came
from). The folder is sparse (``annotations: sparse``, ``unannotated_value: 65535``) as soon as one
pair is: a dense pair holds no 65535, so reading it sparse keeps its cells, and its background
counts only near them (:mod:`seg.transforms.weights`). :func:`folder_options` gives the options
``seg finetune`` takes (``sparse``, ``unannotated_value``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from seg.data.folder import DEFAULT_SUFFIX, EXTENSIONS, detect_layouts, safe_id
from seg.errors import SegError
from seg.io import read_json, write_json

#: The mask value of "not annotated" pixels in a sparse pair (uint16 masks).
UNANNOTATED = 65535
#: The sidecar that says what the folder is.
SIDECAR = "dataset.json"
WRITTEN_BY = "seg napari plugin"
MODES = ("dense", "sparse")
LABEL_KINDS = ("instance", "semantic")


def frame_of(data, index: int | None) -> np.ndarray:
    """The 2D frame to save: ``data`` itself (H, W), or plane ``index`` of a stack / time-lapse
    (N, H, W).

    Raises:
        SegError: not 2D or 3D, or ``index`` outside 0..N-1 (or None for a 3D array).
    """
    arr = np.asarray(data)
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3:
        raise SegError(f"expected an image (H, W) or a stack (N, H, W), got shape {arr.shape}")
    if index is None or not 0 <= index < arr.shape[0]:
        raise SegError(f"frame {index} is outside the stack of {arr.shape[0]} planes")
    return arr[index]


def touched_labels(corrected, produced) -> list[int]:
    """Ids (> 0) of the cells in ``corrected`` the user changed: every pixel where the two (H, W)
    label arrays differ belongs to a touched cell of ``corrected`` (painted, extended) or was taken
    from one (an eraser or another label painted over part of it). Cells deleted entirely are not
    in ``corrected`` and so not listed (their pixels are 0 in both masks of :func:`sparse_mask`).

    Raises:
        SegError: the two shapes differ.
    """
    c, p = np.asarray(corrected), np.asarray(produced)
    if c.shape != p.shape:
        raise SegError(f"corrected labels {c.shape} and the produced segmentation {p.shape} differ in shape")
    changed = c != p
    ids = np.union1d(np.unique(c[changed]), np.unique(p[changed]))
    ids = ids[(ids > 0) & np.isin(ids, c)]
    return [int(i) for i in ids]


def _instance_ids(mask: np.ndarray) -> np.ndarray:
    """Instance ids as uint16 below :data:`UNANNOTATED` (relabelled 1..N only if they do not fit)."""
    if mask.size and (mask.min() < 0 or not np.issubdtype(mask.dtype, np.integer)):
        raise SegError(f"labels must be non-negative integers, got dtype {mask.dtype} min {mask.min()}")
    if mask.size and mask.max() >= UNANNOTATED:
        from skimage.segmentation import relabel_sequential

        mask = relabel_sequential(mask)[0]
        if mask.max() >= UNANNOTATED:
            raise SegError(f"{int(mask.max())} cells in one frame: more than a uint16 mask holds")
    return mask.astype(np.uint16)


def dense_mask(corrected, *, labels: str = "instance") -> np.ndarray:
    """The mask of a frame accepted as corrected: instance ids uint16 (0 = background), or a class
    map uint8 (0 / 1) for ``labels="semantic"``.

    Raises:
        SegError: negative / non-integer labels, or class values other than 0 and 1.
    """
    c = np.asarray(corrected)
    if labels not in LABEL_KINDS:
        raise SegError(f"labels {labels!r} is not one of {list(LABEL_KINDS)}")
    if labels == "semantic":
        values = np.unique(c)
        if not set(values.tolist()) <= {0, 1}:
            raise SegError(f"a class map holds 0 (background) and 1 (foreground), found {values[:8].tolist()}")
        return c.astype(np.uint8)
    return _instance_ids(c)


def sparse_mask(corrected, produced, *, unannotated_value: int = UNANNOTATED) -> tuple[np.ndarray, list[int]]:
    """(mask uint16 (H, W), touched ids): the touched cells of ``corrected`` with their ids, 0 where
    the user erased a cell's pixels, ``unannotated_value`` everywhere else.

    Raises:
        SegError: shapes differ, or no cell was touched (nothing is annotated: save it dense if the
            segmentation is right as it is).
    """
    c = np.asarray(corrected)
    ids = touched_labels(c, produced)
    erased = (c == 0) & (c != np.asarray(produced))
    if not ids and erased.any():
        raise SegError("only deleted cells: a sparse pair keeps the cells you drew or corrected, and "
                       "deleting a cell teaches only in a dense pair (save the frame dense if it is right now)")
    if not ids:
        raise SegError("no cell differs from the segmentation: a sparse pair would annotate nothing "
                       "(correct some cells first, or save the frame dense if it is right as it is)")
    keep = np.isin(c, ids)
    mask = np.full(c.shape, unannotated_value, np.uint16)
    mask[keep] = _instance_ids(np.where(keep, c, 0))[keep]
    mask[erased] = 0
    return mask, ids


def image_to_save(image) -> np.ndarray:
    """A 2D frame in a dtype the folder reader takes: uint8 / uint16 kept, other integers as uint16
    when their values fit (else float32), bool as uint8 0 / 255, floats as float32.

    Raises:
        SegError: not 2D, colour, not numeric, or non-finite values.
    """
    a = np.asarray(image)
    if a.ndim != 2:
        raise SegError(f"expected a 2D image (H, W) (one grey channel), got shape {a.shape}")
    if a.dtype == bool:
        return a.astype(np.uint8) * np.uint8(255)
    if a.dtype in (np.uint8, np.uint16):
        return a
    if np.issubdtype(a.dtype, np.integer):
        return a.astype(np.uint16) if a.size == 0 or (a.min() >= 0 and a.max() <= 65535) else a.astype(np.float32)
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise SegError("the image holds NaN or infinite values")
        return a.astype(np.float32)
    raise SegError(f"image dtype {a.dtype} is not a grey value type")


def _taken(folder: Path, name: str, suffix: str) -> bool:
    return any((folder / f"{stem}{ext}").exists() for stem in (name, name + suffix)
               for ext in (*EXTENSIONS, *(e.upper() for e in EXTENSIONS)))


def next_free_name(folder: str | os.PathLike, prefix: str, *, suffix: str = DEFAULT_SUFFIX) -> str:
    """``<prefix>_NNN`` with the smallest NNN (from 000) that names neither an image nor a mask in
    ``folder`` (``prefix`` made safe: letters, digits, ``.``, ``_``, ``-``)."""
    folder, prefix = Path(folder), safe_id(prefix) or "frame"
    i = 0
    while _taken(folder, f"{prefix}_{i:03d}", suffix):
        i += 1
    return f"{prefix}_{i:03d}"


def read_sidecar(folder: str | os.PathLike) -> dict | None:
    """The folder's ``dataset.json`` written by this plugin, or None if it has none.

    Raises:
        SegError: a ``dataset.json`` another tool wrote (this plugin does not touch it).
    """
    path = Path(folder) / SIDECAR
    if not path.is_file():
        return None
    doc = read_json(path)
    if not isinstance(doc, dict) or doc.get("written_by") != WRITTEN_BY:
        raise SegError(f"{path}: not written by the seg napari plugin (choose another training folder)")
    return doc


def folder_entry(folder: str | os.PathLike) -> dict:
    """The folder as a ``kind: folder`` dataset entry (:mod:`seg.data.folder`): ``path``, ``layout``,
    ``mask_suffix``, ``labels``, ``annotations`` and, if sparse, ``unannotated_value``."""
    doc = read_sidecar(folder) or {"layout": "cellpose", "mask_suffix": DEFAULT_SUFFIX, "labels": "instance",
                                   "annotations": "full"}
    entry = {"path": str(Path(folder).resolve()), **{k: doc[k] for k in ("layout", "mask_suffix", "labels",
                                                                         "annotations")}}
    if doc.get("annotations") == "sparse":
        entry["unannotated_value"] = int(doc["unannotated_value"])
    return entry


def folder_options(folder: str | os.PathLike) -> dict:
    """What ``seg finetune`` is told about the folder: ``{"sparse": bool, "unannotated_value": int |
    None}`` (a folder without ``dataset.json`` is dense)."""
    entry = folder_entry(folder)
    return {"sparse": entry["annotations"] == "sparse", "unannotated_value": entry.get("unannotated_value")}


def list_pairs(folder: str | os.PathLike) -> list[str]:
    """Names of the pairs this plugin saved in ``folder`` (in saving order)."""
    doc = read_sidecar(folder) or {}
    return list(doc.get("pairs", {}))


def _write_new(path: Path, array: np.ndarray) -> None:
    """Write a TIFF that must not exist yet (exclusive create: a pair is never overwritten)."""
    import tifffile

    with open(path, "xb") as f:
        tifffile.imwrite(f, np.ascontiguousarray(array), photometric="minisblack")


def save_pair(folder: str | os.PathLike, image, corrected, *, mode: str = "dense", produced=None,
              labels: str = "instance", prefix: str = "frame", source: dict | None = None) -> dict:
    """Save one (image, mask) pair into ``folder`` under the next free name and record it in
    ``dataset.json``.

    Args:
        folder: the training folder (created if missing); it must hold no other layout than cellpose's.
        image: the frame (H, W), any grey dtype (:func:`image_to_save`).
        corrected: the user's labels (H, W): instance ids or a class map (``labels``).
        mode: ``dense`` (the whole frame is corrected) or ``sparse`` (only touched cells; needs
            ``produced``, the (H, W) segmentation the plugin produced, and instance labels).
        labels: ``instance`` or ``semantic`` (one folder holds one of them).
        prefix: the pair name's start (e.g. the image layer's name).
        source: recorded with the pair (layer, frame, model, ...).

    Returns:
        The record: ``name``, ``image``, ``mask`` (paths), ``annotations``, ``objects``, ``touched``.

    Raises:
        SegError: a bad mode or labels, shapes that differ, sparse without ``produced`` or with class
            maps, nothing touched, a folder of another layout or label kind or another tool's
            ``dataset.json``.
    """
    if mode not in MODES:
        raise SegError(f"mode {mode!r} is not one of {list(MODES)}")
    if labels not in LABEL_KINDS:
        raise SegError(f"labels {labels!r} is not one of {list(LABEL_KINDS)}")
    folder = Path(folder)
    img = image_to_save(image)
    if np.shape(corrected) != img.shape:
        raise SegError(f"labels {np.shape(corrected)} and image {img.shape} differ in shape")
    other = [x for x in detect_layouts(folder) if x != "cellpose"]
    if other:
        raise SegError(f"{folder}: holds a {other[0]} layout; teaching pairs go into a cellpose-layout folder")
    doc = read_sidecar(folder) or {"written_by": WRITTEN_BY, "layout": "cellpose", "mask_suffix": DEFAULT_SUFFIX,
                                   "labels": labels, "annotations": "full", "unannotated_value": None,
                                   "pairs": {}}
    if doc["labels"] != labels:
        raise SegError(f"{folder}: holds {doc['labels']} masks; a {labels} mask does not go with them")
    touched = None
    if mode == "sparse":
        if labels != "instance":
            raise SegError("sparse pairs keep the touched cells: they need instance labels, not a class map")
        if produced is None:
            raise SegError("a sparse pair needs the segmentation the plugin produced (segment the image first)")
        mask, touched = sparse_mask(corrected, produced)
    else:
        mask = dense_mask(corrected, labels=labels)
    suffix = doc["mask_suffix"]
    folder.mkdir(parents=True, exist_ok=True)
    while True:  # the next free name; another writer taking it first moves us on
        name = next_free_name(folder, prefix, suffix=suffix)
        img_path, mask_path = folder / f"{name}.tif", folder / f"{name}{suffix}.tif"
        try:
            _write_new(img_path, img)
        except FileExistsError:
            continue
        try:
            _write_new(mask_path, mask)
        except BaseException:
            img_path.unlink()
            raise
        break
    objects = int(len(np.setdiff1d(np.unique(mask), [0, UNANNOTATED]))) if labels == "instance" else None
    record = {"annotations": "sparse" if mode == "sparse" else "full", "objects": objects, "touched": touched,
              "saved": time.strftime("%Y-%m-%dT%H:%M:%S"), "source": source or {}}
    doc["pairs"][name] = record
    if mode == "sparse":
        doc["annotations"], doc["unannotated_value"] = "sparse", UNANNOTATED
    write_json(folder / SIDECAR, doc)
    return {"name": name, "image": img_path, "mask": mask_path, **record}

