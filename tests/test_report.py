"""The HTML report and its figures, built from result folders written by the test."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import tifffile

from seg.errors import SegError
from seg.report.examples import FN_COLOR, FP_COLOR, error_overlay, load_prediction, pick_evenly
from seg.report.outputs import write_outputs

CONFIG_YAML = """\
datasets:
  isbi2012: {kind: isbi2012}
variants:
  unet: {model: unet, label: "U-Net (paper)"}
  fcn8s: {model: fcn8s}
report: {examples: 2}
"""
IDS = ["train_25", "train_26", "train_27"]


def _dataset(data: Path) -> None:
    """A tiny canonical ISBI-like dataset: 3 test slices of 48x48, plus a weight preview."""
    rng = np.random.default_rng(0)
    ds = data / "isbi2012"
    for sub in ("images", "semantic", "weights"):
        (ds / sub).mkdir(parents=True, exist_ok=True)
    slices = []
    for i in IDS:
        sem = np.ones((48, 48), np.uint8)
        sem[::12, :] = 0
        sem[:, ::12] = 0
        tifffile.imwrite(ds / f"images/{i}.tif", rng.integers(0, 255, (48, 48), dtype=np.uint8))
        tifffile.imwrite(ds / f"semantic/{i}.tif", sem)
        slices.append({"id": i, "split": "test", "image": f"images/{i}.tif", "instances": None,
                       "semantic": f"semantic/{i}.tif", "sequence": None, "frame": 0,
                       "shape": [48, 48]})
    from seg.report.references import ISBI2012_TRAIN_PIXELS_SHA256

    # claims to be the ISBI 2012 data (its training pixels' hash), so its published errors are shown
    (ds / "meta.json").write_text(json.dumps({"name": "isbi2012", "kind": "isbi2012",
                                              "classes": ["membrane", "interior"], "slices": slices,
                                              "source": {"pixels_sha256": {"train": ISBI2012_TRAIN_PIXELS_SHA256}}}))
    (data / "DIC-C2DH-HeLa").mkdir()
    (data / "DIC-C2DH-HeLa" / "meta.json").write_text(json.dumps({"name": "DIC-C2DH-HeLa", "kind": "ctc",
                                                                  "slices": []}))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 1))
    fig.add_subplot().imshow(np.eye(8))
    fig.savefig(ds / "weights" / "preview.png", format="png")


def _run(root: Path, dataset: str, variant: str, *, iou: float, seed: int, log: bool = True,
         preds: bool = True) -> None:
    d = root / dataset / variant
    (d / "pred" / "test").mkdir(parents=True)
    agg = {"iou_mean": iou, "pixel_error": 1 - iou}
    if dataset == "isbi2012":
        agg.update(rand_error=(1 - iou) / 2, vrand=iou, pixel_error_isbi=(1 - iou) / 3)
    else:
        agg.update(seg=iou - 0.1)
    (d / "metrics.json").write_text(json.dumps({
        "dataset": dataset, "variant": variant, "config_hash": f"h-{variant}", "seed": seed,
        "date": f"2026-01-0{seed + 1}T00:00:00", "primary": "iou_mean", "aggregate": agg,
        "train": {"wall_time_s": 60.0, "device": "cpu", "params": 5000},
        "inference": {"seconds_per_slice": 0.1}}))
    if log:
        lines = ["iteration,epoch,loss,lr,val_iou,samples_per_s,data_wait,wall_s"]
        lines += [f"{k},0,{1 / (k + 1):.4f},0.001,{'0.5' if k % 5 == 4 else ''},1,0,{k}"
                  for k in range(20)]
        (d / "train_log.csv").write_text("\n".join(lines) + "\n")
    if preds:
        for i in IDS:
            p = np.ones((48, 48), np.uint8)
            p[::12, :] = 0
            p[5:9, 5:9] = 0  # a false negative (missed interior)
            tifffile.imwrite(d / "pred" / "test" / f"{i}_seg.tif", p)


@pytest.fixture
def project(tmp_path: Path) -> dict:
    data, results, cluster = tmp_path / "data", tmp_path / "results", tmp_path / "cluster"
    _dataset(data)
    _run(results, "isbi2012", "unet", iou=0.80, seed=0)
    _run(cluster, "isbi2012", "unet", iou=0.84, seed=1)
    _run(results, "isbi2012", "fcn8s", iou=0.70, seed=0, preds=False)
    _run(cluster, "DIC-C2DH-HeLa", "unet", iou=0.71, seed=0, log=False, preds=False)
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(CONFIG_YAML)
    from seg.settings import load_config

    return {"cfg": load_config(cfg_path), "cfg_path": cfg_path, "data": data,
            "dirs": [results, cluster], "out": tmp_path / "out"}


def test_report_html_is_self_contained_with_one_image_per_figure(project):
    res = write_outputs(project["dirs"], project["cfg"], config_path=str(project["cfg_path"]),
                        data_dir=project["data"], out_dir=project["out"])
    names = [f.name for f in res.figures.entries]
    assert names == ["iou_isbi2012.png", "errors_isbi2012.png", "curves_isbi2012.png",
                     "examples_isbi2012.png", "weights_isbi2012.png", "iou_DIC-C2DH-HeLa.png"]
    on_disk = sorted(p.name for p in (project["out"] / "figures").iterdir())
    assert on_disk == sorted(names)
    text = res.html.read_text()
    assert text.count("data:image/png;base64,") == len(names)
    for src in re.findall(r'src="([^"]*)"', text):
        assert src.startswith("data:image/png;base64,")
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', text))
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", text)
    assert "<script" not in text and "<link" not in text
    # the leaderboard table, best first, with the merged spread, and the settings
    assert text.index("<td>U-Net (paper)</td>") < text.index("<td>fcn8s</td>")
    assert "0.8200 ± 0.0283" in text
    assert "Published U-Net results" in text and "0.0382" in text and "0.0611" in text
    assert "label: U-Net (paper)" in text  # config as YAML
    # the dataset without data: its leaderboard is there, the figures needing data are noted
    assert "DIC-C2DH-HeLa" in text and "no annotated test slices, so no example slices" in text
    assert "0.7756" in text  # the published DIC-HeLa figure beside our HeLa row (compared with SEG)
    assert "train_log.csv: file not found" in text
    # the page never widens: every table scrolls inside its own box, long words (paths) wrap
    assert text.count("<table>") == text.count('<div class="scroll"><table>') > 0
    css = text[text.index("<style>"):text.index("</style>")]
    assert re.search(r"body \{[^}]*overflow-wrap: anywhere", css)
    assert re.search(r"\.scroll \{[^}]*overflow-x: scroll", css)
    # every embedded image is a PNG that decodes
    import base64

    for b64 in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text):
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    assert res.csv.is_file() and res.markdown.is_file()
    # every path printed relative to the folder holding the result folders (results/, cluster/),
    # the config's too; no absolute path of this machine in the report, the Markdown or the CSV
    root = project["out"].parent
    assert "<td>results/isbi2012/unet/metrics.json</td>" in text
    assert "<td>cluster/isbi2012/unet/metrics.json</td>" in text
    assert "from results, cluster with config <code>config.yaml</code>." in text
    assert "Paths are relative to the folder holding the result folders results, cluster." in text
    assert "data/DIC-C2DH-HeLa/meta.json: no annotated test slices" in text  # a figure note
    for doc in (text, res.markdown.read_text(), res.csv.read_text()):
        assert str(root) not in doc and str(root.resolve()) not in doc
    # each configured dataset's plan: the fingerprint and the settings with their sources (nothing
    # to derive them from here: no training slice, so the fixed defaults)
    assert text.count("The plan from the data") == 1
    assert "<td>postprocess.min_size</td><td>50</td><td>default</td>" in text
    assert "**isbi2012**: postprocess.min_size 50 (default)" in res.markdown.read_text()


def test_missing_logs_and_preview_leave_figures_out(project):
    for p in project["dirs"][0].rglob("train_log.csv"):
        p.unlink()
    for p in project["dirs"][1].rglob("train_log.csv"):
        p.unlink()
    (project["data"] / "isbi2012" / "weights" / "preview.png").unlink()
    stale = project["out"] / "figures" / "old_figure.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale")
    res = write_outputs(project["dirs"], project["cfg"], data_dir=project["data"],
                        out_dir=project["out"])
    kinds = {(f.kind, f.dataset) for f in res.figures.entries}
    assert ("curves", "isbi2012") not in kinds and ("weights", "isbi2012") not in kinds
    assert ("examples", "isbi2012") in kinds  # from unet, the best variant with predictions
    notes = " ".join(res.figures.notes["isbi2012"])
    assert "no training curves" in notes and "preview.png: not found" in notes
    assert not stale.exists()  # the figures folder is replaced as a whole
    assert res.html.read_text().count("data:image/png;base64,") == len(res.figures.entries)


def _leaderboard_cli(argv: list[str]):
    """Run `seg leaderboard` through its own parser (seg.cli.main would import every stage)."""
    import argparse

    from seg.commands.report import COMMANDS

    cmd = COMMANDS["leaderboard"]
    parser = argparse.ArgumentParser(prog="seg leaderboard")
    cmd.add_arguments(parser)
    return cmd.run(parser.parse_args(argv))


def test_cli_prints_the_table(project, capsys):
    status = _leaderboard_cli(["--config", str(project["cfg_path"]), "--data-dir",
                               str(project["data"]), "--out", str(project["out"]),
                               *map(str, project["dirs"])])
    out = capsys.readouterr().out
    assert status == 0
    assert "isbi2012 (isbi2012): sorted by IoU" in out
    assert out.index("U-Net (paper)") < out.index("fcn8s")
    assert (project["out"] / "report.html").is_file()
    with pytest.raises(SegError, match="missing: result folder not found"):
        _leaderboard_cli(["--config", str(project["cfg_path"]), "--out", str(project["out"]),
                          str(project["out"] / "missing")])


def test_error_overlay_colours():
    image = np.full((4, 4), 100, np.uint8)
    image[0, 0] = 0
    truth = np.zeros((4, 4), bool)
    pred = np.zeros((4, 4), bool)
    pred[1, 1] = True  # false positive
    truth[2, 2] = True  # false negative
    truth[3, 3] = pred[3, 3] = True  # true positive
    rgb = error_overlay(image, truth, pred, alpha=1.0)
    assert rgb.shape == (4, 4, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[1, 1]) == FP_COLOR and tuple(rgb[2, 2]) == FN_COLOR
    for y, x in ((3, 3), (0, 1), (0, 0)):
        assert rgb[y, x, 0] == rgb[y, x, 1] == rgb[y, x, 2]  # agreement stays grey


def test_load_prediction_layouts(tmp_path):
    entry = {"id": "01_t004", "sequence": "01", "frame": 4}
    assert load_prediction(tmp_path, entry) is None
    prob = np.zeros((2, 5, 5), np.float32)
    prob[1, :2] = 0.9
    tifffile.imwrite(tmp_path / "01_t004_prob.tif", prob)
    assert load_prediction(tmp_path, entry).sum() == 10  # class-1 probability >= 0.5
    (tmp_path / "01_RES").mkdir()
    mask = np.zeros((5, 5), np.uint16)
    mask[4, 4] = 7
    tifffile.imwrite(tmp_path / "01_RES" / "mask004.tif", mask)
    assert load_prediction(tmp_path, entry).sum() == 1  # the CTC instance mask wins
    assert pick_evenly(list("abcdefg"), 3) == ["a", "d", "g"]
    assert pick_evenly(list("ab"), 5) == ["a", "b"]
