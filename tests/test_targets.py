"""Training targets beyond the paper's: the three-class map, the distance maps, their post-processing,
the round trips, and a run of each target through every step.

Synthetic frames of touching cells: Voronoi-like blobs packed edge to edge, so that every cell
touches a neighbour along a long border, plus isolated small cells.
"""

from __future__ import annotations

import numpy as np
import pytest

from seg.errors import SegError
from seg.infer.postprocess import distance_objects, three_class_objects
from seg.metrics.ctc import overlap_table
from seg.targets import check_targets, get_target
from seg.targets.distance import CELL, NEIGHBOUR, distance_maps
from seg.targets.three_class import BOUNDARY, INTERIOR, three_class_map


def touching_cells(seed: int = 0, size: int = 160, n: int = 14) -> np.ndarray:
    """int32 (size, size) instances: up to n cells of a Voronoi tessellation inside a disc mask (so
    they touch along shared edges; slivers under 200 px dropped), plus three isolated discs of radius 4 (area ~50 px)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    centres = rng.uniform(30, size - 30, size=(n, 2))
    d = np.stack([np.hypot(yy - c[0], xx - c[1]) for c in centres])
    lab = np.argmin(d, axis=0).astype(np.int32) + 1
    lab[np.hypot(yy - size / 2, xx - size / 2) > size * 0.36] = 0
    areas = np.bincount(lab.ravel(), minlength=n + 1)
    lab[np.isin(lab, np.flatnonzero(areas < 200))] = 0  # no slivers cut off by the disc
    for k, (cy, cx) in enumerate([(8, 8), (8, size - 9), (size - 9, 8)]):
        lab[np.hypot(yy - cy, xx - cx) <= 4] = n + 1 + k
    return lab


def seg_measure(ref: np.ndarray, pred: np.ndarray) -> float:
    """SEG (mean over reference objects of the IoU with a match of > half their pixels)."""
    return float(overlap_table(ref, pred).counts(None).scores()["seg"])


def one_hot(cls: np.ndarray, k: int = 3) -> np.ndarray:
    return np.stack([(cls == c).astype(np.float32) for c in range(k)])


def decode(target: str, out: np.ndarray, *, threshold: float = 0.5, min_size: int = 50, **second) -> np.ndarray:
    """The instance labels a target decodes from the network's activated maps ``out``; ``second``:
    the target's second setting (seed_threshold (default 0.5) for three_class and distance; method
    and h for fg_border)."""
    t = get_target(target)
    pp = {"min_size": min_size, **({"seed_threshold": 0.5} if t.second_key == "seed_threshold" else {}), **second}
    return t.decode(out, pp, threshold=threshold, instances=True, foreground=1)[1]


def test_three_class_map_partitions_every_instance_and_separates_touching_interiors():
    inst = touching_cells()
    m = three_class_map(inst, width=2)
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, INTERIOR, BOUNDARY}
    np.testing.assert_array_equal(m > 0, inst > 0)  # interior + boundary = the objects, nothing else
    for k in np.unique(inst[inst > 0]):
        cell = m[inst == k]
        assert (cell == BOUNDARY).any()  # every object has a boundary ...
        assert (cell == INTERIOR).any()  # ... and, at >= 50 px, an interior
    # the interiors of different cells never touch (8-connectivity): one interior component per cell
    from skimage.measure import label

    comp = label(m == INTERIOR, connectivity=2)
    for c in range(1, comp.max() + 1):
        assert len(np.unique(inst[comp == c])) == 1
    assert comp.max() == len(np.unique(inst[inst > 0]))
    # boundary width: a boundary pixel is within 2 px (chessboard) of another label; an interior one is not
    from scipy import ndimage

    other = ndimage.maximum_filter(inst, 5, mode="nearest") != ndimage.minimum_filter(inst, 5, mode="nearest")
    assert (m[(inst > 0) & other] == BOUNDARY).all()
    # ... and the interior pixels cut off from their object's main interior are boundary too (few)
    assert ((m == BOUNDARY) & ~other).sum() < 0.01 * (m == INTERIOR).sum()


@pytest.mark.parametrize("width, size", [(1, 160), (4, 480), (8, 640)])
def test_three_class_boundary_width(width, size):
    """A wider boundary for larger cells (the plan's D / 15: 8 px for DIC-HeLa's D = 120 px; here
    4 px at D ~ 90 px and 8 px at D ~ 120 px) keeps the partition and the separated interiors; boundary pixels are exactly those within ``width`` px
    (chessboard) of another label, up to the few pixels cut off from an object's main interior;
    the round trip still holds."""
    from scipy import ndimage
    from skimage.measure import label

    inst = touching_cells(1, size=size)
    inst[np.isin(inst, np.unique(inst)[-3:])] = 0  # the small discs: no interior at 4 px
    m = three_class_map(inst, width=width)
    np.testing.assert_array_equal(m > 0, inst > 0)
    size = 2 * width + 1
    other = ndimage.maximum_filter(inst, size, mode="nearest") != ndimage.minimum_filter(inst, size, mode="nearest")
    assert (m[(inst > 0) & other] == BOUNDARY).all()
    assert ((m == BOUNDARY) & ~other).sum() < 0.01 * (m == INTERIOR).sum()
    assert label(m == INTERIOR, connectivity=2).max() == len(np.unique(inst[inst > 0]))
    narrow = (three_class_map(inst, width=width + 1) == BOUNDARY).sum()
    assert (m == BOUNDARY).sum() < narrow  # one more pixel of width: more boundary
    out = decode("three_class", one_hot(m), threshold=0.5, seed_threshold=0.5, min_size=0)
    assert seg_measure(inst, out) >= 0.95


def test_three_class_map_rejects_bad_input():
    with pytest.raises(SegError, match="integer"):
        three_class_map(np.zeros((4, 4), np.float32), width=2)
    with pytest.raises(SegError, match="width"):
        three_class_map(np.zeros((4, 4), np.int32), width=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trip_instances_three_class_instances(seed):
    inst = touching_cells(seed)
    probs = one_hot(three_class_map(inst, width=2))
    out = decode("three_class", probs, threshold=0.5, seed_threshold=0.5, min_size=0)
    assert out.dtype == np.uint16
    assert seg_measure(inst, out) >= 0.95
    assert out.max() == len(np.unique(inst[inst > 0]))
    # soft, noisy probabilities (a network's): still recovered
    rng = np.random.default_rng(seed)
    soft = probs * 0.8 + 0.2 / 3 + rng.normal(0, 0.03, probs.shape).astype(np.float32)
    soft = np.clip(soft, 0, None)
    soft /= soft.sum(0, keepdims=True)
    assert seg_measure(inst, decode("three_class", soft, min_size=10)) >= 0.95


def test_round_trip_sparse_annotations():
    """A sparse frame: only some cells annotated; unannotated pixels are 0 in the map (and carry
    weight 0 in training). The annotated cells come back from a prediction of all cells."""
    inst = touching_cells(3)
    keep = [k for k in np.unique(inst[inst > 0]) if k % 3 == 0]
    sparse = np.where(np.isin(inst, keep), inst, 0)
    m = three_class_map(sparse, width=2)
    np.testing.assert_array_equal(m > 0, sparse > 0)
    pred = decode("three_class", one_hot(three_class_map(inst, width=2)), min_size=0)
    # SEG over the annotated cells only (the measure of sparse data)
    assert seg_measure(sparse, pred) >= 0.95
    # the sparse map itself round-trips too (touching annotated neighbours stay apart)
    assert seg_measure(sparse, decode("three_class", one_hot(m), min_size=0)) >= 0.95


def test_three_class_postprocess_splits_touching_cells_that_fg_watershed_merges():
    """A 14 px disc touching an 18 px one across a wide neck: the foreground's distance watershed
    merges them once h exceeds the neck's depth (~8.5 px); the boundary channel keeps them apart."""
    yy, xx = np.mgrid[:80, :120]
    inst = np.zeros((80, 120), np.int32)
    inst[np.hypot(yy - 40, xx - 40) <= 18] = 1
    inst[(np.hypot(yy - 40, xx - 70) <= 14) & (inst == 0)] = 2
    probs3 = one_hot(three_class_map(inst, width=2))
    fg2 = np.stack([1 - (inst > 0), inst > 0]).astype(np.float32)
    ws = decode("fg_border", fg2, threshold=0.5, min_size=0, method="watershed", h=10.0)
    tc = decode("three_class", probs3, threshold=0.5, min_size=0, seed_threshold=0.5)
    assert ws.max() == 1 and tc.max() == 2
    assert seg_measure(inst, tc) >= 0.95


def test_unseeded_component_is_an_object_and_probabilities_sum():
    probs = np.zeros((3, 20, 20), np.float32)
    probs[0] = 1
    probs[:, 5:9, 5:9] = np.array([0, 0.3, 0.7], np.float32)[:, None, None]  # all boundary-ish: no seed
    out = three_class_objects(probs, threshold=0.5, seed_threshold=0.5)
    assert out.max() == 1 and (out > 0).sum() == 16
    np.testing.assert_allclose(get_target("three_class").probability(probs, foreground=1)[6, 6], 1.0)


def test_postprocess_method_must_match_the_channels():
    """A target decodes only its own maps, and the default target only the foreground methods."""
    with pytest.raises(SegError, match="unknown option 'three_class' for a foreground probability"):
        decode("fg_border", np.full((2, 8, 8), 0.5, np.float32), method="three_class", h=2.0)
    with pytest.raises(SegError, match=r"\(3, H, W\)"):
        decode("three_class", np.full((2, 8, 8), 0.5, np.float32))
    with pytest.raises(SegError, match=r"\(2, H, W\)"):
        decode("distance", np.full((3, 8, 8), 0.5, np.float32), threshold=0.1)


def test_target_registry_and_config_check():
    assert get_target(None).name == "fg_border"
    assert get_target("three_class").channels(["background", "cell"]) == ["background", "interior", "boundary"]
    assert get_target("fg_border").channels(["membrane", "interior"]) == ["membrane", "interior"]
    with pytest.raises(SegError, match="unknown target 'distance_map'.*fg_border"):
        get_target("distance_map")
    pp = {"method": "watershed", "threshold": 0.5, "h": 2.0, "min_size": 50}
    assert get_target("fg_border").postprocess(pp) == pp
    assert get_target("three_class").postprocess(pp) == {**pp, "method": "three_class", "seed_threshold": 0.5}
    assert get_target("three_class").postprocess({**pp, "seed_threshold": 0.7})["seed_threshold"] == 0.7
    assert get_target("three_class").second_grid({**pp, "seed_threshold": 0.55})[:3] == [0.3, 0.4, 0.5]
    cfg = {"datasets": {"isbi": {"kind": "isbi2012"}, "cells": {"kind": "ctc"}},
           "variants": {"a": {"model": "unet", "target": "three_class"},
                        "b": {"model": "unet", "target": "three_class", "datasets": ["cells"]},
                        "c": {"model": "unet", "target": "nope"},
                        "d": {"model": "unet", "target": "distance", "boundary_width": 4, "datasets": ["cells"]},
                        "e": {"model": "unet", "boundary_weight": 3.0, "datasets": ["cells"]},
                        "f": {"model": "unet", "target": "three_class", "boundary_width": 4, "boundary_weight": 3.0,
                              "datasets": ["cells"]}}}
    from seg.config import variant_datasets

    errors = check_targets(cfg["variants"], lambda v: [d for d in variant_datasets(cfg, v) if d != "cells"])
    assert len(errors) == 4
    assert "variants.a.target: three_class needs instance labels; datasets isbi" in errors[0]
    assert "variants.c.target: unknown target 'nope'" in errors[1]
    assert "variants.d.boundary_width: only for target three_class (the variant's target is distance)" in errors[2]
    assert "variants.e.boundary_weight: only for target three_class (the variant's target is fg_border)" in errors[3]


def test_boundary_weight_multiplies_only_boundary_pixels_and_keeps_ignored_ones():
    """three_class: the loss weight of boundary pixels times boundary_weight (2 unless set), every
    other pixel as the border-weight map has it, ignored pixels (0) still 0; other targets and
    a weight of 1 leave the map as it is."""
    from dataclasses import replace

    from seg.targets.three_class import BOUNDARY_WEIGHT

    inst = touching_cells(2)
    m = three_class_map(inst, width=2)
    rng = np.random.default_rng(0)
    w = rng.uniform(0.5, 3.0, inst.shape).astype(np.float32)
    w[:, :20] = 0  # ignored (sparse annotations)
    tc = replace(get_target("three_class"), boundary_weight=BOUNDARY_WEIGHT)
    out = tc.weigh(m, w)
    assert out.dtype == np.float32 and BOUNDARY_WEIGHT == 2.0
    np.testing.assert_array_equal(out[m == BOUNDARY], 2 * w[m == BOUNDARY])
    np.testing.assert_array_equal(out[m != BOUNDARY], w[m != BOUNDARY])
    assert (out[:, :20] == 0).all()
    # the registry's object: factor BOUNDARY_WEIGHT; a factor of 1 leaves the map as it is
    np.testing.assert_array_equal(get_target("three_class").weigh(m, w), out)
    assert replace(get_target("three_class"), boundary_weight=1.0).weigh(m, w) is w
    assert get_target("fg_border").weigh(m, w) is w and tc.weigh(m, None) is None


def test_distance_maps_peak_inside_each_cell_and_neighbour_map_is_high_only_where_cells_touch():
    inst = touching_cells()
    maps = distance_maps(inst)
    assert maps.shape == (2, *inst.shape) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    obj = inst > 0
    assert not maps[:, ~obj].any()  # 0 on background
    from scipy import ndimage

    for k in np.unique(inst[obj]):
        cell = maps[CELL][inst == k]
        assert cell.max() == pytest.approx(1.0) and cell.min() >= 0.2 - 1e-6
        # the peak is the pixel farthest from the outline, not on it
        peak = np.unravel_index(np.argmax(np.where(inst == k, maps[CELL], -1)), inst.shape)
        edge = ndimage.binary_erosion(inst == k, iterations=2)
        assert edge[peak]
    # neighbour distance: 1 next to another cell, high (> 0.8) only within a tenth of the cell's
    # radius of it, 0 beyond a radius; 0 on the isolated discs
    for k in np.unique(inst[obj])[:-3]:
        d_other = ndimage.distance_transform_edt(~(obj & (inst != k)))
        r = ndimage.distance_transform_edt(np.pad(inst == k, 1)).max()
        cell_k = inst == k
        assert (maps[NEIGHBOUR][cell_k & (d_other == 1)] == 1).all()
        high = cell_k & (maps[NEIGHBOUR] > 0.8)
        assert high.any() and (d_other[high] <= 1 + 0.11 * r).all()
        assert not (cell_k & (d_other > r + 1) & (maps[NEIGHBOUR] > 0)).any()
    for k in np.unique(inst[obj])[-3:]:  # the three isolated discs
        assert not maps[NEIGHBOUR][inst == k].any()
    with pytest.raises(SegError, match="integer"):
        distance_maps(np.zeros((4, 4), np.float32))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_round_trip_instances_distance_instances(seed):
    inst = touching_cells(seed)
    maps = distance_maps(inst)
    out = decode("distance", maps, threshold=0.05, seed_threshold=0.5, min_size=0)
    assert out.dtype == np.uint16
    assert seg_measure(inst, out) >= 0.95
    assert out.max() == len(np.unique(inst[inst > 0]))
    # noisy maps, as a network's: still recovered
    rng = np.random.default_rng(seed)
    noisy = np.clip(maps + rng.normal(0, 0.03, maps.shape).astype(np.float32), 0, 1)
    assert seg_measure(inst, decode("distance", noisy, threshold=0.1, seed_threshold=0.5, min_size=10)) >= 0.95


def test_round_trip_distance_sparse_annotations():
    inst = touching_cells(3)
    keep = [k for k in np.unique(inst[inst > 0]) if k % 3 == 0]
    sparse = np.where(np.isin(inst, keep), inst, 0)
    pred = decode("distance", distance_maps(inst), threshold=0.05, min_size=0)
    assert seg_measure(sparse, pred) >= 0.95
    # the neighbour map of a sparse frame knows only the annotated neighbours: touching annotated
    # cells still come apart
    assert seg_measure(sparse, decode("distance", distance_maps(sparse), threshold=0.05, min_size=0)) >= 0.95
    assert distance_objects(np.zeros((2, 8, 8), np.float32), threshold=0.1, seed_threshold=0.5).max() == 0


def test_weighted_mse_ignores_zero_weight_pixels_and_weights_the_rest():
    import torch

    from seg.train.losses import weighted_mse

    torch.manual_seed(0)
    out = torch.randn(2, 2, 16, 16)
    target = torch.rand(2, 2, 16, 16)
    w = torch.ones(2, 16, 16)
    w[:, :8] = 0
    loss = weighted_mse(out, target, w)
    changed = target.clone()
    changed[:, :, :8] = 1 - changed[:, :, :8]  # only ignored pixels change
    assert torch.equal(loss, weighted_mse(out, changed, w))
    ref = ((torch.sigmoid(out) - target) ** 2)[:, :, 8:].mean()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    assert weighted_mse(out, target, None).item() == pytest.approx(((torch.sigmoid(out) - target) ** 2).mean().item())


def planned_width(diameter: float) -> int:
    """The plan's three-class boundary width for objects of median diameter ``diameter`` px."""
    from seg.targets.three_class import BOUNDARY_BOUNDS, BOUNDARY_DIAMETERS

    return int(min(max(round(diameter / BOUNDARY_DIAMETERS), BOUNDARY_BOUNDS[0]), BOUNDARY_BOUNDS[1]))


# ----------------------------------------------------------------------------- a run of each target, end to end
CHANNELS = {"three_class": ["background", "interior", "boundary"], "distance": ["neighbour distance", "cell distance"]}


@pytest.fixture(scope="module", params=["three_class", "distance"])
def target_run(request, tmp_path_factory) -> dict:
    """A synthetic sparse CTC sequence (96 px, half of the cells annotated) through every step by
    hand, for a variant of each new target: ingest, weights, a 12-step training, val prediction,
    calibration, test prediction with the calibrated settings, score, package."""
    import torch

    from seg.cli import main

    target = request.param
    base = tmp_path_factory.mktemp(target)
    raw = base / "raw"
    assert main(["synth", "--out", str(raw), "--kind", "ctc", "--seed", "5", "--size", "96", "--annotated", "0.5"]) == 0
    cfg = base / "config.yaml"
    cfg.write_text(
        f"data_dir: {base / 'data'}\nresults_dir: {base / 'results'}\nseed: 0\n"
        f"datasets:\n  syn: {{kind: ctc, raw_dir: {raw}, sequences: ['01'], annotations: sparse}}\n"
        f"variants:\n  tiny3: {{model: unet, target: {target}, params: {{base_channels: 4, depth: 2}}}}\n"
        "weights: {sparse_band: 4}\n"
        "train: {iterations: 12, batch_size: 2, patch_size: 64, val_every: 6, device: cpu, amp: none, num_workers: 0}\n"
        "inference: {tile: 64, device: cpu, amp: none}\n"
        "postprocess: {method: watershed, calibrate: true, min_size: 5, search: {min_size: [0, 5]}}\n")
    run, data = base / "results" / "syn" / "tiny3", base / "data"
    common = ["--config", str(cfg), "--dataset", "syn"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["ingest", *common]) == 0
        assert main(["weights", *common]) == 0
        assert main(["train", *common, "--variant", "tiny3", "--out", str(run)]) == 0
        ckpt = str(run / "checkpoints" / "best.pt")
        pred = ["predict", *common, "--variant", "tiny3", "--checkpoint", ckpt]
        assert main([*pred, "--split", "val", "--out", str(run / "pred" / "val")]) == 0
        assert main(["calibrate", *common, "--variant", "tiny3", "--pred", str(run / "pred" / "val"),
                     "--out", str(run / "calibration.json")]) == 0
        assert main([*pred, "--split", "test", "--out", str(run / "pred" / "test"),
                     "--threshold-file", str(run / "calibration.json")]) == 0
        assert main(["score", *common, "--variant", "tiny3", "--pred", str(run / "pred" / "test"),
                     "--out", str(run / "metrics.json")]) == 0
        assert main(["package", "--run-dir", str(run), "--config", str(cfg), "--out", str(base / "package")]) == 0
    finally:
        torch.set_num_threads(threads)
    return {"base": base, "run": run, "data": data, "config": cfg, "package": base / "package", "target": target}


def test_target_run_trains_predicts_calibrates_and_scores(target_run):
    import json

    import tifffile

    run, target = target_run["run"], target_run["target"]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["target"]["name"] == target and summary["target"]["channels"] == CHANNELS[target]
    if target == "three_class":  # the plan's width: round(D / 15) in [1, 8] (synthetic cells of D ~22 px)
        from dataclasses import replace

        from seg.settings import RunSettings, load_config
        from seg.train.sampling import load_training_slices

        ds = target_run["data"] / "syn"
        plan = RunSettings(load_config(target_run["config"]), "syn", "tiny3", ds_dir=ds).plan
        d = plan.fingerprint["objects"]["diameter"]["median"]
        assert summary["target"]["boundary_width"] == planned_width(d)
        assert summary["target"]["boundary_weight"] == 2.0
        # what training reads: the weight files with the boundary pixels doubled
        tc = RunSettings(load_config(target_run["config"]), "syn", "tiny3", ds_dir=ds).target
        (a, *_), (b, *_) = load_training_slices(ds, target=tc), load_training_slices(ds, target=replace(tc, boundary_weight=1.0))
        edge = a["target"] == BOUNDARY
        assert edge.any() and (b["weights"][edge] > 0).any()
        np.testing.assert_array_equal(a["weights"][edge], 2 * b["weights"][edge])
        np.testing.assert_array_equal(a["weights"][~edge], b["weights"][~edge])
    else:
        assert "boundary_width" not in summary["target"] and "boundary_weight" not in summary["target"]
    assert summary["val_criterion"] == "seg" and summary["val_postprocess"]["method"] == target
    assert summary["val_postprocess"]["seed_threshold"] == 0.5
    cal = json.loads((run / "calibration.json").read_text())
    assert cal["method"] == target and cal["target"] == target
    assert {r["seed_threshold"] for r in cal["table"]} == {0.3, 0.4, 0.5, 0.6, 0.7, 0.8}
    assert cal["seed_threshold"] in {0.3, 0.4, 0.5, 0.6, 0.7, 0.8} and cal["min_size"] in (0, 5)
    test = json.loads((run / "pred" / "test" / "predict_summary.json").read_text())
    assert test["target"] == target and test["channels"] == CHANNELS[target]
    assert test["postprocess"]["method"] == target
    assert test["postprocess"]["seed_threshold"] == cal["seed_threshold"]
    sid = test["ids"][0]
    probs = tifffile.imread(run / "pred" / "test" / f"{sid}_prob.tif")
    assert probs.shape[0] == len(CHANNELS[target]) and 0 <= probs.min() and probs.max() <= 1
    if target == "three_class":  # softmax probabilities; the distance model's sigmoid maps do not sum to 1
        np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    else:
        assert np.abs(probs.sum(0) - 1).max() > 1e-3
    if target == "distance":  # the cell mask is cut from the cell distance at 0.1 unless calibrated
        assert summary["val_postprocess"]["threshold"] == 0.1
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["primary"] == "seg" and 0 <= metrics["aggregate"]["seg"] <= 1


def test_target_package_segment_and_exports_agree(target_run, tmp_path):
    """The package says its target and post-processing; seg segment on a test image gives the
    workflow's instances; TorchScript and ONNX graphs give its maps."""
    import json

    import tifffile

    from seg.cli import main
    from seg.export.exporters import run_exported

    r, target = target_run, target_run["target"]
    meta = json.loads((r["package"] / "package.json").read_text())
    assert meta["target"]["name"] == target and meta["model"]["classes"] == len(CHANNELS[target])
    assert meta["target"].get("boundary_width") == (2 if target == "three_class" else None)
    assert meta["outputs"]["classes"] == CHANNELS[target]
    assert meta["target"]["activation"] == ("sigmoid" if target == "distance" else "softmax")
    assert meta["postprocess"]["method"] == target and "seed_threshold" in meta["postprocess"]
    test = json.loads((r["run"] / "pred" / "test" / "predict_summary.json").read_text())
    sid = test["ids"][0]
    image = r["data"] / "syn" / "images" / f"{sid}.tif"
    out = tmp_path / "seg"
    assert main(["segment", "--model", str(r["package"]), str(image), "--out", str(out)]) == 0
    from seg.kinds.ctc import slice_mask_path

    ds_meta = json.loads((r["data"] / "syn" / "meta.json").read_text())
    entry = next(e for e in ds_meta["slices"] if e["id"] == sid)
    workflow = tifffile.imread(slice_mask_path(r["run"] / "pred" / "test", entry, ds_meta))
    mine = tifffile.imread(out / f"{sid}_mask.tif")
    assert mine.max() >= 1
    np.testing.assert_array_equal(mine, workflow)
    probs = tifffile.imread(r["run"] / "pred" / "test" / f"{sid}_prob.tif")
    for fmt, name in (("torchscript", "model.pt"), ("onnx", "model.onnx")):
        exp = tmp_path / fmt
        assert main(["export", "--model", str(r["package"]), "--format", fmt, "--out", str(exp)]) == 0
        desc = json.loads((exp / "export.json").read_text())
        assert desc["target"] == target and desc["classes"] == CHANNELS[target]
        got = run_exported(exp / name, tifffile.imread(image))
        assert got.shape == (1, len(CHANNELS[target]), *probs.shape[1:])
        np.testing.assert_allclose(got[0], probs, atol=1e-4, rtol=0)


def test_leaderboard_and_report_show_the_targets_side_by_side(target_run, tmp_path):
    """Two rows of different targets on one dataset: the leaderboard says each row's target, and the
    report draws the slice's instances of both beside the ground truth, each with its SEG."""
    import json
    import shutil

    import tifffile

    from seg.kinds.ctc import slice_mask_path
    from seg.report import tables
    from seg.report.build import build_figures
    from seg.report.examples import load_target_panels
    from seg.report.leaderboard import build_leaderboard

    r, target = target_run, target_run["target"]
    results = tmp_path / "results"
    shutil.copytree(r["run"], results / "syn" / "tiny3")
    # a second row, target fg_border, whose test masks are the ground truth itself (SEG 1)
    other = results / "syn" / "tiny2"
    meta = json.loads((r["data"] / "syn" / "meta.json").read_text())
    for e in (e for e in meta["slices"] if e["split"] == "test"):
        path = slice_mask_path(other / "pred" / "test", e, meta)
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, tifffile.imread(r["data"] / "syn" / e["instances"]).astype(np.uint16))
    doc = json.loads((results / "syn" / "tiny3" / "metrics.json").read_text())
    doc.update(variant="tiny2", config_hash="other", train={**doc["train"], "target": None})
    doc["aggregate"]["seg"] = 1.0
    (other / "metrics.json").write_text(json.dumps(doc))
    cfg = {"datasets": {"syn": {"kind": "ctc", "annotations": "sparse"}},
           "variants": {"tiny3": {"model": "unet", "target": target, "label": "three"},
                        "tiny2": {"model": "unet", "label": "two"}}, "report": {"examples": 1}}
    board = build_leaderboard([results], cfg)
    assert [(row.variant, row.target) for row in board.rows] == [("tiny2", "fg_border"), ("tiny3", target)]
    header, cells = tables.table(board, "syn")
    assert [c[header.index("target")] for c in cells] == ["fg_border", target]
    tables.write_csv(tmp_path / "lb.csv", board)
    assert target in (tmp_path / "lb.csv").read_text()
    sl, panels, notes = load_target_panels(r["data"] / "syn", [("two", other), ("three", results / "syn" / "tiny3")])
    assert sl is not None and [p[0] for p in panels] == ["two", "three"] and not notes
    assert panels[0][2] == 1.0 and 0 <= panels[1][2] <= 1
    figs = build_figures(board, cfg, r["data"], tmp_path / "figures")
    (fig,) = [e for e in figs.entries if e.kind == "targets"]
    assert fig.title == "Targets side by side" and (tmp_path / "figures" / fig.name).stat().st_size > 10_000


@pytest.mark.parametrize("target", ["three_class", "distance"])
def test_seg_augment_previews_the_variants_target_map(target, tmp_path):
    """seg augment --variant: the target's training map deformed with the slice (labels nearest,
    distance maps linear), consistent with the deformed instances, and the preview."""
    import json

    import tifffile

    from seg.cli import main

    raw = tmp_path / "raw"
    assert main(["synth", "--out", str(raw), "--kind", "ctc", "--seed", "2", "--size", "96"]) == 0
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\ndatasets:\n  syn: {{kind: ctc, raw_dir: {raw}, sequences: ['01']}}\n"
                   f"variants:\n  v: {{model: unet, target: {target}}}\n  plain: {{model: unet}}\n")
    assert main(["ingest", "--config", str(cfg), "--dataset", "syn"]) == 0
    out = tmp_path / "aug"
    assert main(["augment", "--config", str(cfg), "--dataset", "syn", "--variant", "v", "--copies", "2",
                 "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["target"]["name"] == target and (out / "preview.png").stat().st_size > 5_000
    for e in meta["slices"]:
        inst = tifffile.imread(out / e["instances"])
        tm = tifffile.imread(out / e["target"])
        if target == "three_class":
            assert tm.dtype == np.uint8 and set(np.unique(tm)) <= {0, 1, 2}
            np.testing.assert_array_equal(tm > 0, inst > 0)  # same field, nearest: the same objects
        else:
            assert tm.shape == (2, *inst.shape) and tm.dtype == np.float32
            assert (tm[1][inst > 0] > 0.05).mean() > 0.95 and (tm[1][inst == 0] < 0.2).mean() > 0.95
    plain = tmp_path / "plain"
    assert main(["augment", "--config", str(cfg), "--dataset", "syn", "--variant", "plain", "--copies", "2",
                 "--out", str(plain)]) == 0
    assert not (plain / "targets").exists()
    if target == "three_class":  # a variant's boundary_width: a wider boundary in the same deformed slices
        text = cfg.read_text().replace("target: three_class}", "target: three_class, boundary_width: 4}")
        cfg.write_text(text)
        wide = tmp_path / "wide"
        assert main(["augment", "--config", str(cfg), "--dataset", "syn", "--variant", "v", "--copies", "2",
                     "--out", str(wide)]) == 0
        assert json.loads((wide / "meta.json").read_text())["target"]["boundary_width"] == 4
        d = json.loads((tmp_path / "data" / "syn" / "meta.json").read_text())["fingerprint"]["objects"]["diameter"]
        assert meta["target"]["boundary_width"] == planned_width(d["median"])  # the plan's
        for e in meta["slices"]:
            n, w = tifffile.imread(out / e["target"]), tifffile.imread(wide / e["target"])
            np.testing.assert_array_equal(n > 0, w > 0)
            assert (w == BOUNDARY).sum() > 1.5 * (n == BOUNDARY).sum()
    # the target map rides along without changing the other arrays' deformation
    e = meta["slices"][0]
    np.testing.assert_array_equal(tifffile.imread(out / e["instances"]), tifffile.imread(plain / e["instances"]))
