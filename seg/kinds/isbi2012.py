"""Dataset kind ``isbi2012``: EM stacks of neuronal membranes in the ISBI 2012 challenge's form.

Classes [membrane, interior]; the network's class 1 is the cell interior, so the probability map and
the segmentation follow the challenge's convention (1 = interior, 0 = membrane). Raw files are read
by :mod:`seg.data.isbi2012`. Measures: the pixel measures plus the challenge's foreground-restricted
V_rand / V_info, Rand error and pixel error, each at its best threshold of the probability map
(:class:`seg.metrics.measures.ThresholdMapMeasures`); runs rank by mean IoU. The ISBI 2012
training stack itself (recognised by its pixels' SHA-256) has published U-Net error measures.
"""

from __future__ import annotations

from pathlib import Path

from seg.data.isbi2012 import ingest_isbi2012
from seg.errors import SegError
from seg.kinds.base import Kind, write_labels, write_probability
from seg.metrics.measures import ThresholdMapMeasures

#: Identity of the ISBI 2012 training stack in :mod:`seg.report.references`.
IDENTITY = "isbi2012"
# SHA-256 of the ISBI 2012 training volume's pixels (30 x 512 x 512 uint8, C order): the same for the
# challenge's TIFF, torch-em's HDF5 and the PNG slices it is re-distributed as (../shared/data README).
TRAIN_PIXELS_SHA256 = "200da3d452d726e6c9ca1ce04b869d4edb727320d23b516d01cce707dc8c4760"


class Isbi2012Kind(Kind):
    """The ISBI 2012 kind (see the module docstring and :class:`seg.kinds.base.Kind`)."""

    name = "isbi2012"
    reader = "seg.data.isbi2012"
    classes = ("membrane", "interior")
    conventions = {
        "images": "2D (H, W), original dtype",
        "instances": "int32, 0 = membrane, 1..N = 4-connected components of the interior",
        "semantic": "uint8, 0 = membrane, 1 = interior",
    }

    probability_text = ("float32, probability of class 1 'interior' in [0, 1]: 1 = cell interior, "
                        "0 = membrane (the ISBI 2012 challenge convention, as its training labels: "
                        "membrane black, interior white)")
    segmentation_text = "uint8, 1 = interior (probability >= threshold), 0 = membrane"

    report_columns = ("iou_mean", "iou_membrane", "f1_interior_error", "vrand", "rand_error", "pixel_error_isbi",
                      "pixel_error")
    summary_measures = ("iou_mean", "pixel_error", "vrand", "vinfo", "rand_error")
    secondary = "vrand"
    signature_metric = "rand_error"
    error_figure = True
    reference_note = "The published ISBI 2012 results are error measures: see the errors figure."

    citation = ("Arganda-Carreras I. et al. (2015) Crowdsourcing the creation of image segmentation "
                "algorithms for connectomics. Front. Neuroanat. 9:142. doi:10.3389/fnana.2015.00142")
    modality = "electron microscopy"
    target_structure = ("neuronal membranes",)
    tag = "electron-microscopy"
    summary_tail = " (channel 1 = interior, the ISBI 2012 convention)."
    output_note = ", 1 = interior (ISBI 2012 convention)"

    # ------------------------------------------------------------------ data
    def ingest(self, folder: Path, out: Path, *, name: str, entry: dict, source: dict) -> dict:
        return ingest_isbi2012(folder, out, name=name, entry=entry, source=source, kind=self)

    # ------------------------------------------------------------------ outputs

    def segment_stack(self, out: Path, name: str, results: list, convention: str, info: dict) -> list[str]:
        """The challenge's submission stack ``<name>_prob.tif`` (32-bit float (Z, H, W), 1 = interior),
        ``<name>_seg.tif`` uint8 (Z, H, W) and the sidecar ``<name>_prob.json`` saying what they are."""
        import json

        import numpy as np

        probs = np.stack([r[0] for r in results])
        desc = (f"ISBI 2012 challenge submission form: 32-bit float stack {probs.shape} (the input's size); "
                f"{convention}")
        write_probability(out / f"{name}_prob.tif", probs, desc)
        write_labels(out / f"{name}_seg.tif", np.stack([r[1] for r in results]))
        sidecar = {"file": f"{name}_prob.tif", "input": info["input"], "shape": list(probs.shape),
                   "dtype": "float32", "values": convention, "class_1": info["class_1"],
                   "one_means": "cell interior (non-membrane), as white in the challenge's training labels",
                   "zero_means": "membrane", "segmentation": f"{name}_seg.tif: {info['segmentation']}",
                   "threshold": info["threshold"], "model": info["model"]}
        (out / f"{name}_prob.json").write_text(json.dumps(sidecar, indent=2) + "\n")
        return [f"{name}_prob.tif", f"{name}_seg.tif", f"{name}_prob.json"]

    def segment_groups(self, meta: dict, ds_dir: Path) -> list[tuple[str, str, list[dict]]]:
        """The unannotated test volume as one stack ``test-volume`` (SegError if there is none)."""

        pages = sorted((e for e in meta["slices"] if e["split"] == "unlabeled"), key=lambda e: e["frame"])
        if not pages:
            raise SegError(f"{ds_dir / 'meta.json'}: no unannotated slices to segment (an ISBI 2012 dataset "
                           "ingested from the HDF5 download has no test volume)")
        return [("stack", "test-volume", pages)]

    # ------------------------------------------------------------------ measures
    def measures(self, classes: list[str], *, pred_dir: Path, meta: dict, thresholds: list[float],
                 decision: float, sparse: bool):
        """Pixel measures of ``<id>_seg.tif`` and the Rand / information measures of ``<id>_prob.tif``."""

        return ThresholdMapMeasures(classes, seg_path=lambda e: pred_dir / f"{e['id']}_seg.tif",
                                    thresholds=thresholds)

    def reference_identity(self, name: str, meta: dict) -> str | None:
        """``"isbi2012"`` when the dataset's training pixels hash to the ISBI 2012 volume's
        (``meta["source"]["pixels_sha256"]["train"]``, recorded by ``seg ingest``), else None."""
        pixels = ((meta.get("source") or {}).get("pixels_sha256") or {}).get("train")
        return IDENTITY if pixels == TRAIN_PIXELS_SHA256 else None
