"""Tiled inference, TTA, post-processing and `seg predict` (seg.infer)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from seg.errors import SegError
from seg.infer.postprocess import foreground_maps, instances_from_probability
from seg.kinds.ctc import result_mask_name
from seg.infer.tiles import plan_starts, plan_tiles
from seg.infer.tiling import predict_tiled
from seg.infer.tta import DIHEDRAL, apply_dihedral, predict_tta
from seg.models import build_model


# ----------------------------------------------------------------------------- small local models
def _conv_net(padding: int, seed: int = 0, classes: int = 2) -> nn.Module:
    """Three 3x3 convs (receptive radius 3), no normalisation. padding 0 = valid (border 3), 1 = same."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=padding), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=padding),
                        nn.ReLU(), nn.Conv2d(8, classes, 3, padding=padding))
    return net.eval()


def _whole(net: nn.Module, image: np.ndarray, border: int = 0) -> np.ndarray:
    """Reference: the network on the whole (mirror-padded by ``border``) slice, softmax."""
    x = np.pad(image, border, mode="reflect") if border else image
    with torch.inference_mode():
        return torch.softmax(net(torch.from_numpy(np.ascontiguousarray(x))[None, None]), 1)[0].numpy()


@pytest.fixture(scope="module")
def isbi_slice(isbi_stacks) -> np.ndarray:
    """A real ISBI slice, normalised, float32 (512, 512)."""
    x = isbi_stacks["train"][3].astype(np.float32)
    return (x - x.mean()) / x.std()


# ----------------------------------------------------------------------------- planning
@pytest.mark.parametrize("size,tile,overlap", [(512, 256, 0.25), (512, 100, 0.5), (97, 32, 0.0),
                                               (64, 64, 0.25), (300, 128, 0.9), (129, 64, 0.25)])
def test_plan_starts_matches_monai(size, tile, overlap):
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    interval = _get_scan_interval((size,), (tile,), 1, (overlap,))
    monai_starts = [s[0].start for s in dense_patch_slices((size,), (tile,), interval)]
    starts = plan_starts(size, tile, overlap)
    assert starts == monai_starts
    covered = np.zeros(size, bool)
    for s in starts:
        covered[s:s + tile] = True
    assert covered.all() and starts[-1] + tile == size


@pytest.mark.parametrize("size,tile,overlap,align", [(512, 60, 0.25, 4), (97, 32, 0.5, 16), (20, 32, 0.25, 8),
                                                     (300, 100, 0.0, 16)])
def test_aligned_plan_starts_are_multiples_and_cover(size, tile, overlap, align):
    starts = plan_starts(size, tile, overlap, align)
    assert all(s % align == 0 for s in starts) and starts == sorted(set(starts))
    assert starts[-1] + tile >= size and (len(starts) == 1 or starts[-1] < size - tile + align)
    assert all(b - a <= tile for a, b in zip(starts, starts[1:]))  # no gaps


# ----------------------------------------------------------------------------- tiled == whole slice
@pytest.mark.parametrize("blend,overlap", [("gaussian", 0.25), ("constant", 0.5), ("constant", 0.0)])
def test_valid_overlap_tile_equals_whole_slice_on_isbi(isbi_slice, blend, overlap):
    net = _conv_net(padding=0)
    probs = predict_tiled(isbi_slice, net, tile=96, overlap=overlap, blend=blend, batch_size=3, border=3)
    ref = _whole(net, isbi_slice, border=3)
    assert probs.shape == (2, 512, 512) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


def _exact_mask(shape, tile, overlap, radius):
    """Pixels whose every covering tile sees them at >= radius from the tile's inner edges."""
    bad = np.zeros(shape, bool)
    for y, x in plan_tiles(shape, tile, overlap):
        inner = np.ones((tile, tile), bool)
        if y > 0:
            inner[:radius] = False
        if y + tile < shape[0]:
            inner[-radius:] = False
        if x > 0:
            inner[:, :radius] = False
        if x + tile < shape[1]:
            inner[:, -radius:] = False
        bad[y:y + tile, x:x + tile] |= ~inner
    return ~bad


def test_same_padding_tiles_equal_whole_slice_away_from_tile_borders(isbi_slice):
    net = _conv_net(padding=1)
    image = isbi_slice[:300, :257]  # odd size, not a multiple of the tile step
    probs = predict_tiled(image, net, tile=96, overlap=0.25, blend="constant", batch_size=4)
    ref = _whole(net, image)
    mask = _exact_mask(image.shape, 96, 0.25, radius=3)
    assert probs.shape == (2, 300, 257) and mask.mean() > 0.7
    np.testing.assert_allclose(probs[:, mask], ref[:, mask], atol=1e-5, rtol=0)
    # near inner tile borders the zero padding of each tile differs from the whole slice ...
    assert np.abs(probs - ref)[:, ~mask].max() > 1e-4
    # ... and only a little (blending)
    assert np.abs(probs - ref).mean() < 0.01


def test_valid_odd_sizes_and_images_smaller_than_a_tile():
    rng = np.random.default_rng(0)
    net = _conv_net(padding=0, seed=1)
    for shape, tile in [((131, 97), 48), ((37, 53), 64), ((5, 70), 32)]:
        image = rng.normal(size=shape).astype(np.float32)
        probs = predict_tiled(image, net, tile=tile, overlap=0.3, blend="gaussian", border=3)
        assert probs.shape == (2, *shape)
        np.testing.assert_allclose(probs, _whole(net, image, border=3), atol=1e-5, rtol=0)


def test_same_padding_image_smaller_than_tile_keeps_shape():
    image = np.random.default_rng(1).normal(size=(21, 40)).astype(np.float32)
    probs = predict_tiled(image, _conv_net(padding=1), tile=64, overlap=0.25, blend="gaussian")
    assert probs.shape == (2, 21, 40)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


def _valid_unet():
    torch.manual_seed(0)
    return build_model("unet", padding="valid", base_channels=8, depth=2).eval()


def test_valid_unet_predict_slice_equals_whole_slice(isbi_slice):
    from seg.infer.predictor import predict_slice
    from seg.infer.predictor import tile_geometry

    model = _valid_unet()
    border = model.valid_border
    out_whole, _, _ = tile_geometry(model, 200)  # a legal output size, so the whole slice is one legal input
    image = isbi_slice[:out_whole, 7:7 + out_whole]
    ref = _whole(model, image, border=border)
    assert ref.shape[1:] == image.shape
    # fp32 (amp none): exact on every CPU kind; the bf16 branch is tested below with its own tolerance
    probs = predict_slice(model, image, {"tile": 60, "overlap": 0.25, "blend": "gaussian", "batch_size": 4,
                                         "amp": "none"}, "cpu")
    tile, _, align = tile_geometry(model, 60)
    assert tile >= 60 and align == 4 and len(plan_tiles(image.shape, tile, 0.25, align)) > 4
    np.testing.assert_allclose(probs, ref, atol=1e-5, rtol=0)
    assert not model.training


def test_predict_slice_precision_follows_the_native_bf16_probe(isbi_slice, native_bf16):
    """amp auto infers in bf16 only where the CPU has it natively. bf16 keeps 8 bits of mantissa
    (relative rounding 2^-9 per op), so probabilities move by a few 1e-3 and, after a few layers,
    up to ~1e-2 near 0.5; tiles stay seamless (tiled = whole slice to the same tolerance)."""
    from seg.infer.predictor import predict_slice

    model = _valid_unet()
    image = isbi_slice[:196, :196]
    cfg = {"tile": 60, "overlap": 0.25, "blend": "gaussian", "batch_size": 4}
    fp32 = predict_slice(model, image, {**cfg, "amp": "none"}, "cpu")
    auto = predict_slice(model, image, {**cfg, "amp": "auto"}, "cpu")
    if not native_bf16:
        np.testing.assert_array_equal(auto, fp32)  # auto = fp32 where bf16 would only be emulated
        return
    diff = np.abs(auto - fp32)
    assert 0 < diff.max() < 0.05, diff.max()  # bf16 ran (not fp32), within what bf16 guarantees here
    assert diff.mean() < 5e-3
    np.testing.assert_allclose(auto.sum(0), 1.0, atol=1e-5)  # softmax in fp32 after the autocast region


# ----------------------------------------------------------------------------- TTA
def test_tta_is_equivariant_and_plain_prediction_is_not():
    net = _conv_net(padding=1, seed=3)
    image = np.random.default_rng(2).normal(size=(40, 56)).astype(np.float32)

    def whole(x):
        return _whole(net, x)

    tta = predict_tta(image, whole)
    assert tta.shape == (2, 40, 56)
    for k, flip in DIHEDRAL[1:]:
        g_image = np.ascontiguousarray(apply_dihedral(image, k, flip))
        np.testing.assert_allclose(predict_tta(g_image, whole), apply_dihedral(tta, k, flip), atol=1e-5)
    g = np.ascontiguousarray(apply_dihedral(image, 1, False))
    assert np.abs(whole(g) - apply_dihedral(whole(image), 1, False)).max() > 1e-3


def test_tta_through_predict_slice_keeps_shape():
    from seg.infer.predictor import predict_slice

    probs = predict_slice(_conv_net(padding=1), np.zeros((30, 50), np.float32) + 0.5,
                          {"tile": 32, "tta": True}, "cpu")
    assert probs.shape == (2, 30, 50)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------- one implementation
@pytest.mark.parametrize("tile", [16, 33, 64, 256])
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_importance_map_is_monais(tile, blend):
    """seg.infer.blend computes MONAI's map itself (importing MONAI costs ~4 s per process): equal."""
    from monai.data.utils import compute_importance_map

    from seg.infer.blend import importance_map

    ours = importance_map(tile, blend)
    ref = compute_importance_map((tile, tile), mode=blend, sigma_scale=0.125, dtype=torch.float32)
    assert ours.dtype == torch.float32 and ours.shape == (tile, tile)
    assert torch.equal(ours, ref)
    assert float(ours.min()) >= 1e-3


def test_fold_tiles_matmul_and_index_add_agree():
    """The exported graphs' one-hot matmul blend and eager inference's index_add sum the same."""
    from seg.infer.blend import fold_tiles

    tiles = torch.rand(2, 3, 3 * 8, 2 * 8)
    rows = (torch.tensor([0, 6, 12])[:, None] + torch.arange(8)).reshape(-1)
    cols = (torch.tensor([0, 5])[:, None] + torch.arange(8)).reshape(-1)
    a = fold_tiles(tiles, rows, cols, 20, 13)
    b = fold_tiles(tiles, rows, cols, 20, 13, scatter_free=True)
    assert a.shape == (2, 3, 20, 13)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    assert float(a[0, 0, 6, 0]) == pytest.approx(float(tiles[0, 0, 6, 0] + tiles[0, 0, 8, 0]))


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("tta", [False, True], ids=["no-tta", "tta"])
def test_predict_tiled_predict_slice_and_the_export_graph_run_the_same_code(padding, tta, monkeypatch):
    """predict_tiled, predict_slice (seg predict, validation, seg segment) and the exported graph's
    PyTorch module all call seg.infer.tiling.tiled_probabilities, and agree to 1e-6 in fp32 on a
    tiled image, an odd-sized one and one smaller than a tile, with and without TTA."""
    import seg.infer.tiling as tiling
    from seg.export.graph import SegmentGraph
    from seg.infer.predictor import predict_slice, tile_geometry, tile_spec

    torch.manual_seed(0)
    model = build_model("unet", padding=padding, base_channels=4, depth=2, batch_norm=True).eval()
    tile, border, align = tile_geometry(model, 32)
    cfg = {"tile": 32, "overlap": 0.25, "blend": "gaussian", "batch_size": 3, "tta": tta, "amp": "none"}
    graph = SegmentGraph(model, tile_spec(model, cfg, activation="softmax"), tta=tta).eval()
    calls = []
    real = tiling.tiled_probabilities

    def spy(x, predictor, spec, **kw):
        calls.append((tuple(x.shape), spec, kw.get("scatter_free", False)))
        return real(x, predictor, spec, **kw)

    monkeypatch.setattr(tiling, "tiled_probabilities", spy)
    rng = np.random.default_rng(4)
    for shape in [(80, 112), (37, 53), (20, 27)]:
        image = rng.normal(size=shape).astype(np.float32)
        calls.clear()
        by_slice = predict_slice(model, image, cfg, "cpu")
        slice_calls = list(calls)
        with torch.inference_mode():
            by_graph = graph.predict(torch.from_numpy(image)[None, None])[0].numpy()
        graph_calls = calls[len(slice_calls):]

        def tiled(x):
            return predict_tiled(x, model, tile=tile, overlap=0.25, blend="gaussian", border=border, align=align,
                                 batch_size=2)

        by_tiled = predict_tta(image, tiled) if tta else tiled(image)
        assert by_slice.shape == by_graph.shape == by_tiled.shape == (2, *shape)
        np.testing.assert_allclose(by_graph, by_slice, atol=1e-6, rtol=0)
        np.testing.assert_allclose(by_tiled, by_slice, atol=1e-6, rtol=0)
        # the same function and tiling in every caller; only the graph blends scatter-free
        assert {c[1] for c in calls} == {graph.spec}
        assert not any(c[2] for c in slice_calls) and graph_calls and all(c[2] for c in graph_calls)
        assert len(graph_calls) == (8 if tta else 1)


def test_folded_network_is_the_model_and_follows_weight_updates():
    """Inference runs an eval copy with batch norms folded into the convolutions (same function to
    float rounding), prepared once per weights: an in-place update (an optimiser step, a loaded
    state dict) is seen by the next prediction, as training's validation needs."""
    import copy

    from seg.infer.predictor import predict_slice
    from seg.infer.network import fold_batch_norm

    torch.manual_seed(0)
    for name, params in (("unet", {"padding": "same", "base_channels": 4, "depth": 2, "batch_norm": True}),
                         ("unet-resnet18", {"encoder_depth": 3, "decoder_channels": [16, 8, 4]})):
        model = build_model(name, **params).eval()
        folded = fold_batch_norm(model)
        ran = []  # the batch norms the folded network still runs (smp keeps unused deeper stages)
        for m in folded.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.register_forward_hook(lambda mod, *_: ran.append(mod))
        x = torch.randn(2, 1, 64, 64)
        with torch.no_grad():
            ref, got = model(x), folded(x)
        assert not ran and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        torch.testing.assert_close(got, ref, atol=1e-4 * float(ref.abs().max()), rtol=0)
    model = build_model("unet", padding="same", base_channels=4, depth=2, batch_norm=True).eval()
    image = np.random.default_rng(5).normal(size=(40, 56)).astype(np.float32)
    cfg = {"tile": 32, "amp": "none"}
    before = predict_slice(model, image, cfg)
    state = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    after = predict_slice(model, image, cfg)
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_array_equal(after, predict_slice(copy.deepcopy(model), image, cfg))
    model.load_state_dict(state)
    np.testing.assert_array_equal(predict_slice(model, image, cfg), before)


def test_inference_path_does_not_import_monai(tmp_path):
    """seg predict / seg segment / the export graph never import MONAI (~4 s per process)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, numpy as np, torch\n"
            "from seg.infer.predictor import predict_slice\n"
            "import seg.export.graph, seg.export.segment, seg.commands.evaluate\n"
            "net = torch.nn.Conv2d(1, 2, 3, padding=1)\n"
            "predict_slice(net, np.zeros((40, 40), np.float32), {'tile': 32, 'tta': True, 'amp': 'none'})\n"
            "assert 'monai' not in sys.modules, sorted(m for m in sys.modules if m.startswith('monai'))[:5]\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0, proc.stderr[-2000:]


# ----------------------------------------------------------------------------- post-processing
def _discs(shape, centres, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros(shape, bool)
    for cy, cx in centres:
        out |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return out


def test_watershed_separates_touching_discs_and_min_size_removes_specks():
    fg = _discs((80, 120), [(40, 40), (40, 72)], 18)  # centres 32 px apart, radius 18: they overlap
    fg[5:7, 110:112] = True  # a 4-pixel speck
    prob = fg.astype(np.float32) * 0.9
    cc = instances_from_probability(prob, method="connected_components", threshold=0.5, min_size=10, h=2.0)
    ws = instances_from_probability(prob, method="watershed", threshold=0.5, min_size=10, h=2.0)
    assert cc.dtype == np.uint16 and ws.dtype == np.uint16
    assert cc.max() == 1  # touching discs merge, the speck is gone
    assert ws.max() == 2 and set(np.unique(ws)) == {0, 1, 2}
    assert ws[40, 40] != ws[40, 72] and ws[6, 110] == 0
    keep = instances_from_probability(prob, method="connected_components", threshold=0.5, min_size=0, h=2.0)
    assert keep.max() == 2 and keep[6, 110] > 0
    # a 14 px disc whose centre stands ~8.5 px above the neck to an 18 px one: two seeds at the
    # default h = 2, one (both discs one object) once h exceeds that depth
    pair = (_discs((80, 120), [(40, 40)], 18) | _discs((80, 120), [(40, 70)], 14)).astype(np.float32)
    split = instances_from_probability(pair, method="watershed", threshold=0.5, min_size=10, h=2.0)
    merged = instances_from_probability(pair, method="watershed", threshold=0.5, min_size=10, h=10.0)
    assert split.max() == 2 and split[40, 40] != split[40, 70]
    assert merged.max() == 1 and merged[40, 40] == merged[40, 70] == 1
    with pytest.raises(SegError, match=r"postprocess\.h: must be > 0"):
        instances_from_probability(prob, method="watershed", threshold=0.5, min_size=10, h=0)


def test_isbi_foreground_maps_convention():
    p_interior = np.array([[0.9, 0.2], [0.5, 0.0]], np.float32)
    probs = np.stack([1 - p_interior, p_interior])
    interior, segm = foreground_maps(probs, foreground=1, threshold=0.5)
    np.testing.assert_array_equal(interior, p_interior)
    np.testing.assert_array_equal(segm, [[1, 0], [1, 0]])
    assert segm.dtype == np.uint8


def test_ctc_mask_names():
    assert result_mask_name(0) == "mask000.tif" and result_mask_name(42) == "mask042.tif"
    assert result_mask_name(1234) == "mask1234.tif"


# ----------------------------------------------------------------------------- bad input
TILING = {"overlap": 0.25, "blend": "gaussian"}  # the schema's defaults


@pytest.mark.parametrize("kwargs,match", [
    ({"blend": "cosine"}, r"blend.*'cosine'.*gaussian, constant"),
    ({"overlap": 1.0}, "overlap"),
    ({"tile": 0}, "tile"),
    ({"batch_size": 0}, "batch_size"),
    ({"border": -1}, "border"),
])
def test_bad_options_raise_clear_errors(kwargs, match):
    with pytest.raises(SegError, match=match):
        predict_tiled(np.zeros((32, 32), np.float32), _conv_net(1), **{"tile": 16, **TILING, **kwargs})


def test_bad_image_and_wrong_border_raise():
    with pytest.raises(SegError, match="shape"):
        predict_tiled(np.zeros((1, 1, 32, 32), np.float32), _conv_net(1), tile=16, **TILING)
    with pytest.raises(SegError, match="border"):  # valid net without border
        predict_tiled(np.zeros((32, 32), np.float32), _conv_net(0), tile=16, **TILING)
    with pytest.raises(SegError, match="border"):  # wrong border
        predict_tiled(np.zeros((32, 32), np.float32), _conv_net(0), tile=16, border=2, **TILING)
    with pytest.raises(SegError, match="method"):
        instances_from_probability(np.zeros((8, 8)), method="blobs", threshold=0.5, min_size=50, h=2.0)


# ----------------------------------------------------------------------------- seg predict end to end
def _fake_ctc_dataset(root, rng):
    import tifffile

    ds = root / "data" / "toy"
    (ds / "images").mkdir(parents=True)
    entries = []
    for frame in range(3):
        img = (_discs((48, 64), [(20, 20), (30, 44)], 9) * 150 + rng.integers(0, 30, (48, 64))).astype(np.uint8)
        tifffile.imwrite(ds / "images" / f"01_t{frame:03d}.tif", img)
        entries.append({"id": f"01_t{frame:03d}", "split": "test" if frame else "train",
                        "image": f"images/01_t{frame:03d}.tif", "instances": None, "semantic": None,
                        "sequence": "01", "frame": frame, "shape": [48, 64]})
    (ds / "meta.json").write_text(json.dumps({"name": "toy", "kind": "ctc", "classes": ["background", "cell"],
                                              "source": {}, "slices": entries, "files": {}}))


def test_seg_predict_writes_ctc_masks_atomically(tmp_path):
    from seg.cli import main
    from seg.io import read_json

    _fake_ctc_dataset(tmp_path, np.random.default_rng(0))
    cfg = tmp_path / "config.yaml"
    cfg.write_text("datasets: {toy: {kind: ctc}}\n"
                   "variants: {tiny: {model: unet, params: {padding: valid, base_channels: 4, depth: 2}}}\n"
                   "inference: {tile: 32, overlap: 0.25}\npostprocess: {min_size: 5}\n")
    torch.manual_seed(0)
    model = build_model("unet", padding="valid", base_channels=4, depth=2, classes=2)
    ck = tmp_path / "best.pt"
    torch.save({"model": model.state_dict(), "iteration": 3}, ck)
    out = tmp_path / "pred" / "test"
    status = main(["predict", "--config", str(cfg), "--dataset", "toy", "--variant", "tiny", "--checkpoint",
                   str(ck), "--split", "test", "--out", str(out), "--data-dir", str(tmp_path / "data"),
                   "--device", "cpu"])
    assert status == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["01_RES", "01_t001_prob.tif", "01_t002_prob.tif", "predict_summary.json"]
    assert sorted(p.name for p in (out / "01_RES").iterdir()) == ["mask001.tif", "mask002.tif"]
    import tifffile

    assert tifffile.imread(out / "01_RES" / "mask001.tif").dtype == np.uint16
    assert tifffile.imread(out / "01_t001_prob.tif").shape == (2, 48, 64)
    summary = read_json(out / "predict_summary.json")
    assert summary["n_slices"] == 2 and summary["device"] == "cpu" and len(summary["checkpoint_sha256"]) == 64
    # a bad checkpoint fails with a one-line error and leaves the previous output untouched
    torch.save({"model": {"bogus": torch.zeros(1)}}, ck)
    status = main(["predict", "--config", str(cfg), "--dataset", "toy", "--variant", "tiny", "--checkpoint",
                   str(ck), "--out", str(out), "--data-dir", str(tmp_path / "data")])
    assert status == 2 and (out / "predict_summary.json").is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_seg_predict_writes_isbi_maps(tmp_path, isbi_stacks):
    import tifffile

    from seg.cli import main

    ds = tmp_path / "data" / "isbi"
    (ds / "images").mkdir(parents=True)
    entries = []
    for i in (25, 26):
        tifffile.imwrite(ds / "images" / f"train_{i}.tif", np.ascontiguousarray(isbi_stacks["train"][i, :80, :96]))
        entries.append({"id": f"train_{i}", "split": "test", "image": f"images/train_{i}.tif", "instances": None,
                        "semantic": None, "sequence": None, "frame": i, "shape": [80, 96]})
    (ds / "meta.json").write_text(json.dumps({"name": "isbi", "kind": "isbi2012", "classes": ["membrane", "interior"],
                                              "source": {}, "slices": entries, "files": {}}))
    cfg = tmp_path / "config.yaml"
    cfg.write_text("datasets: {isbi: {kind: isbi2012}}\n"
                   "variants: {small: {model: unet, params: {padding: same, base_channels: 4, depth: 2},"
                   " inference: {tta: true}}}\ninference: {tile: 64}\n")
    torch.manual_seed(0)
    ck = tmp_path / "best.pt"
    torch.save(build_model("unet", padding="same", base_channels=4, depth=2).state_dict(), ck)  # bare
    out = tmp_path / "pred"
    assert main(["predict", "--config", str(cfg), "--dataset", "isbi", "--variant", "small", "--checkpoint", str(ck),
                 "--out", str(out), "--data-dir", str(tmp_path / "data"), "--device", "cpu"]) == 0
    prob = tifffile.imread(out / "train_25_prob.tif")
    segm = tifffile.imread(out / "train_25_seg.tif")
    assert prob.shape == (80, 96) and prob.dtype == np.float32 and 0 <= prob.min() <= prob.max() <= 1
    assert segm.dtype == np.uint8 and set(np.unique(segm)) <= {0, 1}
    np.testing.assert_array_equal(segm, (prob >= 0.5).astype(np.uint8))
    summary = json.loads((out / "predict_summary.json").read_text())
    assert summary["tta"] is True and summary["tile"] == 64 and summary["ids"] == ["train_25", "train_26"]


def test_inference_amp_selection(native_bf16):
    from seg.device import precision_for

    cpu = torch.device("cpu")

    def amp_dtype(device: torch.device, amp: str) -> torch.dtype | None:  # as predict_slice chooses it
        return precision_for({"amp": amp}, device, section="inference").dtype

    assert amp_dtype(cpu, "none") is None
    assert amp_dtype(cpu, "auto") == (torch.bfloat16 if native_bf16 else None)
    with pytest.raises(SegError, match="inference.amp: 'fp16'"):
        amp_dtype(cpu, "fp16")
    if not native_bf16:
        with pytest.warns(RuntimeWarning, match="inference.amp: 'bf16'.*emulated") as record:
            assert amp_dtype(cpu, "bf16") == torch.bfloat16
        assert record[0].filename == __file__  # the caller's line, not seg/*/device.py
    else:
        assert amp_dtype(cpu, "bf16") == torch.bfloat16
