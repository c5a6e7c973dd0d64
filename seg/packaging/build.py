"""Building a model package from a trained run folder (``seg package``), and choosing the best run.

:func:`build_package` reads what a run left (``train_summary.json``, ``checkpoints/best.pt``,
``calibration.json``, ``metrics.json``), the config it was trained with (model, inference and
post-processing settings; its hash must match the run's) and the canonical dataset's ``meta.json``
(kind, classes, the images' sub-pixel shift, a test image), and returns the
:class:`seg.package.format.ModelPackage` (format in :mod:`seg.package.format`). :func:`best_run`
picks the leaderboard's top run of a dataset.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path

import numpy as np
import torch

from seg.data import canonical
from seg.data.fingerprint import inscribed_diameters
from seg.errors import SegError
from seg.infer.predictor import predict_slice
from seg.io import read_json, sha256_file
from seg.kinds import get_kind
from seg.models import build_model, count_parameters, load_model_weights
from seg.models.registry import get_entry
from seg.package.format import FORMAT, FORMAT_VERSION, INFERENCE_KEYS, ModelPackage, size_contract
from seg.settings import RunSettings, run_config_hash
from seg.version import __version__


def _shift_of(meta: dict) -> list[float] | None:
    shift = (meta.get("alignment") or {}).get("image_shift")
    if shift is None:
        shift = next((s.get("image_shift") for s in meta["slices"] if s.get("image_shift")), None)
    return [float(v) for v in shift] if shift is not None and any(shift) else None


def _preprocessing(shift: list[float] | None) -> dict:
    steps: list[dict] = []
    if shift:
        steps.append({
            "op": "shift", "shift": shift, "units": "px (rows, cols); positive moves content down/right",
            "method": "scipy.ndimage.shift(image, shift, order=3, mode='mirror') on float32",
            "why": "the dataset's images sit this far off its annotation grid (seg.data.align, estimated "
                   "on the training split); the model was trained and tested on the resampled images, "
                   "so new images of the same acquisition are resampled the same way",
        })
    steps.append({
        "op": "zero_mean_unit_variance", "over": "each image (all its pixels)", "std_floor": 1e-6,
        "formula": "(x - mean(x)) / std(x), std(x) <= 1e-6 counts as 1 (population std, float32)",
    })
    return {"input": "one 2D single-channel image (H, W), any integer or float dtype, taken as float32 "
                     "of its raw values", "steps": steps}


def _read_run_json(run_dir: Path, name: str, required: bool) -> dict | None:
    p = run_dir / name
    if not p.is_file():
        if required:
            raise SegError(f"{p}: missing (is {run_dir} a finished training run?)")
        return None
    return read_json(p)


def _run_identity(cfg: dict, run: Path, allow_config_mismatch: bool) -> tuple[dict, str, bool]:
    """The run's ``train_summary.json``, checked against ``cfg``: its dataset and variant must be
    configured and (unless ``allow_config_mismatch``) its config hash must be this config's.

    Returns (summary, this config's hash of the run's dataset/variant, whether the hashes differ).
    """
    summary = _read_run_json(run, "train_summary.json", required=True)
    dataset, variant = summary.get("dataset"), summary.get("variant")
    if dataset not in cfg["datasets"]:
        raise SegError(f"{run / 'train_summary.json'}: dataset {dataset!r} is not in the config "
                       f"(configured: {', '.join(cfg['datasets'])})")
    if variant not in cfg["variants"]:
        raise SegError(f"{run / 'train_summary.json'}: variant {variant!r} is not in the config "
                       f"(configured: {', '.join(cfg['variants'])})")
    chash = run_config_hash(cfg, dataset, variant)
    mismatch = summary.get("config_hash") != chash
    if mismatch and not allow_config_mismatch:
        raise SegError(f"{run / 'train_summary.json'}: trained with config hash {summary.get('config_hash')}, "
                       f"but this config gives {chash} for {dataset}/{variant}: the package would describe "
                       "settings the model was not trained with (use the run's own config, or "
                       "--allow-config-mismatch to record the difference)")
    return summary, chash, mismatch


def _dataset_meta(ds_dir: Path, kind: str) -> dict:
    """The canonical dataset's ``meta.json``, checked to be of a kind the config's ``kind`` ingests
    as (:attr:`seg.kinds.base.Kind.ingested_as`: a folder of semantic masks is ``folder-semantic``)
    with that kind's classes."""
    meta = canonical.load_meta(ds_dir)
    allowed = get_kind(kind).ingested_as
    classes = get_kind(meta["kind"]).outputs()["classes"] if meta["kind"] in allowed else None
    if classes is None or list(meta["classes"]) != classes:
        raise SegError(f"{ds_dir / 'meta.json'}: kind {meta['kind']!r} / classes {meta['classes']} do not "
                       f"match the config's kind {kind!r} (ingested as {', '.join(allowed)})")
    return meta


def _threshold(settings: RunSettings, run: Path, threshold_file: str | os.PathLike | None) -> tuple[dict, dict]:
    """The decision threshold {value, source} and the post-processing settings it goes with
    (:meth:`seg.settings.RunSettings.postprocess`): ``threshold_file`` if given, else the run's
    ``calibration.json`` when ``postprocess.calibrate`` is on (SegError if missing), else the
    configured threshold."""
    cal = Path(threshold_file) if threshold_file is not None else run / "calibration.json"
    if threshold_file is None and not settings.calibrate:
        post = settings.postprocess()
        return {"value": post.threshold, "source": "config postprocess.threshold"}, post.recorded()
    if threshold_file is None and not cal.is_file():
        raise SegError(f"{cal}: missing, but postprocess.calibrate is on for {settings.dataset} (run seg calibrate "
                       "first, or pass --threshold-file)")
    post = settings.postprocess(cal)
    threshold = {"value": post.threshold,
                 "source": (f"{cal} (given)" if threshold_file is not None else
                            "calibrated on the validation split (seg calibrate, calibration.json); the test "
                            "split never chose it")
                 + (f"; also chose {', '.join(sorted(post.chosen))}" if post.chosen else "")}
    return threshold, post.recorded()


def _inscribed_median(ds_dir: Path, meta: dict) -> float | None:
    """Median of :func:`seg.data.fingerprint.inscribed_diameters` over the training split's annotated
    objects (px), None without one."""
    values = [inscribed_diameters(canonical.load_instances(ds_dir, e))
              for e in canonical.slices(meta, "train") if e.get("instances")]
    values = np.concatenate(values) if values else np.zeros(0)
    return round(float(np.median(values)), 2) if values.size else None


def _scale_section(fp: dict, factor: float, inscribed: float | None) -> dict | None:
    """The package's ``scale`` section (:func:`seg.package.format.scale_of`) from the dataset's
    fingerprint, the training objects' median inscribed diameter and the run's resize factor; None
    when the training split has no annotated object."""
    d = (fp.get("objects") or {}).get("diameter")
    if not d:
        return None
    intensity = fp.get("intensity") or {}
    return {"diameter": d["median"], "spread": {"p25": d["p25"], "p75": d["p75"]}, "factor": round(float(factor), 6),
            "inscribed_diameter": inscribed,
            "network_diameter": round(float(d["median"]) * float(factor), 3),
            "objects": (fp.get("objects") or {}).get("count"),
            "intensity": {"dtype": intensity.get("dtype"), "percentiles": intensity.get("percentiles"),
                          "units": "raw image values"},
            "units": "px (equivalent diameter sqrt(4 area / pi) of the annotated training objects)",
            "from": "the training split's fingerprint (seg.data.fingerprint)"}


def _lineage(settings: RunSettings, summary: dict) -> dict | None:
    """The package's ``lineage``: the package its training started from (``init:``; None without one)."""
    if settings.start is None:
        return None
    return {"parent": settings.start.record(), "steps": summary.get("iterations"),
            "best_step": summary.get("best_iteration")}


def _model_section(var: dict, variant: str, params: dict, classes: int, model) -> dict:
    """The package's ``model`` section: registry name, params, family, size, size contract."""
    return {"name": var["model"], "params": params, "in_channels": 1, "classes": classes,
            "family": get_entry(var["model"]).family, "parameters": int(count_parameters(model)),
            "label": var.get("label") or variant, **size_contract(model)}


def _training_section(summary: dict, chash: str, mismatch: bool, checkpoint: Path) -> dict:
    """The package's ``training`` section: what the run's ``train_summary.json`` says, the config
    hashes and the checkpoint's sha256."""
    return {
        "dataset": summary.get("dataset"), "variant": summary.get("variant"),
        "config_hash": summary.get("config_hash"),
        "config_hash_of_packaging_config": chash, "config_mismatch": bool(mismatch),
        "seed": summary.get("seed"), "iterations": summary.get("iterations"),
        "best_iteration": summary.get("best_iteration"), "best_val_iou": summary.get("best_val_iou"),
        "device": summary.get("device"), "amp": summary.get("amp"), "precision": summary.get("precision"),
        "checkpoint_sha256": sha256_file(checkpoint),
    }


# Largest side of the package's test image: a larger frame is centre-cropped to it. The test image
# is run by every check of the handing-on stage (the package's own prediction, each export against
# PyTorch, bioimage.io's test), all in fp32 with the row's TTA: a 1024^2 GOWT1 frame cost 4x a
# 512^2 crop, and 512 px still spans 3x3 tiles of 256 px, so the crop checks the same tiling.
TEST_IMAGE_MAX = 512


def _centre_crop(shape: tuple[int, int], size: int) -> tuple[int, int, int, int]:
    """(y0, x0, h, w) of the centred crop of a (H, W) image to at most ``size`` per side."""
    h, w = min(shape[0], size), min(shape[1], size)
    return (shape[0] - h) // 2, (shape[1] - w) // 2, h, w


def _add_test_image(pkg: ModelPackage, meta: dict, ds_dir: Path, infer: dict) -> None:
    """Give ``pkg`` its test image (the first test slice, else val, else any; centre-cropped to
    ``TEST_IMAGE_MAX`` px per side) and the model's fp32 probabilities on it, float32
    (classes, H, W) predicted on the CPU."""
    entries = (canonical.slices(meta, "test") or canonical.slices(meta, "val") or canonical.slices(meta))
    image = canonical.load_raw_image(ds_dir, entries[0])
    y0, x0, h, w = _centre_crop(image.shape, TEST_IMAGE_MAX)
    pkg.test_input = np.ascontiguousarray(image[y0:y0 + h, x0:x0 + w])
    pkg.meta["test"] = {"id": entries[0]["id"], "split": entries[0]["split"],
                        "crop": {"y": y0, "x": x0, "height": h, "width": w, "of": list(image.shape)},
                        "probabilities": "float32 (classes, H, W), fp32 (amp none) on the CPU"}
    with torch.inference_mode():
        pkg.test_output = predict_slice(pkg.model, pkg.preprocess(pkg.test_input), {**infer, "amp": "none"}, "cpu",
                                        activation=pkg.activation)


def build_package(cfg: dict, run_dir: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
                  threshold_file: str | os.PathLike | None = None, allow_config_mismatch: bool = False,
                  with_test: bool = True) -> ModelPackage:
    """Assemble the package of a trained run folder ``results/<dataset>/<variant>/``.

    Reads ``train_summary.json`` (dataset, variant), ``checkpoints/best.pt``, the threshold (the
    run's ``calibration.json`` when ``postprocess.calibrate`` is on, else the config's; or
    ``threshold_file``), ``metrics.json`` if present, and the canonical dataset's ``meta.json``
    (kind, classes, image shift, the test image). ``with_test`` predicts the test image in fp32.

    Raises:
        SegError: a missing file (named), a config whose hash differs from the one the run was
            trained with (unless ``allow_config_mismatch``), a checkpoint that does not fit.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise SegError(f"{run}: run folder not found")
    summary, chash, mismatch = _run_identity(cfg, run, allow_config_mismatch)
    dataset, variant = summary.get("dataset"), summary.get("variant")
    checkpoint = run / "checkpoints" / "best.pt"
    settings = RunSettings(cfg, dataset, variant, data_dir=data_dir)
    ds_dir = settings.ds_dir
    meta = _dataset_meta(ds_dir, cfg["datasets"][dataset]["kind"])
    kind = meta["kind"]  # as ingested: what seg segment and the exports write

    var = cfg["variants"][variant]
    params = dict(var.get("params") or {})
    target = settings.target  # three_class: the width and weight it trained with
    channels = settings.channels
    model = build_model(var["model"], **params, classes=len(channels))
    load_model_weights(model, checkpoint)
    model.eval()

    threshold, pp = _threshold(settings, run, threshold_file)
    infer = settings.inference
    metrics_doc = _read_run_json(run, "metrics.json", required=False)
    pkg_meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "seg_version": __version__,
        "name": f"{dataset}-{variant}",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"name": dataset, "kind": kind, "classes": list(meta["classes"]),
                    "source": meta.get("source", {})},
        "outputs": target.outputs(settings.kind.outputs(), channels),
        "target": target.record(meta["classes"]),
        "model": _model_section(var, variant, params, len(channels), model),
        "preprocessing": _preprocessing(_shift_of(meta)),
        "scale": _scale_section(settings.plan.fingerprint, settings.scale, _inscribed_median(ds_dir, meta)),
        "lineage": _lineage(settings, summary),
        "inference": {k: infer[k] for k in INFERENCE_KEYS},
        "threshold": threshold,
        "postprocess": pp,
        "training": _training_section(summary, chash, mismatch, checkpoint),
        "metrics": ({"split": metrics_doc.get("split"), "primary": metrics_doc.get("primary"),
                     "aggregate": metrics_doc.get("aggregate"), "threshold": threshold["value"]}
                    if metrics_doc else None),
    }
    pkg = ModelPackage(meta=pkg_meta, model=model, source=str(run))
    if with_test:
        _add_test_image(pkg, meta, ds_dir, infer)
    return pkg


def best_run(results: str | os.PathLike, dataset: str) -> Path:
    """The run folder ``<results>/<dataset>/<variant>/`` whose val score is best among the trained
    and scored runs of ``dataset``: ``best_val_iou`` of its ``train_summary.json`` (the score that
    chose its checkpoint: val SEG of the post-processed instances for instance data, val mean IoU
    otherwise; higher is better; ties: the first variant in name order). The test split never
    chooses (:mod:`seg.report.selection` says the choice and its margin in the report).

    Raises:
        SegError: no run of ``dataset`` with ``train_summary.json``, ``checkpoints/best.pt`` and
            ``metrics.json`` and a finite val score.
    """
    root = Path(results) / dataset
    best: tuple[float, Path] | None = None
    for mpath in sorted(root.glob("*/metrics.json")):
        run = mpath.parent
        if not (run / "train_summary.json").is_file() or not (run / "checkpoints" / "best.pt").is_file():
            continue
        value = read_json(run / "train_summary.json").get("best_val_iou")
        if isinstance(value, (int, float)) and np.isfinite(value) and (best is None or value > best[0]):
            best = (float(value), run)
    if best is None:
        raise SegError(f"{root}: no scored run (<variant>/metrics.json with train_summary.json, a val score and "
                       "checkpoints/best.pt) to choose the best of")
    return best[1]
