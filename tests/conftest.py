"""Shared fixtures: the real data in ../shared/data (beside the project root), read-only."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two pytest-xdist workers on the 2 cores: one OpenMP thread each (and for
    # the commands they start, unless those set their own: Snakemake's jobs do), set before numpy
    # or torch is imported. Two 2-thread pools on 2 cores make every parallel op wait for a
    # descheduled thread. Tests that compare runs bit for bit compare runs of one thread count.
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# amp: auto's per-machine precision cache (seg.precision) of this test session, inherited by every
# subprocess (workflow runs, SLURM jobs): tests never read or write the user's ~/.cache/seg, and all
# runs of a session decide alike (the local and the SLURM quick runs compare their metrics). Under
# pytest-xdist the controller loads this file before it starts the workers, which inherit its folder.
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("SEG_TEST_SESSION_CACHE"):
    os.environ["SEG_CACHE_DIR"] = os.environ["SEG_TEST_SESSION_CACHE"]
else:
    os.environ["SEG_CACHE_DIR"] = os.environ["SEG_TEST_SESSION_CACHE"] = tempfile.mkdtemp(prefix="seg-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SEG_CACHE_DIR"], ignore_errors=True)


# Test files in the order they start (the rest keep pytest's order, between these two lists). `make
# test` gives each worker whole files (pytest-xdist --dist loadfile --no-loadscope-reorder), so the
# longest files go first: the SLURM test, which makes quick_run while its SLURM run goes on, and the
# exports; the workflow tests go last, when quick_run is there to share.
FIRST_FILES = ("test_slurm.py", "test_export.py")
LAST_FILES = ("test_workflow.py",)


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return -1 if name in FIRST_FILES else 1 if name in LAST_FILES else 0

    order = {name: i for i, name in enumerate(FIRST_FILES)}
    items.sort(key=lambda it: (rank(it), order.get(it.path.name, 0)))  # stable: same order within a file


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
    from seg.kinds import get_kind

    data = tmp_path / "data"
    with canonical_writer(data / "isbi2012", name="isbi2012", kind=get_kind("isbi2012"), source={"test": True}) as w:
        for i, split in enumerate(["train", "train", "val", "test"]):
            lab = isbi_stacks["labels"][i]
            w.add(f"train_{i:02d}", isbi_stacks["train"][i], split=split, frame=i,
                  instances=label(lab == 255, connectivity=1), semantic=(lab == 255).astype(np.uint8))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"data_dir: {data}\ndatasets:\n  isbi2012: {{kind: isbi2012}}\n"
                   "variants:\n  unet: {model: unet}\naugment: {copies: 2}\n")
    return cfg, data / "isbi2012"


@pytest.fixture(params=[True, False], ids=["native-bf16", "no-native-bf16"])
def native_bf16(request, monkeypatch) -> bool:
    """Forces seg.device's native-bf16 probe (SEG_NATIVE_BF16, inherited by subprocesses) both
    ways, so a test of the bf16 branch runs twice on every machine: as on a CPU with native bf16
    (AMX / AVX512-BF16) and as on one without (AVX2 only)."""
    monkeypatch.setenv("SEG_NATIVE_BF16", "1" if request.param else "0")
    return request.param


def error_lines(err: str) -> list[str]:
    """The non-empty lines of a command's stderr minus tqdm progress bars ("desc:  40%|####  | 2/5")."""
    import re

    return [ln for ln in err.strip().splitlines() if ln.strip() and not re.search(r"\d+%\|", ln)]


def path_without_project_python() -> str:
    """PATH minus the folder of the Python running the tests (the project's .venv/bin, which
    `make test` puts first): the workflow's rules must not depend on finding it there."""
    import os
    import sys

    venv_bin = str(Path(sys.executable).parent)
    return os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and os.path.realpath(p) != os.path.realpath(venv_bin))


NO_SLURM_CLIENT = ROOT / "tests" / "no-slurm-client"


def uses_slurm(args: list[str]) -> bool:
    """Whether a Snakemake command line runs its jobs through the SLURM executor."""
    return "slurm" in args or any(a.startswith("--executor=slurm") or a.rstrip("/").endswith("profiles/slurm")
                                  for a in args)


def snakemake_command(args: list[str], *, env_extra: dict | None = None) -> tuple[list[str], dict]:
    """The command line and environment with which :func:`snakemake` runs the project's Snakemake.

    A run that does not use the SLURM executor finds ``tests/no-slurm-client/scontrol`` (exits 1 at
    once) first on PATH: snakemake-executor-plugin-slurm runs ``scontrol show config`` whenever it is
    imported, i.e. by every ``snakemake`` command, and where SLURM's client is installed but no
    slurmctld answers (after tests/test_slurm.py, or on a machine with the Debian packages) that
    call only returns after its 10 s timeout."""
    import os
    import sys

    bin_dir = Path(sys.executable).parent
    path = path_without_project_python()
    if not uses_slurm(args):
        path = os.pathsep.join([str(NO_SLURM_CLIENT), path])
    env = {**os.environ, "PATH": path, "SEG_RAW_ROOT": str(SHARED_DATA), **(env_extra or {})}
    return [str(bin_dir / "snakemake"), *args], env


def snakemake(args: list[str], *, cwd: Path = ROOT, env_extra: dict | None = None, timeout: int = 1800):
    """Run the project's Snakemake (``.venv/bin/snakemake`` of the venv running the tests, by path) and
    return the CompletedProcess. PATH does not contain that venv, as for a user who calls
    ``.venv/bin/snakemake`` without activating anything: every rule must run the interpreter that
    runs Snakemake, not whatever ``python`` PATH finds."""
    import subprocess

    cmd, env = snakemake_command(args, env_extra=env_extra)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, shared_data) -> dict:
    """One real end-to-end run of configs/quick.yaml on 2 cores (ISBI 2012 + GOWT1, every stage).

    Returns {"results": Path, "data": Path, "proc": CompletedProcess}. Shared by the workflow tests
    (the end-to-end checks and the dry runs that plan reruns after config changes, which must leave
    it as it is) and the SLURM test (which compares its own run against this one). Made once per
    test session: under pytest-xdist the first worker that needs it runs it (holding a file lock
    in the session's base folder) and the others wait for the lock and take its result."""
    import fcntl
    import json
    import subprocess

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    root = tmp_path_factory.getbasetemp()
    root = root.parent if worker else root  # <basetemp>/popen-gwN -> <basetemp>, shared by the workers
    base = root / "quick"
    results, data, record = base / "results", base / "data", root / "quick.json"
    with open(root / "quick.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # held while the run is made; released on close
        if not record.is_file():
            base.mkdir(exist_ok=True)
            proc = snakemake([
                "--cores", "2", "--configfile", "configs/quick.yaml",
                "--config", f"results_dir={results}", f"data_dir={data}",
            ])
            record.write_text(json.dumps({"args": proc.args, "returncode": proc.returncode,
                                          "stdout": proc.stdout, "stderr": proc.stderr}))
    r = json.loads(record.read_text())
    proc = subprocess.CompletedProcess(r["args"], r["returncode"], r["stdout"], r["stderr"])
    if proc.returncode != 0:
        pytest.fail(f"quick workflow failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    return {"results": results, "data": data, "proc": proc}


# ----------------------------------------------------------------------------- packaged runs (seg segment / seg export)
def fake_packaged_run(base: Path, *, kind: str = "isbi2012", model: str = "unet", params: dict | None = None,
                      inference: dict | None = None, postprocess: dict | None = None, size: tuple = (96, 128),
                      seed: int = 0, predict: bool = True, package: bool = True) -> dict:
    """A trained-looking run without training: a canonical dataset (ISBI: crops of 5 real slices,
    aligned like the real ingest; CTC: one seeded synthetic sequence of discs), a config, a seeded
    random checkpoint (weights perturbed so that every layer matters), train_summary.json with the
    config's hash, calibration.json when calibrating; then the real ``seg predict`` of the test
    split and ``seg package``. Returns paths: root, config, data, run, pred, package, images (raw
    test images folder) and ``ids`` (the test split's slice ids)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: more threads only contend on a shared 2-core machine
    try:
        return _fake_packaged_run(base, kind=kind, model=model, params=params, inference=inference,
                                  postprocess=postprocess, size=size, seed=seed, predict=predict, package=package)
    finally:
        torch.set_num_threads(threads)


def _fake_packaged_run(base, *, kind, model, params, inference, postprocess, size, seed, predict, package):
    import json

    import torch
    import yaml
    from skimage.measure import label

    from seg.cli import main
    from seg.settings import load_config, run_config_hash
    from seg.data.canonical import canonical_writer
    from seg.kinds import get_kind
    from seg.models import build_model

    base.mkdir(parents=True, exist_ok=True)
    data = base / "data"
    rng = np.random.default_rng(seed)
    splits = ["train", "train", "val", "test", "test"]
    h, w = size
    if kind == "isbi2012":
        import tifffile

        vol = tifffile.imread(SHARED_DATA / "isbi2012" / "train-volume.tif")[:5, :h, :w]
        lab = tifffile.imread(SHARED_DATA / "isbi2012" / "train-labels.tif")[:5, :h, :w]
        with canonical_writer(data / "ds", name="ds", kind=get_kind(kind), source={"test": True}, align=True) as wr:
            for i, split in enumerate(splits):
                wr.add(f"train_{i:02d}", vol[i], split=split, frame=i,
                       instances=label(lab[i] == 255, connectivity=1), semantic=(lab[i] == 255).astype(np.uint8))
    else:
        yy, xx = np.mgrid[:h, :w]
        with canonical_writer(data / "ds", name="ds", kind=get_kind(kind), source={"test": True}) as wr:
            for i, split in enumerate(splits):
                inst = np.zeros((h, w), np.int32)
                for k in range(1, 4):
                    cy, cx = rng.uniform(10, h - 10), rng.uniform(10, w - 10)
                    inst[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(36, 100)] = k
                img = np.clip(40 + 120 * (inst > 0) + rng.normal(0, 15, (h, w)), 0, 255).astype(np.uint8)
                wr.add(f"01_t{i:03d}", img, split=split, frame=i, sequence="01", instances=inst,
                       semantic=(inst > 0).astype(np.uint8))
    params = params if params is not None else {"padding": "same", "base_channels": 4, "depth": 2, "batch_norm": True}
    pp = {"calibrate": kind == "isbi2012", **(postprocess or {})}
    doc = {"data_dir": str(data), "seed": 0,
           "datasets": {"ds": {"kind": kind, **({"align_images": True} if kind == "isbi2012" else {})}},
           "variants": {"tiny": {"model": model, "params": params, "label": "tiny test model"}},
           "inference": {"tile": 64, "overlap": 0.25, "batch_size": 4, "device": "cpu", "amp": "none",
                         **(inference or {})},
           "postprocess": pp}
    cfg_path = base / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(doc))
    cfg = load_config(cfg_path)
    run = base / "results" / "ds" / "tiny"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    net = build_model(model, **params)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    # batch-norm statistics re-estimated on the training images, so that logits have a trained
    # model's scale (random-init statistics let activations grow layer after layer)
    from seg.data.canonical import load_image, load_meta, slices

    meta = load_meta(data / "ds")
    batch = torch.from_numpy(np.stack([load_image(data / "ds", e) for e in slices(meta, "train")]))[:, None]
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    if bns:
        from seg.errors import SegError
        from seg.models import output_size

        side = min(h, w)
        while side > 1:  # the largest square input the network accepts
            try:
                output_size(net, side)
                break
            except SegError:
                side -= 1
        net.train()
        with torch.no_grad():
            net(batch[..., :side, :side])
    net.eval()
    torch.save({"model": net.state_dict(), "iteration": 3}, run / "checkpoints" / "best.pt")
    (run / "train_summary.json").write_text(json.dumps({
        "dataset": "ds", "variant": "tiny", "model": model, "config_hash": run_config_hash(cfg, "ds", "tiny"),
        "seed": 0, "iterations": 3, "best_iteration": 3, "best_val_iou": 0.5}))
    threshold = []
    if pp["calibrate"]:
        (run / "calibration.json").write_text(json.dumps({"threshold": 0.45}))
        threshold = ["--threshold-file", str(run / "calibration.json")]
    out = {"root": base, "config": cfg_path, "data": data, "run": run, "pred": run / "pred" / "test",
           "package": base / "package", "images": data / "ds" / "images",
           "ids": [f"train_{i:02d}" if kind == "isbi2012" else f"01_t{i:03d}" for i in (3, 4)]}
    if predict:
        assert main(["predict", "--config", str(cfg_path), "--dataset", "ds", "--variant", "tiny", "--checkpoint",
                     str(run / "checkpoints" / "best.pt"), "--split", "test", "--out", str(out["pred"]),
                     "--data-dir", str(data), "--device", "cpu", *threshold]) == 0
    if package:
        assert main(["package", "--run-dir", str(run), "--config", str(cfg_path), "--out", str(out["package"])]) == 0
    return out


@pytest.fixture(scope="session")
def isbi_packaged_run(tmp_path_factory, shared_data) -> dict:
    """ISBI-kind run of a tiny valid-padding U-Net (border, several 36 px tiles per image, 8-fold
    TTA, the dataset's real sub-pixel image shift, a calibrated threshold), predicted and packaged."""
    return fake_packaged_run(tmp_path_factory.mktemp("isbi_run"), kind="isbi2012",
                             params={"padding": "valid", "base_channels": 4, "depth": 2, "batch_norm": True},
                             inference={"tile": 36, "tta": True})


@pytest.fixture(scope="session")
def ctc_packaged_run(tmp_path_factory) -> dict:
    """CTC-kind run of a tiny same-padding U-Net on 64 x 64 synthetic frames (one tile covers a
    frame), watershed post-processing, predicted and packaged."""
    return fake_packaged_run(tmp_path_factory.mktemp("ctc_run"), kind="ctc", size=(64, 64),
                             postprocess={"method": "watershed", "min_size": 5, "h": 1.0, "threshold": 0.3})
