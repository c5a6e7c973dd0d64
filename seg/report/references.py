"""Published U-Net results shown in the report as reference lines and tables.

All figures are from O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for
Biomedical Image Segmentation", MICCAI 2015 (Tables 1 and 2). They were measured on the challenges'
own test sets (ISBI 2012: the 30-slice test volume whose labels the organisers withhold; ISBI cell
tracking challenge 2015: the challenge's test sequences). Our numbers are measured on held-out slices
of the public training data, so they are a reference, not a like-for-like comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = "Ronneberger et al., U-Net, MICCAI 2015"


@dataclass(frozen=True)
class Reference:
    """One published number.

    Attributes:
        metric: key of our metrics.json aggregate computed the same way (``iou_mean``,
            ``rand_error``, ``pixel_error_isbi`` = 1 - best F-score of interior pixels, the
            challenge's "pixel error"), or ``warping_error`` (not computed by ``seg score``).
        value: the published value (unitless; errors are fractions, lower is better).
        test_set: the test set it was measured on (shown beside the value).
        name: short name for legends, e.g. ``"U-Net, DIC-HeLa IoU"``.
    """

    metric: str
    value: float
    test_set: str
    name: str


ISBI_TEST_SET = "ISBI 2012 challenge test set (30 slices, labels withheld)"
CTC_TEST_SET = "ISBI cell tracking challenge 2015 test set"

ISBI2012 = (
    Reference("warping_error", 0.000353, ISBI_TEST_SET, "U-Net warping error"),
    Reference("rand_error", 0.0382, ISBI_TEST_SET, "U-Net Rand error"),
    Reference("pixel_error_isbi", 0.0611, ISBI_TEST_SET, "U-Net pixel error"),
)

# Dataset-name fragments (case-insensitive) -> published IoU on that CTC dataset.
CTC_IOU = {
    "u373": Reference("iou_mean", 0.9203, CTC_TEST_SET, "U-Net, PhC-U373 IoU"),
    "hela": Reference("iou_mean", 0.7756, CTC_TEST_SET, "U-Net, DIC-HeLa IoU"),
}


def references_for(dataset: str, kind: str | None) -> tuple[Reference, ...]:
    """Published results comparable to the metrics of ``dataset``.

    Args:
        dataset: dataset name as in the config (e.g. ``"DIC-C2DH-HeLa"``, ``"isbi2012"``).
        kind: ``"isbi2012"``, ``"ctc"`` or None (unknown).

    Returns:
        The ISBI 2012 error figures for an ``isbi2012`` dataset; the matching IoU for a CTC dataset
        whose name contains ``U373`` or ``HeLa``; otherwise an empty tuple (no published U-Net
        number exists, e.g. for Fluo-N2DH-GOWT1).
    """
    if kind == "isbi2012":
        return ISBI2012
    low = dataset.lower()
    for fragment, ref in CTC_IOU.items():
        if fragment in low:
            return (ref,)
    return ()
