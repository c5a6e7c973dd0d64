"""DDP: process environment (torchrun / SLURM), launch commands, and a real 2-process gloo run."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from seg.errors import SegError
from seg.train.distributed import (
    dist_env_from_environ,
    expand_nodelist,
    slurm_launch_command,
    slurm_processes_per_node,
    torchrun_command,
)



@pytest.mark.parametrize(
    "nodelist, hosts",
    [
        ("gpu01", ["gpu01"]),
        ("gpu[01-03,07]", ["gpu01", "gpu02", "gpu03", "gpu07"]),
        ("a[8-10],b5", ["a8", "a9", "a10", "b5"]),
        ("node[001-002]-ib,login", ["node001-ib", "node002-ib", "login"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ],
)
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


def test_slurm_launch_command_two_nodes_four_gpus():
    env = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_GPUS_ON_NODE": "4",
        "SLURM_NTASKS_PER_NODE": "1",
    }
    cmd = slurm_launch_command(env, ["--config", "c.yaml", "--dataset", "isbi2012", "--variant", "unet"],
                               python="/venv/bin/python")
    assert cmd[0] == "srun"
    assert "--nodes=2" in cmd and "--ntasks-per-node=1" in cmd
    i = cmd.index("/venv/bin/python")
    assert cmd[i + 1 : i + 3] == ["-m", "torch.distributed.run"]
    assert "--nnodes=2" in cmd and "--nproc_per_node=4" in cmd
    assert "--rdzv_backend=c10d" in cmd
    assert "--rdzv_endpoint=gpu07:29742" in cmd  # first host, port 29500 + job id % 1000
    assert "--rdzv_id=4242" in cmd
    assert cmd[-9:] == ["-m", "seg.cli", "train", "--config", "c.yaml", "--dataset", "isbi2012", "--variant", "unet"]
    assert "--nproc" not in " ".join(cmd[cmd.index("seg.cli"):])


def test_slurm_launch_gpus_per_node_with_type_and_cpu_tasks():
    assert slurm_processes_per_node({"SLURM_GPUS_PER_NODE": "a100:8"}) == 8
    assert slurm_processes_per_node({"SLURM_TASKS_PER_NODE": "2(x3)"}) == 2
    assert slurm_processes_per_node({}) == 1
    cmd = slurm_launch_command({"SLURM_NODELIST": "c[1-3]", "SLURM_NNODES": "3", "SLURM_NTASKS_PER_NODE": "2"}, [])
    assert "--nnodes=3" in cmd and "--nproc_per_node=2" in cmd and "--rdzv_endpoint=c1:29500" in cmd


def test_slurm_launch_outside_allocation_fails():
    with pytest.raises(SegError, match="SLURM_JOB_NODELIST"):
        slurm_launch_command({}, [])


def test_dist_env_torchrun_srun_and_plain():
    e = dist_env_from_environ({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    assert (e.rank, e.world_size, e.local_rank, e.source, e.distributed) == (3, 8, 1, "torchrun", True)
    srun = {"SLURM_PROCID": "5", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1",
            "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_JOB_ID": "17"}
    e = dist_env_from_environ(srun)
    assert (e.rank, e.world_size, e.local_rank, e.master_addr, e.master_port) == (5, 8, 1, "gpu01", 29517)
    # torchrun inside an srun step wins (its RANK/WORLD_SIZE describe the real process group)
    assert dist_env_from_environ({**srun, "RANK": "0", "WORLD_SIZE": "2"}).world_size == 2
    # an sbatch script (no srun step) is a single process even with several allocated tasks
    batch = {"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_NODELIST": "gpu01", "SLURM_JOB_ID": "17"}
    assert not dist_env_from_environ(batch).distributed
    assert not dist_env_from_environ({}).distributed


def test_torchrun_command():
    cmd = torchrun_command(2, ["--dataset", "d"], python="py")
    assert cmd[:3] == ["py", "-m", "torch.distributed.run"] and "--nproc_per_node=2" in cmd and "--standalone" in cmd
    with pytest.raises(SegError):
        torchrun_command(0, [])


def test_print_slurm_launch_cli(monkeypatch, capsys):
    from seg.cli import main

    monkeypatch.setenv("SLURM_JOB_NODELIST", "n[1-2]")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "4")
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert main(["train", "--dataset", "d", "--variant", "v", "--print-slurm-launch"]) == 0
    cmd = shlex.split(capsys.readouterr().out)
    assert "--nproc_per_node=4" in cmd and "--rdzv_endpoint=n1:29507" in cmd and cmd[-4:] == ["--dataset", "d", "--variant", "v"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    env["OMP_NUM_THREADS"] = "1"
    p = subprocess.run([sys.executable, "-m", "seg.cli", "train", *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def test_ddp_two_processes_gloo(tmp_path):
    """2 ranks x batch 2 on CPU: identical weights on both ranks, effective batch 4, and the same
    weights (up to float reduction order) as one process with batch 4 (same patches by design)."""
    from seg.io import read_json
    from toydata import tiny_config, write_blob_dataset

    write_blob_dataset(tmp_path / "data" / "toy", seed=1, splits=(4, 0, 1))  # no val: no MONAI import
    # fp32 (amp none): the comparison below is exact up to reduction order on every CPU kind
    base = {"iterations": 4, "checkpoint_every": 2, "val_every": 4, "loss": {"name": "ce"}, "num_workers": 0,
            "amp": "none"}
    for name, batch in (("ddp", 2), ("single", 4)):
        cfg = tiny_config(train={**base, "batch_size": batch})
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    common = ["--dataset", "toy", "--variant", "tiny", "--data-dir", str(tmp_path / "data"), "--device", "cpu"]
    _run(["--config", str(tmp_path / "ddp.yaml"), "--out", str(tmp_path / "ddp"), "--nproc", "2", *common], tmp_path)
    _run(["--config", str(tmp_path / "single.yaml"), "--out", str(tmp_path / "single"), *common], tmp_path)

    s = read_json(tmp_path / "ddp" / "train_summary.json")
    assert s["world_size"] == 2 and s["batch_size"] == 2 and s["effective_batch_size"] == 4
    assert len(s["rank_param_sha256"]) == 2 and s["rank_param_sha256"][0] == s["rank_param_sha256"][1]
    assert s["iterations"] == 4
    one = read_json(tmp_path / "single" / "train_summary.json")
    assert one["world_size"] == 1 and one["effective_batch_size"] == 4
    a = torch.load(tmp_path / "ddp/checkpoints/last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "single/checkpoints/last.pt", weights_only=True)["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    # and training did move the weights (the comparison is not vacuous)
    from seg.models import build_model

    torch.manual_seed(0)
    init = build_model("unet", in_channels=1, classes=2, base_channels=4, depth=2, padding="same").state_dict()
    assert any(not torch.equal(init[k], a[k]) for k in a)
