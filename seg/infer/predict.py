"""``seg predict``: whole-slice predictions of a trained model for one dataset split.

:func:`predict_slice` is the per-slice entry (also used by the trainer's validation): the
``inference`` section over its schema defaults (the one place they are filled in on the way to the
tiler), tile geometry from the model's size contract, tiled inference, optional 8-fold TTA.
:func:`run_predict` reads the settings (:func:`predict_settings`), loads the canonical dataset, the
model and its checkpoint, predicts every slice of the split and writes
(:func:`write_slice_outputs`), into a temporary folder renamed into place at the end:

- ``<id>_prob.tif``: float32; ISBI: (H, W) interior probability (1 = interior, 0 = membrane, the
  challenge's convention); CTC: (classes, H, W) probabilities.
- ISBI ``<id>_seg.tif``: uint8 (H, W), 1 = interior (p >= threshold), 0 = membrane. The threshold
  is ``postprocess.threshold``, or the one ``seg calibrate`` chose on the val split (``threshold_file``).
- CTC ``<sequence>_RES/maskT.tif``: uint16 instance labels (``seg.infer.postprocess``; T has 3
  digits, 4 in sequences of more than 1000 frames: :func:`seg.kinds.ctc.result_mask_path`).

Which files a slice gets is its dataset kind's :meth:`seg.kinds.base.Kind.write_prediction`.
- ``predict_summary.json``: timing, tiling/TTA settings, device, checkpoint and its SHA-256.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seg.errors import SegError


def tile_geometry(model: torch.nn.Module, tile: int) -> tuple[int, int, int]:
    """(output tile, border, align) in pixels for a requested output tile size ``tile``.

    Valid-padding models (attribute ``valid_border``) get the smallest legal output tile >= ``tile``,
    their border and align = their size divisor (tile offsets on the whole slice's pooling grid);
    same-padding models get ``tile`` rounded up to a multiple of their size divisor, border 0 and
    align 1. Uses the size contract of :mod:`seg.models`.
    """
    from seg.models import input_size_for, output_size, size_divisor

    border = int(getattr(model, "valid_border", 0) or 0)
    out_tile = int(output_size(model, input_size_for(model, int(tile))))
    return out_tile, border, int(size_divisor(model)) if border else 1


def inference_precision(model: torch.nn.Module, infer_cfg: dict, device: torch.device, channels: int = 1):
    """The :class:`seg.device.Precision` inference runs ``model`` in: ``inference.amp`` (``auto``
    times a batch of ``inference.batch_size`` input tiles of ``channels`` channels, cached per
    machine: :mod:`seg.precision`). ``infer_cfg`` is a complete ``inference`` section."""
    from seg.device import precision_for

    tile, border, _ = tile_geometry(model, infer_cfg["tile"])
    size_in = tile + 2 * border
    return precision_for(infer_cfg, device, section="inference", model=model, mode="infer",
                         shape=(int(infer_cfg["batch_size"]), int(channels), size_in, size_in))


def predict_slice(model: torch.nn.Module, image: np.ndarray, infer_cfg: dict | None = None,
                  device: torch.device | str = "cpu", activation: str = "softmax") -> np.ndarray:
    """Softmax probabilities of one slice (``activation`` sigmoid: the per-channel sigmoid maps of a
    regression target, :attr:`seg.infer.tiling.TileSpec.activation`).

    Args:
        model: any seg model (logits out); put in eval mode for the call, its mode restored after;
            moved to ``device`` in channels_last layout (in place). It runs as
            :func:`seg.infer.network.inference_predictor` prepares it (prepared once per weights).
        image: float32 (H, W) or (C_in, H, W), normalised (``seg.data.canonical.load_image``).
        infer_cfg: the ``inference`` config section (tile, overlap, blend, tta, batch_size, amp);
            missing keys take the schema defaults (``seg.config.complete_section``, validated).
        device: torch device (or ``auto``/``cpu``/``cuda``) the model runs on.

    Returns:
        float32 (classes, H, W): :func:`seg.infer.tiling.predict_batch`, the computation the
        exported graphs hold.
    """
    from seg.config import complete_section
    from seg.device import resolve_device
    from seg.infer.network import inference_predictor
    from seg.infer.tiling import TileSpec, as_batch, predict_batch

    cfg = complete_section("inference", infer_cfg)
    device = resolve_device(device, section="inference")
    tile, border, align = tile_geometry(model, cfg["tile"])
    spec = TileSpec(tile, float(cfg["overlap"]), cfg["blend"], border, align, activation=activation)
    channels = 1 if np.ndim(image) == 2 else int(np.shape(image)[0])
    precision = inference_precision(model, cfg, device, channels)
    was_training = model.training
    model.eval()
    try:
        predictor = inference_predictor(model, precision)
        x = as_batch(image, device)
        with torch.inference_mode():
            probs = predict_batch(x, predictor, spec, tta=bool(cfg["tta"]), chunk=int(cfg["batch_size"]))
        return np.ascontiguousarray(probs[0].cpu().numpy(), dtype=np.float32)
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class PredictSettings:
    """What ``seg predict`` reads from the config (and the calibration file) besides the data.

    Attributes:
        inference: the variant's ``inference`` section for the dataset (``device`` and, on the val
            split with ``tta_val: false``, ``tta`` replaced).
        postprocess: the dataset's ``postprocess`` settings as the variant's target applies them
            (:meth:`seg.targets.target.Target.postprocess`), with what ``seg calibrate`` chose.
        threshold: probability threshold of class 1 in [0, 1]; threshold_source: ``config`` or the
            calibration file's path.
    """

    inference: dict
    postprocess: dict
    threshold: float
    threshold_source: str


def predict_settings(cfg: dict, *, dataset: str, variant: str, split: str, device: str | None = None,
                     threshold_file: str | os.PathLike | None = None,
                     data_dir: str | os.PathLike | None = None) -> PredictSettings:
    """The :class:`PredictSettings` of ``dataset``/``variant`` on ``split`` (see :func:`run_predict`).
    ``data_dir``: folder of canonical datasets (default the config's), whose fingerprint gives
    ``min_size`` and ``h`` when the config leaves them unset (:mod:`seg.data.plan`).

    Raises:
        SegError: unknown dataset or variant, or an invalid calibration file.
    """
    from seg.config import dataset_entry, variant_section
    from seg.data.plan import data_plan
    from seg.targets.target import variant_target

    dataset_entry(cfg, dataset)
    infer_cfg = variant_section(cfg, variant, "inference", dataset)
    if device is not None:
        infer_cfg["device"] = device
    if split == "val" and not infer_cfg["tta_val"]:  # val only feeds seg calibrate
        infer_cfg["tta"] = False
    # schema defaults, then the dataset's own overrides; min_size and h unset there: the plan's
    pp = data_plan(cfg, dataset, data_dir=data_dir).postprocess()
    # ... as the variant's target applies them (three_class: its method and seed threshold)
    pp = variant_target(cfg, variant).postprocess(pp)
    threshold, source = float(pp["threshold"]), "config"
    if threshold_file is not None:  # every setting seg calibrate chose (threshold; CTC: h, min_size)
        from seg.infer.calibrate import read_calibration

        chosen = read_calibration(threshold_file)
        threshold, source = chosen["threshold"], str(threshold_file)
        pp = {**pp, **chosen}
    return PredictSettings(infer_cfg, pp, threshold, source)


def write_slice_outputs(folder: Path, kind, entry: dict, probs: np.ndarray, settings: PredictSettings,
                        meta: dict) -> None:
    """Write one slice's outputs (see the module doc) into ``folder``: the dataset kind's
    :meth:`seg.kinds.base.Kind.write_prediction` with the settings' threshold and post-processing.

    Args:
        kind: the dataset's kind (:class:`seg.kinds.base.Kind`).
        entry: the slice's entry in ``meta.json`` (``id``; CTC: ``sequence``, ``frame``).
        probs: float32 (classes, H, W) softmax probabilities of the slice.
        meta: the dataset's ``meta.json`` (CTC: its sequences' lengths name the result files).
    """
    kind.write_prediction(folder, entry, probs, threshold=settings.threshold, postprocess=settings.postprocess,
                          meta=meta)


def run_predict(cfg: dict, *, dataset: str, variant: str, checkpoint: str | os.PathLike, split: str,
                out: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                device: str | None = None, threshold_file: str | os.PathLike | None = None) -> dict:
    """Predict every slice of ``split`` and write the outputs to ``out`` atomically (see module doc).

    ``cfg`` is a config from :func:`seg.config.load_config` (schema defaults filled in).
    Post-processing settings: the dataset's ``postprocess`` section (top level + the dataset's own
    overrides); ``threshold_file`` (JSON of ``seg calibrate``) replaces its threshold and, for CTC
    data, ``h`` and ``min_size`` by the values chosen on the val split.

    Returns:
        The summary written to ``predict_summary.json``.
    """
    from seg.config import dataset_dir
    from seg.data import canonical
    from seg.device import resolve_device
    from seg.io import atomic_path, sha256_file, write_json
    from seg.kinds import get_kind
    from seg.models import build_model, load_model_weights
    from seg.progress import progress
    from seg.targets.target import variant_target

    settings = predict_settings(cfg, dataset=dataset, variant=variant, split=split, device=device,
                                threshold_file=threshold_file, data_dir=data_dir)
    infer_cfg = settings.inference
    ds_dir = dataset_dir(cfg, dataset, data_dir)
    meta = canonical.load_meta(ds_dir)
    kind = get_kind(meta["kind"])
    entries = canonical.slices(meta, split)
    if not entries:
        raise SegError(f"{ds_dir / 'meta.json'}: split {split!r} has no slices")
    var = cfg["variants"][variant]
    target = variant_target(cfg, variant)
    channels = target.channels(meta["classes"])
    model = load_model_weights(build_model(var["model"], **var.get("params", {}), classes=len(channels)),
                               checkpoint)
    dev = resolve_device(infer_cfg["device"], section="inference")
    tile, border, _ = tile_geometry(model, infer_cfg["tile"])

    seconds = []
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for entry in progress(entries, desc=f"predict {dataset}/{variant}/{split}"):
            image = canonical.load_image(ds_dir, entry)
            t0 = time.perf_counter()
            probs = predict_slice(model, image, infer_cfg, dev, activation=target.activation)
            seconds.append(time.perf_counter() - t0)
            write_slice_outputs(tmp, kind, entry, probs, settings, meta)
        summary = {
            "dataset": dataset, "variant": variant, "split": split, "kind": meta["kind"],
            "ids": [e["id"] for e in entries], "n_slices": len(entries),
            "seconds_per_slice": float(np.mean(seconds)), "seconds_total": float(np.sum(seconds)),
            "tile": tile, "border": border, "overlap": infer_cfg["overlap"], "blend": infer_cfg["blend"],
            "tta": bool(infer_cfg["tta"]), "batch_size": infer_cfg["batch_size"], "device": str(dev),
            "amp": infer_cfg["amp"], "precision": inference_precision(model, infer_cfg, dev).record(),
            "model": var["model"], "target": target.name, "channels": channels, "checkpoint": str(checkpoint),
            "checkpoint_sha256": sha256_file(checkpoint), "postprocess": settings.postprocess,
            "threshold": settings.threshold, "threshold_source": settings.threshold_source,
        }
        write_json(tmp / "predict_summary.json", summary)
    return summary
