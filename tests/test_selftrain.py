"""Self-training: a teacher's confident objects on unlabelled frames as extra sparse labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from seg.cli import main
from seg.errors import SegError
from seg.evaluate.pseudolabel import candidate_frames, choose_confidence, object_confidence, val_objects

from conftest import error_lines


def test_candidate_frames_keep_away_from_val_and_test_and_excluded():
    meta = {"st_exclusion": 2, "slices": [
        {"id": f"01_t{f:03d}", "sequence": "01", "frame": f, "split": s, **({"excluded": "x"} if f == 12 else {})}
        for f, s in [(0, "train"), (1, "unlabeled"), (3, "unlabeled"), (5, "val"), (7, "unlabeled"),
                     (8, "unlabeled"), (10, "test"), (12, "unlabeled"), (13, "unlabeled")]
    ] + [{"id": "02_t000", "sequence": "02", "frame": 6, "split": "unlabeled"}]}
    got = [e["id"] for e in candidate_frames(meta)]
    # 3 and 7 are 2 frames from val 5, 8 is 2 from test 10, 12 is excluded; sequence 02 has no val/test
    assert got == ["01_t001", "01_t013", "02_t000"]


def test_object_confidence_and_the_val_choice():
    labels = np.zeros((10, 30), np.int32)
    labels[:, 0:10], labels[:, 10:20], labels[:, 20:30] = 1, 2, 3
    fg = np.zeros((10, 30), np.float32)
    fg[:, 0:10], fg[:, 10:20], fg[:, 20:30] = 0.95, 0.705, 0.55
    np.testing.assert_allclose(object_confidence(labels, fg), [0, 0.95, 0.705, 0.55], rtol=1e-6)
    ref = np.zeros_like(labels)
    ref[:, 0:10] = 1  # object 1 matches; 2 overlaps nothing; 3 overlaps an annotated cell badly
    ref[:, 20:23] = 2
    objs = val_objects(labels, fg, ref, sparse=False)
    assert objs == [(pytest.approx(0.95), True), (pytest.approx(0.705), False), (pytest.approx(0.55), False)]
    # sparse: object 2 lies on no annotated cell, object 3 mostly not: neither counts
    assert val_objects(labels, fg, ref, sparse=True) == [(pytest.approx(0.95), True)]
    c, table = choose_confidence(objs, precision=0.9)
    assert c == pytest.approx(0.71) and table[0]["kept"] == 3
    assert next(r for r in table if r["confidence"] == 0.7)["kept"] == 2
    assert choose_confidence(objs, precision=0.3)[0] == pytest.approx(0.5)
    assert choose_confidence([(0.6, False)], precision=0.9)[0] is None and choose_confidence([])[0] is None


def _config(tmp_path, raw, extra_variant: str = "") -> str:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"data_dir: {tmp_path / 'data'}\nresults_dir: {tmp_path / 'results'}\nseed: 0\n"
        f"datasets:\n  syn: {{kind: ctc, raw_dir: {raw}, sequences: ['01'], annotations: sparse, st_exclusion: 1}}\n"
        "variants:\n  teacher: {model: unet, params: {base_channels: 4, depth: 2}}\n"
        "  student: {model: unet, params: {base_channels: 4, depth: 2}, self_training: {teacher: teacher, precision: 0.5}}\n"
        f"{extra_variant}"
        "weights: {sparse_band: 4}\n"
        "train: {iterations: 12, batch_size: 2, patch_size: 64, val_every: 6, device: cpu, amp: none, num_workers: 0}\n"
        "inference: {tile: 64, device: cpu, amp: none}\n"
        "postprocess: {method: watershed, calibrate: true, min_size: 5, search: {min_size: [0, 5]}}\n")
    return str(cfg)


def _oracle(ds_dir, raw):
    """A stand-in for the teacher's network (a 12-step model finds no cell): p(cell) 0.9 on the
    synthetic silver-truth cells of the frame (the annotated ones, eroded by 1 px; every frame has
    them), with 0-lines between touching cells, 0.05 elsewhere; keyed by the normalised image."""
    import hashlib

    from seg.data.canonical import load_image, load_meta
    from seg.data.ctc import ctc_semantic

    table = {}
    for e in load_meta(ds_dir)["slices"]:
        st = tifffile.imread(raw / f"{e['sequence']}_ST" / "SEG" / f"man_seg{e['frame']:03d}.tif").astype(np.int32)
        p = np.where(ctc_semantic(st) > 0, 0.9, 0.05).astype(np.float32)
        table[hashlib.sha256(load_image(ds_dir, e).tobytes()).hexdigest()] = np.stack([1 - p, p])

    def predict_slice(model, image, infer_cfg=None, device="cpu", activation="softmax", scale=1.0):
        return table[hashlib.sha256(np.asarray(image).tobytes()).hexdigest()]

    return predict_slice


def test_pseudolabel_then_student_trains_on_the_kept_objects(tmp_path, one_thread, monkeypatch):
    """A 12-step teacher, calibrated; seg pseudolabel (its predictions those of an oracle) labels the
    unlabelled frames away from val and test with the objects above the val-chosen confidence
    (band-limited weights), and the student trains on them beside the training split."""
    from seg.data.canonical import load_meta

    raw = tmp_path / "raw"
    assert main(["synth", "--out", str(raw), "--kind", "ctc", "--seed", "5", "--size", "96", "--frames", "16",
                 "--annotated", "0.5", "--silver"]) == 0
    cfg = _config(tmp_path, raw)
    common = ["--config", cfg, "--dataset", "syn"]
    results = tmp_path / "results" / "syn"
    assert main(["ingest", *common]) == 0 and main(["weights", *common]) == 0
    assert main(["train", *common, "--variant", "teacher", "--out", str(results / "teacher")]) == 0
    ckpt = str(results / "teacher" / "checkpoints" / "best.pt")
    assert main(["predict", *common, "--variant", "teacher", "--checkpoint", ckpt, "--split", "val",
                 "--out", str(results / "teacher" / "pred" / "val")]) == 0
    assert main(["calibrate", *common, "--variant", "teacher", "--pred", str(results / "teacher" / "pred" / "val"),
                 "--out", str(results / "teacher" / "calibration.json")]) == 0
    # the student refuses to train without its labels
    with pytest.raises(SegError, match="--pseudo"):
        from seg.settings import load_config
        from seg.train.loop import train

        train(load_config(cfg), "syn", "student", results / "student")
    pseudo = results / "student" / "pseudo"
    monkeypatch.setattr("seg.evaluate.pseudolabel.predict_slice", _oracle(tmp_path / "data" / "syn", raw))
    assert main(["pseudolabel", *common, "--variant", "student", "--out", str(pseudo)]) == 0
    monkeypatch.undo()
    doc = json.loads((pseudo / "meta.json").read_text())
    assert doc["confidence"] == pytest.approx(0.5)  # the oracle's val objects all match (precision 1)
    meta = load_meta(tmp_path / "data" / "syn")
    allowed = {e["id"] for e in candidate_frames(meta)}
    assert doc["candidates"] == len(allowed) > 0 and doc["teacher"]["variant"] == "teacher"
    assert doc["teacher"]["threshold"] == json.loads((results / "teacher" / "calibration.json").read_text())["threshold"]
    held = {(e["sequence"], e["frame"]) for e in meta["slices"] if e["split"] in ("val", "test")}
    for rec in doc["slices"]:
        assert rec["id"] in allowed and all(abs(rec["frame"] - f) > 1 for s, f in held if s == rec["sequence"])
        inst = tifffile.imread(pseudo / rec["instances"])
        w = tifffile.imread(pseudo / rec["weights"])
        assert len(np.unique(inst[inst > 0])) == rec["kept"] > 0
        from scipy import ndimage

        far = ndimage.distance_transform_edt(inst == 0) > doc["band"]
        assert (w[far] == 0).all() and (w[inst > 0] > 0).all()
    assert len(doc["slices"]) == doc["candidates"]  # every candidate frame has oracle cells
    assert main(["train", *common, "--variant", "student", "--pseudo", str(pseudo),
                 "--out", str(results / "student")]) == 0
    summary = json.loads((results / "student" / "train_summary.json").read_text())
    assert summary["self_training"] == {"pseudo": str(pseudo), "slices": len(doc["slices"]),
                                        "train_slices": summary["self_training"]["train_slices"]}
    # the teacher's run is part of the student's identity
    from seg.settings import load_config, run_config_hash

    c = load_config(cfg)
    c2 = load_config(cfg)
    c2["variants"]["teacher"]["train"] = {"iterations": 13}
    assert run_config_hash(c, "syn", "student") != run_config_hash(c2, "syn", "student")
    assert run_config_hash(c, "syn", "teacher") != run_config_hash(c2, "syn", "teacher")


@pytest.mark.parametrize("variant, message", [
    ("  bad: {model: unet, self_training: {teacher: nope}}\n", "variants.bad.self_training.teacher: 'nope' is not"),
    ("  bad: {model: unet, self_training: {teacher: student}}\n", "'student' has self_training of its own"),
    ("  bad: {model: unet, self_training: {teacher: bad}}\n", "'bad' is not another configured variant"),
])
def test_bad_self_training_configs_are_refused(tmp_path, capsys, variant, message):
    cfg = _config(tmp_path, tmp_path, variant)
    assert main(["plan", "--config", cfg, "--dataset", "syn"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and message in lines[0], lines


def test_workflow_runs_pseudolabel_before_the_students_training_and_the_targets_config_resolves(tmp_path, shared_data):
    """Dry runs: configs/targets.yaml resolves (every target on both CTC datasets), and a variant
    with self_training gets rule pseudolabel, fed by its teacher's training and calibration."""
    import yaml

    from conftest import snakemake

    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("DIC-C2DH-HeLa", "Fluo-N2DH-GOWT1"):
        (raw / name).symlink_to(shared_data / name)
    env = {"SEG_RAW_ROOT": str(raw)}
    proc = snakemake(["-n", "--cores", "8", "--configfile", "configs/targets.yaml", "--config",
                      f"results_dir={tmp_path / 'r'}", f"data_dir={tmp_path / 'd'}"], env_extra=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for v in ("unet", "unet-3class", "unet-distance"):
        assert f"variant={v}" in out
    cfg = yaml.safe_load(open("configs/targets.yaml"))
    cfg["variants"] = {"unet": cfg["variants"]["unet"],
                       "unet-st": {**cfg["variants"]["unet"], "label": "U-Net, self-training",
                                   "self_training": {"teacher": "unet"}}}
    path = tmp_path / "st.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake(["-n", "--cores", "8", "--configfile", str(path), "--config", f"results_dir={tmp_path / 'r'}",
                      f"data_dir={tmp_path / 'd'}"], env_extra=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "rule pseudolabel" in out and "--teacher-run" in out and "--pseudo" in out
    first = out.index("rule pseudolabel")
    assert out.index("unet/calibration.json", 0) < first  # the teacher is calibrated before it labels
