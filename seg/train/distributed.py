"""Distributed data parallel (DDP) set-up: process environment, launch commands, process group.

Three ways a training process learns its rank:

1. ``torchrun`` (``seg train --nproc N`` launches it; or a SLURM allocation runs one torchrun per
   node): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``.
2. ``srun`` with one task per GPU: ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID``;
   the rendezvous host is the first host of ``SLURM_JOB_NODELIST`` and the port derives from the job id.
   (Only an srun step counts: an sbatch script itself runs as one process.)
3. Neither: a single process (rank 0 of 1).

:func:`slurm_launch_command` builds the command line for a multi-node allocation (pure function of
the environment, tested with a faked one). The backend is nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from typing import Mapping, Sequence

from seg.errors import SegError

DEFAULT_PORT = 29500


@dataclass(frozen=True)
class DistEnv:
    """This process's place in the job: global rank, world size, rank on its node, rendezvous."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    source: str = "single"  # single | torchrun | slurm

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int(environ: Mapping[str, str], key: str) -> int:
    try:
        return int(environ[key])
    except ValueError:
        raise SegError(f"environment {key}={environ[key]!r}: expected an integer") from None


def dist_env_from_environ(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Rank and world size from torchrun's variables, else from an srun step's SLURM variables."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(
            rank=_int(env, "RANK"),
            world_size=_int(env, "WORLD_SIZE"),
            local_rank=_int(env, "LOCAL_RANK") if "LOCAL_RANK" in env else 0,
            master_addr=env.get("MASTER_ADDR"),
            master_port=int(env["MASTER_PORT"]) if env.get("MASTER_PORT") else None,
            source="torchrun",
        )
    if "SLURM_PROCID" in env and "SLURM_STEP_NUM_TASKS" in env and _int(env, "SLURM_STEP_NUM_TASKS") > 1:
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
        if not nodelist:
            raise SegError("environment SLURM_JOB_NODELIST: missing in an srun step with several tasks")
        return DistEnv(
            rank=_int(env, "SLURM_PROCID"),
            world_size=_int(env, "SLURM_STEP_NUM_TASKS"),
            local_rank=_int(env, "SLURM_LOCALID") if "SLURM_LOCALID" in env else 0,
            master_addr=expand_nodelist(nodelist)[0],
            master_port=slurm_port(env),
            source="slurm",
        )
    return DistEnv()


def slurm_port(environ: Mapping[str, str], base: int = DEFAULT_PORT) -> int:
    """A rendezvous port derived from ``SLURM_JOB_ID`` (so two jobs sharing a node do not collide)."""
    job = environ.get("SLURM_JOB_ID", "0")
    return base + (int(job) % 1000 if job.isdigit() else 0)


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand a SLURM host list: ``"gpu[01-03,07],cpu5"`` -> ``["gpu01", "gpu02", "gpu03", "gpu07", "cpu5"]``.

    Zero padding of ranges is kept; several bracket groups in one name (``"r[1-2]n[1-2]"``) expand
    as a product, in SLURM's order.
    """
    hosts: list[str] = []
    for item in re.findall(r"(?:[^,\[]+|\[[^\]]*\])+", nodelist.strip()):
        expanded = [""]
        for literal, group in re.findall(r"([^\[]*)(?:\[([^\]]*)\])?", item):
            if not literal and not group:
                continue
            choices = [literal]
            if group:
                choices = [literal + v for v in _expand_range_group(group, nodelist)]
            expanded = [e + c for e in expanded for c in choices]
        hosts.extend(h for h in expanded if h)
    if not hosts:
        raise SegError(f"SLURM_JOB_NODELIST={nodelist!r}: no hosts")
    return hosts


def _expand_range_group(group: str, nodelist: str) -> list[str]:
    out = []
    for part in group.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            if not (lo.isdigit() and hi.isdigit()):
                raise SegError(f"SLURM_JOB_NODELIST={nodelist!r}: bad range {part!r}")
            out.extend(str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1))
        else:
            out.append(part)
    return out


def _per_node_count(value: str) -> int:
    """``"4"``, ``"a100:4"``, ``"4(x2)"``, ``"4,4"`` -> 4."""
    first = value.split(",")[0]
    m = re.search(r"(\d+)(?:\(x\d+\))?$", first)
    return int(m.group(1)) if m else 1


def slurm_processes_per_node(environ: Mapping[str, str]) -> int:
    """Processes per node for an allocation: GPUs per node if GPUs were allocated, else tasks per node."""
    for key in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE", "SLURM_NTASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        if environ.get(key):
            return max(1, _per_node_count(environ[key]))
    return 1


def slurm_launch_command(
    environ: Mapping[str, str],
    train_args: Sequence[str],
    *,
    python: str | None = None,
    port: int | None = None,
) -> list[str]:
    """The command that runs ``seg train <train_args>`` with DDP over a whole SLURM allocation.

    One ``torchrun`` per node (``srun --ntasks-per-node=1``), each starting one process per GPU (or
    per allocated task on CPU nodes), rendezvous (c10d) on the first host of the allocation.

    Args:
        environ: the allocation's environment (``SLURM_JOB_NODELIST``, ``SLURM_JOB_NUM_NODES``,
            ``SLURM_GPUS_ON_NODE``/``SLURM_GPUS_PER_NODE``/``SLURM_NTASKS_PER_NODE``, ``SLURM_JOB_ID``).
        train_args: arguments after ``seg train`` (without ``--nproc``).
        python: interpreter (default the current one).
        port: rendezvous port (default derived from the job id, see :func:`slurm_port`).

    Returns:
        argv list, e.g. ``["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", python, "-m",
        "torch.distributed.run", "--nnodes=2", "--nproc_per_node=4", "--rdzv_backend=c10d",
        "--rdzv_endpoint=gpu01:29542", "--rdzv_id=42", "-m", "seg.cli", "train", ...]``.

    Raises:
        SegError: not inside an allocation (no ``SLURM_JOB_NODELIST``).
    """
    nodelist = environ.get("SLURM_JOB_NODELIST") or environ.get("SLURM_NODELIST")
    if not nodelist:
        raise SegError("environment SLURM_JOB_NODELIST: not set (run this inside a SLURM allocation)")
    hosts = expand_nodelist(nodelist)
    nnodes = int(environ.get("SLURM_JOB_NUM_NODES") or environ.get("SLURM_NNODES") or len(hosts))
    nproc = slurm_processes_per_node(environ)
    port = slurm_port(environ) if port is None else port
    return [
        "srun",
        f"--nodes={nnodes}",
        f"--ntasks={nnodes}",
        "--ntasks-per-node=1",
        python or sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nnodes}",
        f"--nproc_per_node={nproc}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint={hosts[0]}:{port}",
        f"--rdzv_id={environ.get('SLURM_JOB_ID', 'seg')}",
        "-m",
        "seg.cli",
        "train",
        *train_args,
    ]


def torchrun_command(nproc: int, train_args: Sequence[str], *, python: str | None = None) -> list[str]:
    """The single-node command ``torchrun --standalone --nproc_per_node N -m seg.cli train ...``."""
    if nproc < 1:
        raise SegError(f"--nproc: must be >= 1, got {nproc}")
    return [
        python or sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        f"--nproc_per_node={nproc}",
        "-m",
        "seg.cli",
        "train",
        *train_args,
    ]


def init_process_group(env: DistEnv, device_type: str) -> None:
    """Join the process group (nccl on CUDA, gloo on CPU); no-op for a single process."""
    if not env.distributed:
        return
    import datetime

    import torch.distributed as dist

    if dist.is_initialized():
        return
    if env.master_addr:
        os.environ.setdefault("MASTER_ADDR", env.master_addr)
    if env.master_port:
        os.environ.setdefault("MASTER_PORT", str(env.master_port))
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(
        backend, rank=env.rank, world_size=env.world_size, timeout=datetime.timedelta(minutes=30)
    )


def destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        import torch.distributed as dist

        dist.barrier()


def all_gather_object(env: DistEnv, obj):
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` for a single process)."""
    if not env.distributed:
        return [obj]
    import torch.distributed as dist

    out = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out
