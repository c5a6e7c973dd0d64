"""Model packages: one self-contained folder (or zip) per trained row, loadable without its run.

A package holds everything ``seg segment`` and the exporters need; nothing is read from the training
run, its config or the data folder once it is written. Layout::

    package.json            the description below (format "seg-model-package", format_version 1)
    weights.pt              the network's state dict (``torch.load(..., weights_only=True)``)
    test_input.tif          one raw image of the dataset's test split, centre-cropped to at most 512 px a side (its own dtype, (H, W))
    test_probabilities.tif  float32 (classes, H, W): this package's prediction of it in fp32
    README.md               what the model is, what its outputs mean, how to use it

``package.json`` keys: ``format``, ``format_version``, ``seg_version``, ``name``, ``created``;
``dataset`` (name, kind, classes), ``outputs`` (what the probability and the segmentation mean for
the kind: :meth:`seg.kinds.base.Kind.outputs`); ``model`` (registry name, params, in_channels, classes, family, size contract:
valid_border, size_divisor, min_size, parameter count); ``preprocessing`` (the explicit steps: the
sub-pixel ``shift`` of datasets ingested with ``align_images`` and the per-image zero mean / unit
std normalisation, :func:`seg.data.canonical.normalise`); ``inference`` (tile, overlap, blend, tta,
batch_size, amp); ``threshold`` (value and source: the val-calibrated one of ``calibration.json``
or the config's); ``postprocess`` (method, min_size, h); ``training`` (dataset, variant, label,
config hash, seed, iterations, best iteration and val IoU, checkpoint SHA-256); ``metrics`` (the
test split's aggregate metrics of ``metrics.json``, if scored); ``files`` (name -> SHA-256).

:func:`seg.packaging.build.build_package` assembles one from a run folder and its config;
:func:`write_package` writes it atomically (a temporary sibling renamed into place; ``.zip`` targets become a zip archive);
:func:`read_package` reads a package folder or zip (:func:`seg.packaging.load.load_package` also a run folder).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seg.data.align import shift_image
from seg.data.canonical import normalise
from seg.errors import SegError
from seg.io import atomic_path
from seg.kinds import get_kind
from seg.models import build_model, input_size_for, output_size, size_divisor
from seg.package.readme import package_readme
from seg.targets import target_from_record
from seg.version import __version__

FORMAT = "seg-model-package"
FORMAT_VERSION = 1
PACKAGE_FILE = "package.json"
WEIGHTS_FILE = "weights.pt"
TEST_INPUT_FILE = "test_input.tif"
TEST_OUTPUT_FILE = "test_probabilities.tif"
README_FILE = "README.md"
INFERENCE_KEYS = ("tile", "overlap", "blend", "tta", "batch_size", "amp")

@dataclass
class ModelPackage:
    """A loaded package: its description, the network (CPU, eval mode) and its test pair.

    Attributes:
        meta: the ``package.json`` document.
        model: the network with the packaged weights, eval mode, on the CPU.
        source: where it was loaded from (folder, zip or run folder), for messages.
        test_input: raw (H, W) test image in its own dtype, or None.
        test_output: float32 (classes, H, W) probabilities of ``test_input``, or None.
    """

    meta: dict
    model: Any
    source: str = ""
    test_input: np.ndarray | None = None
    test_output: np.ndarray | None = None
    files: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def kind(self) -> str:
        """The name of the dataset kind the model was trained on (``dataset.kind``)."""
        return self.meta["dataset"]["kind"]

    @property
    def target(self):
        """The model's target (:func:`seg.targets.target_from_record` of ``target``; packages
        without one: the default), which owns the activation and the decoding."""
        try:
            return target_from_record(self.meta.get("target"))
        except SegError as e:
            raise SegError(f"{self.source or self.name}: {e}") from None

    @property
    def activation(self) -> str:
        """What turns the network's outputs into its maps (the target's): ``softmax`` or ``sigmoid``."""
        return self.target.activation

    def decode(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(probability float32 (H, W), segmentation) of the network's activated maps ``out``
        (channels, H, W), with the package's threshold and post-processing: the target's decoding
        for the package's kind (instances, or a class map)."""
        kind = self.dataset_kind
        return self.target.decode(out, self.postprocess, threshold=self.threshold, instances=kind.instances,
                                  foreground=kind.foreground)

    @property
    def dataset_kind(self):
        """The registered dataset kind (:class:`seg.kinds.base.Kind`) of :attr:`kind` (SegError
        naming the package if this seg does not know it)."""
        try:
            return get_kind(self.kind)
        except SegError as e:
            raise SegError(f"{self.source or self.name}: {e}") from None

    @property
    def shift(self) -> list[float] | None:
        """(dy, dx) px resampling of the preprocessing, or None."""
        for step in self.meta["preprocessing"]["steps"]:
            if step["op"] == "shift":
                return [float(s) for s in step["shift"]]
        return None

    @property
    def inference(self) -> dict:
        return dict(self.meta["inference"])

    @property
    def scale(self) -> dict | None:
        """The ``scale`` section (:func:`scale_of`), or None for a package written before it."""
        return scale_of(self.meta)

    @property
    def threshold(self) -> float:
        return float(self.meta["threshold"]["value"])

    @property
    def postprocess(self) -> dict:
        return dict(self.meta["postprocess"])

    def preprocess(self, image: np.ndarray) -> np.ndarray:
        """Raw (H, W) image of any numeric dtype -> float32 (H, W) as the network was trained on:
        shifted by :attr:`shift` if any (:func:`seg.data.align.shift_image`), then normalised per
        image (:func:`seg.data.canonical.normalise`) - the same functions ``seg predict`` reads
        its canonical images with."""

        x = shift_image(image, self.shift) if self.shift else image
        return normalise(x)


# ----------------------------------------------------------------------------- object scale
def scale_of(meta: dict) -> dict | None:
    """The ``scale`` section of a ``package.json`` document, or None (a package without one).

    Keys (lengths in px of the images named): ``diameter``, the median equivalent diameter
    (``sqrt(4 area / pi)``) of the annotated training objects in the training images' own pixels:
    the objects its post-processing settings and, without ``--diameter``, ``seg segment`` expect;
    ``spread`` {p25, p75} of those diameters; ``inscribed_diameter``, the median of twice their
    largest inscribed radius (:func:`seg.data.fingerprint.inscribed_diameters`: what ``--diameter
    auto`` measures on a first pass); ``factor``, the resize the network's inputs get
    (1, or ``network_diameter / diameter`` for a model trained from another package's scale:
    ``init:``, ``seg finetune``); ``network_diameter`` = ``diameter * factor``, the object size the
    network itself learned (what the exported graphs expect); ``intensity`` (raw-value
    percentiles 0.5/50/99.5 and dtype of the training images); ``objects`` (their count) and
    ``from`` (where the numbers come from).
    """
    scale = meta.get("scale")
    return dict(scale) if isinstance(scale, dict) and scale.get("network_diameter") else None


# ----------------------------------------------------------------------------- size contract
def size_contract(model) -> dict:
    """The network's size facts for the package and the export graphs: ``valid_border`` (0 for
    same padding), ``size_divisor``, ``min_size`` (smallest H, W the whole-image graph takes: the
    smallest legal output of a valid-padding U-Net, 128 for smp PAN / UPerNet, else 1)."""

    border = int(getattr(model, "valid_border", 0) or 0)
    divisor = int(size_divisor(model))
    min_size = int(output_size(model, input_size_for(model, 1))) if border else 1
    decoder = type(model).__name__
    if decoder in ("PAN", "UPerNet"):  # their pyramids pool the stride-16/32 map further (smp)
        min_size = max(min_size, 128)
    return {"valid_border": border, "size_divisor": divisor, "min_size": min_size}


# ----------------------------------------------------------------------------- write
def _tiff_bytes(array: np.ndarray) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.asarray(array), photometric="minisblack")
    return buf.getvalue()


def package_files(pkg: ModelPackage) -> dict[str, bytes]:
    """File name -> bytes of the package (``package.json`` last, with the files' SHA-256)."""
    import hashlib

    import torch


    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in pkg.model.state_dict().items()}, buf)
    files = {WEIGHTS_FILE: buf.getvalue()}
    if pkg.test_input is not None:
        files[TEST_INPUT_FILE] = _tiff_bytes(pkg.test_input)
        files[TEST_OUTPUT_FILE] = _tiff_bytes(np.asarray(pkg.test_output, dtype=np.float32))
    files[README_FILE] = package_readme(pkg.meta).encode()
    pkg.meta["files"] = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    files[PACKAGE_FILE] = (json.dumps(pkg.meta, indent=2, sort_keys=True, default=str) + "\n").encode()
    return files


def write_package(pkg: ModelPackage, out: str | os.PathLike) -> Path:
    """Write ``pkg`` to ``out`` atomically: a folder, or a zip archive if ``out`` ends in ``.zip``."""

    out = Path(out)
    files = package_files(pkg)
    with atomic_path(out) as tmp:
        if out.suffix == ".zip":
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
                for name, data in files.items():
                    z.writestr(name, data)
        else:
            tmp.mkdir()
            for name, data in files.items():
                (tmp / name).write_bytes(data)
    return out


# ----------------------------------------------------------------------------- load
def _read_files(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}
    try:
        with zipfile.ZipFile(path) as z:
            return {name: z.read(name) for name in z.namelist() if "/" not in name.strip("/")}
    except (zipfile.BadZipFile, OSError) as e:
        raise SegError(f"{path}: not a readable package zip ({e})") from None


def check_meta(meta: Any, where: str) -> dict:
    """Validate a ``package.json`` document's format and version (SegError naming ``where``)."""

    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SegError(f"{where}: not a seg model package (package.json has no format {FORMAT!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise SegError(f"{where}: package format version {version!r}; this seg ({__version__}) reads "
                       f"version {FORMAT_VERSION} (re-package the run with this seg: seg package)")
    for key in ("name", "dataset", "model", "preprocessing", "inference", "threshold", "postprocess", "files"):
        if key not in meta:
            raise SegError(f"{where}: package.json has no {key!r}")
    return meta


def read_package_meta(path: str | os.PathLike) -> dict:
    """The checked ``package.json`` (:func:`check_meta`) of a package folder or zip, without loading
    its network (SegError if missing, not a package or of another format version)."""
    p = Path(path)
    if not p.exists():
        raise SegError(f"{p}: no such model package")
    if p.is_dir():
        if not (p / PACKAGE_FILE).is_file():
            raise SegError(f"{p}: not a seg model package (no {PACKAGE_FILE})")
        raw = (p / PACKAGE_FILE).read_bytes()
    else:
        try:
            with zipfile.ZipFile(p) as z:
                raw = z.read(PACKAGE_FILE)
        except KeyError:
            raise SegError(f"{p}: not a seg model package (no {PACKAGE_FILE})") from None
        except (zipfile.BadZipFile, OSError) as e:
            raise SegError(f"{p}: not a readable package zip ({e})") from None
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise SegError(f"{p}: {PACKAGE_FILE} is not valid JSON ({e})") from None
    return check_meta(meta, str(p))


def package_from_files(files: dict[str, bytes], where: str) -> ModelPackage:
    """A :class:`ModelPackage` from its files (checks format version and SHA-256 of every file)."""
    import hashlib

    import tifffile
    import torch


    if PACKAGE_FILE not in files:
        raise SegError(f"{where}: not a seg model package (no {PACKAGE_FILE})")
    try:
        meta = json.loads(files[PACKAGE_FILE])
    except json.JSONDecodeError as e:
        raise SegError(f"{where}: {PACKAGE_FILE} is not valid JSON ({e})") from None
    check_meta(meta, where)
    for name, digest in meta["files"].items():
        if name not in files:
            raise SegError(f"{where}: {name} is missing from the package")
        if hashlib.sha256(files[name]).hexdigest() != digest:
            raise SegError(f"{where}: {name} does not match its SHA-256 in {PACKAGE_FILE} (damaged package)")
    m = meta["model"]
    model = build_model(m["name"], **m["params"], in_channels=m["in_channels"], classes=m["classes"])
    try:
        state = torch.load(io.BytesIO(files[WEIGHTS_FILE]), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - a package that does not load is one message
        raise SegError(f"{where}: {WEIGHTS_FILE} does not load into {m['name']} ({type(e).__name__}: "
                       f"{str(e).strip().splitlines()[0][:200]})") from None
    model.eval()
    pkg = ModelPackage(meta=meta, model=model, source=where, files=files)
    if TEST_INPUT_FILE in files:
        pkg.test_input = tifffile.imread(io.BytesIO(files[TEST_INPUT_FILE]))
        pkg.test_output = tifffile.imread(io.BytesIO(files[TEST_OUTPUT_FILE]))
    return pkg


def read_package(path: str | os.PathLike) -> ModelPackage:
    """Load a package folder or a package zip (SegError if missing, damaged or of another format)."""
    p = Path(path)
    if not p.exists():
        raise SegError(f"{p}: no such model package")
    return package_from_files(_read_files(p), str(p))
