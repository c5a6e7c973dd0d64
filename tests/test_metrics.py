"""Metric definitions: hand-computed cases, symmetry, and agreement with independent references
(scikit-image's adapted Rand error; py-ctcmetrics, the Cell Tracking Challenge's own SEG)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from seg.errors import SegError
from seg.metrics.ctc import ObjectCounts, object_counts, seg_measure
from seg.metrics.overlap import confusion_matrix, overlap_scores
from seg.metrics.rand import (
    best_over_thresholds, challenge_thresholds, label_components, pair_stats,
    probability_stats, segment_scores, thin_boundaries,
)

# ---------------------------------------------------------------------------------------------
# Pixel overlap


def test_overlap_hand_computed():
    gt = np.array([[0, 0, 1, 1],
                   [0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 0, 0, 1]])
    cm = confusion_matrix(gt, pred, 2)
    # truth 0: 4 px, 3 predicted 0, 1 predicted 1; truth 1: 4 px, 1 predicted 0, 3 predicted 1
    assert cm.tolist() == [[3, 1], [1, 3]]
    s = overlap_scores(cm, ["membrane", "interior"])
    # class 0: TP 3, FP 1, FN 1 -> IoU 3/5, Dice 6/8; class 1 the same
    assert s["iou"] == {"membrane": pytest.approx(0.6), "interior": pytest.approx(0.6)}
    assert s["iou_mean"] == pytest.approx(0.6)
    assert s["dice_mean"] == pytest.approx(0.75)
    assert s["pixel_error"] == pytest.approx(2 / 8)
    assert s["f1_interior_error"] == pytest.approx(0.25)


def test_overlap_asymmetric_classes_and_absent_class():
    gt = np.array([[1, 1, 1, 0]])
    pred = np.array([[1, 1, 0, 0]])
    s = overlap_scores(confusion_matrix(gt, pred, 2), ["background", "cell"])
    assert s["iou"]["cell"] == pytest.approx(2 / 3)       # TP 2, FN 1
    assert s["iou"]["background"] == pytest.approx(1 / 2)  # TP 1, FP 1
    assert s["f1_interior_error"] == pytest.approx(1 - 4 / 5)
    # a class absent from both counts as perfect agreement
    s2 = overlap_scores(confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 2), int), 2), ["a", "b"])
    assert s2["iou"]["b"] == 1.0 and s2["pixel_error"] == 0.0


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(SegError, match="shape"):
        confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 2)
    with pytest.raises(SegError, match="classes"):
        confusion_matrix(np.zeros((2, 2), int), np.full((2, 2), 2), 2)


# ---------------------------------------------------------------------------------------------
# V_rand / V_info: hand-computable cases

# GT: segment 1 (4 px) and segment 2 (2 px). Prediction splits segment 1 into two halves.
GT6 = np.array([[1, 1, 1, 1, 2, 2]])
SPLIT6 = np.array([[1, 1, 3, 3, 2, 2]])


def test_identical_segmentations_score_one():
    for gt in (GT6, SPLIT6, np.arange(1, 10).reshape(3, 3)):
        s = segment_scores(gt, gt.copy(), thin=False)
        assert all(v == pytest.approx(1.0) for v in s.values()), s
        # relabelling does not matter
        assert segment_scores(gt, gt * 7 + 3, thin=False)["vrand"] == pytest.approx(1.0)


def test_known_split_by_hand():
    # Contingency (GT x pred) counts: (1,1)=2, (1,3)=2, (2,2)=2; GT sizes 4, 2; pred sizes 2, 2, 2.
    # sum c^2 = 4+4+4 = 12, sum a^2 = 16+4 = 20, sum b^2 = 4+4+4 = 12.
    # split = 12/20 = 0.6, merge = 12/12 = 1, V_rand = 2*12/(20+12) = 0.75.
    s = segment_scores(GT6, SPLIT6, thin=False)
    assert s["vrand_split"] == pytest.approx(0.6)
    assert s["vrand_merge"] == pytest.approx(1.0)
    assert s["vrand"] == pytest.approx(0.75)
    # Entropies (n = 6, natural log): H(GT) = -(4/6 ln 4/6 + 2/6 ln 2/6) = ln 6 - (10/6) ln 2,
    # H(pred) = ln 3 = H(joint) (the prediction refines GT), so I = H(GT).
    h_gt = math.log(6) - 10 / 6 * math.log(2)
    h_pred = math.log(3)
    assert s["vinfo_split"] == pytest.approx(h_gt / h_pred)  # 0.57938
    assert s["vinfo_merge"] == pytest.approx(1.0)
    assert s["vinfo"] == pytest.approx(2 * h_gt / (h_gt + h_pred))  # 0.73368
    assert s["vinfo"] == pytest.approx(0.733680, abs=1e-6)


def test_known_merge_by_hand_and_split_merge_swap():
    # GT has three segments of 2 px; the prediction merges the first two.
    gt = np.array([[1, 1, 2, 2, 3, 3]])
    pred = np.array([[5, 5, 5, 5, 6, 6]])
    # counts (1,5)=2, (2,5)=2, (3,6)=2: sum c^2 = 12; sum a^2 = 12; sum b^2 = 16 + 4 = 20
    s = segment_scores(gt, pred, thin=False)
    assert s["vrand_merge"] == pytest.approx(12 / 20)
    assert s["vrand_split"] == pytest.approx(1.0)
    assert s["vrand"] == pytest.approx(24 / 32)
    # swapping segmentation and GT swaps split and merge (no background involved)
    for a, b in ((gt, pred), (GT6, SPLIT6)):
        s_ab = segment_scores(a, b, thin=False)
        s_ba = segment_scores(b, a, thin=False)
        for fam in ("vrand", "vinfo"):
            assert s_ab[f"{fam}_split"] == pytest.approx(s_ba[f"{fam}_merge"])
            assert s_ab[f"{fam}_merge"] == pytest.approx(s_ba[f"{fam}_split"])
            assert s_ab[fam] == pytest.approx(s_ba[fam])


def test_foreground_restriction_ignores_gt_background():
    gt = np.array([[1, 1, 0, 0, 2, 2]])
    pred = np.array([[1, 1, 9, 1, 2, 2]])  # the prediction's labels on GT background do not count
    s = segment_scores(gt, pred, thin=False)
    assert s["vrand"] == pytest.approx(1.0) and s["vinfo"] == pytest.approx(1.0)
    # but it is not symmetric: GT pixels the prediction calls background do count
    assert segment_scores(pred, gt, thin=False)["vrand"] < 1.0


def test_unthinned_boundary_pixels_are_singletons_for_rand_error():
    gt = np.array([[1, 1, 1, 1]])
    pred = np.array([[1, 0, 0, 1]])
    # singletons: counts (1,1)=2 plus two 1-px segments -> sum c^2 = 4+1+1 = 6 = sum b^2, sum a^2 = 16
    # F = 2*6/(16+6) = 12/22
    assert pair_stats(gt, pred, pred_background="singletons").rand()["vrand"] == pytest.approx(12 / 22)
    # as one ordinary segment: counts (1,1)=2, (1,0)=2 -> F = 2*8/(16+8)
    assert pair_stats(gt, pred).rand()["vrand"] == pytest.approx(16 / 24)
    # after thinning the boundary disappears into segment 1
    assert segment_scores(gt, pred, thin=True)["vrand"] == pytest.approx(1.0)


def test_thinning_removes_boundary_width():
    gt = np.array([[1, 1, 1, 0, 2, 2, 2]])
    thick = np.array([[1, 1, 0, 0, 0, 2, 2]])  # same two cells, 3-px boundary
    thinned = thin_boundaries(thick, gt > 0)
    assert thinned[0, [0, 1, 2]].tolist() == [1, 1, 1] and thinned[0, [4, 5, 6]].tolist() == [2, 2, 2]
    assert segment_scores(gt, thick, thin=True)["vrand"] == pytest.approx(1.0)
    assert segment_scores(gt, thick, thin=False)["vrand"] < 1.0
    # an all-boundary prediction becomes one segment
    assert np.all(thin_boundaries(np.zeros((3, 3), int), np.ones((3, 3), bool)) == 1)


def test_pooled_stack_is_not_the_mean_of_slices():
    a = pair_stats(GT6, SPLIT6)                       # sum c^2 12, a^2 20, b^2 12
    b = pair_stats(np.array([[1, 1, 2, 2]]), np.array([[1, 1, 2, 2]]))  # 8, 8, 8
    pooled = (a + b).rand()
    assert pooled["vrand"] == pytest.approx(2 * 20 / (28 + 20))  # 0.8333, not (0.75 + 1)/2
    assert pooled["vrand_split"] == pytest.approx(20 / 28)


def test_challenge_thresholds_match_the_fiji_loop():
    ts = challenge_thresholds(0.0, 1.0, 0.1)
    assert len(ts) == 11 and ts[0] == 0.0
    assert 0.99 < ts[-1] < 1.0  # 0.1 added ten times is 0.9999999999999999 <= 1.0
    assert challenge_thresholds(0.0, 0.0, 0.1) == [0.0]
    with pytest.raises(SegError, match="step"):
        challenge_thresholds(0.0, 1.0, 0.0)


def test_probability_is_thresholded_strictly_in_double_precision():
    gt = label_components(np.array([[1, 1, 0, 1, 1]]) > 0)  # two cells
    prob = np.array([[1, 1, 0, 1, 1]], dtype=np.float32)
    # at t = 0.9999999999999999 a float32 1.0 is still > t (float32 rounding of t would make it 1.0)
    st = probability_stats(gt, prob, [challenge_thresholds()[-1]])
    assert best_over_thresholds([st])["vrand"] == pytest.approx(1.0)
    assert best_over_thresholds([st])["pixel_error_isbi"] == 0.0
    # at t = 1.0 nothing is foreground: one segment -> the two cells (2 px each) are merged:
    # sum c^2 = 4 + 4, sum b^2 = 16 -> merge 0.5; no interior pixel found -> pixel F-score 0
    r1 = best_over_thresholds([probability_stats(gt, prob, [1.0])])
    assert r1["vrand_merge"] == pytest.approx(0.5) and r1["pixel_error_isbi"] == 1.0


def test_best_threshold_over_probability_map(isbi_stacks):
    interior = isbi_stacks["labels"][0] == 255
    gt = label_components(interior)
    # a soft map whose 0.5-threshold merges cells but a high threshold recovers them
    prob = np.where(interior, 0.95, 0.6).astype(np.float32)
    r = best_over_thresholds([probability_stats(gt, prob, challenge_thresholds())])
    assert r["vrand"] == pytest.approx(1.0) and r["vinfo"] == pytest.approx(1.0)
    assert 0.6 <= r["vrand_threshold"] < 0.95
    assert r["rand_error"] == pytest.approx(0.0) and r["pixel_error_isbi"] == 0.0
    # at the 0.5 threshold (the usual segmentation) everything is interior: pixel F-score by hand
    tp, fp = int(interior.sum()), int((~interior).sum())
    half = best_over_thresholds([probability_stats(gt, prob, [0.5])])
    assert half["pixel_error_isbi"] == pytest.approx(1 - 2 * tp / (2 * tp + fp))
    assert half["vrand_merge"] < 0.1 and half["vrand_split"] == pytest.approx(1.0)


def _isbi_perturbations(interior: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    ids = np.unique(gt)[1:]
    merged = gt.copy()
    merged[np.isin(merged, ids[1::2])] -= 1  # merge every odd component with its predecessor id
    merged[gt == 0] = 0
    return {
        "eroded": label_components(ndi.binary_erosion(interior, iterations=2)),
        "dilated": label_components(ndi.binary_dilation(interior, iterations=2)),
        "merged": merged,
        "relabelled": np.where(gt > 0, gt.max() + 1 - gt, 0),
        "shifted": np.roll(gt, 3, axis=1),
    }


def test_unthinned_vrand_agrees_with_skimage_adapted_rand_error(isbi_stacks):
    from skimage.metrics import adapted_rand_error

    seen = set()
    for z in (0, 13, 29):
        interior = isbi_stacks["labels"][z] == 255
        gt = label_components(interior)
        for name, pred in _isbi_perturbations(interior, gt).items():
            are, _, _ = adapted_rand_error(gt, pred)
            ours = pair_stats(gt, pred).rand(self_pairs=False)["vrand"]
            assert ours == pytest.approx(1.0 - are, abs=1e-12), (z, name)
            # the challenge's N^2 normalisation differs only by the self-pairs (tiny at 512x512)
            assert segment_scores(gt, pred, thin=False)["vrand"] == pytest.approx(1.0 - are, abs=2e-3)
            seen.add(round(ours, 3))
    assert len(seen) > 4  # the perturbations really differ


# ---------------------------------------------------------------------------------------------
# CTC SEG and object precision/recall


def test_seg_and_iou50_by_hand():
    ref = np.zeros((4, 8), int)
    ref[0, 0:4] = 1          # R1: 4 px
    ref[2, 0:4] = 2          # R2: 4 px
    pred = np.zeros_like(ref)
    pred[0, 1:5] = 7         # S7 covers 3 of R1 plus 1 outside: |R n S| = 3 > 2 -> J = 3/5
    pred[2, 2:6] = 8         # S8 covers 2 of R2: 2 is not > 0.5*4 -> 0
    c = object_counts(ref, pred)
    assert c.seg_sum == pytest.approx(0.6) and c.n_ref == 2 and c.n_pred == 2
    s = c.scores()
    assert s["seg"] == pytest.approx(0.3)
    # IoU: R1-S7 = 3/5 > 0.5 (match), R2-S8 = 2/6 (no match)
    assert s["precision_iou50"] == pytest.approx(0.5) and s["recall_iou50"] == pytest.approx(0.5)
    # SEG pools reference objects over frames: frame 2 holds R1 only, found exactly -> (0.6 + 0 + 1) / 3
    frame2 = ref[:2, :4]
    assert seg_measure([ref, frame2], [pred, frame2.copy()]) == pytest.approx(1.6 / 3)


def test_object_counts_edge_cases():
    empty = np.zeros((3, 3), int)
    assert math.isnan(object_counts(empty, empty).scores()["seg"])
    assert object_counts(empty, empty).scores()["precision_iou50"] == 1.0
    one = empty.copy()
    one[1, 1] = 4
    assert object_counts(one, empty).scores() == {"seg": 0.0, "precision_iou50": 0.0, "recall_iou50": 0.0}
    assert (ObjectCounts(1.0, 2, 1, 1) + ObjectCounts(0.5, 1, 1, 0)).scores()["seg"] == pytest.approx(0.5)


def _ctc_perturbations(ref: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    ids = np.unique(ref)[1:]
    eroded = np.zeros_like(ref)
    for i in ids:
        eroded[ndi.binary_erosion(ref == i, iterations=5)] = i
    merged = ref.copy()
    for a, b in rng.permutation(ids)[: 2 * (len(ids) // 4)].reshape(-1, 2):
        merged[ref == b] = a
    dilated = ndi.grey_dilation(ref, size=9)
    dilated[ref > 0] = ref[ref > 0]
    return {
        "eroded": eroded,
        "shifted": np.roll(ref, (7, -5), axis=(0, 1)),
        "merged": merged,
        "dropped": np.where(np.isin(ref, rng.choice(ids, len(ids) // 3, replace=False)), 0, ref),
        "dilated": dilated,
    }


def test_seg_equals_py_ctcmetrics_on_gowt1(shared_data, tmp_path):
    from ctc_metrics.metrics import seg as ctc_seg
    from ctc_metrics.utils.representations import match

    rng = np.random.default_rng(0)
    gt_dir = shared_data / "Fluo-N2DH-GOWT1" / "01_GT" / "SEG"
    pooled: dict[str, tuple[list, list, list, list]] = {}
    for t in (0, 5):
        ref = tifffile.imread(gt_dir / f"man_seg{t:03d}.tif")[256:768]  # half the frame: 22+ cells, faster
        ref_path = tmp_path / f"ref{t}.tif"
        tifffile.imwrite(ref_path, ref)
        for name, pred in _ctc_perturbations(ref, rng).items():
            pred_path = tmp_path / f"{name}{t}.tif"
            tifffile.imwrite(pred_path, pred.astype(np.uint16))
            labels_ref, _, _, _, ious = match(str(ref_path), str(pred_path))
            theirs = ctc_seg([labels_ref], [ious])
            ours = object_counts(ref, pred).scores()["seg"]
            assert ours == pytest.approx(theirs, abs=1e-12), (t, name)
            lr, li, refs, preds = pooled.setdefault(name, ([], [], [], []))
            lr.append(labels_ref), li.append(ious), refs.append(ref), preds.append(pred)
    for name, (lr, li, refs, preds) in pooled.items():
        assert seg_measure(refs, preds) == pytest.approx(ctc_seg(lr, li), abs=1e-12), name
    assert 0.2 < seg_measure(pooled["eroded"][2], pooled["eroded"][3]) < 0.95
