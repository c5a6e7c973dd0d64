"""Every bad input of the ingest: exit status 2, one line naming the file or key and the problem,
and no partial output (neither the dataset folder nor a temporary one beside it)."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml

from conftest import error_lines

from seg.cli import main
from seg.data.synth import write_synth


@pytest.fixture(autouse=True)
def no_env_raw_root(monkeypatch):
    """CI exports SEG_RAW_ROOT; these tests give every raw folder explicitly."""
    monkeypatch.delenv("SEG_RAW_ROOT", raising=False)


@pytest.fixture(scope="module")
def synth_raw(tmp_path_factory) -> dict[str, Path]:
    """Small synthetic raw folders (read-only templates; tests copy them)."""
    root = tmp_path_factory.mktemp("raw-templates")
    return {"isbi": write_synth(root / "isbi", kind="isbi", seed=5, size=64),
            "ctc": write_synth(root / "ctc", kind="ctc", seed=5, size=64, frames=6, every=2)}


@pytest.fixture
def raw(tmp_path, synth_raw):
    """Copy a template raw folder to tmp_path/raw/<kind> and return its path."""
    def make(kind: str) -> Path:
        dst = tmp_path / "raw" / kind
        shutil.copytree(synth_raw[kind], dst)
        return dst
    return make


def run_ingest(tmp_path: Path, capsys, entry: dict, name: str = "ds") -> tuple[int, str, Path]:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"datasets": {name: entry}, "variants": {"unet": {"model": "unet"}}}))
    out = tmp_path / "data" / name
    capsys.readouterr()
    rc = main(["ingest", "--config", str(cfg), "--dataset", name, "--out", str(out)])
    err = capsys.readouterr().err
    return rc, err, out


def assert_failed_cleanly(rc: int, err: str, out: Path, *needles: str) -> None:
    assert rc == 2
    # progress bars may precede the error; nothing else may
    lines = error_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("seg ingest: error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    assert not out.exists()
    if out.parent.exists():
        assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] == []


# --- ISBI ---------------------------------------------------------------------------------------

def test_missing_file(tmp_path, capsys, raw):
    d = raw("isbi")
    (d / "train-labels.tif").unlink()
    rc, err, out = run_ingest(tmp_path, capsys, {"kind": "isbi2012", "raw_dir": str(d)})
    assert_failed_cleanly(rc, err, out, str(d / "train-labels.tif"), "file not found")


def test_missing_image_for_ctc_annotation(tmp_path, capsys, raw):
    d = raw("ctc")
    (d / "02" / "t002.tif").unlink()
    rc, err, out = run_ingest(tmp_path, capsys, {"kind": "ctc", "raw_dir": str(d)})
    assert_failed_cleanly(rc, err, out, "man_seg002.tif", "no image for frame 2")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_tiff(tmp_path, capsys, raw, damage):
    d = raw("isbi")
    f = d / "train-volume.tif"
    if damage == "truncated":
        data = f.read_bytes()
        f.write_bytes(data[: len(data) * 2 // 3])
    else:
        f.write_bytes(b"this is not a TIFF file at all" * 10)
    rc, err, out = run_ingest(tmp_path, capsys, {"kind": "isbi2012", "raw_dir": str(d)})
    assert_failed_cleanly(rc, err, out, str(f), "not a readable TIFF")


def test_corrupt_tiff_late_in_ctc_sequence(tmp_path, capsys, raw):
    """A bad file after several good frames were written: still no partial output."""
    d = raw("ctc")
    m = d / "02_GT" / "SEG" / "man_seg004.tif"
    m.write_bytes(m.read_bytes()[:200])
    rc, err, out = run_ingest(tmp_path, capsys, {"kind": "ctc", "raw_dir": str(d)})
    assert_failed_cleanly(rc, err, out, str(m), "not a readable TIFF")


def test_shape_mismatch_isbi(tmp_path, capsys, raw):
    d = raw("isbi")
    lab = tifffile.imread(d / "train-labels.tif")
    tifffile.imwrite(d / "train-labels.tif", lab[:29])
    rc, err, out = run_ingest(tmp_path, capsys, {"kind": "isbi2012", "raw_dir": str(d)})
    assert_failed_cleanly(rc, err, out, "train-labels.tif", "(29, 64, 64) does not match", "(30, 64, 64)")


def test_shape_mismatch_ctc(tmp_path, capsys, raw):
    d = raw("ctc")
    m = d / "01_GT" / "SEG" / "man_seg002.tif"
    tifffile.imwrite(m, tifffile.imread(m)[:, :60])
    rc, err, out = run_ingest(tmp_path, capsys, {"kind": "ctc", "raw_dir": str(d)})
    assert_failed_cleanly(rc, err, out, str(m), "shape (64, 60) does not match image t002.tif (64, 64)")


def test_non_binary_isbi_labels(tmp_path, capsys, raw):
    d = raw("isbi")
    lab = tifffile.imread(d / "train-labels.tif")
    lab[3, 10, 10:13] = [3, 128, 254]
    tifffile.imwrite(d / "train-labels.tif", lab)
    rc, err, out = run_ingest(tmp_path, capsys, {"kind": "isbi2012", "raw_dir": str(d)})
    assert_failed_cleanly(rc, err, out, str(d / "train-labels.tif"), "must be binary {0, 255}",
                          "[0, 3, 128, 254, 255]")


def test_3d_where_2d_expected(tmp_path, capsys, raw):
    d = raw("ctc")
    f = d / "01" / "t000.tif"
    img = tifffile.imread(f)
    tifffile.imwrite(f, np.stack([img, img, img]), photometric="minisblack")
    rc, err, out = run_ingest(tmp_path, capsys, {"kind": "ctc", "raw_dir": str(d)})
    assert_failed_cleanly(rc, err, out, str(f), "expected a 2D image (HxW), got shape (3, 64, 64)")


def test_2d_where_3d_expected(tmp_path, capsys, raw):
    d = raw("isbi")
    f = d / "test-volume.tif"
    tifffile.imwrite(f, tifffile.imread(f)[0])
    rc, err, out = run_ingest(tmp_path, capsys, {"kind": "isbi2012", "raw_dir": str(d)})
    assert_failed_cleanly(rc, err, out, str(f), "expected a 3D stack")


def test_empty_label_set_ctc_no_annotations(tmp_path, capsys, raw):
    d = raw("ctc")
    for seq in ("01", "02"):
        for m in (d / f"{seq}_GT" / "SEG").glob("*.tif"):
            m.unlink()
    rc, err, out = run_ingest(tmp_path, capsys, {"kind": "ctc", "raw_dir": str(d)})
    assert_failed_cleanly(rc, err, out, "01_GT/SEG", "empty label set")


def test_empty_label_set_ctc_blank_mask(tmp_path, capsys, raw):
    d = raw("ctc")
    m = d / "01_GT" / "SEG" / "man_seg004.tif"
    tifffile.imwrite(m, np.zeros((64, 64), np.uint16))
    rc, err, out = run_ingest(tmp_path, capsys, {"kind": "ctc", "raw_dir": str(d)})
    assert_failed_cleanly(rc, err, out, str(m), "empty label set")


def test_empty_label_set_isbi(tmp_path, capsys, raw):
    d = raw("isbi")
    lab = tifffile.imread(d / "train-labels.tif")
    lab[7] = 0
    tifffile.imwrite(d / "train-labels.tif", lab)
    rc, err, out = run_ingest(tmp_path, capsys, {"kind": "isbi2012", "raw_dir": str(d)})
    assert_failed_cleanly(rc, err, out, "train-labels.tif", "empty label set", "[7]")


def test_checksum_mismatch(tmp_path, capsys, synth_raw):
    served = tmp_path / "served" / "isbi.h5"
    served.parent.mkdir()
    served.write_bytes(b"not the file you are looking for")
    actual = hashlib.sha256(served.read_bytes()).hexdigest()
    expected = "ab" * 32
    d = tmp_path / "raw" / "empty"
    rc, err, out = run_ingest(tmp_path, capsys, {"kind": "isbi2012", "raw_dir": str(d),
                                                 "url": served.as_uri(), "sha256": expected})
    assert_failed_cleanly(rc, err, out, "checksum mismatch", f"expected sha256 {expected}", f"got {actual}",
                          "isbi.h5")
    assert not d.exists() or list(d.iterdir()) == []  # the bad download was deleted


def test_zip_member_with_dotdot(tmp_path, capsys, synth_raw):
    d = tmp_path / "raw" / "Evil"
    d.mkdir(parents=True)
    with zipfile.ZipFile(d / "Evil.zip", "w") as zf:
        for p in sorted(synth_raw["ctc"].rglob("*.tif")):
            zf.write(p, f"Evil/{p.relative_to(synth_raw['ctc']).as_posix()}")
        zf.writestr("../evil.txt", b"gotcha")
    rc, err, out = run_ingest(tmp_path, capsys, {"kind": "ctc", "raw_dir": str(d)}, name="Evil")
    assert_failed_cleanly(rc, err, out, str(d / "Evil.zip"), "unsafe member '../evil.txt'", "'..'")
    assert not (d.parent / "evil.txt").exists() and sorted(p.name for p in d.iterdir()) == ["Evil.zip"]


def test_split_references_missing_slice(tmp_path, capsys, raw):
    d = raw("isbi")
    rc, err, out = run_ingest(tmp_path, capsys, {"kind": "isbi2012", "raw_dir": str(d),
                                                 "split": {"train": "0-19", "val": "20-24", "test": "25-30"}})
    assert_failed_cleanly(rc, err, out, "datasets.ds.split.test", "slice 30 does not exist", "0-29")


def test_split_references_missing_sequence(tmp_path, capsys, raw):
    d = raw("ctc")
    rc, err, out = run_ingest(tmp_path, capsys, {"kind": "ctc", "raw_dir": str(d),
                                                 "split": {"by": "sequence", "train": ["01"], "test": ["03"]}})
    assert_failed_cleanly(rc, err, out, "datasets.ds.split.test", "sequence '03' does not exist")


def test_raw_files_missing_and_not_downloadable(tmp_path, capsys):
    d = tmp_path / "raw" / "DIC-C2DH-HeLa"
    rc, err, out = run_ingest(tmp_path, capsys, {"kind": "ctc", "raw_dir": str(d),
                                                 "url": (tmp_path / "offline.zip").as_uri(), "sha256": "c" * 64},
                              name="DIC-C2DH-HeLa")
    assert_failed_cleanly(rc, err, out, str(d), "raw files not found", "offline.zip", "put them there")


def test_failed_reingest_keeps_previous_output(tmp_path, capsys, raw):
    d = raw("isbi")
    rc, err, out = run_ingest(tmp_path, capsys, {"kind": "isbi2012", "raw_dir": str(d)})
    assert rc == 0
    before = (out / "meta.json").read_bytes()
    (d / "train-labels.tif").unlink()
    rc, err, _ = run_ingest(tmp_path, capsys, {"kind": "isbi2012", "raw_dir": str(d)})
    assert rc == 2 and (out / "meta.json").read_bytes() == before
