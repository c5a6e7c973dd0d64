"""``seg score`` end to end on tiny synthetic canonical datasets with fake predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from conftest import error_lines

from seg.cli import main
from seg.settings import load_config, run_config_hash
from seg.errors import SegError
from seg.metrics.rand import label_components
from seg.evaluate.score import score_split

H = W = 48


def _isbi_semantic(z: int) -> np.ndarray:
    """1-px membranes on a grid (period 12, offset by z) -> 0 membrane, 1 interior."""
    sem = np.ones((H, W), np.uint8)
    sem[(np.arange(H) + z) % 12 == 0, :] = 0
    sem[:, (np.arange(W) + 2 * z) % 12 == 0] = 0
    return sem


def _ctc_instances(t: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    inst = np.zeros((H, W), np.int32)
    for k, (cy, cx) in enumerate([(12, 12 + t), (30, 14), (24, 36)], start=1):
        inst[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = k * 3  # non-consecutive ids
    return inst


def _write_dataset(root: Path, name: str, kind: str, slices: list[dict]) -> Path:
    """Canonical form by hand: images/, instances/, semantic/ TIFFs and meta.json."""
    ds = root / name
    for sub in ("images", "instances", "semantic"):
        (ds / sub).mkdir(parents=True)
    entries = []
    for s in slices:
        sid = s["id"]
        tifffile.imwrite(ds / "images" / f"{sid}.tif", (s["semantic"] * 200).astype(np.uint8))
        tifffile.imwrite(ds / "instances" / f"{sid}.tif", s["instances"].astype(np.int32))
        tifffile.imwrite(ds / "semantic" / f"{sid}.tif", s["semantic"].astype(np.uint8))
        entries.append({"id": sid, "split": s["split"], "image": f"images/{sid}.tif",
                        "instances": f"instances/{sid}.tif", "semantic": f"semantic/{sid}.tif",
                        "sequence": s.get("sequence"), "frame": s["frame"], "shape": [H, W]})
    classes = ["membrane", "interior"] if kind == "isbi2012" else ["background", "cell"]
    meta = {"name": name, "kind": kind, "classes": classes, "source": {}, "slices": entries, "files": {}}
    (ds / "meta.json").write_text(json.dumps(meta))
    return ds


@pytest.fixture()
def project(tmp_path: Path) -> dict:
    data = tmp_path / "data"
    isbi = []
    for z in range(3):
        sem = _isbi_semantic(z)
        isbi.append({"id": f"train_{z:02d}", "split": "train" if z == 0 else "test", "frame": z,
                     "semantic": sem, "instances": label_components(sem == 1)})
    _write_dataset(data, "isbi2012", "isbi2012", isbi)
    ctc = []
    for t in (3, 4, 5):
        inst = _ctc_instances(t)
        ctc.append({"id": f"01_t{t:03d}", "split": "val" if t == 3 else "test", "frame": t, "sequence": "01",
                    "semantic": (inst > 0).astype(np.uint8), "instances": inst})
    _write_dataset(data, "gowt1", "ctc", ctc)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"data_dir: {data}\nseed: 3\n"
        "datasets:\n  isbi2012: {kind: isbi2012}\n  gowt1: {kind: ctc}\n"
        "variants:\n  v1: {model: unet, label: My U-Net}\n"
    )
    return {"root": tmp_path, "data": data, "config": cfg}


def _isbi_predictions(pred: Path, *, merge_row: bool = False) -> None:
    pred.mkdir(parents=True, exist_ok=True)
    for z in (1, 2):
        sem = _isbi_semantic(z)
        if merge_row:  # the prediction misses one horizontal membrane -> merged cells
            r = int(np.flatnonzero((np.arange(H) + z) % 12 == 0)[1])
            sem[r, :] = 1
        tifffile.imwrite(pred / f"train_{z:02d}_prob.tif", sem.astype(np.float32))
        tifffile.imwrite(pred / f"train_{z:02d}_seg.tif", sem)


def _ctc_predictions(pred: Path) -> None:
    (pred / "01_RES").mkdir(parents=True, exist_ok=True)
    for t in (4, 5):
        inst = _ctc_instances(t)
        probs = np.stack([inst == 0, inst > 0]).astype(np.float32)
        tifffile.imwrite(pred / f"01_t{t:03d}_prob.tif", probs)
        tifffile.imwrite(pred / "01_RES" / f"mask{t:03d}.tif", inst.astype(np.uint16))


def test_perfect_isbi_prediction_scores_perfectly(project):
    pred = project["root"] / "pred"
    _isbi_predictions(pred)
    s = score_split(project["data"] / "isbi2012", pred, split="test")
    agg = s["aggregate"]
    assert s["kind"] == "isbi2012" and [r["id"] for r in s["per_slice"]] == ["train_01", "train_02"]
    assert agg["iou"] == {"membrane": 1.0, "interior": 1.0}
    assert agg["iou_mean"] == 1.0 and agg["dice_mean"] == 1.0 and agg["pixel_error"] == 0.0
    assert agg["f1_interior_error"] == 0.0
    assert agg["vrand"] == pytest.approx(1.0) and agg["vinfo"] == pytest.approx(1.0)
    assert agg["rand_error"] == pytest.approx(0.0) and agg["pixel_error_isbi"] == 0.0
    assert agg["edge_errors"]["count"] == [0, 0, 0, 0]
    assert agg["edge_errors"]["iou_without_bin1"] == {"membrane": 1.0, "interior": 1.0}
    assert "seg" not in agg


def test_isbi_merge_lowers_the_merge_score_only(project):
    pred = project["root"] / "pred"
    _isbi_predictions(pred, merge_row=True)
    s = score_split(project["data"] / "isbi2012", pred)
    agg = s["aggregate"]
    assert agg["vrand_split"] == pytest.approx(1.0) and agg["vrand_merge"] < 0.9
    assert agg["vinfo_split"] == pytest.approx(1.0) and agg["vinfo_merge"] < 1.0
    assert agg["rand_error"] > 0.05
    assert 0 < agg["pixel_error"] < 0.05 and agg["iou"]["membrane"] < 1.0
    # the missed membrane row: every wrong pixel is counted once, pooled over the two slices; most
    # are > 1 px from any predicted membrane, so putting one-pixel edges right does not restore it
    edges = agg["edge_errors"]
    assert sum(edges["count"]) == round(agg["pixel_error"] * 2 * H * W) == 2 * W
    assert edges["count"] == [sum(r["edge_errors"]["count"][i] for r in s["per_slice"]) for i in range(4)]
    assert edges["count"][0] < W and edges["iou_without_bin1"]["membrane"] < 1.0


def test_perfect_ctc_prediction_scores_perfectly(project):
    pred = project["root"] / "pred"
    _ctc_predictions(pred)
    s = score_split(project["data"] / "gowt1", pred, split="test")
    agg = s["aggregate"]
    assert [r["id"] for r in s["per_slice"]] == ["01_t004", "01_t005"]
    assert agg["seg"] == 1.0 and agg["precision_iou50"] == 1.0 and agg["recall_iou50"] == 1.0
    assert agg["n_ref"] == 6 and agg["iou_mean"] == 1.0 and agg["vrand"] == pytest.approx(1.0)
    assert "rand_error" not in agg


def test_missing_or_misshapen_prediction_names_the_file(project):
    pred = project["root"] / "pred"
    _isbi_predictions(pred)
    (pred / "train_02_seg.tif").unlink()
    with pytest.raises(SegError, match=r"train_02_seg\.tif: segmentation not found"):
        score_split(project["data"] / "isbi2012", pred)
    tifffile.imwrite(pred / "train_02_seg.tif", np.zeros((H, W + 1), np.uint8))
    with pytest.raises(SegError, match=r"train_02_seg\.tif: segmentation has shape \(48, 49\)"):
        score_split(project["data"] / "isbi2012", pred)
    cpred = project["root"] / "cpred"
    _ctc_predictions(cpred)
    (cpred / "01_RES" / "mask005.tif").unlink()
    with pytest.raises(SegError, match=r"01_RES/mask005\.tif: instance mask not found"):
        score_split(project["data"] / "gowt1", cpred)


def test_cli_writes_metrics_json(project, capsys):
    root = project["root"]
    pred = root / "results" / "isbi2012" / "v1" / "pred" / "test"
    _isbi_predictions(pred)
    summary = {"seconds_per_slice": 0.5, "tile": 128, "overlap": 0.25, "tta": False, "checkpoint": "ck/best.pt"}
    (pred / "predict_summary.json").write_text(json.dumps(summary))
    train = root / "train_summary.json"
    train.write_text(json.dumps({"wall_time_s": 12.5, "device": "cpu", "params": 1000, "iterations": 7,
                                 "best_val_iou": 0.5, "seed": 3}))
    out = root / "results" / "isbi2012" / "v1" / "metrics.json"
    rc = main(["score", "--config", str(project["config"]), "--dataset", "isbi2012", "--variant", "v1",
               "--pred", str(pred), "--out", str(out), "--train-summary", str(train)])
    assert rc == 0, capsys.readouterr().err
    assert "vrand 1.0000" in capsys.readouterr().out
    m = json.loads(out.read_text())
    for key in ("dataset", "variant", "label", "split", "config_hash", "checkpoint", "seed", "date",
                "primary", "aggregate", "per_slice", "train", "inference"):
        assert key in m, key
    assert (m["dataset"], m["variant"], m["label"], m["split"]) == ("isbi2012", "v1", "My U-Net", "test")
    assert m["config_hash"] == run_config_hash(load_config(project["config"]), "isbi2012", "v1")
    assert m["primary"] == "iou_mean" and m["seed"] == 3 and m["date"].startswith("20")
    assert m["checkpoint"] == "ck/best.pt" and m["inference"] == summary
    assert m["train"]["wall_time_s"] == 12.5
    for key in ("iou_mean", "iou", "dice_mean", "pixel_error", "f1_interior_error", "vrand", "vinfo",
                "rand_error"):
        assert key in m["aggregate"] and key in m["per_slice"][0], key
    assert m["aggregate"]["iou_mean"] == 1.0 and m["per_slice"][1]["vrand"] == pytest.approx(1.0)


def test_cli_error_is_one_line_and_leaves_no_output(project, capsys):
    root = project["root"]
    pred = root / "pred"
    _ctc_predictions(pred)
    tifffile.imwrite(pred / "01_t004_prob.tif", np.zeros((2, H, 10), np.float32))
    out = root / "metrics.json"
    rc = main(["score", "--config", str(project["config"]), "--dataset", "gowt1", "--variant", "v1",
               "--pred", str(pred), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "01_t004_prob.tif: probability map has shape (2, 48, 10)" in err
    lines = error_lines(err)
    assert len(lines) == 1 and not out.exists()
