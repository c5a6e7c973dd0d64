"""Dataset kind ``folder``: a user's folder of 2D image/mask pairs (cellpose, StarDist/BiaPy or
nnU-Net layout; :mod:`seg.data.folder` reads it).

The dataset entry's ``labels`` says what the masks are, and ingest writes the matching kind into
``meta.json``, which is what every later stage asks:

- ``instance`` (default): kind ``folder``, which behaves as the Cell Tracking Challenge kind
  (:class:`seg.kinds.ctc.CtcKind`): classes [background, cell] (class 1 = any object of the
  masks), instance labels by the ``postprocess`` method (seeded watershed by default) in the CTC
  result layout ``01_RES/maskT.tif`` (T = the slice's frame, its index in name order;
  ``meta.json`` maps ids to names), scored and calibrated by SEG, sparse annotations as for
  DIC-HeLa.
- ``semantic`` with ``classes: 2``: kind ``folder-semantic``, a binary class-map kind
  (:class:`seg.kinds.base.Kind`): ``<id>_seg.tif`` uint8 1 = foreground, scored by IoU.
"""

from __future__ import annotations

from pathlib import Path

from seg.data.folder import ingest_folder
from seg.kinds.base import Kind
from seg.kinds.ctc import CtcKind

_CITATION = ("Ronneberger O., Fischer P., Brox T. (2015) U-Net: Convolutional Networks for Biomedical "
             "Image Segmentation. MICCAI 2015, LNCS 9351:234-241. doi:10.1007/978-3-319-24574-4_28")


def _ingest(folder: Path, out: Path, *, name: str, entry: dict, source: dict) -> dict:
    """Ingest with ``labels: instance`` recorded as the ``folder`` kind, ``semantic`` as ``folder-semantic``."""

    return ingest_folder(folder, out, name=name, entry=entry, source=source,
                         kinds={"instance": FolderKind(), "semantic": FolderSemanticKind()})


class FolderKind(CtcKind):
    """A folder of images with instance masks (see the module docstring)."""

    name = "folder"
    ingests_as = ("folder", "folder-semantic")
    reader = "seg.data.folder"
    # Class 1 is named "cell" (whatever the objects are) as in the CTC kind, whose sparse measures
    # and report columns (iou_cell) this kind shares.
    classes = ("background", "cell")
    conventions = {
        "images": "2D (H, W), original dtype",
        "instances": "int32, 0 = background (and unannotated pixels), the mask's own ids otherwise",
        "semantic": "uint8, 0 = background or border between touching objects, 1 = object",
    }
    probability_text = "float32, probability of class 1 'cell' (an object of the masks) in [0, 1]"
    segmentation_text = ("uint16 instance labels, 0 = background, 1..N objects (01_RES/maskNNN.tif, "
                         "NNN = the image's frame in meta.json); from the object probability by the "
                         "postprocess method (connected components or seeded watershed), objects "
                         "smaller than min_size px removed")
    citation = _CITATION
    modality = "light microscopy"
    target_structure = ("cells",)
    tag = "instance-segmentation"
    summary_tail = "; objects as instances with seg segment."

    def ingest(self, folder: Path, out: Path, *, name: str, entry: dict, source: dict) -> dict:
        return _ingest(folder, out, name=name, entry=entry, source=source)

    def default_source(self, name: str) -> tuple[str | None, str | None]:
        return None, None

    def reference_identity(self, name: str, meta: dict) -> str | None:
        return None


class FolderSemanticKind(Kind):
    """A folder of images with 2-class masks (``labels: semantic``): the binary class-map kind."""

    name = "folder-semantic"
    reader = "seg.data.folder"
    conventions = {
        "images": "2D (H, W), original dtype",
        "instances": "int32, 4-connected components of class 1, 0 = background",
        "semantic": "uint8, 0 = background, 1 = foreground (the mask's classes)",
    }
    probability_text = "float32, probability of class 1 'foreground' in [0, 1]"
    segmentation_text = "uint8 class map, 1 = foreground (probability >= threshold), 0 = background"
    citation = _CITATION
    modality = "light microscopy"
    tag = "semantic-segmentation"

    def ingest(self, folder: Path, out: Path, *, name: str, entry: dict, source: dict) -> dict:
        return _ingest(folder, out, name=name, entry={**entry, "labels": "semantic"}, source=source)
