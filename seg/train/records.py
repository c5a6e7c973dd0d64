"""Run records of ``seg train``: the CSV training log, versions, device name, weight digests.

``train_log.csv`` columns are :data:`LOG_COLUMNS` (``iteration,epoch,loss,lr,val_iou,samples_per_s,
data_wait,wall_s``): one row every ``train.log_every`` steps (mean loss over the window, lr of the last
step, throughput in patches/s over all ranks, fraction of step time spent waiting for data, training
wall time in s) and one row per validation (``val_iou`` set, ``loss`` empty).
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from seg.io import atomic_path
from seg.train import checkpoint as ckpt
from seg.version import __version__

LOG_COLUMNS = ("iteration", "epoch", "loss", "lr", "val_iou", "samples_per_s", "data_wait", "wall_s")


def versions() -> dict[str, str]:
    """Versions of torch, monai, smp and seg (from package metadata: importing monai costs seconds)."""
    from importlib.metadata import PackageNotFoundError, version


    def v(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return {"torch": torch.__version__, "monai": v("monai"), "smp": v("segmentation-models-pytorch"),
            "seg": __version__}


def _read_log(path: Path, upto: int) -> list[dict[str, str]]:
    """Rows of an existing log with iteration <= ``upto`` (a torn last line from a kill is dropped)."""
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                if int(row["iteration"]) <= upto and all(row.get(c) is not None for c in LOG_COLUMNS):
                    rows.append({c: row[c] for c in LOG_COLUMNS})
            except (TypeError, ValueError, KeyError):
                continue
    return rows


class TrainLog:
    """Append-only CSV log, rewritten atomically at start (rows of undone steps removed)."""

    def __init__(self, path: Path, start: int):
        rows = _read_log(path, start)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        with atomic_path(path) as tmp:
            tmp.write_text(buf.getvalue())
        self.f = open(path, "a", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=LOG_COLUMNS, lineterminator="\n")

    def write(self, **row: Any) -> None:
        self.w.writerow({c: row.get(c, "") for c in LOG_COLUMNS})
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def param_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the (unwrapped) model's state dict bytes, in key order (equal digests = equal weights)."""
    h = hashlib.sha256()
    for k, v in ckpt.model_state_cpu(model).items():
        h.update(k.encode())
        h.update(v.numpy().tobytes())
    return h.hexdigest()


def device_name(dev: torch.device) -> str:
    """``"cuda:0 (<GPU name>)"`` or ``"cpu (<n> threads)"``."""
    if dev.type == "cuda":
        return f"cuda:{dev.index} ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({torch.get_num_threads()} threads)"
