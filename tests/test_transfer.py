"""Models that travel (issue 34): a package's object scale (``seg segment --diameter``), ``seg finetune``
from a package, and a variant that starts from one (``init:``).

The packages are small and real: ``disc_package`` is a tiny U-Net trained here (``seg finetune
--scratch``, ~15 s) on synthetic discs of ~15 px diameter, so it segments discs; the scale tests
then show it discs 2x larger or smaller. Everything runs in fp32 (amp none) on one thread.
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


def discs(rng, shape=(96, 96), radius=(6.0, 9.0), n=6, noise=12.0):
    """(image uint8, instances uint16) of ``n`` non-overlapping bright discs on a noisy background."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    inst = np.zeros(shape, np.uint16)
    k = 0
    for _ in range(200):
        if k == n:
            break
        r = rng.uniform(*radius)
        cy, cx = rng.uniform(r + 2, h - r - 2), rng.uniform(r + 2, w - r - 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        grown = (yy - cy) ** 2 + (xx - cx) ** 2 < (r + 3) ** 2
        if inst[grown].any():
            continue
        k += 1
        inst[disc] = k
    img = np.clip(50 + 110 * (inst > 0) + rng.normal(0, noise, shape), 0, 255).astype(np.uint8)
    return img, inst


def write_folder(folder, pairs, *, names=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (img, inst) in enumerate(pairs):
        name = names[i] if names else f"img{i}"
        tifffile.imwrite(folder / f"{name}.tif", img)
        tifffile.imwrite(folder / f"{name}_masks.tif", inst)
    return folder


@pytest.fixture(scope="module")
def disc_package(tmp_path_factory, ctc_packaged_run):
    """A tiny U-Net (the ctc fake package's architecture) trained from scratch on discs of radius
    6-9 px (D ~ 15 px): ``{"package", "folder", "diameter"}``."""
    import torch

    from seg.finetune import finetune

    torch.set_num_threads(1)  # module fixtures run before the function-scoped one_thread
    base = tmp_path_factory.mktemp("discs")
    rng = np.random.default_rng(0)
    folder = write_folder(base / "pairs", [discs(rng) for _ in range(5)])
    s = finetune(ctc_packaged_run["package"], folder, base / "package", steps=100, seed=0, holdout=1,
                 scratch=True, device="cpu", amp="none")
    return {"package": base / "package", "folder": folder, "summary": s}


# ----------------------------------------------------------------------------- rescale
def test_labels_keep_their_ids_and_factors_are_guarded():
    from seg.infer.rescale import resize_image, resize_labels, scale_factor

    lab = np.zeros((40, 50), np.uint16)
    lab[5:15, 5:20], lab[20:35, 25:45] = 7, 65000
    big = resize_labels(lab, (80, 100))
    assert big.dtype == lab.dtype and set(np.unique(big)) == {0, 7, 65000}
    assert np.array_equal(resize_labels(big, (40, 50)), lab)  # 2x up and back down: the same labels
    assert resize_image(np.ones((10, 10), np.float32), 1.01) .shape == (10, 10)  # ~1: untouched
    assert resize_image(np.ones((10, 10), np.float32), 0.5).shape == (5, 5)
    assert scale_factor(60.0, 30.0) == 2.0
    with pytest.raises(SegError, match=r"objects of 10 px .* 60 px .* factor of 6.*0.2-5"):
        scale_factor(60.0, 10.0, where="--diameter")
    with pytest.raises(SegError, match="positive number"):
        scale_factor(60.0, -3)


def test_inscribed_diameters_hardly_move_when_touching_objects_split_or_merge():
    from seg.data.fingerprint import equivalent_diameters, inscribed_diameters

    yy, xx = np.mgrid[:80, :120]
    two = np.zeros((80, 120), np.int32)
    two[(yy - 40) ** 2 + (xx - 40) ** 2 < 15 ** 2] = 1
    two[(yy - 40) ** 2 + (xx - 69) ** 2 < 15 ** 2] = 2  # touching discs of radius 15
    merged = (two > 0).astype(np.int32)
    split = two.copy()
    split[(two == 1) & (yy > 40)] = 3  # one disc cut in half
    assert np.allclose(inscribed_diameters(two), 30, atol=2)
    assert abs(np.median(inscribed_diameters(merged)) - 30) < 3  # merged: still one disc's width
    assert abs(np.max(inscribed_diameters(split)) - 30) < 3
    assert np.median(equivalent_diameters(merged)) > 40  # the equivalent diameter moves


def test_package_records_its_training_objects_scale(ctc_packaged_run):
    from seg.data.canonical import load_meta
    from seg.package import read_package

    pkg = read_package(ctc_packaged_run["package"])
    fp = load_meta(ctc_packaged_run["data"] / "ds")["fingerprint"]
    sc = pkg.scale
    assert sc["diameter"] == fp["objects"]["diameter"]["median"] and sc["factor"] == 1
    assert sc["network_diameter"] == pytest.approx(sc["diameter"])
    assert sc["spread"] == {"p25": fp["objects"]["diameter"]["p25"], "p75": fp["objects"]["diameter"]["p75"]}
    assert sc["intensity"]["percentiles"] == fp["intensity"]["percentiles"]
    assert pkg.meta["lineage"] is None  # trained from scratch


# ----------------------------------------------------------------------------- seg segment --diameter
def test_diameter_maps_a_larger_image_to_the_package_scale_and_back(disc_package):
    """Images enlarged 2x, segmented with twice the package's diameter, score about as well as the
    originals at the package's own scale, with outputs at the input's size; ``auto`` measures the
    enlarged objects' diameter. (That the resizing pays on real data, where a network does depend
    on scale: bench/transfer.py, README "Models that travel".)"""
    from skimage.transform import resize

    from seg.data.fingerprint import equivalent_diameters
    from seg.export.segment import package_scale, resolve_scale, segment_image
    from seg.infer.rescale import resize_labels
    from seg.metrics.ctc import seg_measure
    from seg.package import read_package

    pkg = read_package(disc_package["package"])
    d = pkg.scale["diameter"]
    assert pkg.scale["inscribed_diameter"] > 0
    rng = np.random.default_rng(5)
    pairs = [discs(rng) for _ in range(3)]
    own = seg_measure([t for _, t in pairs], [segment_image(pkg, i, package_scale(pkg), amp="none")[1] for i, _ in pairs])
    assert own > 0.6, own  # the package segments its own kind of image
    bigs = [(resize(i.astype(np.float32), (192, 192), order=1, preserve_range=True), resize_labels(t, (192, 192)))
            for i, t in pairs]
    labels = []
    for big, _ in bigs:
        prob, lab = segment_image(pkg, big, package_scale(pkg, 2 * d), amp="none")
        assert prob.shape == lab.shape == big.shape and prob.dtype == np.float32 and lab.dtype == np.uint16
        labels.append(lab)
    scaled = seg_measure([t for _, t in bigs], labels)
    assert scaled > own - 0.1, (own, scaled)
    for big, truth in bigs:
        auto = resolve_scale(pkg, "auto", big, amp="none")
        d_true = float(np.median(equivalent_diameters(truth)))
        assert auto.how.startswith("auto") and abs(auto.diameter - d_true) < 0.25 * d_true, (auto.diameter, d_true)
        assert auto.network == pytest.approx(pkg.scale["network_diameter"] / auto.diameter)


def test_segment_cli_diameter_summary_and_guard_rails(disc_package, tmp_path, capsys):
    rng = np.random.default_rng(9)
    img, _ = discs(rng, shape=(160, 160), radius=(12.0, 16.0))
    tifffile.imwrite(tmp_path / "big.tif", img)
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "big.tif"), "--model", str(disc_package["package"]), "--out", str(out),
                 "--device", "cpu", "--amp", "none", "--diameter", "auto"]) == 0
    s = json.loads((out / "segment_summary.json").read_text())
    sc = s["inputs"][0]["scale"]
    assert sc["how"].startswith("auto") and 1.5 < 1 / sc["factor"] < 2.6, sc
    assert "resized by" in capsys.readouterr().out
    assert tifffile.imread(out / "big_mask.tif").shape == img.shape
    # a factor outside 0.2-5: one line naming the values, nothing written
    bad = tmp_path / "bad"
    assert main(["segment", str(tmp_path / "big.tif"), "--model", str(disc_package["package"]), "--out", str(bad),
                 "--device", "cpu", "--diameter", "2"]) != 0
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "objects of 2 px" in err[0] and "0.2-5" in err[0], err
    assert not bad.exists()
    assert main(["segment", str(tmp_path / "big.tif"), "--model", str(disc_package["package"]), "--out", str(bad),
                 "--device", "cpu", "--diameter", "wide"]) != 0
    assert "'auto'" in capsys.readouterr().err and not bad.exists()


def test_diameter_needs_a_package_that_records_its_scale(ctc_packaged_run, tmp_path):
    from seg.package import read_package

    old = tmp_path / "old"
    shutil.copytree(ctc_packaged_run["package"], old)
    doc = json.loads((old / "package.json").read_text())
    del doc["scale"]
    (old / "package.json").write_text(json.dumps(doc))
    pkg = read_package(old)
    assert pkg.scale is None
    import seg

    img = np.zeros((64, 64), np.uint8)
    with pytest.raises(SegError, match="records no object diameter.*re-package"):
        seg.segment(img, pkg, diameter=20, amp="none")
    prob, lab = seg.segment(img, pkg, amp="none")  # without --diameter it works as before
    assert prob.shape == lab.shape == img.shape


# ----------------------------------------------------------------------------- seg finetune
def test_finetune_from_a_package_records_lineage_scores_and_scale(disc_package, tmp_path, capsys):
    from seg.package import read_package

    rng = np.random.default_rng(3)
    folder = write_folder(tmp_path / "big", [discs(rng, shape=(160, 160), radius=(12.0, 16.0)) for _ in range(4)])
    out = tmp_path / "new.zip"
    assert main(["finetune", str(folder), "--from", str(disc_package["package"]), "--out", str(out), "--steps", "15",
                 "--seed", "1", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "held out" in printed and "before SEG" in printed and "after SEG" in printed
    pkg = read_package(out)
    parent = json.loads((disc_package["package"] / "package.json").read_text())
    lin = pkg.meta["lineage"]
    assert lin["parent"]["weights_sha256"] == parent["files"]["weights.pt"]
    ft = lin["finetune"]
    assert ft["steps"] == 15 and ft["pairs"] == 4 and len(ft["held_out"]) == 1
    assert {p["name"] for p in ft["data"]} == {f"img{i}" for i in range(4)}
    assert all(len(p["files"]) == 2 for p in ft["data"])
    assert ft["before"]["seg"] is not None and ft["after"]["seg"] is not None
    # the new data's objects are ~2x the parent's: trained and packaged at the parent's network scale
    sc = pkg.scale
    assert sc["network_diameter"] == pytest.approx(parent["scale"]["network_diameter"], rel=1e-3)
    assert 0.35 < sc["factor"] < 0.65 and sc["diameter"] > 20
    assert not (tmp_path / "new.zip.finetune").exists()  # the work folder is gone after success
    # the same request again: nothing to do
    assert main(["finetune", str(folder), "--from", str(disc_package["package"]), "--out", str(out), "--steps", "15",
                 "--seed", "1", "--device", "cpu"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_finetune_is_deterministic_and_resumes(disc_package, tmp_path, monkeypatch):
    from seg.finetune import run as ft
    from seg.package import read_package
    from seg.train import loop as ft_loop

    rng = np.random.default_rng(4)
    folder = write_folder(tmp_path / "pairs", [discs(rng) for _ in range(2)])
    kw = dict(steps=12, seed=3, device="cpu", amp="none")
    a = ft.finetune(disc_package["package"], folder, tmp_path / "a", **kw)
    assert a["held_out"] == [] and a["before"] is None and "fewer than 3 pairs" in a["postprocess"]["note"]
    # interrupted after training (the package is never written): the rerun resumes, trains nothing
    real = ft.write_package

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ft, "write_package", boom)
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(disc_package["package"], folder, tmp_path / "b", **kw)
    assert not (tmp_path / "b").exists() and (tmp_path / "b.finetune").is_dir()
    monkeypatch.setattr(ft, "write_package", real)
    steps_run = []
    real_step = ft_loop.train_step

    def counted(*args, **kwargs):
        steps_run.append(1)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(ft_loop, "train_step", counted)
    ft.finetune(disc_package["package"], folder, tmp_path / "b", **kw)
    assert steps_run == []  # the finished training was found, not redone
    assert not (tmp_path / "b.finetune").exists()
    wa, wb = (json.loads((tmp_path / p / "package.json").read_text())["files"]["weights.pt"] for p in ("a", "b"))
    assert wa == wb  # same seed, same data: the same network
    assert read_package(tmp_path / "a").meta["lineage"]["finetune"]["seed"] == 3


@pytest.mark.parametrize("case", ["version", "colour", "size", "empty", "no_package"])
def test_finetune_bad_input_one_line_and_nothing_written(case, disc_package, tmp_path, capsys):
    rng = np.random.default_rng(6)
    base = disc_package["package"]
    folder = write_folder(tmp_path / "pairs", [discs(rng) for _ in range(3)])
    culprit = None
    if case == "version":
        base = tmp_path / "v2"
        shutil.copytree(disc_package["package"], base)
        doc = json.loads((base / "package.json").read_text())
        doc["format_version"] = 99
        (base / "package.json").write_text(json.dumps(doc))
        culprit = "format version 99"
    elif case == "colour":
        img = np.stack([tifffile.imread(folder / "img1.tif")] * 3, axis=-1)
        img[..., 0] = 255 - img[..., 0]
        tifffile.imwrite(folder / "img1.tif", img)
        culprit = "img1.tif"
    elif case == "size":
        tifffile.imwrite(folder / "img2_masks.tif", np.zeros((50, 60), np.uint16))
        culprit = "img2"
    elif case == "empty":
        shutil.rmtree(folder)
        folder.mkdir()
        culprit = str(folder.name)
    else:
        base = tmp_path / "missing"
        culprit = "missing"
    out = tmp_path / "out"
    code = main(["finetune", str(folder), "--from", str(base), "--out", str(out), "--steps", "5", "--device", "cpu"])
    err = error_lines(capsys.readouterr().err)
    assert code != 0 and len(err) == 1 and culprit in err[0], err
    assert not out.exists() and not (tmp_path / "out.finetune").exists()


# ----------------------------------------------------------------------------- init: a row that starts from a package
def _init_config(tmp_path, package, folder, **variant):
    import yaml

    doc = {"data_dir": str(tmp_path / "data"), "results_dir": str(tmp_path / "results"), "seed": 0,
           "datasets": {"big": {"kind": "folder", "path": str(folder), "split": {"val": 0.25, "test": 0.25}}},
           "variants": {"from-pkg": {"model": "unet", "init": str(package), "train": {"iterations": 6, "amp": "none"},
                                     "inference": {"amp": "none"}, **variant}},
           "train": {"batch_size": 2, "val_every": 3, "num_workers": 0}}
    p = tmp_path / "config.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_init_variant_starts_from_the_package_at_its_scale(disc_package, tmp_path):
    from seg.kinds.ingest import ingest_dataset
    from seg.package import read_package
    from seg.settings import RunSettings, load_config, run_config_hash
    from seg.train.loop import build_training_model, train
    from seg.train.weight_maps import write_weights

    pkg = read_package(disc_package["package"])
    params = pkg.meta["model"]["params"]
    rng = np.random.default_rng(8)
    folder = write_folder(tmp_path / "big", [discs(rng, shape=(160, 160), radius=(12.0, 16.0)) for _ in range(5)])
    cfg = load_config(_init_config(tmp_path, disc_package["package"], folder, params=params))
    ingest_dataset(cfg, "big")
    s = RunSettings(cfg, "big", "from-pkg")
    assert s.start is not None and 0.35 < s.scale < 0.65, s.start.how
    assert s.target.name == pkg.target.name
    model = build_training_model(cfg, "big", "from-pkg", len(s.channels), start=s.start)
    for k, v in pkg.model.state_dict().items():
        assert np.array_equal(model.state_dict()[k].numpy(), v.numpy()), k
    # the package's weights are part of the run's identity
    h1 = run_config_hash(cfg, "big", "from-pkg")
    other = tmp_path / "other"
    shutil.copytree(disc_package["package"], other)
    doc = json.loads((other / "package.json").read_text())
    doc["files"]["weights.pt"] = "0" * 64
    (other / "package.json").write_text(json.dumps(doc))
    cfg2 = load_config(_init_config(tmp_path, other, folder, params=params))
    assert run_config_hash(cfg2, "big", "from-pkg") != h1
    write_weights(cfg, "big")
    summary = train(cfg, "big", "from-pkg", tmp_path / "results" / "big" / "from-pkg", device="cpu")
    assert summary["init"]["weights_sha256"] == pkg.meta["files"]["weights.pt"]
    assert summary["init"]["factor"] == pytest.approx(s.scale, rel=1e-4)


def test_init_variant_must_match_the_package(disc_package, tmp_path):
    from seg.kinds.ingest import ingest_dataset
    from seg.settings import RunSettings, load_config

    rng = np.random.default_rng(8)
    folder = write_folder(tmp_path / "f", [discs(rng) for _ in range(4)])
    cfg = load_config(_init_config(tmp_path, disc_package["package"], folder, params={"base_channels": 8}))
    ingest_dataset(cfg, "big")
    with pytest.raises(SegError, match=r"variants.from-pkg.init: .* holds a unet with params .* asks for unet"):
        RunSettings(cfg, "big", "from-pkg").start
    cfg = load_config(_init_config(tmp_path, tmp_path / "nope", folder))
    with pytest.raises(SegError, match="variants.from-pkg.init: .*nope: no such model package"):
        RunSettings(cfg, "big", "from-pkg").start


def test_leaderboard_says_which_rows_start_from_a_package():
    from seg.report.leaderboard import start_of

    assert start_of({}, {}) == "scratch"
    assert start_of({"pretrained": "inhouse"}, {}) == "pretrained inhouse"
    assert start_of({"init": "pk/gowt1"}, {"init": {"name": "gowt1-unet", "factor": 0.5}}) == "package gowt1-unet (x0.5)"
    assert start_of({"init": "pk/gowt1"}, {}) == "package gowt1"
