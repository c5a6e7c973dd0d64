"""Resume: a run SIGKILLed mid-way and rerun ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

TOTAL = 150  # long enough that the kill lands mid-run even on a fast machine


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    env["OMP_NUM_THREADS"] = "1"  # tiny models: threads only add contention on a shared 2-core machine
    return env


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from toydata import tiny_config, write_blob_dataset

    root = tmp_path_factory.mktemp("resume")
    write_blob_dataset(root / "data" / "toy", seed=5, splits=(4, 0, 1))  # no val split: no validation cost
    cfg = tiny_config(params={"base_channels": 8, "depth": 2, "padding": "same"}, train={
        "iterations": TOTAL, "batch_size": 4, "patch_size": 48, "checkpoint_every": 10, "log_every": 1,
        "val_every": 1000, "num_workers": 1, "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.99},
        "schedule": {"name": "onecycle"}, "loss": {"name": "wce"}})
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return root


def _cmd(root: Path, out: str) -> list[str]:
    return [sys.executable, "-m", "seg.cli", "train", "--config", str(root / "cfg.yaml"), "--dataset", "toy",
            "--variant", "tiny", "--out", str(root / out), "--data-dir", str(root / "data"), "--device", "cpu"]


def _iteration(path: Path) -> int:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["iteration"])
    except Exception:
        return -1


def test_sigkill_then_rerun_matches_uninterrupted_run(setup):
    root = setup
    ref = subprocess.run(_cmd(root, "ref"), env=_env(), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]

    proc = subprocess.Popen(_cmd(root, "run"), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = root / "run" / "checkpoints" / "last.pt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not (last.is_file() and _iteration(last) >= 10):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (root / "run" / "train_summary.json").exists()
    killed_at = _iteration(last)
    assert 10 <= killed_at < TOTAL

    resumed = subprocess.run(_cmd(root, "run"), env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    m = re.search(r"resuming .* from iteration (\d+)/(\d+)", resumed.stdout)
    assert m and int(m.group(1)) == killed_at and int(m.group(2)) == TOTAL, resumed.stdout

    a = torch.load(root / "ref/checkpoints/last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["iteration"] == b["iteration"] == TOTAL
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for pid, st in a["optimizer"]["state"].items():
        assert torch.equal(st["momentum_buffer"], b["optimizer"]["state"][pid]["momentum_buffer"])
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == TOTAL
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])

    # the log has each step exactly once, with the same losses as the uninterrupted run
    def losses(folder):
        with open(root / folder / "train_log.csv") as f:
            return [(int(r["iteration"]), r["loss"]) for r in csv.DictReader(f)]

    assert losses("run") == losses("ref") and [i for i, _ in losses("run")] == list(range(1, TOTAL + 1))

    # complete budget: rerunning is a no-op
    again = subprocess.run(_cmd(root, "run"), env=_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert torch.load(last, weights_only=True)["iteration"] == TOTAL


def test_changed_config_starts_afresh(setup, tmp_path):
    """A last.pt from another config (here another budget) is not resumed from."""
    from seg.settings import load_config
    from seg.train.loop import train

    cfg = load_config(setup / "cfg.yaml")
    cfg["train"]["num_workers"] = 0
    train(cfg, "toy", "tiny", tmp_path / "o", data_dir=setup / "data", iterations=2)
    s = train(cfg, "toy", "tiny", tmp_path / "o", data_dir=setup / "data", iterations=3)
    assert s["iterations"] == 3
    with open(tmp_path / "o/train_log.csv") as f:
        assert [int(r["iteration"]) for r in csv.DictReader(f)] == [1, 2, 3]
