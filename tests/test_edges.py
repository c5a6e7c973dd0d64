"""Edge-error anatomy (seg.metrics.edges) on hand-built membranes and on real ISBI label maps."""

from __future__ import annotations

import numpy as np
import pytest

from seg.errors import SegError
from seg.metrics.edges import BINS, edge_distance, edge_error_counts, edge_error_summary
from seg.metrics.overlap import confusion_matrix

CLASSES = ["membrane", "interior"]


def _stripes(cols: list[range], shape=(48, 64)) -> np.ndarray:
    """Interior (1) with vertical membrane stripes (0) over the given column ranges."""
    sem = np.ones(shape, np.uint8)
    for c in cols:
        sem[:, c.start:c.stop] = 0
    return sem


def _shift_rows(a: np.ndarray, k: int) -> np.ndarray:
    """``a`` moved ``k`` rows down, the top rows repeating the first one (no wrap-around)."""
    return np.concatenate([np.repeat(a[:1], k, axis=0), a[:-k]]) if k else a.copy()


def test_membrane_one_pixel_too_wide_errs_in_bin_1_only():
    gt = _stripes([range(20, 25)])
    pred = _stripes([range(19, 26)])
    counts = edge_error_counts(gt, pred)
    assert counts.tolist() == [2 * 48, 0, 0, 0]
    s = edge_error_summary(counts, confusion_matrix(gt, pred, 2), CLASSES)
    assert s["bins_px"] == list(BINS) and s["share"] == [1.0, 0.0, 0.0, 0.0]
    assert s["iou_without_bin1"] == {"membrane": 1.0, "interior": 1.0}


def test_membrane_two_pixels_off_errs_in_bin_2():
    gt = _stripes([range(20, 25)])
    pred = _stripes([range(22, 27)])
    assert edge_error_counts(gt, pred).tolist() == [0, 4 * 48, 0, 0]


def test_missed_and_invented_membranes_are_far_errors():
    gt = _stripes([range(10, 15), range(40, 45)])
    missed = _stripes([range(10, 15)])  # the second membrane is not predicted at all
    counts = edge_error_counts(gt, missed)
    # its pixels are 26-30 px from the predicted membrane, however close to their own edges
    assert counts.tolist() == [0, 0, 0, 5 * 48]
    blob = gt.copy()
    blob[20:24, 26:30] = 0  # an invented 4x4 membrane blob, >= 11 px from any true membrane
    assert edge_error_counts(gt, blob).tolist() == [0, 0, 0, 16]
    s = edge_error_summary(counts, confusion_matrix(gt, missed, 2), CLASSES)
    assert s["iou_without_bin1"]["membrane"] == pytest.approx(0.5)  # nothing to put right in bin 1


@pytest.mark.parametrize("k,allowed", [(1, {0}), (3, {0, 1, 2})])
def test_shifted_real_isbi_labels(isbi_stacks, k, allowed):
    """A label map moved by k rows errs only where both edges are <= k px away: for k = 1 every error
    is in bin 1, for k = 3 none is beyond bin 3-5; counts sum to the misclassified pixels."""
    gt = (isbi_stacks["labels"][7] > 0).astype(np.uint8)
    gt[-8:] = gt[-9]  # constant bottom rows: every moved edge keeps the row below it in the map
    pred = _shift_rows(gt, k)
    counts = edge_error_counts(gt, pred)
    cm = confusion_matrix(gt, pred, 2)
    wrong = int(cm.sum() - np.trace(cm))
    assert wrong > 5000 and counts.sum() == wrong
    assert {i for i, v in enumerate(counts) if v} == allowed
    s = edge_error_summary(counts, cm, CLASSES)
    if k == 1:
        assert s["iou_without_bin1"] == {"membrane": 1.0, "interior": 1.0}
    else:
        assert s["iou_without_bin1"]["membrane"] < 1.0


def test_distance_and_bad_input():
    gt = _stripes([range(20, 25)])
    d = edge_distance(gt)
    assert d[0, 22] == 3 and d[0, 19] == 1 and d[0, 0] == 20
    assert np.isinf(edge_distance(np.ones((4, 4), np.uint8))).all()
    # a one-class prediction has no edge: its errors count as far
    assert edge_error_counts(gt, np.ones_like(gt)).tolist() == [0, 0, 0, 5 * 48]
    assert edge_error_summary(np.zeros(4, np.int64))["share"] == [0.0] * 4
    with pytest.raises(SegError, match="differs"):
        edge_error_counts(gt, gt[:, :10])
    with pytest.raises(SegError, match="2D"):
        edge_distance(gt[None])
