"""Decision threshold chosen on the val split (``seg calibrate``) and applied by ``seg predict``/``score``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from seg.cli import main
from seg.errors import SegError
from seg.evaluate.calibrate import GRID, ThresholdCounts, choose_threshold, read_threshold
from seg.evaluate.score import score_split


def _biased_probability(truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """A noisy interior probability pushed toward membrane (as a class-balanced loss does): the best
    threshold is well below 0.5."""
    rng = np.random.default_rng(seed)
    logit = np.where(truth, 1.0, -3.0) - 1.2 + rng.normal(0, 1.2, truth.shape)
    return (1 / (1 + np.exp(-logit))).astype(np.float32)


def _direct_mean_iou(probs, truths, t):
    """Pooled mean IoU of the two classes for ``p >= t``, counted directly (the reference)."""
    tp = fp = fn = tn = 0
    for p, g in zip(probs, truths):
        pr = p >= t
        tp += np.sum(pr & g)
        fp += np.sum(pr & ~g)
        fn += np.sum(~pr & g)
        tn += np.sum(~pr & ~g)
    return (tp / (tp + fp + fn) + tn / (tn + fn + fp)) / 2


def test_chosen_threshold_is_the_best_grid_threshold_on_real_isbi_labels(isbi_stacks):
    truths = [isbi_stacks["labels"][i] == 255 for i in (20, 21)]
    probs = [_biased_probability(g, seed=i) for i, g in enumerate(truths)]
    counts = ThresholdCounts()
    for p, g in zip(probs, truths):
        counts.add(p, g)
    t, table = choose_threshold(counts)
    direct = {g: _direct_mean_iou(probs, truths, g) for g in GRID}
    assert [r["threshold"] for r in table] == list(GRID)
    for r in table:  # the histogram counts agree with direct counting at every grid threshold
        assert r["iou_mean"] == pytest.approx(direct[r["threshold"]], abs=2e-4)
    assert t == max(direct, key=direct.get)
    assert t < 0.4 and direct[t] > direct[0.5] + 0.01


def test_ties_prefer_the_threshold_closest_to_half():
    counts = ThresholdCounts()
    truth = np.zeros((8, 8), bool)
    truth[:, :4] = True
    counts.add(np.where(truth, 1.0, 0.0), truth)  # every grid threshold is perfect
    assert choose_threshold(counts)[0] == 0.5


def test_shape_mismatch_and_bad_threshold_file_raise(tmp_path):
    with pytest.raises(SegError, match="differ in shape"):
        ThresholdCounts().add(np.zeros((4, 4)), np.zeros((4, 5), bool))
    bad = tmp_path / "calibration.json"
    bad.write_text(json.dumps({"threshold": 1.5}))
    with pytest.raises(SegError, match=r"calibration\.json: 'threshold' must be a number in \[0, 1\]"):
        read_threshold(bad)
    with pytest.raises(SegError, match="threshold file not found"):
        read_threshold(tmp_path / "missing.json")


H = W = 48


def _cells(t: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    inst = np.zeros((H, W), np.int32)
    for k, (cy, cx) in enumerate([(12, 12 + t), (30, 14), (24, 36)], start=1):
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = k
    return inst


@pytest.fixture()
def ctc_project(tmp_path: Path) -> dict:
    """A canonical CTC dataset (frame 3 val, 4-5 test) whose predicted cell probability is 0.35 on
    the cells and 0.05 elsewhere: wrong at threshold 0.5, right at any threshold in (0.05, 0.35]."""
    from seg.data.canonical import canonical_writer
    from seg.kinds import get_kind

    data = tmp_path / "data"
    with canonical_writer(data / "gowt1", name="gowt1", kind=get_kind("ctc"), source={"test": True}) as w:
        for t in (3, 4, 5):
            inst = _cells(t)
            w.add(f"01_t{t:03d}", (inst > 0).astype(np.uint8) * 200, split="val" if t == 3 else "test",
                  frame=t, sequence="01", instances=inst, semantic=(inst > 0).astype(np.uint8))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"data_dir: {data}\ndatasets:\n  gowt1: {{kind: ctc}}\n"
                   "variants:\n  v1: {model: unet}\npostprocess: {calibrate: true, min_size: 0}\n")
    return {"root": tmp_path, "data": data, "config": cfg}


def _fake_predictions(pred: Path, frames, split: str, threshold: float | None = None) -> None:
    (pred / "01_RES").mkdir(parents=True)
    for t in frames:
        inst = _cells(t)
        cell = np.where(inst > 0, 0.35, 0.05).astype(np.float32)
        tifffile.imwrite(pred / f"01_t{t:03d}_prob.tif", np.stack([1 - cell, cell]))
        mask = np.where(cell >= (0.5 if threshold is None else threshold), inst, 0).astype(np.uint16)
        tifffile.imwrite(pred / "01_RES" / f"mask{t:03d}.tif", mask)
    summary = {"split": split, **({} if threshold is None else {"threshold": threshold})}
    (pred / "predict_summary.json").write_text(json.dumps(summary))


def test_calibrate_cli_chooses_on_val_and_score_uses_the_predict_threshold(ctc_project, capsys):
    val, out = ctc_project["root"] / "pred_val", ctc_project["root"] / "calibration.json"
    _fake_predictions(val, [3], "val")
    assert main(["calibrate", "--config", str(ctc_project["config"]), "--dataset", "gowt1", "--variant", "v1",
                 "--pred", str(val), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert 0.05 < doc["threshold"] <= 0.35 and doc["split"] == "val" and doc["n_slices"] == 1
    assert doc["at_chosen"]["iou_mean"] == pytest.approx(1.0) and doc["at_fixed"]["iou_class1"] == 0.0
    assert "threshold" in capsys.readouterr().out
    # the test predictions made with that threshold score perfectly, their class map included
    test = ctc_project["root"] / "pred_test"
    _fake_predictions(test, [4, 5], "test", threshold=doc["threshold"])
    agg = score_split(ctc_project["data"] / "gowt1", test)["aggregate"]
    assert agg["iou_mean"] == pytest.approx(1.0) and agg["seg"] == pytest.approx(1.0)
    # the same probabilities read at the default 0.5 miss every cell
    plain = ctc_project["root"] / "pred_plain"
    _fake_predictions(plain, [4, 5], "test")
    assert score_split(ctc_project["data"] / "gowt1", plain)["aggregate"]["iou"]["cell"] == 0.0


def test_calibrate_refuses_test_predictions_and_names_missing_files(ctc_project, capsys):
    cfg, root = str(ctc_project["config"]), ctc_project["root"]
    test, out = root / "pred_test", root / "calibration.json"
    _fake_predictions(test, [4, 5], "test")
    args = ["calibrate", "--config", cfg, "--dataset", "gowt1", "--variant", "v1", "--out", str(out)]
    assert main([*args, "--pred", str(test)]) == 2
    assert "the threshold is chosen on 'val' only" in capsys.readouterr().err
    val = root / "pred_val"
    _fake_predictions(val, [3], "val")
    (val / "01_t003_prob.tif").unlink()
    assert main([*args, "--pred", str(val)]) == 2
    assert "01_t003_prob.tif: probability map not found" in capsys.readouterr().err
    assert not out.exists() and not [p for p in root.iterdir() if p.name.startswith(".")]


def test_predict_applies_the_threshold_file(tiny_isbi, tmp_path):
    import torch

    from seg.models import build_model

    cfg, ds = tiny_isbi
    torch.manual_seed(0)
    ck = tmp_path / "best.pt"
    torch.save(build_model("unet", padding="same", base_channels=4, depth=2).state_dict(), ck)
    cfg.write_text(cfg.read_text().replace("variants:\n  unet: {model: unet}",
                                           "variants:\n  unet: {model: unet, params: {base_channels: 4, depth: 2}}")
                   + "inference: {tile: 128, tta: false}\n")
    common = ["predict", "--config", str(cfg), "--dataset", "isbi2012", "--variant", "unet", "--checkpoint",
              str(ck), "--split", "test", "--device", "cpu"]
    plain = tmp_path / "plain"
    assert main([*common, "--out", str(plain)]) == 0
    prob = tifffile.imread(plain / "train_03_prob.tif")
    t = float(np.quantile(prob, 0.3))  # a threshold that changes many pixels
    (tmp_path / "cal.json").write_text(json.dumps({"threshold": t}))
    out = tmp_path / "calibrated"
    assert main([*common, "--out", str(out), "--threshold-file", str(tmp_path / "cal.json")]) == 0
    np.testing.assert_array_equal(tifffile.imread(out / "train_03_seg.tif"), (prob >= t).astype(np.uint8))
    assert (tifffile.imread(out / "train_03_seg.tif") != tifffile.imread(plain / "train_03_seg.tif")).any()
    summary = json.loads((out / "predict_summary.json").read_text())
    assert summary["threshold"] == t and summary["threshold_source"].endswith("cal.json")
    assert json.loads((plain / "predict_summary.json").read_text())["threshold"] == 0.5


def test_calibrated_validation_scores_the_best_threshold(isbi_stacks):
    """validate(calibrate=True) is the mean IoU at the best grid threshold of p[1], computed directly."""
    import torch

    from seg.infer.predictor import predict_slice
    from seg.targets import get_target
    from seg.train.validate import validate

    class Blur(torch.nn.Module):  # logits of interior from a smoothed, shifted image: a weak, biased model
        def forward(self, x):
            x = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2)
            return torch.cat([-(2 * x + 1), 2 * x + 1], dim=1)

    sl = [{"image": (isbi_stacks["train"][i, :128, :128].astype(np.float32) - 128) / 50,
           "target": (isbi_stacks["labels"][i, :128, :128] == 255).astype(np.uint8)} for i in (20, 21)]
    cfg = {"tile": 128, "tta": False}
    fg_border = get_target(None)
    plain, _ = validate(Blur(), sl, cfg, torch.device("cpu"), 2, target=fg_border)
    tuned, per_class = validate(Blur(), sl, cfg, torch.device("cpu"), 2, target=fg_border, calibrate=True)
    probs = [predict_slice(Blur(), s["image"], cfg, "cpu")[1] for s in sl]
    truths = [s["target"] == 1 for s in sl]
    direct = max(_direct_mean_iou(probs, truths, t) for t in GRID)
    assert tuned == pytest.approx(direct, abs=2e-4) and tuned == pytest.approx(np.mean(per_class))
    assert tuned > plain + 0.005
