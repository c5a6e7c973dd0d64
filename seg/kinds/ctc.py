"""Dataset kind ``ctc``: 2D Cell Tracking Challenge datasets, segmented into cell instances.

Classes [background, cell]. Predictions are instance labels in the challenge's result layout,
``<sequence>_RES/maskT.tif`` (:func:`result_mask_path`, the one place it is spelled), made from the
cell probability by the ``postprocess`` method (connected components or a seeded watershed, or the
variant's target's own decoding: :meth:`seg.targets.base.Target.decode`). Raw files are read by :mod:`seg.data.ctc`. Measures: the pixel
measures plus SEG, object precision / recall at IoU 0.5 and V_rand / V_info of the instance masks
(:class:`seg.metrics.measures.InstanceMeasures`); sparsely annotated datasets are scored on the
annotated cells only and rank by SEG. Training keeps the checkpoint with the best val SEG of the
post-processed instances. Datasets named exactly as a CTC dataset with a published U-Net result
(PhC-C2DH-U373, DIC-C2DH-HeLa) are shown beside it.
"""

from __future__ import annotations

from pathlib import Path

import tifffile

from seg.data.ctc import CTC_SHA256, ingest_ctc
from seg.errors import SegError
from seg.kinds.base import Kind, frames_by_sequence, write_labels, write_probability
from seg.metrics.measures import InstanceMeasures


def result_mask_name(frame: int, *, last_frame: int | None = None) -> str:
    """The CTC result file of frame ``frame``: ``maskT.tif`` with T of 3 digits, or 4 when the
    sequence has more than 1000 frames (its ``last_frame`` >= 1000; the challenge's naming
    convention: ``mask000.tif`` .. ``mask999.tif``, else ``mask0000.tif`` ..), never fewer digits
    than the number has. ``last_frame`` None: the frame itself (3 digits up to 999).

    Raises:
        SegError: a negative frame number.
    """
    if frame < 0:
        raise SegError(f"CTC result mask: frame must be >= 0, got {frame}")
    last = frame if last_frame is None else max(int(last_frame), frame)
    return f"mask{frame:0{4 if last >= 1000 else 3}d}.tif"


def result_mask_path(folder: Path, sequence: str | None, frame: int, *, last_frame: int | None = None) -> Path:
    """``<folder>/<sequence>_RES/maskT.tif`` (sequence None = ``01``; T as :func:`result_mask_name`)."""
    return Path(folder) / f"{sequence or '01'}_RES" / result_mask_name(int(frame), last_frame=last_frame)


def slice_mask_path(folder: Path, entry: dict, meta: dict | None = None) -> Path:
    """The result mask of a canonical slice ``entry`` (digits from its sequence's last frame in
    ``meta``; without ``meta``, from the frame itself)."""
    seq = entry.get("sequence") or "01"
    last = frames_by_sequence(meta).get(str(seq)) if meta is not None else None
    return result_mask_path(folder, seq, int(entry["frame"]), last_frame=last)


class CtcKind(Kind):
    """The Cell Tracking Challenge kind (see the module docstring and :class:`seg.kinds.base.Kind`)."""

    name = "ctc"
    reader = "seg.data.ctc"
    classes = ("background", "cell")
    conventions = {
        "images": "2D (H, W), original dtype",
        "instances": "int32, 0 = background, the annotation's own ids (man_seg) otherwise",
        "semantic": "uint8, 0 = background or border between touching cells, 1 = cell",
    }

    probability_text = "float32, probability of class 1 'cell' in [0, 1]"
    segmentation_text = ("uint16 instance labels, 0 = background, 1..N cells (Cell Tracking Challenge "
                         "result masks, <sequence>_RES/maskNNN.tif); from the cell probability by the "
                         "postprocess method (connected components or seeded watershed), objects "
                         "smaller than min_size px removed")
    instances = True
    segmentation_suffix = "mask"

    report_columns = ("iou_mean", "iou_cell", "seg", "precision_iou50", "recall_iou50")
    summary_measures = ("iou_mean", "pixel_error", "seg", "precision_iou50", "recall_iou50")
    secondary = "seg"
    signature_metric = "seg"

    citation = ("Maska M. et al. (2023) The Cell Tracking Challenge: 10 years of objective benchmarking. "
                "Nature Methods 20:1010-1020. doi:10.1038/s41592-023-01879-y")
    modality = "light microscopy"
    target_structure = ("cells",)
    tag = "cell-tracking-challenge"
    summary_tail = "; cells as instances with seg segment."

    # ------------------------------------------------------------------ data
    def ingest(self, folder: Path, out: Path, *, name: str, entry: dict, source: dict) -> dict:
        return ingest_ctc(folder, out, name=name, entry=entry, source=source, url=source.get("url"), kind=self)

    # ------------------------------------------------------------------ outputs

    def write_prediction(self, folder: Path, entry: dict, probs, prob, labels, *, meta: dict) -> None:
        """``<id>_prob.tif`` float32 (channels, H, W) (every map: calibration reads them) and the
        instance labels uint16 in the CTC result layout (:func:`slice_mask_path`)."""
        tifffile.imwrite(folder / f"{entry['id']}_prob.tif", probs, photometric="minisblack")
        path = slice_mask_path(folder, entry, meta)
        path.parent.mkdir(exist_ok=True)
        tifffile.imwrite(path, labels)

    def segment_stack(self, out: Path, name: str, results: list, convention: str, info: dict) -> list[str]:
        """``<name>_prob.tif`` float32 (Z, H, W) and ``<name>_RES/maskT.tif`` per page (frame = page)."""
        import numpy as np

        write_probability(out / f"{name}_prob.tif", np.stack([r[0] for r in results]), convention)
        (out / f"{name}_RES").mkdir()
        for z, (_, lab) in enumerate(results):
            write_labels(result_mask_path(out, name, z, last_frame=len(results) - 1), lab)
        return [f"{name}_prob.tif", f"{name}_RES/"]

    def segment_sequence(self, out: Path, name: str, frames: list[tuple[int, Path]], run, convention: str) -> list[str]:
        """``<name>_RES/maskT.tif`` per frame (CTC result layout) and ``<name>_prob/<stem>.tif``."""
        res, pdir = out / f"{name}_RES", out / f"{name}_prob"
        res.mkdir()
        pdir.mkdir()
        last = max((f for f, _ in frames), default=0)
        for frame, path in frames:
            prob, lab = run(path)
            write_probability(pdir / f"{path.stem}.tif", prob, convention)
            write_labels(result_mask_path(out, name, frame, last_frame=last), lab)
        return [f"{name}_RES/", f"{name}_prob/"]

    # ------------------------------------------------------------------ measures
    def sparse(self, meta: dict) -> bool:
        """``meta.json`` ``annotations: sparse`` (not every cell of a frame annotated)."""
        return meta.get("annotations", "full") == "sparse"

    def primary(self, *, sparse: bool = False) -> str:
        return "seg" if sparse else "iou_mean"

    def measures(self, classes: list[str], *, pred_dir: Path, meta: dict, thresholds: list[float],
                 decision: float, sparse: bool):
        """Pixel measures of the class map ``p[1] >= decision``, object and Rand measures of the masks."""

        return InstanceMeasures(classes, mask_path=lambda e: slice_mask_path(pred_dir, e, meta),
                                decision=decision, sparse=sparse)

    def reference_identity(self, name: str, meta: dict) -> str | None:
        """The official CTC name when the dataset is named exactly as one (e.g. ``DIC-C2DH-HeLa``)."""

        return name if name in CTC_SHA256 else None
