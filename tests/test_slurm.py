"""The workflow on a real one-node SLURM cluster (munge + slurmctld + slurmd from Debian).

Runs configs/quick.yaml, cut to one dataset and one variant plus the in-house pretraining (so every
rule of the workflow runs once), through `--workflow-profile profiles/slurm` with the GPU requests
switched off (CPU-only cluster); checks that every job went through sbatch, that metrics, the
leaderboard row and the pretrained encoder equal those of the local run of the full quick config
(tests/conftest.py, quick_run), and that a failing job fails the workflow. Needs root (installs
packages, starts daemons); fails loudly when that is not possible.

The SLURM run starts in the background before the local run it is compared with is made, so that
the two overlap: much of the SLURM run's time is spent waiting (job start-ups, status polls).
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, snakemake, snakemake_command

pytestmark = pytest.mark.slurm
CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"
# A CPU-only cluster: no GPU requests, 2 threads (the node has 2 CPUs), small memory.
CPU_CLUSTER = [
    "--default-resources", "slurm_partition=debug", "mem_mb=1500", "runtime=30",
    "--set-resources", "train:gpu=0", "pretrain:gpu=0", "predict:gpu=0",
    "--set-threads", "train=2", "pretrain=2", "predict=2",
    # job states from squeue (no accounting here), polled every second while jobs keep finishing
    # (the plugin adds 10 s to the interval after each poll that finds none finished, so a short
    # start value is what keeps the wait for a finished job short)
    "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
    # ready jobs wait in SLURM's queue (not in Snakemake's), so the node starts the next one the
    # moment CPUs free up; the node runs at most two at a time
    "--jobs", "6", "--latency-wait", "10",
]


@pytest.fixture(scope="module")
def cluster():
    proc = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"could not start the local SLURM cluster:\n{proc.stdout}\n{proc.stderr}")
    yield
    subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True, text=True, timeout=120)


def _rows(path: Path) -> dict:
    with open(path) as f:
        return {(r["dataset"], r["variant"]): r for r in csv.DictReader(f)}


# Every rule of the workflow, each once: the quick config's ISBI U-Net (ingest, weights, augment,
# train, predict val and test, calibrate, score, leaderboard, package, the exports) and, as an extra
# target, the in-house pretraining of the ResNet-18 encoder that the quick config's
# unet-resnet18-inhouse variant trains from. Every job but the leaderboard (a local rule) goes
# through sbatch.
SLURM_DATASET, SLURM_VARIANT, SLURM_ENCODER = "isbi2012", "unet-same", "resnet18"
SLURM_RULES = {"ingest", "weights", "augment", "pretrain", "train", "predict", "calibrate", "score", "package",
               "export", "bioimageio"}


@pytest.fixture(scope="module")
def slurm_quick_run(cluster, tmp_path_factory):
    """The SLURM run (see SLURM_RULES), started in the background: the test waits for it.

    Yields {"proc": Popen, "log": Path (its stdout and stderr), "results": Path, "data": Path}; a
    run still going at teardown is stopped (Snakemake cancels its SLURM jobs)."""
    import yaml

    base = tmp_path_factory.mktemp("slurm_quick")
    res, data, log = base / "results", base / "data", base / "snakemake.log"
    cfg = yaml.safe_load((ROOT / "configs" / "quick.yaml").read_text())
    cfg["datasets"] = {SLURM_DATASET: cfg["datasets"][SLURM_DATASET]}
    cfg["variants"] = {SLURM_VARIANT: cfg["variants"][SLURM_VARIANT]}
    cfg.update(results_dir=str(res), data_dir=str(data))
    (base / "slurm.yaml").write_text(yaml.safe_dump(cfg))
    encoder = res / SLURM_DATASET / "pretrain" / SLURM_ENCODER / "encoder.pt"
    cmd, env = snakemake_command([
        "all", str(encoder), "--workflow-profile", "profiles/slurm", "--configfile", str(base / "slurm.yaml"),
        *CPU_CLUSTER,
    ])
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    yield {"proc": proc, "log": log, "results": res, "data": data}
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _job_counts(log: str) -> dict[str, int]:
    """Snakemake's "Job stats" table of a run: {rule: number of jobs}."""
    table = log[log.index("Job stats:"):].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def test_quick_config_on_slurm_matches_local_run(slurm_quick_run, request):
    import torch

    # the local run is made (or taken from the session) while the SLURM run goes on
    quick_run = request.getfixturevalue("quick_run")
    returncode = slurm_quick_run["proc"].wait(timeout=1800)
    res = slurm_quick_run["results"]
    log = slurm_quick_run["log"].read_text()
    assert returncode == 0, log[-6000:]
    # every job except the local leaderboard rule went through sbatch: ids in the log and in slurmctld's
    ids = re.findall(r"SLURM jobid (\d+)|external jobid '(\d+)'|jobid (\d+)", log)
    ids = {next(x for x in t if x) for t in ids}
    counts = _job_counts(log)
    assert set(counts) == SLURM_RULES | {"leaderboard", "all"}, counts
    n_sbatch = sum(n for rule, n in counts.items() if rule not in ("leaderboard", "all"))
    assert len(ids) == n_sbatch, f"expected a SLURM job per rule instance ({n_sbatch}), found ids {sorted(ids)}"
    submitted = set(re.findall(r"submitted with SLURM jobid \d+ \(log: \S*/rule_(\w+)/", log))
    assert submitted == SLURM_RULES, submitted
    ctld = Path("/var/log/slurm/slurmctld.log").read_text()
    for jid in ids:
        assert f"JobId={jid}" in ctld, f"job {jid} not in slurmctld's log"
    # same results as the local run of the same config
    local = quick_run["results"]
    rel = Path(SLURM_DATASET) / SLURM_VARIANT / "metrics.json"
    a = json.loads((local / rel).read_text())["aggregate"]
    b = json.loads((res / rel).read_text())["aggregate"]
    assert a == b, f"{rel}: SLURM run differs from the local run"
    assert [p.relative_to(res) for p in res.glob("*/*/metrics.json")] == [rel]
    lr, sr = _rows(local / "leaderboard.csv"), _rows(res / "leaderboard.csv")
    assert sr.keys() == {(SLURM_DATASET, SLURM_VARIANT)} and sr.keys() <= lr.keys()
    for k in sr:
        assert lr[k]["iou_mean"] == sr[k]["iou_mean"]
    enc = Path(SLURM_DATASET) / "pretrain" / SLURM_ENCODER / "encoder.pt"
    ea, eb = (torch.load(r / enc, map_location="cpu", weights_only=True) for r in (local, res))
    assert ea.keys() == eb.keys() and all(torch.equal(ea[k], eb[k]) for k in ea), "pretrained encoders differ"
    assert (res / "report.html").is_file()


def test_failing_job_fails_the_workflow(cluster, tmp_path, shared_data):
    raw = tmp_path / "raw" / "isbi2012"
    raw.mkdir(parents=True)
    for name in ("train-volume.tif", "train-labels.tif", "test-volume.tif"):
        (raw / name).write_bytes((shared_data / "isbi2012" / name).read_bytes()[:5000])  # truncated
    proc = snakemake([
        "--workflow-profile", "profiles/slurm", "--configfile", "configs/quick.yaml",
        "--config", f"results_dir={tmp_path / 'r'}", f"data_dir={tmp_path / 'd'}",
        f"raw_root={tmp_path / 'raw'}", "--retries", "0", *CPU_CLUSTER,
    ], env_extra={"SEG_RAW_ROOT": str(tmp_path / "raw")})
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert re.search(r"Error in rule ingest", log), log[-3000:]
    assert not (tmp_path / "d" / "isbi2012" / "meta.json").exists()
