"""Published U-Net results shown in the report as reference lines and tables, keyed to the exact
dataset each was measured on.

All figures are from O. Ronneberger, P. Fischer, T. Brox, "U-Net: Convolutional Networks for
Biomedical Image Segmentation", MICCAI 2015 (Tables 1 and 2). They were measured on the challenges'
own test sets (ISBI 2012: the 30-slice test volume whose labels the organisers withhold; ISBI cell
tracking challenge 2015: the challenge's test sequences). Our numbers are measured on held-out slices
of the public training data, so they are a reference, not a like-for-like comparison.

A reference is shown only beside the dataset it was measured on (:func:`dataset_identity`): the
ISBI 2012 stack recognised by the SHA-256 of its training pixels (another EM membrane stack ingested
with ``kind: isbi2012`` gets none), a CTC dataset by its exact official name (``Fluo-N2DL-HeLa`` is
not ``DIC-C2DH-HeLa``). The "IoU" the paper reports for the cell tracking challenge is the
challenge's object measure SEG (mean Jaccard index of each annotated cell with the predicted object
covering more than half of it), so it is compared with our ``seg``, not with the pixel mean IoU.
"""

from __future__ import annotations

from dataclasses import dataclass

from seg.kinds import find_kind
from seg.kinds import isbi2012 as isbi2012_kind

SOURCE = "Ronneberger et al., U-Net, MICCAI 2015"


@dataclass(frozen=True)
class Reference:
    """One published number.

    Attributes:
        dataset: the identity of the dataset it was measured on (see :func:`dataset_identity`).
        metric: key of our metrics.json aggregate computed the same way (``seg`` = the CTC SEG
            measure, ``rand_error``, ``pixel_error_isbi`` = 1 - best F-score of interior pixels,
            the challenge's "pixel error"), or ``warping_error`` (not computed by ``seg score``).
        value: the published value (unitless; errors are fractions, lower is better).
        test_set: the test set it was measured on (shown beside the value).
        name: short name for legends, e.g. ``"U-Net, DIC-HeLa SEG"``.
    """

    dataset: str
    metric: str
    value: float
    test_set: str
    name: str


ISBI_TEST_SET = "ISBI 2012 challenge test set (30 slices, labels withheld)"
CTC_TEST_SET = "ISBI cell tracking challenge 2015 test set"

# The ISBI 2012 training stack's identity and the SHA-256 of its pixels that recognises it.
ISBI2012, ISBI2012_TRAIN_PIXELS_SHA256 = isbi2012_kind.IDENTITY, isbi2012_kind.TRAIN_PIXELS_SHA256

REFERENCES = (
    Reference(ISBI2012, "warping_error", 0.000353, ISBI_TEST_SET, "U-Net warping error"),
    Reference(ISBI2012, "rand_error", 0.0382, ISBI_TEST_SET, "U-Net Rand error"),
    Reference(ISBI2012, "pixel_error_isbi", 0.0611, ISBI_TEST_SET, "U-Net pixel error"),
    Reference("PhC-C2DH-U373", "seg", 0.9203, CTC_TEST_SET, "U-Net, PhC-U373 SEG (published as IoU)"),
    Reference("DIC-C2DH-HeLa", "seg", 0.7756, CTC_TEST_SET, "U-Net, DIC-HeLa SEG (published as IoU)"),
)


def dataset_identity(name: str, meta: dict | None) -> str | None:
    """The identity of an ingested dataset for :func:`references_for`, or None if unknown: its kind's
    :meth:`seg.kinds.base.Kind.reference_identity`.

    Args:
        name: the dataset's name in the config.
        meta: its canonical ``meta.json`` (None when the dataset folder is absent: no identity).

    Returns:
        ``"isbi2012"`` for an ``isbi2012``-kind dataset whose training pixels hash to the ISBI 2012
        volume's (``meta["source"]["pixels_sha256"]["train"]``, recorded by ``seg ingest``); the
        official CTC name for a ``ctc``-kind dataset whose name is exactly one (e.g.
        ``DIC-C2DH-HeLa``); otherwise None.
    """
    kind = find_kind(meta.get("kind")) if meta else None
    return kind.reference_identity(name, meta) if kind is not None else None


def references_for(identity: str | None) -> tuple[Reference, ...]:
    """Published results measured on the dataset of this identity (empty for None or a dataset no
    U-Net result was published for, e.g. Fluo-N2DH-GOWT1)."""
    return tuple(r for r in REFERENCES if identity is not None and r.dataset == identity)
