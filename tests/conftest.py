"""Shared fixtures: the real data in ../shared/data (beside the project root), read-only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data (ISBI 2012 stacks in isbi2012/, 6 GOWT1 frames in Fluo-N2DH-GOWT1/)."""
    if not (SHARED_DATA / "isbi2012" / "train-volume.tif").is_file():
        pytest.fail(f"real data missing: {SHARED_DATA} (CI must run with ../shared beside the project)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def isbi_stacks(shared_data: Path) -> dict[str, np.ndarray]:
    """The real ISBI 2012 stacks: train (30,512,512) uint8, labels (30,512,512) uint8 {0 membrane,
    255 interior}, test (30,512,512) uint8. Treat as read-only."""
    import tifffile

    d = shared_data / "isbi2012"
    out = {
        "train": tifffile.imread(d / "train-volume.tif"),
        "labels": tifffile.imread(d / "train-labels.tif"),
        "test": tifffile.imread(d / "test-volume.tif"),
    }
    for a in out.values():
        a.setflags(write=False)
    return out


def snakemake(args: list[str], *, cwd: Path = ROOT, env_extra: dict | None = None, timeout: int = 1800):
    """Run the project's Snakemake (from the venv that runs the tests) and return the CompletedProcess."""
    import os
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "SEG_RAW_ROOT": str(SHARED_DATA), **(env_extra or {})}
    return subprocess.run(
        [str(bin_dir / "snakemake"), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, shared_data) -> dict:
    """One real end-to-end run of configs/quick.yaml on 2 cores (ISBI 2012 + GOWT1, every stage).

    Returns {"results": Path, "data": Path, "proc": CompletedProcess}. Shared by the workflow test
    and the SLURM test (which compares its own run against this one)."""
    base = tmp_path_factory.mktemp("quick")
    results, data = base / "results", base / "data"
    proc = snakemake([
        "--cores", "2", "--configfile", "configs/quick.yaml",
        "--config", f"results_dir={results}", f"data_dir={data}",
    ])
    if proc.returncode != 0:
        pytest.fail(f"quick workflow failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    return {"results": results, "data": data, "proc": proc}
