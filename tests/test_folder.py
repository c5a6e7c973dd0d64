"""Dataset kind ``folder`` (seg.data.folder, seg.kinds.folder) and ``seg init`` (seg.settings.init_writer).

Folder-layout copies of the real GOWT1 and DIC-HeLa frames (written into tmp_path from
../shared/data) ingest to the same canonical images and labels as the CTC kind ingests from the
originals; every bad input fails with one line naming the file and leaves nothing; ``seg init``
describes a folder and writes a config the workflow plans (dry run) and runs (one tiny real run)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from PIL import Image

from conftest import error_lines, snakemake

from seg.cli import main
from seg.settings import load_config
from seg.data import canonical

LAYOUTS = ("cellpose", "images-masks", "nnunet")


@pytest.fixture(autouse=True)
def no_env_raw_root(monkeypatch):
    monkeypatch.delenv("SEG_RAW_ROOT", raising=False)


def write_folder(root: Path, layout: str, pairs: dict, unlabelled: dict | None = None) -> Path:
    """``pairs`` {name: (image, mask)} and ``unlabelled`` {name: image} in ``layout`` under ``root``
    (TIFF for cellpose and images-masks; PNG for nnU-Net, as nnU-Net's 2D datasets). Unlabelled
    images go to ``unlabelled/`` (nnU-Net: ``imagesTs/``)."""
    root.mkdir(parents=True)
    for name, (img, mask) in pairs.items():
        if layout == "cellpose":
            tifffile.imwrite(root / f"{name}.tif", img)
            tifffile.imwrite(root / f"{name}_masks.tif", mask)
        elif layout == "images-masks":
            (root / "images").mkdir(exist_ok=True)
            (root / "masks").mkdir(exist_ok=True)
            tifffile.imwrite(root / "images" / f"{name}.tif", img)
            tifffile.imwrite(root / "masks" / f"{name}.tif", mask)
        else:
            (root / "imagesTr").mkdir(exist_ok=True)
            (root / "labelsTr").mkdir(exist_ok=True)
            Image.fromarray(img).save(root / "imagesTr" / f"{name}_0000.png")
            Image.fromarray(mask.astype(np.uint16)).save(root / "labelsTr" / f"{name}.png")
    for name, img in (unlabelled or {}).items():
        sub = root / ("imagesTs" if layout == "nnunet" else "unlabelled")
        sub.mkdir(exist_ok=True)
        if layout == "nnunet":
            Image.fromarray(img).save(sub / f"{name}_0000.png")
        else:
            tifffile.imwrite(sub / f"{name}.tif", img)
    return root


def ctc_frames(ds: Path) -> tuple[dict, dict]:
    """({"tNNN": (image, mask)} of the GT frames, {"tNNN": image} of the others) of a CTC sequence 01."""
    gt = {p.name[len("man_seg"):-4]: p for p in sorted((ds / "01_GT" / "SEG").glob("man_seg*.tif"))}
    pairs, other = {}, {}
    for p in sorted((ds / "01").glob("t*.tif")):
        n = p.stem[1:]
        if n in gt:
            pairs[p.stem] = (tifffile.imread(p), tifffile.imread(gt[n]))
        else:
            other[p.stem] = tifffile.imread(p)
    return pairs, other


def write_config(path: Path, datasets: dict) -> Path:
    path.write_text(yaml.safe_dump({"datasets": datasets, "variants": {"unet": {"model": "unet"}}}))
    return path


def ingest(tmp_path: Path, name: str, entry: dict, capsys=None) -> tuple[int, str, Path]:
    cfg = write_config(tmp_path / f"{name}.yaml", {name: entry})
    out = tmp_path / "data" / name
    if capsys:
        capsys.readouterr()
    rc = main(["ingest", "--config", str(cfg), "--dataset", name, "--out", str(out)])
    return rc, (capsys.readouterr().err if capsys else ""), out


def canonical_arrays(ds: Path, id_of=lambda i: i) -> dict:
    """{name: (split, image, instances or None, semantic or None)} of a canonical dataset."""
    meta = canonical.load_meta(ds)
    out = {}
    for e in meta["slices"]:
        arrs = [tifffile.imread(ds / e[k]) if e[k] else None for k in ("image", "instances", "semantic")]
        out[id_of(e["id"])] = (e["split"], *arrs)
    return out


def assert_same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for n in a:
        for x, y in zip(a[n], b[n]):
            if isinstance(x, str) or x is None:
                assert x == y, n
            else:
                assert x.dtype == y.dtype and np.array_equal(x, y), n


@pytest.mark.parametrize("dataset,sparse", [("Fluo-N2DH-GOWT1", False), ("DIC-C2DH-HeLa", True)])
def test_folder_layouts_match_ctc_ingest(tmp_path, shared_data, dataset, sparse):
    """The three layouts of the GT frames (+ the other frames as unlabelled images) ingest to the
    CTC kind's canonical arrays and split, the split given as the CTC ingest's lists of names."""
    extra = {"annotations": "sparse"} if sparse else {}
    rc, _, ctc_out = ingest(tmp_path, "ctc", {"kind": "ctc", "raw_dir": str(shared_data / dataset),
                                              "sequences": ["01"], **extra})
    assert rc == 0
    ref = canonical_arrays(ctc_out, id_of=lambda i: i.removeprefix("01_"))
    ref_meta = canonical.load_meta(ctc_out)
    lists = {s: [e["id"].removeprefix("01_") for e in canonical.slices(ref_meta, s)] for s in ("train", "val", "test")}
    pairs, other = ctc_frames(shared_data / dataset)
    assert len(pairs) == (9 if sparse else 6) and len(other) == (75 if sparse else 0)
    for layout in LAYOUTS:
        folder = write_folder(tmp_path / "raw" / layout, layout, pairs, other)
        entry = {"kind": "folder", "path": str(folder), "split": lists, **extra}
        if other and layout != "nnunet":
            entry["unlabelled"] = "unlabelled"
        rc, _, out = ingest(tmp_path, layout, entry)
        assert rc == 0, layout
        assert_same(canonical_arrays(out), ref)
        meta = canonical.load_meta(out)
        assert meta["kind"] == "folder" and meta["layout"] == layout
        assert meta["annotations"] == ("sparse" if sparse else "full")


def blobs(n: int = 3, size: int = 32, seed: int = 0) -> dict:
    """``n`` small (image uint8, instance mask uint16) pairs of square objects."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):
        mask = np.zeros((size, size), np.uint16)
        for k in range(1, 4):
            y, x = rng.integers(2, size - 10, 2)
            mask[y:y + 8, x:x + 8] = k
        img = (mask > 0).astype(np.uint8) * 150 + rng.integers(0, 50, (size, size), dtype=np.uint8)
        out[f"img{i}"] = (img, mask)
    return out


def test_auto_layout_default_split_and_rgb_grey(tmp_path):
    """auto finds the layout; the seeded fractions give one pair per split for 3 pairs; an RGB image
    with equal channels is taken as grey; semantic masks with 0 / 255 read as classes 0 / 1."""
    pairs = blobs(3)
    img0, mask0 = pairs["img0"]
    folder = write_folder(tmp_path / "raw", "images-masks", {**pairs, "img0": (np.stack([img0] * 3, -1), mask0)})
    rc, _, out = ingest(tmp_path, "b", {"kind": "folder", "path": str(folder)})
    assert rc == 0
    meta = canonical.load_meta(out)
    assert sorted(e["split"] for e in meta["slices"]) == ["test", "train", "val"]
    assert np.array_equal(tifffile.imread(out / "images" / "img0.tif"), img0)
    sem = {n: (im, ((m > 0) * 255).astype(np.uint8)) for n, (im, m) in blobs(3).items()}
    folder = write_folder(tmp_path / "raw-sem", "cellpose", sem)
    rc, _, out = ingest(tmp_path, "s", {"kind": "folder", "path": str(folder), "labels": "semantic"})
    assert rc == 0
    meta = canonical.load_meta(out)
    assert meta["kind"] == "folder-semantic"
    e = meta["slices"][0]
    assert set(np.unique(tifffile.imread(out / e["semantic"]))) == {0, 1}


def test_unannotated_value_makes_sparse(tmp_path):
    pairs = blobs(3)
    for _, m in pairs.values():
        m[:4, :4] = 65535
    folder = write_folder(tmp_path / "raw", "cellpose", pairs)
    rc, _, out = ingest(tmp_path, "u", {"kind": "folder", "path": str(folder), "unannotated_value": 65535})
    assert rc == 0
    meta = canonical.load_meta(out)
    assert meta["annotations"] == "sparse"
    assert tifffile.imread(out / meta["slices"][0]["instances"]).max() <= 3


def _bad(tmp_path, mutate):
    folder = write_folder(tmp_path / "raw", "cellpose", blobs(3))
    return folder, mutate(folder)


BAD = {
    "image without mask": (lambda f: tifffile.imwrite(f / "img9.tif", np.zeros((32, 32), np.uint8)) or f / "img9.tif",
                           "image without a mask", {}),
    "mask without image": (lambda f: (f / "img0.tif").unlink() or f / "img0_masks.tif", "mask without an image", {}),
    "size mismatch": (lambda f: tifffile.imwrite(f / "img1_masks.tif", np.zeros((16, 32), np.uint16))
                      or f / "img1_masks.tif", "does not match image", {}),
    "colour image": (lambda f: tifffile.imwrite(f / "img2.tif", np.random.default_rng(0).integers(
        0, 255, (32, 32, 3), dtype=np.uint8)) or f / "img2.tif", "colour image", {}),
    "float mask": (lambda f: tifffile.imwrite(f / "img1_masks.tif", np.full((32, 32), 0.5, np.float32))
                   or f / "img1_masks.tif", "non-whole", {}),
    "negative mask": (lambda f: tifffile.imwrite(f / "img1_masks.tif", np.full((32, 32), -1, np.int16))
                      or f / "img1_masks.tif", "negative", {}),
    "too many classes": (lambda f: f / "img0_masks.tif", "exceed classes: 2", {"labels": "semantic"}),
    "two files one name": (lambda f: Image.fromarray(np.zeros((32, 32), np.uint8)).save(f / "img1.png")
                           or f / "img1.tif", "same name 'img1'", {}),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_fails_cleanly(tmp_path, capsys, case):
    mutate, needle, extra = BAD[case]
    folder, bad_file = _bad(tmp_path, mutate)
    rc, err, out = ingest(tmp_path, "bad", {"kind": "folder", "path": str(folder), **extra}, capsys)
    assert rc == 2
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("seg ingest: error: "), err
    assert str(bad_file) in lines[0] and needle in lines[0], lines[0]
    assert not out.exists()
    assert not out.parent.exists() or [p for p in out.parent.iterdir()] == []


def test_too_few_pairs_and_bad_split(tmp_path, capsys):
    folder = write_folder(tmp_path / "raw", "cellpose", dict(list(blobs(2).items())))
    rc, err, out = ingest(tmp_path, "few", {"kind": "folder", "path": str(folder)}, capsys)
    assert rc == 2 and "2 annotated frame(s) cannot be split" in err and not out.exists()
    rc, err, out = ingest(tmp_path, "lst", {"kind": "folder", "path": str(folder),
                                            "split": {"train": ["img0"], "val": ["nope"]}}, capsys)
    assert rc == 2 and "'nope' is not a pair name" in err and not out.exists()


def test_semantic_more_than_two_classes_is_refused_by_the_schema(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", {"d": {"kind": "folder", "path": str(tmp_path), "labels": "semantic",
                                                   "classes": 3}})
    rc = main(["ingest", "--config", str(cfg), "--dataset", "d", "--out", str(tmp_path / "o")])
    assert rc == 2 and "classes" in capsys.readouterr().err


def test_init_summary_config_and_dry_run(tmp_path, capsys):
    folder = write_folder(tmp_path / "my-cells", "nnunet", blobs(5, size=48), {"u0": blobs(1, 48, 9)["img0"][0]})
    out = tmp_path / "my.yaml"
    capsys.readouterr()
    assert main(["init", str(folder), "--out", str(out), "--budget", "tiny"]) == 0
    printed = capsys.readouterr().out
    for text in ("layout: nnunet", "pairs: 5 image/mask pairs, 1 unlabelled images", "image sizes (H x W): 48x48 (5)",
                 "image dtype: uint8 (5)", "labels: instance", "proposed split", "train 3", "val 1", "test 1"):
        assert text in printed, (text, printed)
    cfg = load_config(out)
    entry = cfg["datasets"]["my-cells"]
    assert entry["kind"] == "folder" and entry["path"] == str(folder) and entry["labels"] == "instance"
    proc = snakemake(["-n", "--cores", "2", "--configfile", str(out), "--config",
                      f"results_dir={tmp_path / 'results'}", f"data_dir={tmp_path / 'data'}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rule in ("ingest", "train", "predict", "score", "leaderboard", "package", "export", "bioimageio"):
        assert re.search(rf"^{rule}\s+\d+\s*$", proc.stdout, re.M), (rule, proc.stdout[-3000:])
    assert not (tmp_path / "data").exists()


def test_init_then_workflow_end_to_end(tmp_path, capsys):
    """seg init on 6 small blob images, tiny budget, then snakemake --cores 2: a leaderboard row,
    a model package and its exports for the folder dataset (~35 s on 2 cores)."""
    folder = write_folder(tmp_path / "blobs", "cellpose", blobs(6, size=64, seed=1))
    cfg = tmp_path / "my.yaml"
    assert main(["init", str(folder), "--out", str(cfg), "--budget", "tiny"]) == 0
    results, data = tmp_path / "results", tmp_path / "data"
    t0 = time.time()
    proc = snakemake(["--cores", "2", "--configfile", str(cfg), "--config", f"results_dir={results}",
                      f"data_dir={data}"])
    print(f"end-to-end workflow: {time.time() - t0:.0f} s")
    assert proc.returncode == 0, proc.stderr[-6000:]
    import csv

    rows = list(csv.DictReader((results / "leaderboard.csv").open()))
    # both targets proposed for instance masks: the paper's and three classes, side by side
    assert sorted((r["dataset"], r["kind"], r["variant"], r["target"]) for r in rows) == [
        ("blobs", "folder", "unet", "fg_border"), ("blobs", "folder", "unet-3c", "three_class")]
    assert all(0 <= float(r["seg"]) <= 1 for r in rows)
    models = results / "models" / "blobs"
    for p in ("package", "torchscript", "onnx", "bioimageio.zip"):
        assert (models / p).exists(), p
    pkg = json.loads((models / "package" / "package.json").read_text())
    assert pkg["dataset"]["kind"] == "folder" and pkg["dataset"]["classes"] == ["background", "cell"]
    assert pkg["training"]["variant"] in ("unet", "unet-3c")


def test_semantic_folder_goes_to_the_package_segment_and_exports(tmp_path, capsys):
    """A folder of binary masks (0 / 255: ISBI's convention) through seg init and every step of its
    config by hand: ingest (as folder-semantic under the config's kind folder), weights, training,
    val prediction, calibration, test prediction, score, the package (a class-map model), seg
    segment (a uint8 class map) and the TorchScript, ONNX and bioimage.io exports."""
    import torch

    pairs = {k: (img, ((mask > 0) * 255).astype(np.uint8)) for k, (img, mask) in blobs(6, size=64, seed=2).items()}
    folder = write_folder(tmp_path / "membranes", "images-masks", pairs)
    cfg = tmp_path / "my.yaml"
    assert main(["init", str(folder), "--out", str(cfg), "--budget", "tiny"]) == 0
    printed = capsys.readouterr().out
    assert "labels: semantic (class maps: one foreground value (255) beside 0 = background" in printed, printed
    config = yaml.safe_load(cfg.read_text())
    assert list(config["variants"]) == ["unet"]  # no three-class row: there are no objects of their own
    config.update(data_dir=str(tmp_path / "data"), results_dir=str(tmp_path / "results"))
    cfg.write_text(yaml.safe_dump(config))
    run = tmp_path / "results" / "membranes" / "unet"
    common = ["--config", str(cfg), "--dataset", "membranes"]
    pred = ["predict", *common, "--variant", "unet", "--checkpoint", str(run / "checkpoints" / "best.pt")]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["ingest", *common]) == 0
        assert json.loads((tmp_path / "data" / "membranes" / "meta.json").read_text())["kind"] == "folder-semantic"
        assert main(["weights", *common]) == 0
        assert main(["train", *common, "--variant", "unet", "--out", str(run)]) == 0
        assert main([*pred, "--split", "val", "--out", str(run / "pred" / "val")]) == 0
        assert main(["calibrate", *common, "--variant", "unet", "--pred", str(run / "pred" / "val"),
                     "--out", str(run / "calibration.json")]) == 0
        assert main([*pred, "--split", "test", "--out", str(run / "pred" / "test"),
                     "--threshold-file", str(run / "calibration.json")]) == 0
        assert main(["score", *common, "--variant", "unet", "--pred", str(run / "pred" / "test"),
                     "--out", str(run / "metrics.json")]) == 0
        package = tmp_path / "package"
        assert main(["package", "--run-dir", str(run), "--config", str(cfg), "--out", str(package)]) == 0
        pkg = json.loads((package / "package.json").read_text())
        assert pkg["dataset"]["kind"] == "folder-semantic" and pkg["dataset"]["classes"] == ["background", "foreground"]
        image = folder / "images" / "img0.tif"
        assert main(["segment", "--model", str(package), str(image), "--out", str(tmp_path / "seg")]) == 0
        seg = tifffile.imread(tmp_path / "seg" / "img0_seg.tif")
        prob = tifffile.imread(tmp_path / "seg" / "img0_prob.tif")
        assert seg.dtype == np.uint8 and seg.shape == (64, 64)
        np.testing.assert_array_equal(seg, (prob >= pkg["threshold"]["value"]).astype(np.uint8))
        for fmt in ("torchscript", "onnx", "bioimageio"):
            assert main(["export", "--model", str(package), "--format", fmt, "--out", str(tmp_path / fmt)]) == 0
            assert (tmp_path / fmt).exists()
    finally:
        torch.set_num_threads(threads)
