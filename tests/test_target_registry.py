"""Targets as one protocol (seg.targets): a target registered here, in the test, goes through
training, prediction, calibration, the package, ``seg segment`` and the exports with no change
anywhere else; the registry's errors and config checks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from scipy import ndimage
from skimage.measure import label
from skimage.segmentation import expand_labels

from seg.errors import SegError
from seg.targets import get_target, register_target, target_names, unregister_target
from seg.targets.base import Target


@dataclass(frozen=True)
class Cores(Target):
    """Object cores: each annotated object shrunk by ``shrink`` px (chessboard) is class 1; instances
    are the components of ``core >= threshold`` grown back by ``h`` px. Its own channels, training
    map (from the instances, so touching objects are apart), decoding and a recorded setting (a
    variant key of its own would also need its line in configs/schema.yaml, which names every key)."""

    name: ClassVar[str] = "cores"
    description: ClassVar[str] = "object cores (objects shrunk by shrink px); instances grown back by h px"
    channel_names: ClassVar[tuple[str, ...]] = ("background", "core")
    instances_only: ClassVar[bool] = True
    needs_instances: ClassVar[bool] = True
    shrink: int = 2

    def settings(self):
        return {"shrink": self.shrink}

    def train_map(self, semantic, instances):
        size = 2 * self.shrink + 1
        hi = ndimage.maximum_filter(instances, size=size, mode="nearest")
        lo = ndimage.minimum_filter(instances, size=size, mode="nearest")
        return ((instances > 0) & (hi == instances) & (lo == instances)).astype(np.uint8)

    def probability(self, out, *, foreground):
        return np.ascontiguousarray(out[1], dtype=np.float32)

    def objects(self, x, *, pp, threshold, second):
        return expand_labels(label(x >= threshold, connectivity=1), distance=second)


@pytest.fixture(scope="module")
def cores_run(tmp_path_factory):
    """A synthetic CTC sequence through ingest, weights, a 10-step training, val prediction,
    calibration, test prediction with the calibrated settings, score and package, for a variant
    with ``target: cores``, the target registered only for this module."""
    import torch

    from seg.cli import main

    register_target(Cores())
    base = tmp_path_factory.mktemp("cores")
    raw = base / "raw"
    try:
        assert main(["synth", "--out", str(raw), "--kind", "ctc", "--seed", "3", "--size", "96"]) == 0
        cfg = base / "config.yaml"
        cfg.write_text(
            f"data_dir: {base / 'data'}\nresults_dir: {base / 'results'}\nseed: 0\n"
            f"datasets:\n  syn: {{kind: ctc, raw_dir: {raw}, sequences: ['01']}}\n"
            "variants:\n  core: {model: unet, target: cores, params: {base_channels: 4, depth: 2}}\n"
            "train: {iterations: 10, batch_size: 2, patch_size: 64, val_every: 5, device: cpu, amp: none, num_workers: 0}\n"
            "inference: {tile: 64, device: cpu, amp: none}\n"
            "postprocess: {method: watershed, calibrate: true, min_size: 5, h: 1.0, search: {min_size: [0, 5], h: [1.0, 2.0]}}\n")
        run = base / "results" / "syn" / "core"
        common = ["--config", str(cfg), "--dataset", "syn"]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            assert main(["ingest", *common]) == 0
            assert main(["weights", *common]) == 0
            assert main(["train", *common, "--variant", "core", "--out", str(run)]) == 0
            pred = ["predict", *common, "--variant", "core", "--checkpoint", str(run / "checkpoints" / "best.pt")]
            assert main([*pred, "--split", "val", "--out", str(run / "pred" / "val")]) == 0
            assert main(["calibrate", *common, "--variant", "core", "--pred", str(run / "pred" / "val"),
                         "--out", str(run / "calibration.json")]) == 0
            assert main([*pred, "--split", "test", "--out", str(run / "pred" / "test"),
                         "--threshold-file", str(run / "calibration.json")]) == 0
            assert main(["package", "--run-dir", str(run), "--config", str(cfg), "--out", str(base / "package")]) == 0
        finally:
            torch.set_num_threads(threads)
        yield {"base": base, "run": run, "data": base / "data", "package": base / "package"}
    finally:
        unregister_target("cores")


def test_a_target_of_its_own_trains_predicts_calibrates_and_packages(cores_run):
    import tifffile

    from seg.kinds.ctc import slice_mask_path
    from seg.settings import RunSettings, load_config

    run = cores_run["run"]
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["target"] == {"name": "cores", "channels": ["background", "core"], "shrink": 2,
                                 "description": Cores.description, "activation": "softmax"}
    assert summary["val_criterion"] == "seg"
    cal = json.loads((run / "calibration.json").read_text())
    assert {r["h"] for r in cal["table"]} == {1.0}  # the target's second axis: its own grid (the base's: h)
    test = json.loads((run / "pred" / "test" / "predict_summary.json").read_text())
    assert test["target"] == "cores" and test["channels"] == ["background", "core"]
    assert test["threshold"] == cal["threshold"] and test["postprocess"]["min_size"] == cal["min_size"]
    # the files are the target's decoding of the maps the workflow wrote
    meta = json.loads((cores_run["data"] / "syn" / "meta.json").read_text())
    entry = next(e for e in meta["slices"] if e["id"] == test["ids"][0])
    probs = tifffile.imread(run / "pred" / "test" / f"{entry['id']}_prob.tif")
    settings = RunSettings(load_config(cores_run["base"] / "config.yaml"), "syn", "core")
    assert settings.target == Cores(2)
    _, labels = settings.decode(probs, settings.postprocess(run / "calibration.json"))
    np.testing.assert_array_equal(tifffile.imread(slice_mask_path(run / "pred" / "test", entry, meta)), labels)
    package = json.loads((cores_run["package"] / "package.json").read_text())
    assert package["target"]["name"] == "cores" and package["target"]["shrink"] == 2
    assert package["outputs"]["classes"] == ["background", "core"]


def test_a_target_of_its_own_segments_and_exports(cores_run, tmp_path):
    import tifffile

    from seg.cli import main
    from seg.export.exporters import run_exported
    from seg.kinds.ctc import slice_mask_path

    run = cores_run["run"]
    test = json.loads((run / "pred" / "test" / "predict_summary.json").read_text())
    sid = test["ids"][0]
    image = cores_run["data"] / "syn" / "images" / f"{sid}.tif"
    assert main(["segment", "--model", str(cores_run["package"]), str(image), "--out", str(tmp_path / "seg")]) == 0
    meta = json.loads((cores_run["data"] / "syn" / "meta.json").read_text())
    entry = next(e for e in meta["slices"] if e["id"] == sid)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "seg" / f"{sid}_mask.tif"),
                                  tifffile.imread(slice_mask_path(run / "pred" / "test", entry, meta)))
    probs = tifffile.imread(run / "pred" / "test" / f"{sid}_prob.tif")
    exp = tmp_path / "torchscript"
    assert main(["export", "--model", str(cores_run["package"]), "--format", "torchscript", "--out", str(exp)]) == 0
    assert json.loads((exp / "export.json").read_text())["target"] == "cores"
    np.testing.assert_allclose(run_exported(exp / "model.pt", tifffile.imread(image))[0], probs, atol=1e-4, rtol=0)


def test_registry_errors_and_config_checks(tmp_path):
    from seg.settings import validate_config

    assert target_names()[:3] == ["fg_border", "three_class", "distance"]
    with pytest.raises(SegError, match=r"unknown target 'nope' \(choices: fg_border, three_class, distance"):
        get_target("nope")
    with pytest.raises(SegError, match="already registered"):
        register_target(get_target("three_class"))
    cfg = {"datasets": {"e": {"kind": "isbi2012"}, "c": {"kind": "ctc"}},
           "variants": {"v": {"model": "unet", "target": "three_class", "datasets": ["c"], "boundary_width": 3},
                        "w": {"model": "unet", "boundary_weight": 2}}}
    with pytest.raises(SegError, match=r"variants.w.boundary_weight: only for target three_class"):
        validate_config(json.loads(json.dumps(cfg)))
    cfg["variants"]["w"] = {"model": "unet", "target": "distance"}
    with pytest.raises(SegError, match=r"variants.w.target: distance needs instance labels; datasets e"):
        validate_config(json.loads(json.dumps(cfg)))
