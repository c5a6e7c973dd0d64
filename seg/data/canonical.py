"""The canonical dataset form under ``data/<dataset>/``: written by ``seg ingest``, read by all stages.

Layout (one folder per dataset)::

    images/<id>.tif      2D (H, W) image in the original dtype (uint8 for ISBI and GOWT1, uint16 possible)
    instances/<id>.tif   2D (H, W) int32 instance labels, 0 = background (ISBI: 0 = membrane), 1..N
                         objects; only for annotated slices
    semantic/<id>.tif    2D (H, W) uint8 class map. ISBI: 0 = membrane, 1 = interior.
                         CTC: 0 = background, 1 = cell; pixels on the border between two touching
                         different instances are 0
    meta.json            {"name", "kind", "classes", "source", "conventions", "slices": [...],
                          "files": {raw path relative to the raw folder: sha256}}

Each entry of ``meta["slices"]`` is ``{"id", "split" (train|val|test|unlabeled), "image",
"instances" (path or null), "semantic" (path or null), "sequence" ("01" or null), "frame" (int),
"shape" [H, W]}``; paths are relative to the dataset folder. With ``align_images`` (dataset config)
every entry also has ``"image_shift": [dy, dx]`` (px): the offset of the images from the annotation
grid, estimated on the training split (:mod:`seg.data.align`); :func:`load_image` resamples by it, and
``meta["alignment"]`` records the estimate. CTC datasets also record ``meta["annotations"]``
(``full`` | ``sparse``: not every object annotated), ``meta["labels"]`` (``gt`` | ``st`` | ``gt+st``) and
``meta["st_exclusion"]``, and per entry ``"labels"`` (the label source: ``gt``, ``st`` or null) and,
for a frame kept out of training by the silver-truth protocol, ``"excluded"`` (why); see
:mod:`seg.data.ctc`. ``meta["fingerprint"]``: image and object sizes of the training split
(:mod:`seg.data.fingerprint`), from which :mod:`seg.settings.plan` derives the settings the config leaves unset.

:func:`canonical_writer` builds the folder under a temporary name beside the target and renames it
into place only when everything was written, so an error never leaves a partial ``data/<dataset>/``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from seg.data.align import estimate_image_shift, shift_image
from seg.data.fingerprint import compute_fingerprint
from seg.errors import SegError
from seg.io import atomic_path, read_json, read_tiff, write_json, write_tiff

SPLIT_NAMES = ("train", "val", "test", "unlabeled")


def load_meta(ds_dir: str | os.PathLike) -> dict:
    """Read ``<ds_dir>/meta.json`` (SegError naming the file if missing or invalid)."""
    meta = read_json(Path(ds_dir) / "meta.json")
    for key in ("name", "kind", "classes", "slices"):
        if key not in meta:
            raise SegError(f"{Path(ds_dir) / 'meta.json'}: missing key {key!r} (re-run seg ingest)")
    return meta


def slices(meta: dict, split: str | None = None) -> list[dict]:
    """Slice entries of ``split`` (train|val|test|unlabeled), or all when None, in meta order."""
    if split is not None and split not in SPLIT_NAMES:
        raise SegError(f"split: {split!r} is not one of {list(SPLIT_NAMES)}")
    return [s for s in meta["slices"] if split is None or s["split"] == split]


def normalise(image: np.ndarray) -> np.ndarray:
    """Per-slice zero mean / unit std, float32 (a constant image becomes all zeros)."""
    x = np.asarray(image, dtype=np.float32)
    std = float(x.std())
    return ((x - x.mean()) / (std if std > 1e-6 else 1.0)).astype(np.float32)


def load_image(ds_dir: str | os.PathLike, entry: dict) -> np.ndarray:
    """The slice's image as float32 (H, W), resampled onto the annotation grid when the entry has an
    ``image_shift`` (see :mod:`seg.data.align`), then normalised per slice to zero mean / unit std.

    The same function serves training and inference.
    """
    image = read_tiff(Path(ds_dir) / entry["image"], ndim=2)
    if entry.get("image_shift"):
        image = shift_image(image, entry["image_shift"])
    return normalise(image)


def load_raw_image(ds_dir: str | os.PathLike, entry: dict) -> np.ndarray:
    """The slice's image (H, W) in its original dtype (for figures)."""
    return read_tiff(Path(ds_dir) / entry["image"], ndim=2)


def _require(entry: dict, key: str) -> str:
    if not entry.get(key):
        raise SegError(f"slice {entry.get('id')}: has no {key} (split {entry.get('split')!r} is unannotated)")
    return entry[key]


def load_instances(ds_dir: str | os.PathLike, entry: dict) -> np.ndarray:
    """Instance labels int32 (H, W): 0 = background/membrane, 1..N objects."""
    return read_tiff(Path(ds_dir) / _require(entry, "instances"), ndim=2).astype(np.int32, copy=False)


def load_semantic(ds_dir: str | os.PathLike, entry: dict) -> np.ndarray:
    """Class map uint8 (H, W): class index into ``meta["classes"]``."""
    return read_tiff(Path(ds_dir) / _require(entry, "semantic"), ndim=2).astype(np.uint8, copy=False)


class CanonicalWriter:
    """Adds slices to a dataset folder being built (use :func:`canonical_writer`)."""

    def __init__(self, root: Path, *, name: str, kind, source: dict, align: bool = False):
        if not all(hasattr(kind, a) for a in ("name", "classes", "conventions")):
            raise SegError(f"canonical_writer: kind {kind!r} is not a dataset kind (pass seg.kinds.get_kind(name))")
        self.root = root
        self.align = bool(align)
        self.meta: dict[str, Any] = {
            "name": name, "kind": kind.name, "classes": list(kind.classes), "source": dict(source),
            "conventions": dict(kind.conventions), "slices": [], "files": {},
        }
        for sub in ("images", "instances", "semantic"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def add(self, slice_id: str, image: np.ndarray, *, split: str, frame: int,
            instances: np.ndarray | None = None, semantic: np.ndarray | None = None,
            sequence: str | None = None) -> dict:
        """Write one slice. ``image`` (H, W) any dtype; ``instances`` int (H, W); ``semantic`` (H, W)."""
        if split not in SPLIT_NAMES:
            raise SegError(f"slice {slice_id}: split {split!r} is not one of {list(SPLIT_NAMES)}")
        if any(s["id"] == slice_id for s in self.meta["slices"]):
            raise SegError(f"slice {slice_id}: duplicate id")
        image = np.asarray(image)
        if image.ndim != 2:
            raise SegError(f"slice {slice_id}: image must be 2D (H, W), got shape {image.shape}")
        entry = {"id": slice_id, "split": split, "image": f"images/{slice_id}.tif", "instances": None,
                 "semantic": None, "sequence": sequence, "frame": int(frame), "shape": list(image.shape)}
        write_tiff(self.root / entry["image"], image)
        for key, arr, dtype in (("instances", instances, np.int32), ("semantic", semantic, np.uint8)):
            if arr is None:
                continue
            if arr.shape != image.shape:
                raise SegError(f"slice {slice_id}: {key} shape {arr.shape} != image shape {image.shape}")
            entry[key] = f"{key}/{slice_id}.tif"
            write_tiff(self.root / entry[key], np.asarray(arr).astype(dtype, copy=False))
        self.meta["slices"].append(entry)
        return entry

    def record_files(self, files: dict[str, str]) -> None:
        """Record ``{raw path relative to the raw folder: sha256}`` of raw files used."""
        self.meta["files"].update(files)

    def _align(self) -> None:
        """Estimate the image/annotation offset on the train split; record it on every entry."""

        train = [s for s in self.meta["slices"] if s["split"] == "train" and s["semantic"]]
        pairs = ((read_tiff(self.root / s["image"], ndim=2), read_tiff(self.root / s["semantic"], ndim=2))
                 for s in train)
        shift, per = estimate_image_shift(pairs, where=f"dataset {self.meta['name']}")
        for s in self.meta["slices"]:
            s["image_shift"] = shift
        self.meta["alignment"] = {
            "image_shift": shift, "units": "px (rows, cols), applied to the images by load_image",
            "estimated_on": [s["id"] for s in train], "per_slice": per,
            "method": "median over training slices of skimage phase_cross_correlation(class-0 map, image)",
        }

    def finish(self) -> dict:
        labelled = [s for s in self.meta["slices"] if s["split"] != "unlabeled"]
        if not labelled:
            raise SegError(f"dataset {self.meta['name']}: no annotated slice was ingested")
        if self.align:
            self._align()

        self.meta["fingerprint"] = compute_fingerprint(self.root, self.meta)
        write_json(self.root / "meta.json", self.meta)
        return self.meta


@contextlib.contextmanager
def canonical_writer(out: str | os.PathLike, *, name: str, kind, source: dict,
                     align: bool = False) -> Iterator[CanonicalWriter]:
    """Build ``out`` atomically: yields a :class:`CanonicalWriter` on a temporary folder beside it.
    ``kind``: the dataset kind (:class:`seg.kinds.base.Kind`, e.g. ``seg.kinds.get_kind("ctc")``),
    whose name, classes and conventions go into ``meta.json``.
    ``align``: estimate the images' offset from the annotation grid on finishing (``align_images``).

    On normal exit ``meta.json`` is written and the folder renamed to ``out`` (replacing an older
    one); on any exception the temporary folder is removed and ``out`` is left as it was.
    """
    with atomic_path(out) as tmp:
        tmp.mkdir()
        w = CanonicalWriter(tmp, name=name, kind=kind, source=source, align=align)
        yield w
        w.finish()
