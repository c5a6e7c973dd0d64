"""Ingest into the canonical form: real ISBI 2012 stacks, real GOWT1 frames, synthetic CTC data,
the official-zip path, the HDF5 download format, downloads and raw-folder resolution."""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import yaml
from skimage.measure import label

from seg.cli import main
from seg.data import canonical
from seg.kinds.sources import availability, raw_dir
from seg.data.download import download, safe_extract
from seg.errors import SegError

# sha256 of the files in ../shared/data (its README.md and Fluo-N2DH-GOWT1/SOURCE.md).
ISBI_SHA = {
    "train-volume.tif": "93ada718f7ec9158e3460139062a7f6699d7f62c5139b6eaf91b0df08e97670f",
    "train-labels.tif": "26e556a9207ac838b7327f2a1868ecab2b9ae18d1458a6ddff806e3b9f83e910",
    "test-volume.tif": "f1bb7381f51b6ce1e301d23b319b9f019e916142f1f69fe943776968cc8fa02d",
}
GOWT1_SHA = {
    "01/t000.tif": "38b0ad3fcfea37888e768877c5caeef88ee0ebc4a33818bd9ae012a30d40f7e0",
    "01_GT/SEG/man_seg005.tif": "f90c353b9108c917998401de5cd09b9e6403c67ad304b09d72855c059bcd3985",
}


def write_config(tmp_path: Path, datasets: dict, **top) -> Path:
    """A small valid config file with ``datasets`` (and one variant)."""
    cfg = {"datasets": datasets, "variants": {"unet": {"model": "unet"}}, **top}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def ingest(cfg: Path, name: str, out: Path) -> int:
    return main(["ingest", "--config", str(cfg), "--dataset", name, "--out", str(out)])


def split_ids(meta: dict, split: str) -> list[str]:
    return [s["id"] for s in canonical.slices(meta, split)]


@pytest.fixture(autouse=True)
def no_env_raw_root(monkeypatch):
    """CI exports SEG_RAW_ROOT; each test sets it itself when it wants it."""
    monkeypatch.delenv("SEG_RAW_ROOT", raising=False)


@pytest.fixture(scope="module")
def synth_ctc_raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ctc"
    assert main(["synth", "--out", str(out), "--kind", "ctc", "--seed", "3"]) == 0
    return out


# --- ISBI 2012 (real stacks) -------------------------------------------------------------------

def test_isbi_real_stacks(tmp_path, shared_data, isbi_stacks, monkeypatch):
    monkeypatch.setenv("SEG_RAW_ROOT", str(shared_data))
    cfg = write_config(tmp_path, {"isbi2012": {"kind": "isbi2012"}})
    out = tmp_path / "data" / "isbi2012"
    assert ingest(cfg, "isbi2012", out) == 0

    meta = canonical.load_meta(out)
    assert meta["kind"] == "isbi2012" and meta["classes"] == ["membrane", "interior"]
    assert split_ids(meta, "train") == [f"train_{i:02d}" for i in range(20)]
    assert split_ids(meta, "val") == [f"train_{i:02d}" for i in range(20, 25)]
    assert split_ids(meta, "test") == [f"train_{i:02d}" for i in range(25, 30)]
    assert split_ids(meta, "unlabeled") == [f"test_{i:02d}" for i in range(30)]
    assert meta["files"] == ISBI_SHA
    assert meta["source"]["origin"] == "local" and meta["source"]["format"] == "tiff"
    # the pixels identify the ISBI 2012 data (for its published references), whatever the file bytes
    from seg.report.references import ISBI2012_TRAIN_PIXELS_SHA256, dataset_identity

    assert meta["source"]["pixels_sha256"] == {
        "train": ISBI2012_TRAIN_PIXELS_SHA256,
        "labels": "a7cb64000a1a7e542682927e19c91339f58f9f178e0bcce4e207371116f0ca36"}
    assert dataset_identity("isbi2012", meta) == "isbi2012"

    counts = []
    for e in canonical.slices(meta):
        assert e["shape"] == [512, 512]
        if e["split"] == "unlabeled":
            assert e["instances"] is None and e["semantic"] is None
            np.testing.assert_array_equal(canonical.load_raw_image(out, e), isbi_stacks["test"][e["frame"]])
            continue
        z = e["frame"]
        raw = canonical.load_raw_image(out, e)
        assert raw.dtype == np.uint8
        np.testing.assert_array_equal(raw, isbi_stacks["train"][z])
        sem = canonical.load_semantic(out, e)
        np.testing.assert_array_equal(sem, (isbi_stacks["labels"][z] == 255).astype(np.uint8))
        inst = canonical.load_instances(out, e)
        assert inst.dtype == np.int32
        np.testing.assert_array_equal(inst > 0, sem == 1)
        # instances are exactly the 4-connected components of the interior
        assert inst.max() == label(sem, connectivity=1).max() == len(np.unique(inst)) - 1
        counts.append(int(inst.max()))
    assert 20 <= min(counts) and max(counts) <= 500, counts

    img = canonical.load_image(out, canonical.slices(meta, "train")[0])
    assert img.dtype == np.float32 and abs(img.mean()) < 1e-4 and abs(img.std() - 1) < 1e-3


@pytest.mark.parametrize("convention", ["membrane_is_1", "original_0_255"])
def test_isbi_hdf5_download_format(tmp_path, isbi_stacks, convention):
    """The torch-em HDF5 (raw, labels/membranes) gives the same training slices as the TIFFs."""
    import h5py

    raw = tmp_path / "raw"
    raw.mkdir()
    sub = slice(0, 12)
    labels = isbi_stacks["labels"][sub]
    membranes = (labels == 0).astype(np.uint8) if convention == "membrane_is_1" else labels
    with h5py.File(raw / "isbi.h5", "w") as f:
        f["raw"] = isbi_stacks["train"][sub]
        f["labels/membranes"] = membranes
    cfg = write_config(tmp_path, {"em": {"kind": "isbi2012", "raw_dir": str(raw),
                                         "split": {"train": "0-7", "val": "8-9", "test": "10-11"}}})
    out = tmp_path / "em"
    assert ingest(cfg, "em", out) == 0
    meta = canonical.load_meta(out)
    assert meta["source"]["format"] == "h5" and "isbi.h5" in meta["files"]
    assert (convention == "membrane_is_1") == ("inverted" in meta["source"]["label_convention"])
    assert split_ids(meta, "unlabeled") == []
    assert [len(split_ids(meta, s)) for s in ("train", "val", "test")] == [8, 2, 2]
    # another EM stack of the same kind (here 12 of the 30 slices) is not the ISBI 2012 data
    from seg.report.references import dataset_identity

    assert dataset_identity("em", meta) is None
    for e in canonical.slices(meta):
        np.testing.assert_array_equal(canonical.load_semantic(out, e), labels[e["frame"]] == 255)


# --- CTC ------------------------------------------------------------------------------------------

def test_gowt1_real_frames(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("SEG_RAW_ROOT", str(shared_data))
    cfg = write_config(tmp_path, {"Fluo-N2DH-GOWT1": {"kind": "ctc"}})
    out = tmp_path / "gowt1"
    assert ingest(cfg, "Fluo-N2DH-GOWT1", out) == 0

    meta = canonical.load_meta(out)
    assert meta["kind"] == "ctc" and meta["classes"] == ["background", "cell"]
    assert split_ids(meta, "train") == ["01_t000", "01_t001", "01_t002"]
    assert split_ids(meta, "val") == ["01_t003"]
    assert split_ids(meta, "test") == ["01_t004", "01_t005"]
    assert len(meta["files"]) == 12
    for k, v in GOWT1_SHA.items():
        assert meta["files"][k] == v
    src = shared_data / "Fluo-N2DH-GOWT1"
    for e in canonical.slices(meta):
        assert e["sequence"] == "01" and e["shape"] == [1024, 1024]
        gt = tifffile.imread(src / "01_GT" / "SEG" / f"man_seg{e['frame']:03d}.tif")
        inst = canonical.load_instances(out, e)
        assert inst.dtype == np.int32
        np.testing.assert_array_equal(inst, gt.astype(np.int32))  # ids preserved
        sem = canonical.load_semantic(out, e)
        assert set(np.unique(sem)) <= {0, 1}
        assert not (sem.astype(bool) & (inst == 0)).any()  # never foreground outside the cells
        assert (sem == 1).sum() > 0.97 * (inst > 0).sum()  # nuclei barely touch: few border pixels
        np.testing.assert_array_equal(canonical.load_raw_image(out, e), tifffile.imread(src / "01" / f"t{e['frame']:03d}.tif"))


def test_ctc_synthetic_sparse_touching(tmp_path, synth_ctc_raw):
    cfg = write_config(tmp_path, {"syn": {"kind": "ctc", "raw_dir": str(synth_ctc_raw)}})
    out = tmp_path / "syn"
    assert ingest(cfg, "syn", out) == 0
    meta = canonical.load_meta(out)
    # 2 sequences x 12 frames, every 3rd annotated: every frame is ingested, the 16 unannotated
    # ones as unlabeled (image only), so that silver truth or self-training can reach them
    assert [s["id"] for s in meta["slices"]] == [f"{q}_t{f:03d}" for q in ("01", "02") for f in range(12)]
    unlabeled = canonical.slices(meta, "unlabeled")
    assert [s["frame"] for s in unlabeled if s["sequence"] == "01"] == [f for f in range(12) if f % 3]
    assert all(s["instances"] is None and s["semantic"] is None and s["labels"] is None for s in unlabeled)
    assert meta["annotations"] == "full" and meta["labels"] == "gt"
    for q in ("01", "02"):
        assert [s["frame"] for s in meta["slices"] if s["sequence"] == q and s["split"] == "train"] == [0, 3]
        assert [s["frame"] for s in meta["slices"] if s["sequence"] == q and s["split"] == "val"] == [6]
        assert [s["frame"] for s in meta["slices"] if s["sequence"] == q and s["split"] == "test"] == [9]
    for e in (e for e in canonical.slices(meta) if e["split"] != "unlabeled"):
        inst, sem = canonical.load_instances(out, e), canonical.load_semantic(out, e)
        n = len(np.unique(inst)) - 1
        assert n >= 8
        assert label(inst > 0, connectivity=1).max() < n  # cells touch in the instance mask ...
        assert label(sem, connectivity=1).max() == n  # ... and are separated in the semantic map
        assert label(sem, connectivity=2).max() == n


def test_ctc_split_by_sequence(tmp_path, synth_ctc_raw):
    cfg = write_config(tmp_path, {"syn": {"kind": "ctc", "raw_dir": str(synth_ctc_raw),
                                          "split": {"by": "sequence", "train": ["01"], "test": ["02"]}}})
    out = tmp_path / "syn"
    assert ingest(cfg, "syn", out) == 0
    meta = canonical.load_meta(out)
    assert {s["sequence"] for s in canonical.slices(meta, "train")} == {"01"}
    assert {s["sequence"] for s in canonical.slices(meta, "test")} == {"02"}
    assert canonical.slices(meta, "val") == []


def make_ctc_zip(src: Path, zip_path: Path, name: str, extra: dict[str, bytes] | None = None) -> None:
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in sorted(src.rglob("*")):
            if p.is_file() and p.suffix == ".tif":
                zf.write(p, f"{name}/{p.relative_to(src).as_posix()}")
        for member, data in (extra or {}).items():
            zf.writestr(member, data)


def test_ctc_official_zip(tmp_path, synth_ctc_raw):
    raw = tmp_path / "raw" / "Synth-C2DH"
    raw.mkdir(parents=True)
    make_ctc_zip(synth_ctc_raw, raw / "Synth-C2DH.zip", "Synth-C2DH")
    cfg = write_config(tmp_path, {"Synth-C2DH": {"kind": "ctc"}, "folder": {"kind": "ctc", "raw_dir": str(synth_ctc_raw)}},
                       raw_root=str(tmp_path / "raw"))
    assert ingest(cfg, "Synth-C2DH", tmp_path / "fromzip") == 0
    assert ingest(cfg, "folder", tmp_path / "fromfolder") == 0
    assert sorted(p.name for p in raw.iterdir()) == ["Synth-C2DH.zip"]  # nothing extracted beside the zip
    mz, mf = canonical.load_meta(tmp_path / "fromzip"), canonical.load_meta(tmp_path / "fromfolder")
    assert mz["source"]["format"] == "ctc-zip"
    assert mz["files"]["Synth-C2DH.zip"] == hashlib.sha256((raw / "Synth-C2DH.zip").read_bytes()).hexdigest()
    assert mz["files"]["Synth-C2DH.zip/Synth-C2DH/01/t000.tif"] == mf["files"]["01/t000.tif"]
    assert [(s["id"], s["split"]) for s in mz["slices"]] == [(s["id"], s["split"]) for s in mf["slices"]]
    for ez, ef in ((ez, ef) for ez, ef in zip(mz["slices"], mf["slices"]) if ez["instances"]):
        np.testing.assert_array_equal(canonical.load_instances(tmp_path / "fromzip", ez),
                                      canonical.load_instances(tmp_path / "fromfolder", ef))


def test_safe_extract_rejects_unsafe_members(tmp_path):
    target = tmp_path / "target"
    for member in ("../evil.txt", "/abs/evil.txt", "ok/../../evil.txt"):
        zp = tmp_path / "bad.zip"
        with zipfile.ZipFile(zp, "w") as zf:
            zf.writestr("good.txt", b"fine")
            zf.writestr(member, b"evil")
        with pytest.raises(SegError, match=r"unsafe member .*evil\.txt"):
            safe_extract(zp, target)
        assert not (tmp_path / "evil.txt").exists() and not (target / "good.txt").exists()
    assert safe_extract(_good_zip(tmp_path), target) == ["a/b.txt"]
    assert (target / "a" / "b.txt").read_bytes() == b"data"


def _good_zip(tmp_path: Path) -> Path:
    zp = tmp_path / "good.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("a/b.txt", b"data")
    return zp


# --- download, raw folder resolution, availability ----------------------------------------------

def test_download_checksum(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 3_000_000)
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = tmp_path / "dl" / "file.bin"
    assert download(src.as_uri(), dest, sha256=good) == dest
    assert dest.read_bytes() == src.read_bytes()

    dest2 = tmp_path / "dl" / "other.bin"
    with pytest.raises(SegError) as e:
        download(src.as_uri(), dest2, sha256="0" * 64)
    assert f"expected sha256 {'0' * 64}, got {good}" in str(e.value)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.bin"]  # no partial / temp file
    with pytest.raises(SegError, match="no sha256 checksum"):
        download(src.as_uri(), dest2, sha256=None)
    assert not dest2.exists()


def test_ingest_downloads_when_missing(tmp_path, synth_ctc_raw):
    """No local files: the configured URL (here file://) is downloaded, verified, then ingested."""
    zp = tmp_path / "served" / "Synth.zip"
    zp.parent.mkdir()
    make_ctc_zip(synth_ctc_raw, zp, "Synth")
    sha = hashlib.sha256(zp.read_bytes()).hexdigest()
    cfg = write_config(tmp_path, {"Synth": {"kind": "ctc", "url": zp.as_uri(), "sha256": sha}},
                       raw_root=str(tmp_path / "raw"))
    assert ingest(cfg, "Synth", tmp_path / "out") == 0
    meta = canonical.load_meta(tmp_path / "out")
    assert meta["source"]["origin"] == "download" and meta["files"]["Synth.zip"] == sha
    assert (tmp_path / "raw" / "Synth" / "Synth.zip").is_file()
    assert len(meta["slices"]) == 24 and len(canonical.slices(meta, "unlabeled")) == 16


def test_raw_dir_precedence(tmp_path, monkeypatch):
    cfg = {"raw_root": "cfgroot", "datasets": {"a": {"kind": "ctc"}, "b": {"kind": "ctc", "raw_dir": "own"}}}
    monkeypatch.delenv("SEG_RAW_ROOT", raising=False)
    assert raw_dir(cfg, "a") == Path("cfgroot/a")
    monkeypatch.setenv("SEG_RAW_ROOT", "envroot")
    assert raw_dir(cfg, "a") == Path("envroot/a")
    assert raw_dir(cfg, "b") == Path("own")


def test_availability(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("SEG_RAW_ROOT", str(shared_data))
    served = tmp_path / "served.zip"
    served.write_bytes(b"zip")
    cfg = {"datasets": {
        "isbi2012": {"kind": "isbi2012"},
        "gone": {"kind": "ctc", "url": (tmp_path / "nothing.zip").as_uri(), "sha256": "1" * 64},
        "DIC-C2DH-HeLa": {"kind": "ctc", "raw_dir": str(tmp_path / "hela"), "url": "http://127.0.0.1:9/x.zip",
                          "sha256": "2" * 64},
        "served": {"kind": "ctc", "raw_dir": str(tmp_path / "s"), "url": served.as_uri(), "sha256": "3" * 64},
    }}
    assert availability(cfg, "isbi2012")[0] == "local"
    status, msg = availability(cfg, "gone")
    assert status == "missing" and str(shared_data / "gone") in msg and "nothing.zip" in msg
    status, msg = availability(cfg, "DIC-C2DH-HeLa")
    assert status == "missing" and "\n" not in msg
    assert str(tmp_path / "hela") in msg and "http://127.0.0.1:9/x.zip" in msg and "put them there" in msg
    assert availability(cfg, "served")[0] == "downloadable"


def test_ctc_two_digit_frame_numbers(tmp_path, synth_ctc_raw):
    """Older CTC copies name frames tNN.tif / man_segNN.tif: accepted, ids stay <seq>_tNNN."""
    raw = tmp_path / "raw"
    shutil.copytree(synth_ctc_raw, raw)
    for p in list(raw.rglob("*.tif")):
        stem = p.stem.rstrip("0123456789")
        p.rename(p.with_name(f"{stem}{int(p.stem[len(stem):]):02d}.tif"))
    assert (raw / "01" / "t03.tif").is_file() and (raw / "02_GT" / "SEG" / "man_seg09.tif").is_file()
    cfg = write_config(tmp_path, {"syn": {"kind": "ctc", "raw_dir": str(raw), "sequences": ["01"]}})
    assert ingest(cfg, "syn", tmp_path / "out") == 0
    meta = canonical.load_meta(tmp_path / "out")
    assert [s["id"] for s in meta["slices"] if s["split"] != "unlabeled"] == ["01_t000", "01_t003", "01_t006", "01_t009"]
    assert [s["id"] for s in meta["slices"]] == [f"01_t{f:03d}" for f in range(12)]
    assert "01_GT/SEG/man_seg09.tif" in meta["files"] and "01/t09.tif" in meta["files"]


@pytest.mark.parametrize("n, expected", [(3, (1, 1, 1)), (4, (2, 1, 1)), (6, (3, 1, 2)), (9, (4, 2, 3)),
                                         (10, (5, 2, 3)), (30, (14, 6, 10))])
def test_frame_split_counts(n, expected):
    from seg.data.splits import frame_split, frame_split_counts

    assert frame_split_counts(n, 0.2, 0.3334, where="k") == expected
    split = frame_split(list(range(n))[::-1], 0.2, 0.3334, where="k")  # time order, not input order
    assert [split[f] for f in range(n)] == ["train"] * expected[0] + ["val"] * expected[1] + ["test"] * expected[2]


def test_frame_split_too_few_frames_and_ranges():
    from seg.data.splits import frame_split_counts, parse_ranges

    with pytest.raises(SegError, match="no frame would be left for train"):
        frame_split_counts(2, 0.2, 0.3334, where="config: datasets.x.split")
    assert frame_split_counts(2, 0.0, 0.5, where="k") == (1, 0, 1)
    assert parse_ranges("0-4, 7,9-10", key="k") == [0, 1, 2, 3, 4, 7, 9, 10]
    assert parse_ranges([3, "5-6"], key="k") == [3, 5, 6]
    with pytest.raises(SegError, match="k: 'a-b' is not a slice number"):
        parse_ranges("a-b", key="k")


def test_download_never_writes_into_read_only_raw_tree(tmp_path, monkeypatch, synth_ctc_raw):
    """A raw root marked read-only (like ../shared/data) is not written to, even by root."""
    shared = tmp_path / "shared"
    shared.mkdir()
    zp = tmp_path / "Synth.zip"
    make_ctc_zip(synth_ctc_raw, zp, "Synth")
    sha = hashlib.sha256(zp.read_bytes()).hexdigest()
    shared.chmod(0o555)
    try:
        monkeypatch.setenv("SEG_RAW_ROOT", str(shared))
        cfg = write_config(tmp_path, {"Synth": {"kind": "ctc", "url": zp.as_uri(), "sha256": sha}},
                           data_dir=str(tmp_path / "data"))
        assert ingest(cfg, "Synth", tmp_path / "data" / "Synth") == 0
        assert list(shared.iterdir()) == []
        assert (tmp_path / "data" / "raw" / "Synth" / "Synth.zip").is_file()
    finally:
        shared.chmod(0o755)


def test_failed_download_leaves_no_folders(tmp_path):
    with pytest.raises(SegError, match="download failed"):
        download((tmp_path / "absent.zip").as_uri(), tmp_path / "a" / "b" / "x.zip", sha256="0" * 64)
    assert not (tmp_path / "a").exists()
