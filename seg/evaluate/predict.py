"""``seg predict``: whole-slice predictions of a trained model for one dataset split.

:func:`run_predict` reads the run's settings (:func:`predict_settings`: its
:class:`~seg.settings.RunSettings`), loads the canonical dataset, the
model and its checkpoint, predicts every slice of the split and writes
(:func:`write_slice_outputs`), into a temporary folder renamed into place at the end:

- ``<id>_prob.tif``: float32; ISBI: (H, W) interior probability (1 = interior, 0 = membrane, the
  challenge's convention); CTC: (classes, H, W) probabilities.
- ISBI ``<id>_seg.tif``: uint8 (H, W), 1 = interior (p >= threshold), 0 = membrane. The threshold
  is ``postprocess.threshold``, or the one ``seg calibrate`` chose on the val split (``threshold_file``).
- CTC ``<sequence>_RES/maskT.tif``: uint16 instance labels (the target's decoding; T has 3
  digits, 4 in sequences of more than 1000 frames: :func:`seg.kinds.ctc.result_mask_path`).

Which files a slice gets is its dataset kind's :meth:`seg.kinds.base.Kind.write_prediction`.
- ``predict_summary.json``: timing, tiling/TTA settings, device, checkpoint and its SHA-256.
"""

from __future__ import annotations

import os
import time

import numpy as np

from seg.data import canonical
from seg.device import resolve_device
from seg.errors import SegError
from seg.infer.predictor import inference_precision, predict_slice, tile_geometry
from seg.io import atomic_path, sha256_file, write_json
from seg.models import build_model, load_model_weights
from seg.progress import progress
from seg.settings import Postprocess, RunSettings


def predict_settings(cfg: dict, *, dataset: str, variant: str, split: str, device: str | None = None,
                     threshold_file: str | os.PathLike | None = None,
                     data_dir: str | os.PathLike | None = None) -> tuple[RunSettings, dict, Postprocess]:
    """(run settings, inference section, post-processing) of ``dataset``/``variant`` on ``split``:
    the variant's ``inference`` section with ``device`` (if given) and, on the val split with
    ``tta_val: false``, ``tta`` replaced; the post-processing of :meth:`RunSettings.postprocess`
    with what ``threshold_file`` (``seg calibrate``'s) chose.

    Raises:
        SegError: unknown dataset or variant, or an invalid calibration file.
    """
    settings = RunSettings(cfg, dataset, variant, data_dir=data_dir)
    infer_cfg = dict(settings.inference)
    if device is not None:
        infer_cfg["device"] = device
    if split == "val" and not infer_cfg["tta_val"]:  # val only feeds seg calibrate
        infer_cfg["tta"] = False
    return settings, infer_cfg, settings.postprocess(threshold_file)


def load_run_model(settings: RunSettings, checkpoint: str | os.PathLike):
    """The variant's network with the target's output channels and the ``checkpoint``'s weights."""
    var = settings.cfg["variants"][settings.variant]
    return load_model_weights(build_model(var["model"], **var.get("params", {}), classes=len(settings.channels)),
                              checkpoint)


def run_predict(cfg: dict, *, dataset: str, variant: str, checkpoint: str | os.PathLike, split: str,
                out: str | os.PathLike, data_dir: str | os.PathLike | None = None,
                device: str | None = None, threshold_file: str | os.PathLike | None = None) -> dict:
    """Predict every slice of ``split`` and write the outputs to ``out`` atomically (see module doc).

    ``cfg`` is a config from :func:`seg.settings.load_config` (schema defaults filled in).
    Post-processing settings: :meth:`seg.settings.RunSettings.postprocess`; ``threshold_file`` (JSON
    of ``seg calibrate``) replaces its threshold and, for instance data, ``h``, ``min_size`` and
    ``seed_threshold`` by the values chosen on the val split.

    Returns:
        The summary written to ``predict_summary.json``.
    """
    settings, infer_cfg, post = predict_settings(cfg, dataset=dataset, variant=variant, split=split, device=device,
                                                 threshold_file=threshold_file, data_dir=data_dir)
    ds_dir, meta, kind = settings.ds_dir, settings.meta, settings.kind
    entries = canonical.slices(meta, split)
    if not entries:
        raise SegError(f"{ds_dir / 'meta.json'}: split {split!r} has no slices")
    model = load_run_model(settings, checkpoint)
    dev = resolve_device(infer_cfg["device"], section="inference")
    tile, border, _ = tile_geometry(model, infer_cfg["tile"])

    seconds = []
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        for entry in progress(entries, desc=f"predict {dataset}/{variant}/{split}"):
            image = canonical.load_image(ds_dir, entry)
            t0 = time.perf_counter()
            probs = predict_slice(model, image, infer_cfg, dev, activation=settings.target.activation,
                                  scale=settings.scale)
            seconds.append(time.perf_counter() - t0)
            kind.write_prediction(tmp, entry, probs, *settings.decode(probs, post), meta=meta)
        summary = {
            "dataset": dataset, "variant": variant, "split": split, "kind": meta["kind"],
            "ids": [e["id"] for e in entries], "n_slices": len(entries),
            "seconds_per_slice": float(np.mean(seconds)), "seconds_total": float(np.sum(seconds)),
            "tile": tile, "border": border, "overlap": infer_cfg["overlap"], "blend": infer_cfg["blend"],
            "tta": bool(infer_cfg["tta"]), "batch_size": infer_cfg["batch_size"], "device": str(dev),
            "amp": infer_cfg["amp"], "precision": inference_precision(model, infer_cfg, dev).record(),
            "model": cfg["variants"][variant]["model"], "target": settings.target.name,
            "channels": settings.channels, "checkpoint": str(checkpoint),
            "checkpoint_sha256": sha256_file(checkpoint), "postprocess": post.settings,
            "threshold": post.threshold, "threshold_source": post.source,
            **({"scale": settings.start.record()} if settings.start is not None else {}),
        }
        write_json(tmp / "predict_summary.json", summary)
    return summary
