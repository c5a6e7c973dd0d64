"""The Snakemake workflow end to end: one small real run (configs/quick.yaml), reruns after config
changes (exactly the jobs that read a changed setting), no writes at parse time, the DAG of the
default config, lint, and config errors that stop the run before any job starts."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, path_without_project_python, snakemake


def test_quick_workflow_end_to_end(quick_run):
    res, data = quick_run["results"], quick_run["data"]
    # it ran through .venv/bin/snakemake with no project Python on PATH (conftest.snakemake)
    on_path = shutil.which("python", path=path_without_project_python())
    assert on_path is None or Path(on_path).parent.resolve() != Path(sys.executable).parent.resolve()
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
    # the results paths they print are relative to the results folder (shareable across machines)
    md = (res / "leaderboard.md").read_text()
    assert "`isbi2012/unet-same/metrics.json`" in md and "<td>isbi2012/unet-same/metrics.json</td>" in html
    assert "with config <code>config.resolved.yaml</code>" in html
    printed = (md, html[:html.index('<section id="settings">')], str(rows))  # not the config as given
    assert not any(str(res) in doc or str(res.resolve()) in doc for doc in printed)
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
    # the unchanged config is still up to date (the dry run wrote nothing)
    test_rerun_is_a_noop(quick_run)


def test_default_config_dag_and_missing_dataset_message(tmp_path, shared_data):
    # a raw folder with ISBI 2012 only: the CTC datasets are neither here nor downloadable
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "isbi2012").symlink_to(shared_data / "isbi2012")
    proc = snakemake(["-n", "--cores", "8", "--config", f"results_dir={tmp_path / 'r'}",
                      f"data_dir={tmp_path / 'd'}"], env_extra={"SEG_RAW_ROOT": str(raw)})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    # one clear message per missing dataset: what is missing, where to put it, where it comes from
    assert "SKIPPING dataset DIC-C2DH-HeLa" in out and "SKIPPING dataset Fluo-N2DH-GOWT1" in out
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


# ----------------------------------------------------------------------------- reruns after changes
def _planned_jobs(out: str) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run plans, e.g. ("train", "dataset=isbi2012, variant=unet")."""
    jobs = set()
    for block in re.split(r"^(?:local)?rule ", out, flags=re.M)[1:]:
        rule = block.split(":", 1)[0].strip()
        m = re.search(r"^\s+wildcards: (.*)$", block, flags=re.M)
        jobs.add((rule, m.group(1).strip() if m else ""))
    return jobs


@pytest.fixture(scope="module")
def rerun_base(quick_run, tmp_path_factory) -> dict:
    """The quick run's config as one file (configs/quick.yaml with the run's results_dir and
    data_dir), whose settings the rerun tests change one at a time and plan with dry runs against
    the quick run's results (which they leave as they are)."""
    cfg = yaml.safe_load((ROOT / "configs" / "quick.yaml").read_text())
    cfg.update(results_dir=str(quick_run["results"]), data_dir=str(quick_run["data"]))
    return {"config": cfg, "base": tmp_path_factory.mktemp("rerun"), "results": quick_run["results"],
            "data": quick_run["data"]}


def _changed(run: dict, name: str, section: str, key: str, value) -> Path:
    cfg = json.loads(json.dumps(run["config"]))
    cfg.setdefault(section, {})[key] = value
    path = run["base"] / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _dry_run(config: Path) -> set[tuple[str, str]]:
    proc = snakemake(["-n", "--cores", "2", "--configfile", str(config)])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return _planned_jobs(out)


ISBI, GOWT1 = "dataset=isbi2012", "dataset=Fluo-N2DH-GOWT1"
# the quick run's (dataset, variant) runs
UNET, VALID, INHOUSE = (f"{ISBI}, variant={v}" for v in ("unet-same", "unet-valid", "unet-resnet18-inhouse"))
GOWT1_UNET = f"{GOWT1}, variant=unet-same"


def _downstream_of_training(*variants: str) -> set[tuple[str, str]]:
    """The jobs that follow a retrained variant: its val and test predictions, calibration, score."""
    jobs = set()
    for v in variants:
        jobs |= {("train", v), ("predict", f"{v}, split=val"), ("predict", f"{v}, split=test"),
                 ("calibrate", v), ("score", v)}
    return jobs


def _handing_on(*datasets: str) -> set[tuple[str, str]]:
    """A rescored dataset re-packages its best run and exports it again (pipeline/export.smk)."""
    return {job for ds in datasets for job in (("package", ds), ("export", f"{ds}, format=torchscript"),
                                               ("export", f"{ds}, format=onnx"), ("bioimageio", ds))}


@pytest.mark.parametrize("key, value", [("w0", 3.0), ("sigma", 2.0)])
def test_changed_border_weights_rerun_weights_and_all_training(rerun_base, key, value):
    planned = _dry_run(_changed(rerun_base, f"weights_{key}", "weights", key, value))
    expected = ({("weights", ds) for ds in (ISBI, GOWT1)} | {("augment", ds) for ds in (ISBI, GOWT1)}
                | {("leaderboard", ""), ("all", "")} | _handing_on(ISBI, GOWT1))
    # every variant of both datasets retrains; not ingest, not pretrain
    assert planned == expected | _downstream_of_training(UNET, VALID, INHOUSE, GOWT1_UNET)


def test_changed_pretraining_reruns_only_the_pretrained_variant(rerun_base):
    planned = _dry_run(_changed(rerun_base, "pretrain", "pretrain", "iterations", 3))
    expected = {("pretrain", f"{ISBI}, encoder=resnet18"), ("leaderboard", ""), ("all", "")} | _handing_on(ISBI)
    # the scratch U-Nets are not retrained, GOWT1 is not re-packaged
    assert planned == expected | _downstream_of_training(INHOUSE)


def test_changed_postprocessing_reruns_predictions_not_training(rerun_base):
    planned = _dry_run(_changed(rerun_base, "postprocess", "postprocess", "min_size", 7))
    isbi = (UNET, VALID, INHOUSE)
    # the ISBI variants are not retrained; GOWT1's is: CTC validation scores the SEG of the
    # post-processed instances, so min_size can change its best checkpoint (seg.settings.step_settings)
    assert planned == (_downstream_of_training(*isbi) - {("train", v) for v in isbi}
                       | _downstream_of_training(GOWT1_UNET)
                       | {("leaderboard", ""), ("all", "")} | _handing_on(ISBI, GOWT1))


def _tree_state(*folders: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size)
            for f in folders for p in sorted(f.rglob("*"))}


def test_dry_run_and_lint_write_nothing(rerun_base):
    """`-n` and `--lint` with a changed config leave results/ (config.resolved.yaml included) as they were."""
    before = _tree_state(rerun_base["results"], rerun_base["data"])
    resolved = (rerun_base["results"] / "config.resolved.yaml").read_text()
    changed = _changed(rerun_base, "lint_w0", "weights", "w0", 4.0)
    assert _dry_run(changed)
    proc = snakemake(["--lint", "--configfile", str(changed)])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert _tree_state(rerun_base["results"], rerun_base["data"]) == before
    assert (rerun_base["results"] / "config.resolved.yaml").read_text() == resolved
    assert "w0: 10.0" in resolved


@pytest.fixture
def weights_run(tmp_path) -> dict:
    """The ISBI weight maps of configs/quick.yaml, made by a real run of the workflow for just that
    target (ingest, weights) in a folder of its own, so that rerunning them with another config
    changes no other test's run."""
    cfg = yaml.safe_load((ROOT / "configs" / "quick.yaml").read_text())
    cfg.update(results_dir=str(tmp_path / "results"), data_dir=str(tmp_path / "data"))
    run = {"config": cfg, "base": tmp_path, "results": tmp_path / "results", "data": tmp_path / "data"}
    (tmp_path / "quick.yaml").write_text(yaml.safe_dump(cfg))
    target = run["data"] / "isbi2012" / "weights" / "class_weights.json"
    proc = snakemake([str(target), "--cores", "2", "--configfile", str(tmp_path / "quick.yaml")])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return run


def test_changed_w0_regenerates_the_weight_maps(weights_run):
    """Running the workflow with a changed w0 rewrites the maps (not just the plan) and the resolved
    config the jobs read."""
    import tifffile

    data, res = weights_run["data"] / "isbi2012", weights_run["results"]
    old = tifffile.imread(data / "weights" / "train_00.tif")
    assert "w0: 10.0" in (res / "config.resolved.yaml").read_text()
    changed = _changed(weights_run, "weights_w0_run", "weights", "w0", 3.0)
    proc = snakemake([str(data / "weights" / "class_weights.json"), "--cores", "2", "--configfile", str(changed)])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    # Snakemake reran the weights job for the changed setting (params), not the ingest
    jobs = _planned_jobs(proc.stdout + proc.stderr)
    assert jobs == {("weights", ISBI)}, jobs
    new = tifffile.imread(data / "weights" / "train_00.tif")
    assert json.loads((data / "weights" / "class_weights.json").read_text())["w0"] == 3.0
    assert new.shape == old.shape and not (new == old).all()
    # the border term shrank with w0 (same class weights, w0 10 -> 3)
    assert new.max() < old.max()
    assert "w0: 3.0" in (res / "config.resolved.yaml").read_text()


# ----------------------------------------------------------------------------- configs side by side
def test_second_config_sharing_data_dir_leaves_the_first_up_to_date(tmp_path):
    """Two configs with one data_dir and their own results_dir, differing in a variant setting: the
    second run makes only its own jobs (train, predict, score, leaderboard; the data jobs are the
    first run's), and then neither config plans anything. A job's identity is its params.hash and
    its inputs, not the path of the resolved config, which lies in each results_dir and which the
    jobs are still given (pipeline/common.smk). Tiny: a synthetic ISBI-like stack of six 64 px
    slices and the toy U-Net of tests/toydata.py (~40 s on 2 cores)."""
    from toydata import tiny_config

    from seg.data.synth import write_synth

    raw = write_synth(tmp_path / "raw", kind="isbi", seed=0, size=64, slices=6)
    data = tmp_path / "data"

    def config(name: str, base_channels: int) -> tuple[Path, list[str]]:
        cfg = tiny_config("toy")
        cfg["datasets"]["toy"].update(raw_dir=str(raw), split={"by": "slices", "train": "0-3", "val": "4", "test": "5"})
        cfg["variants"]["tiny"]["params"]["base_channels"] = base_channels
        cfg["postprocess"]["calibrate"] = False  # fewer jobs; the test is about the data jobs
        cfg.update(data_dir=str(data), results_dir=str(tmp_path / f"results-{name}"))
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        # the leaderboard (ingest, weights, train, predict, score) and the augmentation preview
        return path, [str(tmp_path / f"results-{name}" / "leaderboard.csv"), str(data / "toy" / "augmented")]

    def run(name: str, base_channels: int, *extra: str) -> tuple[set[tuple[str, str]], str]:
        path, targets = config(name, base_channels)
        proc = snakemake([*targets, *extra, "--cores", "2", "--configfile", str(path)])
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        return _planned_jobs(out), out

    ran_a, _ = run("a", 4)
    assert {rule for rule, _ in ran_a} == {"ingest", "weights", "augment", "train", "predict", "score", "leaderboard"}
    meta = data / "toy" / "meta.json"
    made = {p: p.stat().st_mtime_ns for p in (meta, data / "toy" / "weights" / "class_weights.json")}
    ran_b, out_b = run("b", 6)
    toy = "dataset=toy, variant=tiny"
    assert ran_b == {("train", toy), ("predict", f"{toy}, split=test"), ("score", toy), ("leaderboard", "")}, out_b[-3000:]
    assert {p: p.stat().st_mtime_ns for p in made} == made  # the data jobs did not run again
    # B's jobs read B's resolved config (its own U-Net width), A's results are A's
    res_a, res_b = tmp_path / "results-a", tmp_path / "results-b"
    assert f"--config {res_b / 'config.resolved.yaml'}" in out_b
    assert "base_channels: 6" in (res_b / "config.resolved.yaml").read_text()
    assert "base_channels: 4" in (res_a / "config.resolved.yaml").read_text()
    params = [json.loads((r / "toy" / "tiny" / "train_summary.json").read_text())["params"] for r in (res_a, res_b)]
    assert params[0] < params[1]
    # then neither config plans anything: A's results are not older than the data they were made from
    for name, width in (("a", 4), ("b", 6)):
        planned, out = run(name, width, "-n")
        assert planned == set() and "Nothing to be done" in out, out[-3000:]
