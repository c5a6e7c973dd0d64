"""The dataset fingerprint: how large the images and the objects of a canonical dataset are.

Computed by ``seg ingest`` when the canonical folder is finished (:meth:`seg.data.canonical.CanonicalWriter.finish`,
so every dataset kind gets it) and stored in ``meta.json`` under ``fingerprint``; datasets ingested
before it existed get it computed from their canonical folder on first use (:func:`ensure_fingerprint`,
which says so on stderr and does not rewrite ``meta.json``). :mod:`seg.settings.plan` derives every
scale-dependent setting the config leaves unset from it.

Only the **training** split is read (val and test never choose a setting). Objects are the
canonical ``instances/`` labels of the training slices: CTC the annotated cells (for sparsely
annotated data only the annotated ones: unannotated pixels are 0 there), ISBI 2012 the
4-connected components of the interior class (the cells between membranes). Everything is
vectorised (``numpy.bincount`` over label images).

Document (JSON, lengths in px, areas in px^2 = pixels)::

    {"version": 1, "split": "train", "n_slices", "n_annotated_slices",
     "image_size": {"units": "px", "height": {min, median, max}, "width": {min, median, max}},
     "intensity": {"dtype", "percentiles": {"0.5", "50", "99.5"}, "units": "raw image values"},
     "objects": {"count", "touching_fraction", "touching": "...",
                 "area": {"units": "px", min, p5, p25, median, p75, p95, max},
                 "diameter": {"units": "px (equivalent: sqrt(4 area / pi))", min, p5, ...}},
     "annotations": "full" | "sparse"}

With no annotated object in the training split the ``area`` and ``diameter`` entries are null;
``image_size`` is that of all slices when there is no training slice, null when there is no slice.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from seg.io import read_tiff

FINGERPRINT_VERSION = 1
#: Percentiles of the object sizes, name -> percent.
SIZE_PERCENTILES = {"min": 0, "p5": 5, "p25": 25, "median": 50, "p75": 75, "p95": 95, "max": 100}
#: Percentiles of the raw intensities (the fingerprint's keys are these numbers as strings).
INTENSITY_PERCENTILES = (0.5, 50.0, 99.5)
_MAX_INTENSITY_SAMPLES = 4_000_000  # pixels pooled for the intensity percentiles (a strided sample)


def _summary(values: np.ndarray, *, units: str) -> dict | None:
    """{units, min, p5, p25, median, p75, p95, max} of a 1D array (None when empty), rounded."""
    if values.size == 0:
        return None
    q = np.percentile(values.astype(np.float64), list(SIZE_PERCENTILES.values()))
    return {"units": units, **{k: round(float(v), 2) for k, v in zip(SIZE_PERCENTILES, q)}}


def _min_med_max(values: list[int]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"min": int(a.min()), "median": float(np.median(a)), "max": int(a.max())}


def object_areas(instances: np.ndarray) -> np.ndarray:
    """Pixel counts of the objects of an instance image, int64 (N,), in label order.

    Args:
        instances: int (H, W) labels, 0 = background (or not annotated); other values are objects
            (ids need not be consecutive).
    """
    lab = np.asarray(instances).ravel()
    if lab.size == 0 or lab.max() <= 0:
        return np.zeros(0, np.int64)
    counts = np.bincount(lab[lab > 0].astype(np.int64))
    return counts[counts > 0]


def equivalent_diameters(instances: np.ndarray) -> np.ndarray:
    """Equivalent diameters ``sqrt(4 area / pi)`` in px of the objects of an instance image, float64
    (N,) in label order (the fingerprint's ``diameter``; cellpose's size measure).

    Args:
        instances: int (H, W) labels, 0 = background (or not annotated).
    """
    return np.sqrt(4.0 * object_areas(instances) / np.pi)


def inscribed_diameters(labels: np.ndarray) -> np.ndarray:
    """Twice the largest inscribed radius of each labelled region in px, float64 (N,) in label order:
    ``2 * max`` of the Euclidean distance to the nearest pixel outside the region (another region's
    pixels count as outside). A size measure that a split or a merge of touching objects hardly
    changes (a fragment of a nucleus still holds most of its widest disc; two merged nuclei hold
    only one of theirs), unlike the equivalent diameter.

    Args:
        labels: int (H, W) labels, 0 = background.
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import find_boundaries

    lab = np.asarray(labels)
    ids = np.unique(lab[lab > 0])
    if ids.size == 0:
        return np.zeros(0)
    inside = (lab > 0) & ~find_boundaries(lab, connectivity=1, mode="inner")
    dist = ndi.distance_transform_edt(inside)
    return 2.0 * (np.asarray(ndi.maximum(dist, labels=lab, index=ids), dtype=np.float64) + 0.5)


def touching_objects(instances: np.ndarray) -> tuple[int, int]:
    """(objects, objects that touch another object): two objects touch when a pixel of one is an
    8-neighbour of a pixel of the other (different non-zero labels side by side or diagonal).

    Args:
        instances: int (H, W) labels, 0 = background / not annotated.
    """
    lab = np.asarray(instances)
    ids = np.unique(lab[lab > 0])
    if ids.size == 0:
        return 0, 0
    touched = []
    # each neighbour direction once: right, down, down-right, down-left
    for a, b in ((lab[:, :-1], lab[:, 1:]), (lab[:-1, :], lab[1:, :]),
                 (lab[:-1, :-1], lab[1:, 1:]), (lab[:-1, 1:], lab[1:, :-1])):
        pair = (a != b) & (a > 0) & (b > 0)
        touched.extend((a[pair], b[pair]))
    hit = np.unique(np.concatenate(touched)) if touched else np.zeros(0, lab.dtype)
    return int(ids.size), int(hit.size)


def compute_fingerprint(ds_dir: str | os.PathLike, meta: dict) -> dict:
    """The fingerprint document (module docstring) of the canonical dataset ``ds_dir`` described by
    ``meta``: its training slices' images and instance labels.

    Raises:
        SegError: a file of the canonical folder is missing or unreadable (names it).
    """

    ds_dir = Path(ds_dir)
    train = [e for e in meta["slices"] if e["split"] == "train"]
    shapes = [tuple(e["shape"]) for e in train] or [tuple(e["shape"]) for e in meta["slices"]]
    samples, dtype = [], None
    areas, n_obj, n_touch, annotated = [], 0, 0, 0
    n_pixels = sum(h * w for h, w in shapes) or 1
    stride = max(1, int(np.ceil(n_pixels / _MAX_INTENSITY_SAMPLES)))
    for e in train:
        img = read_tiff(ds_dir / e["image"], ndim=2)
        dtype = dtype or str(img.dtype)
        samples.append(img.ravel()[::stride])
        if not e.get("instances"):
            continue
        inst = read_tiff(ds_dir / e["instances"], ndim=2).astype(np.int32, copy=False)
        annotated += 1
        areas.append(object_areas(inst))
        n, t = touching_objects(inst)
        n_obj, n_touch = n_obj + n, n_touch + t
    area = np.concatenate(areas) if areas else np.zeros(0, np.int64)
    diameter = np.sqrt(4.0 * area / np.pi)  # as equivalent_diameters
    pooled = np.concatenate(samples) if samples else np.zeros(0)
    intensity = ({f"{p:g}": round(float(v), 4) for p, v in
                  zip(INTENSITY_PERCENTILES, np.percentile(pooled.astype(np.float64), INTENSITY_PERCENTILES))}
                 if pooled.size else None)
    sparse = meta.get("annotations", "full") == "sparse"
    return {
        "version": FINGERPRINT_VERSION, "split": "train", "n_slices": len(train),
        "n_annotated_slices": annotated,
        "image_size": ({"units": "px", "height": _min_med_max([s[0] for s in shapes]),
                        "width": _min_med_max([s[1] for s in shapes])} if shapes else None),
        "intensity": {"dtype": dtype, "units": "raw image values", "percentiles": intensity,
                      "sampled_every": stride},
        "objects": {
            "count": int(n_obj),
            "touching_fraction": round(n_touch / n_obj, 4) if n_obj else None,
            "touching": ("objects with a pixel 8-adjacent to another object's"
                         + (" (annotated objects only)" if sparse else "")),
            "area": _summary(area, units="px"),
            "diameter": _summary(diameter, units="px (equivalent diameter sqrt(4 area / pi))"),
            "from": "instances/ of the training slices",
        },
        "annotations": "sparse" if sparse else "full",
    }


_CACHE: dict[tuple[str, int], dict] = {}


def ensure_fingerprint(ds_dir: str | os.PathLike, meta: dict) -> dict:
    """``meta["fingerprint"]`` when ``meta.json`` has one of this version, else the fingerprint
    computed now from the canonical folder (a dataset ingested before fingerprints existed): that is
    said on stderr, kept for the process, and ``meta.json`` is left as it is (re-run ``seg ingest``
    to store it)."""
    fp = meta.get("fingerprint")
    if isinstance(fp, dict) and fp.get("version") == FINGERPRINT_VERSION:
        return fp
    path = Path(ds_dir) / "meta.json"
    try:
        key = (str(path.resolve()), path.stat().st_mtime_ns)
    except OSError:
        key = (str(path.resolve()), -1)
    if key not in _CACHE:
        print(f"seg: {path} has no fingerprint (ingested before fingerprints existed); computing it from "
              f"the canonical folder (re-run seg ingest to store it)", file=sys.stderr)
        _CACHE[key] = compute_fingerprint(ds_dir, meta)
    return _CACHE[key]
