"""The Snakemake workflow end to end: one small real run (configs/quick.yaml), the DAG of the
default config, lint, and config errors that stop the run before any job starts."""

from __future__ import annotations

import csv
import json


from conftest import ROOT, snakemake


def test_quick_workflow_end_to_end(quick_run):
    res, data = quick_run["results"], quick_run["data"]
    # every stage ran for the real datasets
    for ds in ("isbi2012", "Fluo-N2DH-GOWT1"):
        assert (data / ds / "meta.json").is_file()
        assert (data / ds / "weights" / "class_weights.json").is_file()
        assert (data / ds / "weights" / "preview.png").is_file()
        assert (data / ds / "augmented" / "preview.png").is_file()
    assert (res / "isbi2012" / "pretrain" / "resnet18" / "encoder.pt").is_file()
    runs = [("isbi2012", "unet-same"), ("isbi2012", "unet-valid"), ("isbi2012", "unet-resnet18-inhouse"),
            ("Fluo-N2DH-GOWT1", "unet-same")]
    for ds, var in runs:
        m = json.loads((res / ds / var / "metrics.json").read_text())
        assert m["dataset"] == ds and m["variant"] == var
        assert 0.0 <= m["aggregate"]["iou_mean"] <= 1.0
        assert (res / ds / var / "train_summary.json").is_file()
        assert (res / ds / var / "checkpoints" / "best.pt").is_file()
        # the test predictions use the threshold chosen on the val split (postprocess.calibrate)
        chosen = json.loads((res / ds / var / "calibration.json").read_text())
        assert chosen["split"] == "val" and m["inference"]["threshold"] == chosen["threshold"]
        assert (res / ds / var / "pred" / "val" / "predict_summary.json").is_file()
    # the quick config aligns the ISBI images to their labels (estimated on the training slices)
    assert json.loads((data / "isbi2012" / "meta.json").read_text())["alignment"]["image_shift"][0] < -0.3
    gowt1 = json.loads((res / "Fluo-N2DH-GOWT1" / "unet-same" / "metrics.json").read_text())
    assert "seg" in gowt1["aggregate"]
    assert sorted(s["id"] for s in gowt1["per_slice"]) == ["01_t004", "01_t005"]
    isbi = json.loads((res / "isbi2012" / "unet-same" / "metrics.json").read_text())
    assert "vrand" in isbi["aggregate"]
    assert sorted(s["id"] for s in isbi["per_slice"]) == [f"train_{i:02d}" for i in range(25, 30)]
    # the leaderboard and the report
    with open(res / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["dataset"], r["variant"]) for r in rows} == set(runs)
    html = (res / "report.html").read_text()
    assert "data:image/png;base64," in html and "unet-resnet18-inhouse" in html
    # the leaderboard is printed at the end of the run
    assert "unet-valid" in quick_run["proc"].stdout + quick_run["proc"].stderr


def test_rerun_is_a_noop(quick_run):
    res, data = quick_run["results"], quick_run["data"]
    proc = snakemake(["-n", "--cores", "2", "--configfile", "configs/quick.yaml",
                      "--config", f"results_dir={res}", f"data_dir={data}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_changed_dataset_entry_reingests_only_that_dataset(quick_run, tmp_path):
    """Changing a dataset's config entry (here align_images) reruns its ingest and what follows."""
    import yaml

    res, data = quick_run["results"], quick_run["data"]
    cfg = yaml.safe_load((ROOT / "configs" / "quick.yaml").read_text())
    cfg["datasets"]["isbi2012"]["align_images"] = False
    changed = tmp_path / "quick_unaligned.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    proc = snakemake(["-n", "--cores", "2", "--configfile", str(changed),
                      "--config", f"results_dir={res}", f"data_dir={data}"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    ingest_jobs = [b for b in out.split("rule ")[1:] if b.startswith("ingest")]
    assert len(ingest_jobs) == 1 and "dataset=isbi2012" in ingest_jobs[0], out[-3000:]
    assert "Fluo-N2DH-GOWT1/meta.json" not in ingest_jobs[0]
    # the unchanged config is still up to date (the dry run ran no job; it only rewrote
    # config.resolved.yaml, which is a parameter, not an input, of the rules)
    test_rerun_is_a_noop(quick_run)


def test_default_config_dag_and_missing_hela_message(tmp_path):
    proc = snakemake(["-n", "--cores", "8", "--config", f"results_dir={tmp_path / 'r'}",
                      f"data_dir={tmp_path / 'd'}"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    # HeLa is not on this machine: one clear message that says where to put it and where it comes from
    assert "SKIPPING dataset DIC-C2DH-HeLa" in out
    assert "celltrackingchallenge.net" in out
    for rule in ("ingest", "weights", "augment", "pretrain", "train", "predict", "calibrate", "score",
                 "leaderboard"):
        assert f"rule {rule}" in out or f"{rule} " in out


def test_paper_config_resolves(tmp_path):
    proc = snakemake(["-n", "--cores", "8", "--configfile", "configs/paper.yaml",
                      "--config", f"results_dir={tmp_path / 'r'}", f"data_dir={tmp_path / 'd'}"])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "unet-paper" in proc.stdout + proc.stderr


def test_lint_is_clean():
    proc = snakemake(["--lint"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in out


def test_unknown_config_key_stops_before_any_job(tmp_path):
    proc = snakemake(["-n", "--cores", "1", "--configfile", "configs/quick.yaml",
                      "--config", "trian={}", f"results_dir={tmp_path}"])
    assert proc.returncode != 0
    assert "config: trian: unknown key (allowed: augment," in proc.stdout + proc.stderr
    assert not list(tmp_path.glob("*/*")), "no job may have written anything"
