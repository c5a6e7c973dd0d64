"""CTC post-processing chosen on the val split by SEG (threshold, watershed h, minimum size), applied
by ``seg predict``; per-dataset ``postprocess`` overrides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from seg.cli import main
from seg.settings import load_config, step_hash
from seg.data.ctc import ctc_semantic
from seg.data.synth import synth_ctc
from seg.evaluate.calibrate import GRID, ThresholdCounts, choose_threshold
from seg.infer.postprocess import instances_from_probability
from seg.metrics.ctc import seg_measure

H_GRID, SIZE_GRID = [1.0, 3.0], [0, 30, 300]


@pytest.fixture(scope="module")
def sparse_val(tmp_path_factory) -> dict:
    """A canonical CTC dataset from a synthetic sparse sequence (half of the 12 cells annotated),
    val frames 3 and 6, and val "predictions": every cell, annotated or not, as a blurred
    probability map, the way a model that found the unannotated cells would see them."""
    from seg.data.canonical import canonical_writer
    from seg.kinds import get_kind

    root = tmp_path_factory.mktemp("calseg")
    d = synth_ctc(np.random.default_rng(4), size=96, frames=7, every=3, sequences=("01",), annotated=0.5,
                  subset_rng=np.random.default_rng([4, 1]))["01"]
    data, pred = root / "data", root / "pred_val"
    (pred / "01_RES").mkdir(parents=True)
    fgs, refs = [], []
    with canonical_writer(data / "syn", name="syn", kind=get_kind("ctc"), source={"test": True}) as w:
        w.meta["annotations"] = "sparse"
        for t in (3, 6):
            ref = d["masks"][t].astype(np.int32)
            w.add(f"01_t{t:03d}", d["images"][t], split="val", frame=t, sequence="01", instances=ref,
                  semantic=ctc_semantic(ref))
            p = np.clip(ndi.gaussian_filter(ctc_semantic(d["all"][t].astype(np.int32)).astype(float), 2.5), 0, 1)
            tifffile.imwrite(pred / f"01_t{t:03d}_prob.tif", np.stack([1 - p, p]).astype(np.float32))
            fgs.append(p.astype(np.float32))
            refs.append(ref)
    (pred / "predict_summary.json").write_text(json.dumps({"split": "val"}))
    cfg = root / "config.yaml"
    cfg.write_text(f"data_dir: {data}\ndatasets:\n  syn: {{kind: ctc, annotations: sparse}}\n"
                   "variants:\n  v: {model: unet, params: {base_channels: 4, depth: 2}}\n"
                   f"postprocess: {{method: watershed, calibrate: true, min_size: 200, h: 2.0, "
                   f"search: {{h: {H_GRID}, min_size: {SIZE_GRID}}}}}\n")
    return {"root": root, "config": cfg, "pred": pred, "fgs": fgs, "refs": refs, "data": data}


def _seg(fgs, refs, t, h, m):
    return seg_measure(refs, [instances_from_probability(p, method="watershed", threshold=t, min_size=m, h=h)
                              for p in fgs])


def test_seg_calibration_on_a_synthetic_sparse_sequence(sparse_val):
    out = sparse_val["root"] / "calibration.json"
    assert main(["calibrate", "--config", str(sparse_val["config"]), "--dataset", "syn", "--variant", "v",
                 "--pred", str(sparse_val["pred"]), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["criterion"] == "seg" and doc["annotations"] == "sparse" and doc["split"] == "val"
    assert {"threshold", "h", "min_size"} <= set(doc) and len(doc["table"]) == len(GRID) * 2 * 3
    # the chosen setting is the best SEG of the grid, computed here through the predict path
    fgs, refs = sparse_val["fgs"], sparse_val["refs"]
    direct = {(t, h, m): _seg(fgs, refs, t, h, m) for t in GRID for h in H_GRID for m in SIZE_GRID}
    best = max(direct.values())
    assert doc["at_chosen"]["seg"] == pytest.approx(best, abs=1e-12)
    assert direct[(doc["threshold"], doc["h"], doc["min_size"])] == pytest.approx(best, abs=1e-12)
    # pixel mean IoU (unannotated cells counted as background) would choose a higher threshold that
    # shrinks every cell: clearly worse SEG
    counts = ThresholdCounts()
    for p, r in zip(fgs, refs):
        counts.add(p, ctc_semantic(r) == 1)
    t_pixel, _ = choose_threshold(counts)
    assert t_pixel > doc["threshold"]
    assert best > direct[(t_pixel, doc["h"], doc["min_size"])] + 0.1
    # the configured (uncalibrated) settings are reported too; precision is the restricted one
    assert doc["at_fixed"]["min_size"] == 200 and doc["at_fixed"]["threshold"] == 0.5
    assert "more than half" in doc["precision"]


def _tiny_project(tmp_path: Path, postprocess: str, dataset_pp: str = "") -> tuple[Path, Path]:
    """A canonical CTC test frame and an untrained tiny U-Net checkpoint; returns (config, ckpt)."""
    import torch

    from seg.data.canonical import canonical_writer
    from seg.kinds import get_kind
    from seg.models import build_model

    d = synth_ctc(np.random.default_rng(1), size=64, frames=1, every=1, sequences=("01",))["01"]
    with canonical_writer(tmp_path / "data" / "syn", name="syn", kind=get_kind("ctc"), source={"test": True}) as w:
        inst = d["masks"][0].astype(np.int32)
        w.add("01_t000", d["images"][0], split="test", frame=0, sequence="01", instances=inst,
              semantic=ctc_semantic(inst))
    torch.manual_seed(0)
    ck = tmp_path / "best.pt"
    torch.save(build_model("unet", padding="same", base_channels=4, depth=2).state_dict(), ck)
    cfg = tmp_path / "config.yaml"
    own = f", postprocess: {dataset_pp}" if dataset_pp else ""
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\ndatasets:\n  syn: {{kind: ctc{own}}}\n"
                   "variants:\n  v: {model: unet, params: {base_channels: 4, depth: 2}}\n"
                   f"inference: {{tile: 64, tta: false, amp: none}}\npostprocess: {postprocess}\n")
    return cfg, ck


def _predict(cfg: Path, ck: Path, out: Path, *extra: str) -> tuple[np.ndarray, np.ndarray, dict]:
    assert main(["predict", "--config", str(cfg), "--dataset", "syn", "--variant", "v", "--checkpoint", str(ck),
                 "--split", "test", "--device", "cpu", "--out", str(out), *extra]) == 0
    prob = tifffile.imread(out / "01_t000_prob.tif")[1]
    return prob, tifffile.imread(out / "01_RES" / "mask000.tif"), json.loads((out / "predict_summary.json").read_text())


def test_predict_applies_every_calibrated_setting(tmp_path):
    cfg, ck = _tiny_project(tmp_path, "{method: watershed, min_size: 200, h: 2.0}")
    prob, plain, _ = _predict(cfg, ck, tmp_path / "plain")
    t = float(np.quantile(prob, 0.4))
    cal = tmp_path / "calibration.json"
    cal.write_text(json.dumps({"threshold": t, "h": 0.5, "min_size": 3}))
    prob2, mask, summary = _predict(cfg, ck, tmp_path / "cal", "--threshold-file", str(cal))
    np.testing.assert_array_equal(prob2, prob)
    expected = instances_from_probability(prob, method="watershed", threshold=t, min_size=3, h=0.5)
    np.testing.assert_array_equal(mask, expected)
    assert not np.array_equal(mask, instances_from_probability(prob, method="watershed", threshold=t,
                                                               min_size=200, h=2.0))
    assert summary["threshold"] == t and summary["postprocess"]["h"] == 0.5 and summary["postprocess"]["min_size"] == 3
    cal.write_text(json.dumps({"threshold": t, "min_size": -1}))
    assert main(["predict", "--config", str(cfg), "--dataset", "syn", "--variant", "v", "--checkpoint", str(ck),
                 "--split", "test", "--out", str(tmp_path / "bad"), "--threshold-file", str(cal)]) == 2


def test_per_dataset_postprocess_overrides(tmp_path, capsys):
    """One global min_size of 200 would delete small nuclei: a dataset's own postprocess wins for
    that dataset, in predict, in calibrate's search and in the rerun hashes."""
    cfg, ck = _tiny_project(tmp_path, "{method: watershed, min_size: 200, h: 2.0, threshold: 0.5}",
                            "{min_size: 4, h: 1.0, threshold: 0.45}")
    prob, mask, summary = _predict(cfg, ck, tmp_path / "out")
    assert summary["postprocess"]["min_size"] == 4 and summary["postprocess"]["h"] == 1.0
    assert summary["threshold"] == 0.45
    np.testing.assert_array_equal(mask, instances_from_probability(prob, method="watershed", threshold=0.45,
                                                                   min_size=4, h=1.0))
    c = load_config(cfg)
    base = step_hash(c, "predict", "syn", "v")
    c["datasets"]["syn"]["postprocess"]["min_size"] = 5
    assert step_hash(c, "predict", "syn", "v") != base
    # calibrate searches the dataset's own grid
    cfg.write_text(cfg.read_text().replace("{min_size: 4, h: 1.0, threshold: 0.45}",
                                           "{search: {h: [1.5], min_size: [7]}}"))
    val = tmp_path / "val"
    val.mkdir()
    tifffile.imwrite(val / "01_t000_prob.tif", np.stack([1 - prob, prob]))
    (val / "predict_summary.json").write_text(json.dumps({"split": "val"}))
    import shutil

    meta = json.loads((tmp_path / "data/syn/meta.json").read_text())
    meta["slices"][0]["split"] = "val"
    (tmp_path / "data/syn/meta.json").write_text(json.dumps(meta))
    assert main(["calibrate", "--config", str(cfg), "--dataset", "syn", "--variant", "v", "--pred", str(val),
                 "--out", str(tmp_path / "cal.json")]) == 0
    doc = json.loads((tmp_path / "cal.json").read_text())
    assert doc["h"] == 1.5 and doc["min_size"] == 7 and {r["min_size"] for r in doc["table"]} == {7}
    shutil.rmtree(val)
    # a bad key in a dataset's override is refused by name
    cfg.write_text(cfg.read_text().replace("{search: {h: [1.5], min_size: [7]}}", "{min_sise: 3}"))
    assert main(["predict", "--config", str(cfg), "--dataset", "syn", "--variant", "v", "--checkpoint", str(ck),
                 "--split", "test", "--out", str(tmp_path / "x")]) == 2
    assert "datasets.syn.postprocess" in capsys.readouterr().err


def test_tta_val_false_predicts_val_without_tta_and_test_with_it(tmp_path):
    cfg, ck = _tiny_project(tmp_path, "{method: watershed, min_size: 0}")
    cfg.write_text(cfg.read_text().replace("tta: false", "tta: true, tta_val: false"))
    meta = json.loads((tmp_path / "data/syn/meta.json").read_text())
    meta["slices"].append({**meta["slices"][0], "id": "01_t000v", "split": "val"})
    (tmp_path / "data/syn/meta.json").write_text(json.dumps(meta))
    for split, tta in (("val", False), ("test", True)):
        out = tmp_path / split
        assert main(["predict", "--config", str(cfg), "--dataset", "syn", "--variant", "v", "--checkpoint", str(ck),
                     "--split", split, "--device", "cpu", "--out", str(out)]) == 0
        assert json.loads((out / "predict_summary.json").read_text())["tta"] is tta


def test_seg_ties_keep_the_configured_settings():
    """A larger minimum size never raises SEG; taking the largest that costs no val cell (what
    precision would pick) deletes smaller cells elsewhere. Ties keep the configured values; a
    smaller size wins when the configured one deletes annotated cells."""
    from seg.evaluate.calibrate import choose_postprocess

    def row(t, h, m, seg, prec):
        return {"threshold": t, "h": h, "min_size": m, "seg": seg, "precision_iou50": prec}

    rows = [row(0.5, 2.0, 0, 0.9, 0.8), row(0.5, 2.0, 200, 0.9, 0.85), row(0.5, 2.0, 2000, 0.9, 1.0),
            row(0.5, 5.0, 200, 0.9, 0.9), row(0.4, 2.0, 200, 0.9, 0.9), row(0.45, 8.0, 200, 0.8, 1.0)]
    assert choose_postprocess(rows, threshold=0.5, h=2.0, min_size=200) == rows[1]
    rows.append(row(0.45, 8.0, 50, 0.91, 0.5))  # the configured 200 deleted a val cell: 50 wins on SEG
    assert choose_postprocess(rows, threshold=0.5, h=2.0, min_size=200) == rows[-1]
