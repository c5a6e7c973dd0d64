"""``seg train``: train one model variant on one dataset (resumable; DDP with ``--nproc``).

Only the standard library is imported at module level (``seg --help`` stays fast).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

from seg.cli import Command

DESCRIPTION = """Train a model variant on a dataset's training split (random augmented patches, the
loss/optimiser/schedule of the config's train section), validating on the val split.
Writes <out>/checkpoints/{last,best}.pt, <out>/train_log.csv and <out>/train_summary.json.
Rerunning the same command resumes from last.pt (also after SIGKILL) and is a no-op once
train_summary.json exists for the same config and seed.

Multi-process (DDP): `--nproc N` starts N processes on this node with torchrun; the effective batch
is N x train.batch_size. Under a SLURM allocation, `--print-slurm-launch` prints the srun + torchrun
line that trains over all allocated nodes and GPUs; processes started by srun with one task per GPU
(SLURM_PROCID / SLURM_STEP_NUM_TASKS) or by torchrun (RANK / WORLD_SIZE) join the job automatically."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="configs/config.yaml", help="workflow config YAML")
    p.add_argument("--dataset", required=True, help="dataset name (a key of the config's datasets)%(default).0s")
    p.add_argument("--variant", required=True, help="model variant name (a key of the config's variants)%(default).0s")
    p.add_argument("--out", default=None, help="output folder (default <results_dir>/<dataset>/<variant>)%(default).0s")
    p.add_argument("--data-dir", default=None, help="folder of canonical datasets (default: config data_dir, 'data')%(default).0s")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="training device (default: config train.device, 'auto' = CUDA if available)%(default).0s")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads per process (default: torch's default, all cores or OMP_NUM_THREADS)%(default).0s")
    p.add_argument("--pretrained", default=None,
                   help="encoder weights (.pt state dict, e.g. from seg pretrain) overriding the variant's "
                   "pretrained setting (default: the variant's setting)%(default).0s")
    p.add_argument("--pseudo", default=None,
                   help="seg pseudolabel folder of a variant with self_training: its slices train beside the "
                   "training split's (required for such a variant, refused otherwise)%(default).0s")
    p.add_argument("--nproc", type=int, default=1,
                   help="processes (GPUs) on this node; >1 launches torchrun with DDP")
    p.add_argument("--iterations", type=int, default=None,
                   help="override the budget in optimiser steps (default: config train.iterations/epochs)%(default).0s")
    p.add_argument("--print-slurm-launch", action="store_true",
                   help="print the srun/torchrun command for the current SLURM allocation and exit%(default).0s")


def forwarded_args(args: argparse.Namespace) -> list[str]:
    """The command-line arguments of ``args`` minus the launcher options (for the launched processes)."""
    out = ["--config", args.config, "--dataset", args.dataset, "--variant", args.variant]
    for flag, value in (("--out", args.out), ("--data-dir", args.data_dir), ("--device", args.device),
                        ("--iterations", args.iterations), ("--threads", args.threads),
                        ("--pretrained", args.pretrained), ("--pseudo", args.pseudo)):
        if value is not None:
            out += [flag, str(value)]
    return out


def run(args: argparse.Namespace) -> int:
    from seg.errors import SegError
    from seg.train import distributed as ddp

    if args.print_slurm_launch:
        print(shlex.join(ddp.slurm_launch_command(os.environ, forwarded_args(args))))
        return 0
    if args.nproc < 1:
        raise SegError(f"--nproc: must be >= 1, got {args.nproc}")
    if args.nproc > 1 and not ddp.dist_env_from_environ().distributed:
        cmd = ddp.torchrun_command(args.nproc, forwarded_args(args))
        print("seg train: launching", shlex.join(cmd), file=sys.stderr)
        return subprocess.call(cmd)

    from pathlib import Path

    from seg.settings import load_config
    from seg.train.state import completed_summary, effective_config

    cfg = load_config(args.config)
    out = Path(args.out) if args.out else Path(cfg["results_dir"]) / args.dataset / args.variant
    if completed_summary(effective_config(cfg, args.variant, iterations=args.iterations), args.dataset,
                         args.variant, out) is not None:
        print(f"seg train: {out / 'train_summary.json'} is complete for this config; nothing to do")
        return 0
    from seg.train.loop import train

    train(cfg, args.dataset, args.variant, out, data_dir=args.data_dir, device=args.device,
          iterations=args.iterations, pretrained=args.pretrained, threads=args.threads, pseudo=args.pseudo)
    return 0


COMMANDS = {
    "train": Command(
        help="train a model variant on a dataset (resumable; --nproc N for DDP)",
        add_arguments=add_arguments,
        run=run,
        description=DESCRIPTION,
    )
}
