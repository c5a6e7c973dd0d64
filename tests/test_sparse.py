"""Sparse annotations (``annotations: sparse``, e.g. DIC-HeLa): weight maps that ignore every pixel
farther than the band from an annotated object, losses that ignore those pixels, validation and
scores that do not count unannotated cells as errors, and the leaderboard that says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from seg.cli import main
from seg.data import canonical
from seg.errors import SegError
from seg.transforms.weights import annotated_region, border_weight_map

from conftest import SHARED_DATA

HELA = SHARED_DATA / "DIC-C2DH-HeLa"


def brute_force_region(inst: np.ndarray, band: float) -> np.ndarray:
    """Counted pixels by definition: on an object, or within ``band`` px (Euclidean, pixel centres)
    of some object pixel; nearest object pixel found with a k-d tree (independent of the EDT)."""
    from scipy.spatial import cKDTree

    obj = np.argwhere(inst > 0)
    grid = np.argwhere(np.ones(inst.shape, bool))
    d, _ = cKDTree(obj).query(grid)
    return (d <= band + 1e-9).reshape(inst.shape)


@pytest.mark.parametrize("band", [0.0, 3.0, 10.0])
def test_sparse_weight_map_ignores_exactly_the_pixels_outside_objects_and_band(band):
    """Real DIC-HeLa gold truth (frame 002, 8 of ~12 cells annotated, some touching): the weight is 0
    exactly outside the annotated cells + band, unchanged inside (border term included)."""
    inst = tifffile.imread(HELA / "01_GT" / "SEG" / "man_seg002.tif").astype(np.int32)
    from seg.data.ctc import ctc_semantic

    sem = ctc_semantic(inst)
    full = border_weight_map(inst, class_weights=[2.0, 0.7], semantic=sem)
    sparse = border_weight_map(inst, class_weights=[2.0, 0.7], semantic=sem, band=band)
    counted = brute_force_region(inst, band)
    np.testing.assert_array_equal(annotated_region(inst, band), counted)
    np.testing.assert_array_equal(sparse == 0, ~counted)
    np.testing.assert_array_equal(sparse[counted], full[counted])
    assert (full > 0).all()
    # the separation lines between touching annotated cells keep their border weight
    lines = (inst > 0) & (sem == 0)
    assert lines.sum() > 50 and sparse[lines].min() > 2.0 + 5.0
    assert 0.35 < (~counted).mean() < 0.8  # most of the frame is not vouched for


def test_sparse_region_edge_cases():
    assert not annotated_region(np.zeros((5, 5), int), 3).any()
    with pytest.raises(SegError, match="sparse_band: must be >= 0"):
        annotated_region(np.ones((5, 5), int), -1)


def _sparse_config(tmp_path: Path, raw: Path, extra: str = "") -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nresults_dir: {tmp_path / 'results'}\n"
                   f"datasets:\n  syn: {{kind: ctc, raw_dir: {raw}, sequences: ['01'], annotations: sparse}}\n"
                   "variants:\n  tiny: {model: unet, params: {base_channels: 4, depth: 2}}\n"
                   f"weights: {{sparse_band: 4}}\n{extra}")
    return cfg


@pytest.fixture(scope="module")
def sparse_raw(tmp_path_factory) -> Path:
    """Synthetic CTC sequence 01 (+02), 96 px, half of the cells annotated, silver truth."""
    out = tmp_path_factory.mktemp("sparse") / "raw"
    assert main(["synth", "--out", str(out), "--kind", "ctc", "--seed", "5", "--size", "96",
                 "--annotated", "0.5", "--silver"]) == 0
    return out


def test_seg_weights_cli_on_sparse_data_and_preview(tmp_path, sparse_raw):
    cfg = _sparse_config(tmp_path, sparse_raw)
    assert main(["ingest", "--config", str(cfg), "--dataset", "syn"]) == 0
    assert main(["weights", "--config", str(cfg), "--dataset", "syn"]) == 0
    ds = tmp_path / "data" / "syn"
    meta = canonical.load_meta(ds)
    doc = json.loads((ds / "weights" / "class_weights.json").read_text())
    assert doc["annotations"] == "sparse" and doc["sparse_band"] == 4.0
    train = canonical.slices(meta, "train")
    # class weights over the counted pixels only
    sems = [canonical.load_semantic(ds, e)[brute_force_region(canonical.load_instances(ds, e), 4)] for e in train]
    n = np.bincount(np.concatenate(sems), minlength=2)
    np.testing.assert_allclose(doc["w_c"], n.sum() / (2 * n))
    for e in canonical.slices(meta):
        if not e.get("instances"):
            assert not (ds / "weights" / f"{e['id']}.tif").exists()
            continue
        w = tifffile.imread(ds / "weights" / f"{e['id']}.tif")
        np.testing.assert_array_equal(w == 0, ~brute_force_region(canonical.load_instances(ds, e), 4))
    assert (ds / "weights" / "preview.png").stat().st_size > 10_000


def test_every_loss_ignores_zero_weight_pixels():
    from seg.train.losses import build_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 16, 16, generator=g, requires_grad=True)
    target = torch.randint(0, 2, (2, 16, 16), generator=g)
    weights = torch.rand(2, 16, 16, generator=g) + 0.5
    ignored = torch.zeros(2, 16, 16, dtype=torch.bool)
    ignored[:, :, 10:] = True
    weights = torch.where(ignored, torch.zeros(()), weights)
    # garbage in the ignored pixels: logits and targets changed there
    logits2 = torch.where(ignored[:, None], torch.randn(2, 2, 16, 16, generator=g) * 5, logits.detach())
    target2 = torch.where(ignored, 1 - target, target)
    for name in ("wce", "ce", "wce_dice", "ce_dice"):
        fn = build_loss({"name": name, "dice_weight": 0.7})
        a = fn(logits, target, weights)
        b = fn(logits2, target2, weights)
        assert torch.allclose(a, b, atol=1e-6), name
        (grad,) = torch.autograd.grad(a, logits)
        assert grad[:, :, ignored[0]].abs().max() == 0 and grad[:, :, ~ignored[0]].abs().max() > 0, name
        # restricted to the counted columns the loss equals the loss of the cropped batch
        crop = build_loss({"name": name, "dice_weight": 0.7})(logits[..., :10], target[..., :10],
                                                               weights[..., :10])
        assert torch.allclose(a, crop, atol=1e-6), name
    # no zero weight (full annotations): exactly the unmasked losses
    full = torch.rand(2, 16, 16, generator=g) + 0.5
    from seg.train.losses import cross_entropy, soft_dice

    ce = build_loss({"name": "ce_dice", "dice_weight": 0.5})(logits, target, full)
    assert torch.equal(ce, cross_entropy(logits, target) + 0.5 * soft_dice(logits, target))


def test_validation_scores_seg_of_the_postprocessed_instances():
    """CTC validation: SEG of the instances seg predict would make, unannotated cells no error."""
    from seg.infer.postprocess import instances_from_probability
    from seg.metrics.ctc import seg_measure
    from seg.targets import get_target
    from seg.train.validate import validate

    yy, xx = np.mgrid[:64, :64]
    cells = np.zeros((64, 64), np.int32)
    for k, (cy, cx) in enumerate([(16, 16), (16, 46), (46, 30)], start=1):
        cells[(yy - cy) ** 2 + (xx - cx) ** 2 <= 100] = k
    ref = np.where(cells == 3, 0, cells)  # cell 3 is not annotated

    class Oracle(torch.nn.Module):  # p(cell) 0.8 on every cell, annotated or not
        def forward(self, x):
            return torch.cat([torch.zeros_like(x), torch.where(x > 0, 1.4, -3.0)], dim=1)

    sl = [{"image": (cells > 0).astype(np.float32), "target": (ref > 0).astype(np.uint8), "instances": ref}]
    pp = {"method": "watershed", "threshold": 0.5, "h": 2.0, "min_size": 10}
    seg, (t,) = validate(Oracle(), sl, {"tile": 64}, torch.device("cpu"), 2, target=get_target(None), postprocess=pp)
    probs = 1 / (1 + np.exp(-np.where(cells > 0, 1.4, -3.0)))
    direct = seg_measure([ref], [instances_from_probability(probs, method="watershed", threshold=0.5,
                                                            min_size=10, h=2.0)])
    assert seg == pytest.approx(direct) and seg == pytest.approx(1.0) and t == 0.5
    # pixel mean IoU calls the unannotated cell an error
    iou, _ = validate(Oracle(), sl, {"tile": 64}, torch.device("cpu"), 2, target=get_target(None))
    assert iou < 0.9


def _write_ctc(tmp_path: Path, *, sparse: bool) -> tuple[Path, Path, np.ndarray]:
    """A one-frame canonical CTC test split: two annotated cells, one unannotated; the prediction
    finds all three and merges nothing. Returns (dataset dir, pred dir, prediction)."""
    from seg.data.canonical import canonical_writer
    from seg.kinds import get_kind

    yy, xx = np.mgrid[:64, :64]
    cells = np.zeros((64, 64), np.int32)
    for k, (cy, cx) in enumerate([(16, 16), (16, 46), (46, 30)], start=1):
        cells[(yy - cy) ** 2 + (xx - cx) ** 2 <= 100] = k
    ref = np.where(cells == 3, 0, cells)
    ds = tmp_path / "data" / "syn"
    with canonical_writer(ds, name="syn", kind=get_kind("ctc"), source={"test": True}) as w:
        w.meta["annotations"] = "sparse" if sparse else "full"
        w.add("01_t000", (cells > 0).astype(np.uint8) * 200, split="test", frame=0, sequence="01",
              instances=ref, semantic=(ref > 0).astype(np.uint8))
    pred = tmp_path / "pred"
    (pred / "01_RES").mkdir(parents=True)
    p = (cells > 0).astype(np.float32)
    tifffile.imwrite(pred / "01_t000_prob.tif", np.stack([1 - p, p]))
    tifffile.imwrite(pred / "01_RES" / "mask000.tif", cells.astype(np.uint16))
    (pred / "predict_summary.json").write_text(json.dumps({"split": "test", "threshold": 0.5}))
    return ds, pred, cells


def test_sparse_scores_do_not_count_unannotated_cells(tmp_path):
    from seg.evaluate.score import score_split

    ds, pred, _ = _write_ctc(tmp_path / "sparse", sparse=True)
    sc = score_split(ds, pred)
    agg = sc["aggregate"]
    assert sc["annotations"] == "sparse" and "more than half" in sc["restricted"]["precision_iou50"]
    assert agg["seg"] == 1.0 and agg["recall_iou50"] == 1.0
    assert agg["precision_iou50"] == 1.0 and agg["iou"] == {"cell": 1.0}  # the third cell is not an error
    assert "iou_mean" not in agg and "pixel_error" not in agg and "edge_errors" not in agg
    assert agg["n_pred"] == 3 and agg["n_pred_annotated"] == agg["n_pred_touching"] == 2
    ds_full, pred_full, _ = _write_ctc(tmp_path / "full", sparse=False)
    full = score_split(ds_full, pred_full)["aggregate"]
    assert full["precision_iou50"] == pytest.approx(2 / 3) and full["iou"]["cell"] < 0.7


def test_sparse_scores_count_merges_with_unannotated_neighbours(tmp_path):
    """A predicted object mainly on an annotated cell counts all its pixels (a merged-in
    unannotated neighbour is an error); one mainly on an unannotated cell is not counted for
    precision, but the annotated cell it swallowed is missed in recall."""
    from seg.evaluate.score import score_split

    ds, pred, cells = _write_ctc(tmp_path, sparse=True)
    a1, a2, a3 = ((cells == k).sum() for k in (1, 2, 3))
    part = (cells == 3) & (np.arange(64)[:, None] < 46)  # the upper part of unannotated cell 3
    merged = np.where(part, 1, np.where(cells == 3, 0, cells)).astype(np.uint16)
    tifffile.imwrite(pred / "01_RES" / "mask000.tif", merged)
    agg = score_split(ds, pred)["aggregate"]
    ap = part.sum()
    assert 0 < ap < a1  # mainly on annotated cell 1; IoU a1 / (a1 + ap) > 0.5: still a match
    assert agg["precision_iou50"] == 1.0 and agg["recall_iou50"] == 1.0
    assert agg["iou"]["cell"] == pytest.approx((a1 + a2) / (a1 + a2 + ap))  # the merged-in pixels are errors
    assert agg["seg"] == pytest.approx((a1 / (a1 + ap) + 1.0) / 2)
    # the whole of cell 3 merged (as large as cell 1): not mainly on it, cell 1 no longer matched
    assert a1 == a3
    tifffile.imwrite(pred / "01_RES" / "mask000.tif", np.where(cells == 3, 1, cells).astype(np.uint16))
    agg = score_split(ds, pred)["aggregate"]
    assert agg["precision_iou50"] == 1.0 and agg["precision_iou50_touching"] == 0.5
    assert agg["recall_iou50"] == 0.5 and agg["seg"] == pytest.approx((0.5 + 1.0) / 2)
    assert agg["iou"]["cell"] == pytest.approx(a2 / (a1 + a2))


def test_leaderboard_ranks_sparse_data_by_seg_and_says_why(tmp_path):
    from seg.report import tables
    from seg.report.leaderboard import build_leaderboard

    for variant, seg, prec in (("a", 0.72, 0.6), ("b", 0.65, 0.9)):
        d = tmp_path / "results" / "DIC-C2DH-HeLa" / variant
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({
            "dataset": "DIC-C2DH-HeLa", "variant": variant, "kind": "ctc", "seed": 0, "config_hash": variant,
            "primary": "seg", "annotations": "sparse",
            "aggregate": {"seg": seg, "recall_iou50": 0.9, "precision_iou50": prec, "iou": {"cell": 0.8}}}))
    cfg = {"datasets": {"DIC-C2DH-HeLa": {"kind": "ctc", "annotations": "sparse"}},
           "variants": {"a": {"model": "unet"}, "b": {"model": "unet"}}}
    board = build_leaderboard([tmp_path / "results"], cfg)
    assert [r.variant for r in board.rows] == ["a", "b"] and board.sparse("DIC-C2DH-HeLa")
    header, cells = tables.table(board, "DIC-C2DH-HeLa")
    assert header[3:7] == ["SEG", "recall@IoU0.5", "precision@IoU0.5 (annotated cells)",
                           "foreground IoU (annotated cells)"]
    assert "IoU" not in header[3:4] and cells[0][3] == "0.7200"
    md = tables.markdown(board)
    assert "sparse annotations" in md and "overlap the annotated cells" in md
    assert "sorted by SEG" in tables.terminal(board)
    tables.write_csv(tmp_path / "lb.csv", board)
    import csv

    with open(tmp_path / "lb.csv") as f:
        rec = next(csv.DictReader(f))
    assert rec["annotations"] == "sparse" and rec["iou_mean"] == "" and rec["primary"] == "seg"


def test_report_shows_the_sparse_note_and_a_seg_chart(tmp_path):
    from seg.report.build import build_figures
    from seg.report.leaderboard import build_leaderboard

    d = tmp_path / "results" / "DIC-C2DH-HeLa" / "a"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({
        "dataset": "DIC-C2DH-HeLa", "variant": "a", "kind": "ctc", "seed": 0, "config_hash": "a",
        "primary": "seg", "annotations": "sparse",
        "aggregate": {"seg": 0.75, "recall_iou50": 0.9, "precision_iou50": 0.8, "iou": {"cell": 0.8}}}))
    cfg = {"datasets": {"DIC-C2DH-HeLa": {"kind": "ctc", "annotations": "sparse"}},
           "variants": {"a": {"model": "unet"}}, "report": {"examples": 0}}
    board = build_leaderboard([tmp_path / "results"], cfg)
    figs = build_figures(board, cfg, tmp_path / "data", tmp_path / "figures")
    assert any("sparse annotations" in n for n in figs.notes["DIC-C2DH-HeLa"])
    (chart,) = [e for e in figs.entries if e.kind == "iou"]
    assert chart.title == "SEG per variant" and (tmp_path / "figures" / chart.name).is_file()
