"""Model packages (seg package) and seg segment on new images, stacks and CTC sequences (issue 21).

The runs are not trained: ``fake_packaged_run`` (conftest) writes a seeded random checkpoint into a
run folder, predicts its test split with the real ``seg predict`` and packages it with the real
``seg package``. Everything runs in fp32 (amp none), so results are the same on every CPU kind.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import tifffile

from seg.cli import main
from seg.errors import SegError

from conftest import error_lines


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one torch thread (more only contend on a shared 2-core machine)."""


def _segment(args) -> int:
    return main(["segment", *[str(a) for a in args]])


def _no_leftovers(folder) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------- round trip
def test_segment_reproduces_the_workflows_predictions(isbi_packaged_run, tmp_path):
    """package -> seg segment on the test split's raw images == seg predict's own outputs (fp32)."""
    r = isbi_packaged_run
    images = tmp_path / "images"
    images.mkdir()
    for sid in r["ids"]:
        shutil.copy(r["images"] / f"{sid}.tif", images / f"{sid}.tif")
    out = tmp_path / "out"
    assert _segment(["--model", r["package"], images, "--out", out, "--device", "cpu"]) == 0
    summary = json.loads((out / "segment_summary.json").read_text())
    assert summary["n_images"] == 2 and summary["kind"] == "isbi2012" and summary["inference"]["tta"] is True
    for sid in r["ids"]:
        ours, ref = tifffile.imread(out / f"{sid}_prob.tif"), tifffile.imread(r["pred"] / f"{sid}_prob.tif")
        assert ours.dtype == np.float32 and ours.shape == ref.shape == (96, 128)
        np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)
        np.testing.assert_array_equal(tifffile.imread(out / f"{sid}_seg.tif"), tifffile.imread(r["pred"] / f"{sid}_seg.tif"))
    # the Python function, on arrays, with the loaded package and with its path
    import seg
    from seg.packaging import load_package

    pkg = load_package(r["package"])
    raw = tifffile.imread(images / f"{r['ids'][0]}.tif")
    prob, segm = seg.segment(raw, pkg)
    np.testing.assert_allclose(prob, tifffile.imread(r["pred"] / f"{r['ids'][0]}_prob.tif"), atol=1e-6, rtol=0)
    assert segm.dtype == np.uint8 and set(np.unique(segm)) <= {0, 1}
    np.testing.assert_array_equal(segm, (prob >= pkg.threshold).astype(np.uint8))


def test_package_is_self_contained_and_describes_the_model(isbi_packaged_run, tmp_path):
    r = isbi_packaged_run
    moved = tmp_path / "elsewhere" / "pkg"
    shutil.copytree(r["package"], moved)  # no run folder, config or data folder needed to load it
    meta = json.loads((moved / "package.json").read_text())
    assert meta["format"] == "seg-model-package" and meta["format_version"] == 1
    assert meta["model"]["name"] == "unet" and meta["model"]["valid_border"] > 0
    assert meta["dataset"]["kind"] == "isbi2012" and meta["dataset"]["classes"] == ["membrane", "interior"]
    steps = [s["op"] for s in meta["preprocessing"]["steps"]]
    assert steps == ["shift", "zero_mean_unit_variance"]  # the real ISBI labels' sub-pixel offset
    assert meta["threshold"]["value"] == 0.45 and "validation" in meta["threshold"]["source"]
    assert meta["inference"]["tile"] == 36 and meta["inference"]["tta"] is True
    assert set(meta["postprocess"]) == {"method", "min_size", "h"}
    assert len(meta["training"]["config_hash"]) == 12 and len(meta["training"]["checkpoint_sha256"]) == 64
    assert "## Validation" in (moved / "README.md").read_text()
    from seg.package import write_package
    from seg.packaging import load_package

    pkg = load_package(moved)
    np.testing.assert_array_equal(pkg.test_output, tifffile.imread(moved / "test_probabilities.tif"))
    zipped = write_package(pkg, tmp_path / "pkg.zip")
    again = load_package(zipped)
    assert again.meta["training"] == meta["training"] and again.threshold == 0.45


def test_package_test_image_is_a_centre_crop_of_a_large_frame(isbi_packaged_run, monkeypatch):
    """Frames larger than TEST_IMAGE_MAX px a side (GOWT1: 1024) give the package their centre crop
    as test image (every export check runs it), recorded in package.json; its probabilities are
    seg segment's own of that crop."""
    import seg
    from seg.settings import load_config
    from seg.data import canonical
    from seg.packaging import build

    r = isbi_packaged_run
    monkeypatch.setattr(build, "TEST_IMAGE_MAX", 64)
    pkg = build.build_package(load_config(r["config"]), r["run"])
    meta = canonical.load_meta(r["data"] / "ds")
    raw = canonical.load_raw_image(r["data"] / "ds", canonical.slices(meta, "test")[0])
    assert raw.shape == (96, 128)
    np.testing.assert_array_equal(pkg.test_input, raw[16:80, 32:96])
    assert pkg.meta["test"]["crop"] == {"y": 16, "x": 32, "height": 64, "width": 64, "of": [96, 128]}
    prob, _ = seg.segment(pkg.test_input, pkg, amp="none")
    assert pkg.test_output.shape == (2, 64, 64)
    np.testing.assert_allclose(pkg.test_output[1], prob, atol=1e-6, rtol=0)
    monkeypatch.setattr(build, "TEST_IMAGE_MAX", 512)  # the default: a 96 x 128 frame is kept whole
    assert build.build_package(load_config(r["config"]), r["run"]).test_input.shape == (96, 128)


def test_segment_takes_a_run_folder_with_its_config(ctc_packaged_run, tmp_path):
    r = ctc_packaged_run
    image = r["images"] / f"{r['ids'][0]}.tif"
    assert _segment(["--model", r["run"], "--config", r["config"], "--data-dir", r["data"], image,
                     "--out", tmp_path / "a"]) == 0
    assert _segment(["--model", r["package"], image, "--out", tmp_path / "b"]) == 0
    for name in (f"{r['ids'][0]}_prob.tif", f"{r['ids'][0]}_mask.tif"):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "a" / name), tifffile.imread(tmp_path / "b" / name))


def test_package_carries_every_setting_calibration_chose(ctc_packaged_run, tmp_path):
    """CTC calibration also chooses h and min_size (seg calibrate); the package applies them as
    seg predict --threshold-file does."""
    r = ctc_packaged_run
    cal = tmp_path / "calibration.json"
    cal.write_text(json.dumps({"threshold": 0.35, "h": 1.5, "min_size": 7}))
    out = tmp_path / "pkg"
    assert main(["package", "--run-dir", str(r["run"]), "--config", str(r["config"]), "--threshold-file", str(cal),
                 "--out", str(out)]) == 0
    meta = json.loads((out / "package.json").read_text())
    assert meta["threshold"]["value"] == 0.35 and "h, min_size" in meta["threshold"]["source"]
    assert meta["postprocess"] == {"method": "watershed", "min_size": 7, "h": 1.5}
    pred = tmp_path / "pred"
    assert main(["predict", "--config", str(r["config"]), "--dataset", "ds", "--variant", "tiny", "--checkpoint",
                 str(r["run"] / "checkpoints" / "best.pt"), "--out", str(pred), "--threshold-file", str(cal),
                 "--device", "cpu"]) == 0
    images = [r["images"] / f"{sid}.tif" for sid in r["ids"]]
    assert _segment(["--model", out, *images, "--out", tmp_path / "seg"]) == 0
    for sid in r["ids"]:
        frame = int(sid.split("_t")[1])
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "seg" / f"{sid}_mask.tif"),
                                      tifffile.imread(pred / "01_RES" / f"mask{frame:03d}.tif"))


def test_package_refuses_a_config_the_run_was_not_trained_with(isbi_packaged_run, tmp_path):
    r = isbi_packaged_run
    cfg = tmp_path / "other.yaml"
    cfg.write_text(r["config"].read_text().replace("batch_norm: true", "batch_norm: false"))
    assert main(["package", "--run-dir", str(r["run"]), "--config", str(cfg), "--out", str(tmp_path / "p")]) == 2
    assert not (tmp_path / "p").exists()


def test_best_of_packages_the_val_winner_never_the_test_winner(tmp_path, isbi_packaged_run):
    """--best-of takes the run whose val score (train_summary.json best_val_iou, what chose its
    checkpoint) is best; the test split's ranking (metrics.json) plays no part."""
    from seg.packaging.build import best_run

    results = tmp_path / "results"
    for variant, val, test in (("a", 0.7, 0.9), ("b", 0.8, 0.6), ("c", float("nan"), 0.99), ("d", 0.75, 0.95)):
        run = results / "ds" / variant
        shutil.copytree(isbi_packaged_run["run"], run, ignore=shutil.ignore_patterns("pred"))
        summary = json.loads((run / "train_summary.json").read_text())
        (run / "train_summary.json").write_text(json.dumps({**summary, "best_val_iou": val}))
        (run / "metrics.json").write_text(json.dumps({"primary": "iou_mean", "aggregate": {"iou_mean": test}}))
    assert best_run(results, "ds") == results / "ds" / "b"
    (results / "ds" / "b" / "metrics.json").unlink()  # not scored: not a row of the leaderboard
    assert best_run(results, "ds") == results / "ds" / "d"
    with pytest.raises(SegError, match="no scored run"):
        best_run(results, "other")


# ----------------------------------------------------------------------------- inputs
def test_single_png_uint16_and_odd_size(isbi_packaged_run, tmp_path):
    """A PNG and a uint16 TIFF of the same odd-sized crop: same probabilities (per-image
    normalisation makes the scale irrelevant), the crop's own size out."""
    from PIL import Image

    raw = tifffile.imread(isbi_packaged_run["images"] / "train_03.tif")[:95, :121]
    crop = np.pad(raw, ((0, 2), (0, 10)), mode="reflect")  # 97 x 131
    Image.fromarray(crop).save(tmp_path / "crop.png")
    tifffile.imwrite(tmp_path / "crop16.tif", crop.astype(np.uint16) * 257)
    out = tmp_path / "out"
    assert _segment(["--model", isbi_packaged_run["package"], tmp_path / "crop.png", tmp_path / "crop16.tif",
                     "--out", out]) == 0
    p8, p16 = tifffile.imread(out / "crop_prob.tif"), tifffile.imread(out / "crop16_prob.tif")
    assert p8.shape == (97, 131) and p8.dtype == np.float32
    np.testing.assert_allclose(p8, p16, atol=1e-5, rtol=0)
    assert tifffile.imread(out / "crop_seg.tif").dtype == np.uint8


def test_isbi_stack_becomes_the_challenge_submission(isbi_packaged_run, tmp_path):
    import seg

    r = isbi_packaged_run
    stack = np.stack([tifffile.imread(r["images"] / f"{sid}.tif")[:64, :80] for sid in ("train_00", "train_03", "train_04")])
    tifffile.imwrite(tmp_path / "test-volume.tif", stack, photometric="minisblack")
    out = tmp_path / "sub"
    assert _segment(["--model", r["package"], tmp_path / "test-volume.tif", "--out", out]) == 0
    with tifffile.TiffFile(out / "test-volume_prob.tif") as tif:
        prob = tif.asarray()
        description = tif.pages[0].description
    assert prob.shape == stack.shape and prob.dtype == np.float32 and len(tif.pages) == 3
    assert "ISBI 2012" in description and "1 = cell interior" in description
    sidecar = json.loads((out / "test-volume_prob.json").read_text())
    assert sidecar["class_1"] == "interior" and sidecar["zero_means"] == "membrane"
    segm = tifffile.imread(out / "test-volume_seg.tif")
    assert segm.shape == stack.shape and segm.dtype == np.uint8
    ref_prob, ref_seg = seg.segment(stack, r["package"])
    np.testing.assert_allclose(prob, ref_prob, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(segm, ref_seg)


def _write_sequence(folder, n, rng, shape=(64, 64)):
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for t in range(n):
        cells = np.zeros(shape, bool)
        for _ in range(3):
            cy, cx = rng.uniform(12, shape[0] - 12, 2)
            cells |= (yy - cy) ** 2 + (xx - cx) ** 2 < 64
        tifffile.imwrite(folder / f"t{t:03d}.tif", np.clip(40 + 120 * cells + rng.normal(0, 15, shape), 0, 255).astype(np.uint8))


def test_ctc_sequences_become_res_folders(ctc_packaged_run, tmp_path):
    """Every frame (annotated or not) of each sequence -> <seq>_RES/maskNNN.tif, uint16 instances."""
    rng = np.random.default_rng(3)
    dataset = tmp_path / "Toy-Dataset"
    _write_sequence(dataset / "01", 5, rng)
    _write_sequence(dataset / "02", 3, rng)
    (dataset / "01_GT").mkdir()  # annotation folders beside the sequences are not inputs
    out = tmp_path / "res"
    assert _segment(["--model", ctc_packaged_run["package"], dataset, "--out", out]) == 0
    assert sorted(p.name for p in (out / "01_RES").iterdir()) == [f"mask{t:03d}.tif" for t in range(5)]
    assert sorted(p.name for p in (out / "02_RES").iterdir()) == [f"mask{t:03d}.tif" for t in range(3)]
    mask = tifffile.imread(out / "01_RES" / "mask004.tif")
    assert mask.dtype == np.uint16 and mask.shape == (64, 64) and mask.max() >= 1
    np.testing.assert_array_equal(np.unique(mask), np.arange(mask.max() + 1))  # labels 0..N
    prob = tifffile.imread(out / "01_prob" / "t004.tif")
    assert prob.dtype == np.float32 and 0 <= prob.min() and prob.max() <= 1
    # one sequence folder given directly: the same masks
    out2 = tmp_path / "res2"
    assert _segment(["--model", ctc_packaged_run["package"], dataset / "02", "--out", out2]) == 0
    for t in range(3):
        np.testing.assert_array_equal(tifffile.imread(out2 / "02_RES" / f"mask{t:03d}.tif"),
                                      tifffile.imread(out / "02_RES" / f"mask{t:03d}.tif"))


def test_ctc_round_trip_and_time_lapse_stack(ctc_packaged_run, tmp_path):
    r = ctc_packaged_run
    stack = np.stack([tifffile.imread(r["images"] / f"{sid}.tif") for sid in r["ids"]])
    tifffile.imwrite(tmp_path / "movie.tif", stack, photometric="minisblack")
    out = tmp_path / "out"
    assert _segment(["--model", r["package"], tmp_path / "movie.tif", "--out", out]) == 0
    probs = tifffile.imread(out / "movie_prob.tif")
    for z, sid in enumerate(r["ids"]):
        ref = tifffile.imread(r["pred"] / f"{sid}_prob.tif")[1]  # seg predict: (classes, H, W)
        np.testing.assert_allclose(probs[z], ref, atol=1e-6, rtol=0)
        frame = int(sid.split("_t")[1])
        np.testing.assert_array_equal(tifffile.imread(out / "movie_RES" / f"mask{z:03d}.tif"),
                                      tifffile.imread(r["pred"] / "01_RES" / f"mask{frame:03d}.tif"))


def test_canonical_dataset_folder_segments_every_frame(ctc_packaged_run, isbi_packaged_run, tmp_path, capsys):
    """What the workflow's segment rule does: the ingested dataset folder as INPUT. CTC: every
    frame of every sequence, whatever its split, into <seq>_RES (the test frames equal seg predict's
    masks). ISBI: its unannotated slices as the submission stack; none there is a clear error."""
    r = ctc_packaged_run
    out = tmp_path / "all"
    assert _segment(["--model", r["package"], r["data"] / "ds", "--out", out]) == 0
    assert sorted(p.name for p in (out / "01_RES").iterdir()) == [f"mask{t:03d}.tif" for t in range(5)]
    for sid in r["ids"]:
        frame = int(sid.split("_t")[1])
        np.testing.assert_array_equal(tifffile.imread(out / "01_RES" / f"mask{frame:03d}.tif"),
                                      tifffile.imread(r["pred"] / "01_RES" / f"mask{frame:03d}.tif"))
        np.testing.assert_allclose(tifffile.imread(out / "01_prob" / f"{sid}.tif"),
                                   tifffile.imread(r["pred"] / f"{sid}_prob.tif")[1], atol=1e-6, rtol=0)
    # the fake ISBI dataset has annotated slices only (like an ingest of the HDF5 download)
    assert _segment(["--model", isbi_packaged_run["package"], isbi_packaged_run["data"] / "ds",
                     "--out", tmp_path / "isbi"]) == 2
    assert "no unannotated slices to segment" in capsys.readouterr().err
    assert not (tmp_path / "isbi").exists()


def test_folder_of_images_ignores_other_files(ctc_packaged_run, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    for sid in ctc_packaged_run["ids"]:
        shutil.copy(ctc_packaged_run["images"] / f"{sid}.tif", folder / f"img_{sid}.tif")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert _segment(["--model", ctc_packaged_run["package"], folder, "--out", out]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"img_{s}_{k}.tif" for s in ctc_packaged_run["ids"] for k in ("prob", "mask")]
                           + ["segment_summary.json"])


# ----------------------------------------------------------------------------- bad input
def _colour(alpha: bool = False) -> np.ndarray:
    """A (40, 50, 3|4) uint8 image whose colour channels differ (red ramp, green and blue 0)."""
    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[..., 0] = np.arange(50, dtype=np.uint8)
    return np.concatenate([rgb, np.full((40, 50, 1), 255, np.uint8)], -1) if alpha else rgb


def _bad_rgb_tif(d):
    tifffile.imwrite(d / "rgb.tif", _colour(), photometric="rgb")
    return d / "rgb.tif", "rgb.tif: colour image of shape (40, 50, 3) with different channels"


def _bad_rgb_png(d):
    from PIL import Image

    Image.fromarray(_colour(alpha=True)).save(d / "rgb.png")
    return d / "rgb.png", "rgb.png: colour image of shape (40, 50, 4) with different channels"


def _bad_empty(d):
    (d / "empty").mkdir()
    return d / "empty", "empty: no images"


def _bad_unreadable(d):
    (d / "folder").mkdir()
    tifffile.imwrite(d / "folder" / "good.tif", np.zeros((40, 50), np.uint8))
    (d / "folder" / "broken.tif").write_bytes(b"II*\x00 this is not a TIFF")
    return d / "folder", "broken.tif: not a readable TIFF"


def _bad_missing(d):
    return d / "nothing.tif", "nothing.tif: no such file"


@pytest.mark.parametrize("make", [_bad_rgb_tif, _bad_rgb_png, _bad_empty, _bad_unreadable, _bad_missing],
                         ids=["rgb-tif", "rgb-png", "empty-folder", "unreadable", "missing"])
def test_bad_inputs_fail_with_one_line_and_no_output(make, ctc_packaged_run, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    path, message = make(src)
    out = tmp_path / "out"
    assert _segment(["--model", ctc_packaged_run["package"], path, "--out", out]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("seg segment: error: ") and message in lines[0], lines
    assert not out.exists() and _no_leftovers(tmp_path)


def test_bad_packages_fail_clearly(ctc_packaged_run, tmp_path, capsys):
    image = tmp_path / "x.tif"
    tifffile.imwrite(image, np.zeros((40, 50), np.uint8))
    old = tmp_path / "old_pkg"
    shutil.copytree(ctc_packaged_run["package"], old)
    meta = json.loads((old / "package.json").read_text())
    meta["format_version"] = 99
    (old / "package.json").write_text(json.dumps(meta))
    damaged = tmp_path / "damaged_pkg"
    shutil.copytree(ctc_packaged_run["package"], damaged)
    (damaged / "weights.pt").write_bytes(b"garbage")
    cases = [(old, "package format version 99; this seg"), (tmp_path / "no_pkg", "no_pkg: no such model package"),
             (damaged, "weights.pt does not match its SHA-256"), (tmp_path, "neither a seg model package")]
    for model, message in cases:
        out = tmp_path / "out"
        assert _segment(["--model", model, image, "--out", out]) == 2
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and message in lines[0], lines
        assert not out.exists()


def test_segment_function_refuses_colour_arrays(ctc_packaged_run):
    import seg

    with pytest.raises(SegError, match="colour"):
        seg.segment(np.zeros((40, 50, 3), np.uint8), ctc_packaged_run["package"])


def test_equal_channel_colour_files_segment_as_their_grey_image(ctc_packaged_run, tmp_path):
    """seg segment reads what a folder dataset reads (seg.data.folder.load_image): an RGB or RGBA file
    whose colour channels are equal gives exactly the segmentation of its grey image."""
    from PIL import Image

    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:64, :64]
    grey = np.clip(40 + 150 * (((yy - 30) ** 2 + (xx - 28) ** 2) < 15 ** 2) + rng.normal(0, 12, (64, 64)), 0, 255)
    grey = grey.astype(np.uint8)
    src = tmp_path / "in"
    src.mkdir()
    tifffile.imwrite(src / "grey.tif", grey)
    Image.fromarray(np.stack([grey] * 3, -1)).save(src / "rgb.png")
    Image.fromarray(np.stack([grey] * 3 + [np.full_like(grey, 255)], -1)).save(src / "rgba.png")
    tifffile.imwrite(src / "rgbt.tif", np.stack([grey] * 3, -1), photometric="rgb")
    out = tmp_path / "out"
    assert _segment(["--model", ctc_packaged_run["package"], src, "--out", out]) == 0
    ref = tifffile.imread(out / "grey_mask.tif")
    for name in ("rgb", "rgba", "rgbt"):
        np.testing.assert_array_equal(tifffile.imread(out / f"{name}_mask.tif"), ref)
        np.testing.assert_array_equal(tifffile.imread(out / f"{name}_prob.tif"), tifffile.imread(out / "grey_prob.tif"))
