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


@pytest.fixture
def one_thread():
    """Tiny models: torch threads only add contention on a shared 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_isbi(tmp_path, isbi_stacks):
    """A canonical ISBI dataset of 4 real slices (2 train, 1 val, 1 test) and a config pointing at
    it: returns (config path, dataset folder)."""
    from skimage.measure import label

    from seg.data.canonical import canonical_writer

    data = tmp_path / "data"
    with canonical_writer(data / "isbi2012", name="isbi2012", kind="isbi2012", source={"test": True}) as w:
        for i, split in enumerate(["train", "train", "val", "test"]):
            lab = isbi_stacks["labels"][i]
            w.add(f"train_{i:02d}", isbi_stacks["train"][i], split=split, frame=i,
                  instances=label(lab == 255, connectivity=1), semantic=(lab == 255).astype(np.uint8))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"data_dir: {data}\ndatasets:\n  isbi2012: {{kind: isbi2012}}\n"
                   "variants:\n  unet: {model: unet}\naugment: {copies: 2}\n")
    return cfg, data / "isbi2012"


def error_lines(err: str) -> list[str]:
    """The non-empty lines of a command's stderr minus tqdm progress bars ("desc:  40%|####  | 2/5")."""
    import re

    return [ln for ln in err.strip().splitlines() if ln.strip() and not re.search(r"\d+%\|", ln)]


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
