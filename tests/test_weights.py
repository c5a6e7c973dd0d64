"""U-Net border-weight maps: fast implementation vs a plain brute-force reference, properties, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label

from seg.errors import SegError
from seg.transforms.weights import border_term, border_weight_map, class_weights

W0, SIGMA = 10.0, 5.0


def reference_border_term(instances: np.ndarray, w0: float = W0, sigma: float = SIGMA) -> np.ndarray:
    """Brute force: one full-image EDT per instance, two smallest distances per pixel."""
    ids = [k for k in np.unique(instances) if k != 0]
    if len(ids) < 2:
        return np.zeros(instances.shape)
    dist = np.stack([ndimage.distance_transform_edt(instances != k) for k in ids])
    dist.sort(axis=0)
    return w0 * np.exp(-((dist[0] + dist[1]) ** 2) / (2 * sigma**2))


def reference_map(instances, semantic, wc, w0=W0, sigma=SIGMA):
    return np.asarray(wc)[semantic] + reference_border_term(instances, w0, sigma) * (semantic == 0)


@pytest.mark.parametrize("index", [0, 17])
def test_matches_reference_on_isbi(isbi_stacks, index):
    lab = isbi_stacks["labels"][index]
    inst = label(lab == 255, connectivity=1).astype(np.int32)
    sem = (lab == 255).astype(np.uint8)
    assert inst.max() > 50  # a real slice with many cells
    wc = [2.3, 0.6]
    fast = border_weight_map(inst, w0=W0, sigma=SIGMA, class_weights=wc, semantic=sem)
    ref = reference_map(inst, sem, wc)
    assert fast.dtype == np.float32 and fast.shape == lab.shape
    assert np.abs(fast - ref).max() <= 1e-3 * W0
    # the border term is really there: membrane pixels between close cells are heavily weighted
    assert fast.max() > wc[0] + 0.5 * W0


def touching_cells(n=6, size=96, seed=0):
    """Synthetic touching cells: a Voronoi tessellation, then 1-px separation lines set to 0."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(0, size, size=(n, 2))
    yy, xx = np.mgrid[:size, :size]
    d = (yy[None] - pts[:, 0, None, None]) ** 2 + (xx[None] - pts[:, 1, None, None]) ** 2
    inst = (d.argmin(0) + 1).astype(np.int32)
    edge = np.zeros_like(inst, dtype=bool)
    edge[:-1] |= inst[:-1] != inst[1:]
    edge[:, :-1] |= inst[:, :-1] != inst[:, 1:]
    sem = (~edge).astype(np.uint8)
    return inst, sem


def test_matches_reference_on_touching_cells():
    inst, sem = touching_cells()
    # instances keep the separation pixels (as CTC does); the border term lives where semantic == 0
    fast = border_weight_map(inst, class_weights=[1.5, 0.8], semantic=sem)
    ref = reference_map(inst, sem, [1.5, 0.8])
    assert np.abs(fast - ref).max() <= 1e-3 * W0
    # separation line between two touching cells: d1 = 0, d2 = 1 -> close to w0
    assert fast[sem == 0].max() > 1.5 + W0 * math.exp(-1 / (2 * SIGMA**2)) - 1e-3
    # and with the separation pixels removed from the instances (ISBI style)
    inst0 = inst * sem
    fast0 = border_weight_map(inst0, class_weights=[1.5, 0.8], semantic=sem)
    assert np.abs(fast0 - reference_map(inst0, sem, [1.5, 0.8])).max() <= 1e-3 * W0


def test_sum_not_difference_at_midpoint():
    """Two squares 9 background pixels apart: at the midpoint d1 = d2 = 5, so d1 + d2 = 10."""
    inst = np.zeros((40, 60), np.int32)
    inst[10:30, 10:20] = 1  # columns 10..19
    inst[10:30, 29:39] = 2  # columns 29..38: gap columns 20..28 (9 px), midpoint column 24
    w = border_weight_map(inst, w0=W0, sigma=SIGMA)
    expected = 1.0 + W0 * math.exp(-(10.0**2) / (2 * SIGMA**2))  # w_c = 1 without class weights
    assert w[20, 24] == pytest.approx(expected, abs=1e-5)
    # d1 - d2 would be 0 at the midpoint (weight 1 + w0): must not be that
    assert w[20, 24] < 1.0 + 0.5 * W0
    # off-midpoint in the gap: d1 + d2 is still 10 along the line between the cells
    assert w[20, 21] == pytest.approx(expected, abs=1e-5)
    # instance pixels: w_c only
    assert w[20, 15] == pytest.approx(1.0)


def test_fewer_than_two_instances():
    one = np.zeros((32, 32), np.int32)
    one[5:15, 5:15] = 7
    w = border_weight_map(one, class_weights=[3.0, 0.5])
    np.testing.assert_allclose(w, np.where(one > 0, 0.5, 3.0))
    assert border_term(one).max() == 0.0
    assert border_weight_map(np.zeros((8, 8), np.int32)).min() == 1.0


def test_class_weights_balanced():
    sem = [np.array([[0, 1, 1, 1]], np.uint8), np.array([[1, 1, 1, 1]], np.uint8)]  # 1 of class 0, 7 of class 1
    w = class_weights(sem, 2)
    np.testing.assert_allclose(w, [8 / (2 * 1), 8 / (2 * 7)])
    np.testing.assert_allclose(class_weights([np.zeros((2, 2), np.uint8)], 2), [0.5, 1.0])  # absent class -> 1
    with pytest.raises(SegError):
        class_weights([np.full((2, 2), 3, np.uint8)], 2)


def test_bad_inputs():
    with pytest.raises(SegError, match="instances"):
        border_weight_map(np.zeros((4, 4, 2), np.int32))
    with pytest.raises(SegError, match="semantic"):
        border_weight_map(np.zeros((4, 4), np.int32), semantic=np.zeros((3, 3), np.uint8))
    with pytest.raises(SegError, match="class_weights"):
        border_weight_map(np.zeros((4, 4), np.int32), semantic=np.full((4, 4), 2, np.uint8), class_weights=[1, 1])


def test_cli_weights(tiny_isbi):
    from seg.cli import main
    from seg.data.canonical import load_semantic, load_meta, slices
    from seg.io import read_tiff

    cfg, ds = tiny_isbi
    assert main(["weights", "--config", str(cfg), "--dataset", "isbi2012"]) == 0
    cw = json.loads((ds / "weights" / "class_weights.json").read_text())
    meta = load_meta(ds)
    train = slices(meta, "train")
    # class weights come from the training split only
    expected = class_weights([load_semantic(ds, e) for e in train], 2)
    np.testing.assert_allclose(cw["w_c"], expected)
    assert cw["train_slices"] == [e["id"] for e in train]
    for e in meta["slices"]:  # every annotated slice, val/test included
        w = read_tiff(ds / "weights" / f"{e['id']}.tif", ndim=2)
        assert w.dtype == np.float32 and w.shape == tuple(e["shape"])
    assert (ds / "weights" / "preview.png").stat().st_size > 10_000
    assert main(["weights", "--config", str(cfg), "--dataset", "nope"]) == 2
