"""Helpers the benchmark scripts share: the CPU's name for the results, and a canonical dataset
ingested from the raw folders when missing. (Each script runs as ``python bench/<name>.py``, so
this folder is on ``sys.path``.)"""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_name() -> str:
    """``lscpu``'s Model name, else the platform's processor name."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def ensure_canonical(data: Path, dataset: str) -> Path:
    """``data/<dataset>``, made with ``seg ingest`` (configs/config.yaml) if it has no meta.json."""
    ds = data / dataset
    if not (ds / "meta.json").is_file():
        subprocess.run([sys.executable, "-m", "seg", "ingest", "--config", str(ROOT / "configs" / "config.yaml"),
                        "--dataset", dataset, "--out", str(ds)], check=True, cwd=ROOT)
    return ds
