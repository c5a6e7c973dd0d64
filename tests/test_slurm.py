"""The workflow on a real one-node SLURM cluster (munge + slurmctld + slurmd from Debian).

Runs configs/quick.yaml through `--workflow-profile profiles/slurm` with the GPU requests switched
off (CPU-only cluster), checks that every job went through sbatch, that metrics and the leaderboard
equal those of the local run of the same config, and that a failing job fails the workflow.
Needs root (installs packages, starts daemons); fails loudly when that is not possible.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, snakemake

pytestmark = pytest.mark.slurm
CLUSTER = ROOT / "tests" / "slurm" / "cluster.sh"
# A CPU-only cluster: no GPU requests, 2 threads (the node has 2 CPUs), small memory.
CPU_CLUSTER = [
    "--default-resources", "slurm_partition=debug", "mem_mb=1500", "runtime=30",
    "--set-resources", "train:gpu=0", "pretrain:gpu=0", "predict:gpu=0",
    "--set-threads", "train=2", "pretrain=2", "predict=2",
    "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "5",
    "--jobs", "2", "--latency-wait", "10",
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


def test_quick_config_on_slurm_matches_local_run(cluster, quick_run, tmp_path):
    res, data = tmp_path / "results", tmp_path / "data"
    proc = snakemake([
        "--workflow-profile", "profiles/slurm", "--configfile", "configs/quick.yaml",
        "--config", f"results_dir={res}", f"data_dir={data}", *CPU_CLUSTER,
    ])
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    # every job except the local leaderboard rule went through sbatch: ids in the log and in slurmctld's
    ids = re.findall(r"SLURM jobid (\d+)|external jobid '(\d+)'|jobid (\d+)", log)
    ids = {next(x for x in t if x) for t in ids}
    assert len(ids) >= 15, f"expected a SLURM job per rule instance, found ids {sorted(ids)}"
    ctld = Path("/var/log/slurm/slurmctld.log").read_text()
    for jid in ids:
        assert f"JobId={jid}" in ctld, f"job {jid} not in slurmctld's log"
    # same results as the local run of the same config
    local = quick_run["results"]
    for m_local in local.glob("*/*/metrics.json"):
        rel = m_local.relative_to(local)
        a = json.loads(m_local.read_text())["aggregate"]
        b = json.loads((res / rel).read_text())["aggregate"]
        assert a == b, f"{rel}: SLURM run differs from the local run"
    lr, sr = _rows(local / "leaderboard.csv"), _rows(res / "leaderboard.csv")
    assert lr.keys() == sr.keys()
    for k in lr:
        assert lr[k]["iou_mean"] == sr[k]["iou_mean"]
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
