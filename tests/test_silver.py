"""Every frame of a CTC sequence is ingested; silver truth (ST) as training labels with the
leakage-free protocol: no frame within ``st_exclusion`` frames of a val or test GT frame trains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from seg.cli import main
from seg.data import canonical
from seg.data.ctc import CtcFrame, plan_frames
from seg.errors import SegError

from conftest import SHARED_DATA


@pytest.fixture(scope="module")
def silver_raw(tmp_path_factory) -> Path:
    """Synthetic sequences 01 and 02: 12 frames, GT on 0, 3, 6, 9 (half the cells), ST on all."""
    out = tmp_path_factory.mktemp("silver") / "raw"
    assert main(["synth", "--out", str(out), "--kind", "ctc", "--seed", "2", "--size", "64",
                 "--annotated", "0.5", "--silver"]) == 0
    return out


def _ingest(tmp_path: Path, raw: Path, **entry) -> tuple[Path, dict]:
    spec = ", ".join(f"{k}: {json.dumps(v)}" for k, v in entry.items())
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\ndatasets:\n  syn: {{kind: ctc, raw_dir: {raw}, "
                   f"annotations: sparse, {spec}}}\nvariants:\n  v: {{model: unet}}\nweights: {{sparse_band: 3}}\n")
    assert main(["ingest", "--config", str(cfg), "--dataset", "syn"]) == 0
    return cfg, canonical.load_meta(tmp_path / "data" / "syn")


def _frames(meta: dict, split: str, seq: str = "01") -> list[int]:
    return [e["frame"] for e in canonical.slices(meta, split) if e["sequence"] == seq]


def test_st_exclusion_keeps_frames_near_val_and_test_out_of_the_loader(tmp_path, silver_raw):
    from seg.train.sampling import PatchDataset, PatchGeometry, load_training_slices

    cfg, meta = _ingest(tmp_path, silver_raw, labels="gt+st", st_exclusion=2, sequences=["01"])
    # GT frames 0, 3 train, 6 val, 9 test; frames within 2 of 6 or 9 never train
    assert _frames(meta, "val") == [6] and _frames(meta, "test") == [9]
    assert _frames(meta, "train") == [0, 1, 2, 3]
    assert _frames(meta, "unlabeled") == [4, 5, 7, 8, 10, 11]
    near = {e["frame"]: e["excluded"] for e in canonical.slices(meta, "unlabeled")}
    assert near[4] == "within 2 frames of val frame 6 (st_exclusion)"
    assert near[8] == "within 2 frames of test frame 9 (st_exclusion)"
    assert all(e["instances"] is None for e in canonical.slices(meta, "unlabeled"))  # no labels stored
    labels = {e["frame"]: e["labels"] for e in meta["slices"]}
    assert [labels[f] for f in range(4)] == ["gt", "st", "st", "gt"] and labels[6] == labels[9] == "gt"
    # the stored labels: GT where the frame has it (GT wins), ST elsewhere; val/test always GT
    ds = tmp_path / "data" / "syn"
    for e in meta["slices"]:
        if e["labels"]:
            src = "GT" if e["labels"] == "gt" else "ST"
            raw = tifffile.imread(silver_raw / f"01_{src}" / "SEG" / f"man_seg{e['frame']:03d}.tif")
            np.testing.assert_array_equal(canonical.load_instances(ds, e), raw)
    # weights, then the training loader: only the allowed frames ever reach it
    assert main(["weights", "--config", str(cfg), "--dataset", "syn"]) == 0
    slices = load_training_slices(ds, "train")
    assert [s["id"] for s in slices] == ["01_t000", "01_t001", "01_t002", "01_t003"]
    data = PatchDataset(slices, PatchGeometry(32, 32), augment_cfg=None, seed=0)
    drawn = {data.slices[data.window(i)[0]].id for i in range(200)}
    assert drawn == {"01_t000", "01_t001", "01_t002", "01_t003"}


def test_label_modes_and_sequence_split(tmp_path, silver_raw):
    _, gt = _ingest(tmp_path / "gt", silver_raw, labels="gt", sequences=["01"])
    assert _frames(gt, "train") == [0, 3] and len(_frames(gt, "unlabeled")) == 8  # ST unused
    assert not any(k.startswith("01_ST") for k in gt["files"])
    _, st = _ingest(tmp_path / "st", silver_raw, labels="st", st_exclusion=0, sequences=["01"])
    assert _frames(st, "train") == [0, 1, 2, 3, 4, 5, 7, 8, 10, 11]
    assert {e["labels"] for e in canonical.slices(st, "train")} == {"st"}  # GT frames 0, 3 train on ST
    assert {e["labels"] for e in canonical.slices(st, "val") + canonical.slices(st, "test")} == {"gt"}
    assert "01_ST/SEG/man_seg000.tif" in st["files"] and "01_ST/SEG/man_seg006.tif" not in st["files"]
    # by sequence: no frame of the test sequence trains, whatever its distance
    _, seq = _ingest(tmp_path / "seq", silver_raw, labels="gt+st",
                     split={"by": "sequence", "train": ["01"], "test": ["02"]})
    assert _frames(seq, "train", "01") == list(range(12)) and _frames(seq, "train", "02") == []
    assert _frames(seq, "test", "02") == [0, 3, 6, 9]
    assert all("sequence 02 is held out" in e["excluded"] for e in canonical.slices(seq, "unlabeled"))


def test_plan_frames_rejects_bad_settings():
    frames = {"01": [CtcFrame(0, Path("t0"), gt=Path("g0"))]}
    with pytest.raises(SegError, match=r"labels: 'silver' is not one of"):
        plan_frames(frames, {("01", 0): "train"}, labels="silver", where="config: datasets.x")
    with pytest.raises(SegError, match="st_exclusion: must be >= 0"):
        plan_frames(frames, {("01", 0): "train"}, labels="st", st_exclusion=-1, where="config: datasets.x")


def test_real_hela_protocol(tmp_path, monkeypatch):
    """DIC-HeLa sequence 01: all 84 frames; GT 002-021 train (031 is 2 frames from val 033, so it
    does not train), 033-034 val, 039-067 test; ST frames train outside +-5 of val/test frames."""
    monkeypatch.setenv("SEG_RAW_ROOT", str(SHARED_DATA))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\ndatasets:\n  DIC-C2DH-HeLa: {{kind: ctc, sequences: ['01'], "
                   "annotations: sparse, labels: gt+st}\nvariants:\n  v: {model: unet}\n")
    assert main(["ingest", "--config", str(cfg), "--dataset", "DIC-C2DH-HeLa"]) == 0
    meta = canonical.load_meta(tmp_path / "data" / "DIC-C2DH-HeLa")
    assert len(meta["slices"]) == 84 and meta["annotations"] == "sparse"
    assert _frames(meta, "val") == [33, 34] and _frames(meta, "test") == [39, 54, 67]
    held = [33, 34, 39, 54, 67]
    train = _frames(meta, "train")
    assert train == [f for f in range(84) if min(abs(f - g) for g in held) > 5]
    assert len(train) == 45 and 31 not in train
    assert [f for f in train if {e["frame"]: e["labels"] for e in meta["slices"]}[f] == "gt"] == [2, 5, 21]
    sha = dict(line.split()[::-1] for line in (SHARED_DATA / "DIC-C2DH-HeLa" / "SHA256SUMS").read_text().splitlines())
    for path, digest in meta["files"].items():
        assert sha.get(path, sha.get(f"./{path}")) == digest, path
