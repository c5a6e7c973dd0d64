"""Dataset kinds as one protocol (seg.kinds): a kind registered here, in the test, goes through
ingest, seg predict, seg score and the leaderboard with no change anywhere else; the registry's
errors; the CTC result layout past frame 999."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from seg.errors import SegError
from seg.kinds import Kind, find_kind, get_kind, kind_names, register_kind, unregister_kind
from seg.kinds.ctc import result_mask_name, result_mask_path, slice_mask_path
from seg.targets import get_target

SEG_DIR = Path(__file__).resolve().parents[1] / "seg"


class BlobsKind(Kind):
    """Bright round blobs on a dark background: raw data is one ``blobs.npz`` (``images`` (N, H, W)
    uint8, ``masks`` (N, H, W) uint8 {0, 1}); the first half of the slices train, then val, test."""

    name = "blobs"
    classes = ("background", "blob")
    conventions = {"images": "2D (H, W) uint8", "instances": "int32 blobs, 4-connected",
                   "semantic": "uint8, 1 = blob"}
    expected = "blobs.npz"
    probability_text = "float32, probability of class 1 'blob' in [0, 1]"
    segmentation_text = "uint8, 1 = blob (probability >= threshold)"
    report_columns = ("iou_mean", "iou_blob", "dice_mean")
    summary_measures = ("iou_mean", "dice_mean")
    secondary = "dice_mean"
    citation = "Synthetic blobs for seg's tests. doi:10.0000/seg-test-blobs"

    def has_local_files(self, folder, entry, *, url=None):
        return (Path(folder) / "blobs.npz").is_file()

    def ingest(self, folder, out, *, name, entry, source):
        from skimage.measure import label

        from seg.data.canonical import canonical_writer

        raw = np.load(Path(folder) / "blobs.npz")
        images, masks = raw["images"], raw["masks"]
        splits = ["train"] * (len(images) - 2) + ["val", "test"]
        with canonical_writer(out, name=name, kind=self, source=source) as w:
            for i, (img, m) in enumerate(zip(images, masks)):
                w.add(f"b{i:02d}", img, split=splits[i], frame=i, instances=label(m > 0, connectivity=1),
                      semantic=(m > 0).astype(np.uint8))
        return w.meta


@pytest.fixture
def blobs_kind():
    """The blobs kind, registered for one test and removed after it."""
    kind = register_kind(BlobsKind())
    try:
        yield kind
    finally:
        unregister_kind(kind.name)


def _blobs_raw(folder: Path, n: int = 5, size: int = 64) -> None:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        m = np.zeros((size, size), np.uint8)
        for _ in range(4):
            cy, cx, r = rng.uniform(10, size - 10), rng.uniform(10, size - 10), rng.uniform(4, 8)
            m[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1
        images.append(np.clip(50 + 120 * m + rng.normal(0, 10, m.shape), 0, 255).astype(np.uint8))
        masks.append(m)
    folder.mkdir(parents=True)
    np.savez(folder / "blobs.npz", images=np.stack(images), masks=np.stack(masks))


def test_a_kind_of_its_own_goes_through_ingest_predict_score_and_leaderboard(tmp_path, blobs_kind, one_thread):
    import torch
    import yaml

    from seg.settings import load_config
    from seg.data import canonical
    from seg.kinds.ingest import ingest_dataset
    from seg.evaluate.predict import run_predict
    from seg.io import read_json, read_tiff
    from seg.evaluate.score import run_score
    from seg.models import build_model
    from seg.report import tables
    from seg.report.leaderboard import build_leaderboard

    _blobs_raw(tmp_path / "raw" / "blobs")
    params = {"padding": "same", "base_channels": 4, "depth": 2, "batch_norm": False}
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"),
        "datasets": {"blobs": {"kind": "blobs", "raw_dir": str(tmp_path / "raw" / "blobs")}},
        "variants": {"tiny": {"model": "unet", "params": params}},
        "inference": {"tile": 64, "device": "cpu", "amp": "none"}}))
    cfg = load_config(cfg_path)  # the config accepts the registered kind

    meta = ingest_dataset(cfg, "blobs")
    ds = tmp_path / "data" / "blobs"
    assert meta["kind"] == "blobs" and meta["classes"] == ["background", "blob"]
    assert canonical.load_meta(ds)["conventions"] == BlobsKind.conventions
    assert canonical.load_image(ds, canonical.slices(meta, "test")[0]).shape == (64, 64)

    torch.manual_seed(0)
    ckpt = tmp_path / "results" / "blobs" / "tiny" / "checkpoints" / "best.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"model": build_model("unet", **params).state_dict(), "iteration": 1}, ckpt)
    pred = ckpt.parent.parent / "pred" / "test"
    summary = run_predict(cfg, dataset="blobs", variant="tiny", checkpoint=ckpt, split="test", out=pred)
    assert summary["kind"] == "blobs"
    prob, seg = read_tiff(pred / "b04_prob.tif"), read_tiff(pred / "b04_seg.tif")  # the base kind's files
    assert prob.shape == seg.shape == (64, 64) and prob.dtype == np.float32 and seg.dtype == np.uint8
    np.testing.assert_array_equal(seg, (prob >= 0.5).astype(np.uint8))

    doc = run_score(cfg, dataset="blobs", variant="tiny", pred=pred, out=ckpt.parent.parent / "metrics.json",
                    data_dir=tmp_path / "data")
    agg = read_json(ckpt.parent.parent / "metrics.json")["aggregate"]
    assert doc["kind"] == "blobs" and doc["primary"] == "iou_mean"
    assert set(agg["iou"]) == {"background", "blob"} and 0 <= agg["iou_mean"] <= 1
    assert "seg" not in agg and "vrand" not in agg  # only the pixel measures of the class map

    board = build_leaderboard([tmp_path / "results"], cfg, tmp_path / "data")
    row = board.datasets["blobs"][0]
    assert board.kinds["blobs"] == "blobs" and row.secondary == "dice_mean"
    header, cells = tables.table(board, "blobs")
    assert header[3:6] == ["IoU", "blob IoU", "Dice"]
    record = tables.csv_records(board)[0]
    assert record["kind"] == "blobs" and float(record["iou_class1"]) == pytest.approx(agg["iou"]["blob"], abs=1e-6)
    assert "## blobs (blobs)" in tables.markdown(board)


def test_registry_errors(blobs_kind):
    with pytest.raises(SegError, match=r"unknown dataset kind 'nope' \(registered kinds: isbi2012, ctc, folder, folder-semantic, blobs\)"):
        get_kind("nope")
    assert find_kind("nope") is None and find_kind("") is None and find_kind(None) is None
    with pytest.raises(SegError, match="'blobs' is already registered"):
        register_kind(BlobsKind())
    with pytest.raises(SegError, match="is not a seg.kinds.base.Kind"):
        register_kind(object())
    bad = BlobsKind()
    bad.name = "no spaces"
    with pytest.raises(SegError, match="dataset kind name 'no spaces'"):
        register_kind(bad)
    with pytest.raises(SegError, match="unknown dataset kind 'nope'"):
        unregister_kind("nope")
    assert kind_names() == ["isbi2012", "ctc", "folder", "folder-semantic", "blobs"]


def test_unregistered_kind_is_gone_and_config_rejects_it():
    from seg.settings import validate_config

    assert "blobs" not in kind_names()  # the fixture removed it
    cfg = {"datasets": {"x": {"kind": "blobs"}}, "variants": {"u": {"model": "unet"}}}
    with pytest.raises(SegError, match=r"config: datasets\.x\.kind: 'blobs' is not one of \['isbi2012', 'ctc', 'folder', 'folder-semantic'\]"):
        validate_config(cfg)


def test_ctc_result_masks_past_frame_999(tmp_path):
    # the CTC naming convention: 3 digits, 4 when the sequence has more than 1000 frames
    assert result_mask_name(0) == "mask000.tif" and result_mask_name(999, last_frame=999) == "mask999.tif"
    assert result_mask_name(7, last_frame=1000) == "mask0007.tif"
    assert result_mask_name(1000) == result_mask_name(1000, last_frame=10) == "mask1000.tif"
    assert result_mask_name(12345) == "mask12345.tif"
    with pytest.raises(SegError, match="frame must be >= 0"):
        result_mask_name(-1)
    assert result_mask_path(tmp_path, None, 3) == tmp_path / "01_RES" / "mask003.tif"

    # seg predict writes, and seg score / the report read, the same file of a long sequence
    meta = {"slices": [{"id": f"02_t{f:04d}", "sequence": "02", "frame": f} for f in (7, 1000)]
            + [{"id": "01_t005", "sequence": "01", "frame": 5}]}
    ctc = get_kind("ctc")
    probs = np.zeros((2, 8, 8), np.float32)
    probs[1, 2:6, 2:6] = 1
    probs[0] = 1 - probs[1]
    pp = {"method": "connected_components", "min_size": 0, "h": 2.0}
    prob, labels = get_target(None).decode(probs, pp, threshold=0.5, instances=ctc.instances,
                                           foreground=ctc.foreground)
    assert labels.max() == 1
    for entry in meta["slices"]:
        ctc.write_prediction(tmp_path, entry, probs, prob, labels, meta=meta)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("mask*.tif"))
    assert written == ["01_RES/mask005.tif", "02_RES/mask0007.tif", "02_RES/mask1000.tif"]
    assert slice_mask_path(tmp_path, meta["slices"][0], meta) == tmp_path / "02_RES" / "mask0007.tif"


def test_no_kind_name_is_compared_outside_seg_kinds():
    """Callers ask the kind object; the names isbi2012 / ctc are compared only in seg/kinds/."""
    compare = re.compile(r"""(==|!=)\s*["'](ctc|isbi2012)["']|["'](ctc|isbi2012)["']\s*(==|!=)"""
                         r"""|\bin\s*[(\[{]\s*["'](ctc|isbi2012)["']|["'](ctc|isbi2012)["']\s*:\s*[{(\["']""")
    hits = [f"{p.relative_to(SEG_DIR.parent)}:{i}: {line.strip()}"
            for p in sorted(SEG_DIR.rglob("*.py")) if "kinds" not in p.relative_to(SEG_DIR).parts[:1]
            for i, line in enumerate(p.read_text().splitlines(), 1) if compare.search(line)]
    assert hits == []
