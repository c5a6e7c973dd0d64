"""ISBI 2012 EM segmentation challenge: neuronal membranes in serial-section TEM of the Drosophila
first-instar larva ventral nerve cord (30 training slices with membrane labels, 30 test slices).

Raw files (local copies are used first): ``train-volume.tif``, ``train-labels.tif``,
``test-volume.tif``, each a (Z=30, H=512, W=512) uint8 stack; labels 0 = membrane, 255 = cell
interior. The challenge site needs a registration, so the download source is torch-em's repackaged
HDF5 ``isbi.h5`` (keys ``raw`` (Z, H, W) uint8, ``labels/membranes`` (Z, H, W) the original membrane
labels, ``labels/gt_segmentation`` a 3D instance segmentation that is not used here). It holds the
training stack only, so an ingest from it has no unlabeled test slices.

Canonical form (see :mod:`seg.data.canonical`): ``train_NN`` slices of the training stack split by
slice ranges from the config (default 0-19 train, 20-24 val, 25-29 test) and ``test_NN`` slices of
the test volume with split ``unlabeled``. Instances are the 4-connected components of the interior
(0 = membrane); semantic is 0 = membrane, 1 = interior.

Please cite: I. Arganda-Carreras et al., "Crowdsourcing the creation of image segmentation algorithms
for connectomics", Front. Neuroanat. 9:142, 2015 (https://doi.org/10.3389/fnana.2015.00142), and
A. Cardona et al., PLoS Biol 8(10):e1000502, 2010.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seg.data.canonical import canonical_writer
from seg.data.splits import isbi_split
from seg.errors import SegError
from seg.io import read_tiff, sha256_file
from seg.progress import progress

ISBI_URL = "https://oc.embl.de/index.php/s/h0TkwqxU0PJDdMd/download"
ISBI_SHA256 = "0e10fe909a1243084d91773470856993b7d40126a12e85f0f1345a7a9e512f29"
H5_NAME = "isbi.h5"
H5_RAW_KEY, H5_LABEL_KEY = "raw", "labels/membranes"
TIFFS = {"train": "train-volume.tif", "labels": "train-labels.tif", "test": "test-volume.tif"}
EXPECTED = "train-volume.tif, train-labels.tif, test-volume.tif, or isbi.h5"
MEMBRANE, INTERIOR = 0, 255


def default_source(name: str) -> tuple[str, str]:
    """(url, sha256) of the download used when the config gives none."""
    return ISBI_URL, ISBI_SHA256


def download_name(name: str, url: str) -> str:
    return H5_NAME


def has_local_files(folder: Path, entry: dict | None = None, *, url: str | None = None) -> bool:
    """True when ``folder`` holds any of the TIFFs or ``isbi.h5`` (ingest then checks completeness)."""
    return any((folder / f).is_file() for f in (*TIFFS.values(), H5_NAME))


def isbi2012_paths(folder: str | Path) -> dict[str, Path]:
    """The raw files to use: ``{"train", "labels", "test"}`` TIFFs if any TIFF is present (all three
    are then required), else ``{"h5"}``.

    Raises:
        SegError: naming the first missing file.
    """
    folder = Path(folder)
    if any((folder / f).is_file() for f in TIFFS.values()) or not (folder / H5_NAME).is_file():
        for f in TIFFS.values():
            if not (folder / f).is_file():
                raise SegError(f"{folder / f}: file not found (an ISBI 2012 raw folder needs {EXPECTED})")
        return {k: folder / f for k, f in TIFFS.items()}
    return {"h5": folder / H5_NAME}


def check_labels(labels: np.ndarray, path: Path | str) -> None:
    """Require a (Z, H, W) membrane label stack with values exactly {0, 255} and both classes per slice."""
    if labels.shape[0] == 0:
        raise SegError(f"{path}: empty label set (the stack has no slices)")
    values = np.unique(labels)
    if not set(values.tolist()) <= {MEMBRANE, INTERIOR}:
        shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        raise SegError(f"{path}: labels must be binary {{0, 255}} (0 = membrane, 255 = interior), "
                       f"found {len(values)} values [{shown}]")
    interior = (labels == INTERIOR).reshape(len(labels), -1)
    empty = np.flatnonzero(~interior.any(axis=1))
    if len(empty):
        raise SegError(f"{path}: empty label set: slice(s) {empty.tolist()} have no interior pixels (255)")
    full = np.flatnonzero(interior.all(axis=1))
    if len(full):
        raise SegError(f"{path}: slice(s) {full.tolist()} have no membrane pixels (0): not membrane labels")


def interior_instances(labels: np.ndarray) -> np.ndarray:
    """(H, W) membrane labels {0, 255} -> int32 instances: 4-connected interior components 1..N, 0 = membrane."""
    from skimage.measure import label

    return label(labels == INTERIOR, connectivity=1, background=0).astype(np.int32)


def _h5_labels_to_tiff_convention(lab: np.ndarray, path: Path) -> tuple[np.ndarray, str]:
    """Map the HDF5 membrane labels to {0 membrane, 255 interior}; the interior is the majority class."""
    values = set(np.unique(lab).tolist())
    if not (values <= {0, 1} or values <= {0, 255}):
        raise SegError(f"{path}:{H5_LABEL_KEY}: labels must be binary, found values {sorted(values)[:8]}")
    nonzero = lab != 0
    if nonzero.mean() >= 0.5:
        return np.where(nonzero, INTERIOR, MEMBRANE).astype(np.uint8), "nonzero = interior"
    return np.where(nonzero, MEMBRANE, INTERIOR).astype(np.uint8), "nonzero = membrane (inverted on ingest)"


def load_isbi2012(paths: dict[str, Path]) -> dict:
    """Read and validate the raw files.

    Returns:
        ``{"train": (Z, H, W), "labels": (Z, H, W) uint8 {0, 255}, "test": (Z', H, W) or None,
        "files": {file name: sha256}, "format": "tiff" | "hdf5", "notes": {...}}``.

    Raises:
        SegError: unreadable/corrupt file, not 3D, shape mismatch, non-binary or empty labels.
    """
    notes: dict[str, str] = {}
    if "h5" in paths:
        import h5py

        p = paths["h5"]
        try:
            with h5py.File(p, "r") as f:
                for key in (H5_RAW_KEY, H5_LABEL_KEY):
                    if key not in f:
                        raise SegError(f"{p}: missing dataset {key!r} (keys: {sorted(f.keys())})")
                train, labels = np.asarray(f[H5_RAW_KEY]), np.asarray(f[H5_LABEL_KEY])
        except OSError as e:
            raise SegError(f"{p}: not a readable HDF5 file ({e})") from None
        for key, arr in ((H5_RAW_KEY, train), (H5_LABEL_KEY, labels)):
            if arr.ndim != 3:
                raise SegError(f"{p}:{key}: expected a 3D stack (ZxHxW), got shape {arr.shape}")
        labels, notes["label_convention"] = _h5_labels_to_tiff_convention(labels, p)
        test, lab_path, files = None, f"{p}:{H5_LABEL_KEY}", [p]
        notes["test_volume"] = "not in the HDF5 download: no unlabeled slices"
    else:
        train = read_tiff(paths["train"], ndim=3)
        labels = read_tiff(paths["labels"], ndim=3)
        test = read_tiff(paths["test"], ndim=3)
        lab_path, files = paths["labels"], [paths[k] for k in TIFFS]
        if test.shape[1:] != train.shape[1:]:
            raise SegError(f"{paths['test']}: slice shape {test.shape[1:]} does not match "
                           f"{paths['train'].name} {train.shape[1:]}")
    if labels.shape != train.shape:
        raise SegError(f"{lab_path}: shape {labels.shape} does not match the training volume {train.shape}")
    check_labels(labels, lab_path)
    return {"train": train, "labels": labels, "test": test, "format": "h5" if "h5" in paths else "tiff",
            "files": {Path(f).name: sha256_file(f) for f in files}, "notes": notes}


def pixels_sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's pixels in C order (its dtype's bytes; shape and dtype not included)."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def ingest_isbi2012(folder: Path, out: Path, *, name: str, entry: dict, source: dict, kind) -> dict:
    """Ingest the raw folder into the canonical form at ``out``; returns meta. ``kind``: the dataset
    kind written into meta.json (:class:`seg.kinds.isbi2012.Isbi2012Kind`, which calls this)."""

    data = load_isbi2012(isbi2012_paths(folder))
    n = len(data["train"])
    assignment = isbi_split(n, entry.get("split") or {}, where=f"config: datasets.{name}.split")
    width = max(2, len(str(n - 1)))
    source = {**source, "format": data["format"], **data["notes"],
              "citation": "Arganda-Carreras et al., Front. Neuroanat. 9:142, 2015",
              # what the stacks are, whatever file format carried them (identifies the ISBI 2012
              # data for its published references: seg.report.references.dataset_identity)
              "pixels_sha256": {k: pixels_sha256(data[k]) for k in ("train", "labels")}}
    with canonical_writer(out, name=name, kind=kind, source=source,
                          align=bool(entry.get("align_images", False))) as w:
        w.record_files(data["files"])
        for i in progress(sorted(assignment), desc=f"ingest {name}", unit="slice"):
            lab = data["labels"][i]
            w.add(f"train_{i:0{width}d}", data["train"][i], split=assignment[i], frame=i,
                  instances=interior_instances(lab), semantic=(lab == INTERIOR).astype(np.uint8))
        test = data["test"] if data["test"] is not None else []
        for i in range(len(test)):
            w.add(f"test_{i:0{width}d}", test[i], split="unlabeled", frame=i)
    return w.meta
