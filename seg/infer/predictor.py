"""One slice through the network: tile geometry from the model's size contract, the inference
precision, tiled inference with optional 8-fold TTA (:func:`predict_slice`, also what the trainer's
validation and ``seg segment`` run). :func:`tile_spec` turns an ``inference`` section into the
:class:`~seg.infer.tiling.TileSpec` every tiler (this module, the exported graphs) uses.
"""

from __future__ import annotations

import numpy as np
import torch

from seg.config import complete_section
from seg.device import precision_for, resolve_device
from seg.infer.network import inference_predictor
from seg.infer.rescale import is_identity, resize_image, resize_to
from seg.infer.tiling import TileSpec, as_batch, predict_batch
from seg.models import input_size_for, output_size, size_divisor


def tile_geometry(model: torch.nn.Module, tile: int) -> tuple[int, int, int]:
    """(output tile, border, align) in pixels for a requested output tile size ``tile``.

    Valid-padding models (attribute ``valid_border``) get the smallest legal output tile >= ``tile``,
    their border and align = their size divisor (tile offsets on the whole slice's pooling grid);
    same-padding models get ``tile`` rounded up to a multiple of their size divisor, border 0 and
    align 1. Uses the size contract of :mod:`seg.models`.
    """
    border = int(getattr(model, "valid_border", 0) or 0)
    out_tile = int(output_size(model, input_size_for(model, int(tile))))
    return out_tile, border, int(size_divisor(model)) if border else 1


def inference_precision(model: torch.nn.Module, infer_cfg: dict, device: torch.device, channels: int = 1):
    """The :class:`seg.device.Precision` inference runs ``model`` in: ``inference.amp`` (``auto``
    times a batch of ``inference.batch_size`` input tiles of ``channels`` channels, cached per
    machine: :mod:`seg.precision`). ``infer_cfg`` is a complete ``inference`` section."""
    tile, border, _ = tile_geometry(model, infer_cfg["tile"])
    size_in = tile + 2 * border
    return precision_for(infer_cfg, device, section="inference", model=model, mode="infer",
                         shape=(int(infer_cfg["batch_size"]), int(channels), size_in, size_in))


def tile_spec(model: torch.nn.Module, infer_cfg: dict, *, activation: str) -> TileSpec:
    """The :class:`~seg.infer.tiling.TileSpec` of ``model`` under a complete ``inference`` section:
    the output tile of :func:`tile_geometry` for ``infer_cfg["tile"]``, its border and alignment,
    the section's ``overlap`` and ``blend``, and ``activation`` (the target's)."""
    tile, border, align = tile_geometry(model, int(infer_cfg["tile"]))
    return TileSpec(tile, float(infer_cfg["overlap"]), infer_cfg["blend"], border, align, activation=activation)


def predict_slice(model: torch.nn.Module, image: np.ndarray, infer_cfg: dict | None = None,
                  device: torch.device | str = "cpu", activation: str = "softmax", scale: float = 1.0) -> np.ndarray:
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
        scale: resize factor of the image before the network (:mod:`seg.infer.rescale`: objects of
            ``D`` px become ``scale * D`` px); the probabilities are resized back to (H, W).
            1 (the default): the image as it is, exactly what the exported graphs compute.

    Returns:
        float32 (classes, H, W): :func:`seg.infer.tiling.predict_batch`, the computation the
        exported graphs hold (at ``scale``, then resized back).
    """
    if not is_identity(scale):
        shape = np.shape(image)[-2:]
        small = predict_slice(model, resize_image(image, scale), infer_cfg, device, activation)
        return resize_to(small, shape)
    cfg = complete_section("inference", infer_cfg)
    device = resolve_device(device, section="inference")
    spec = tile_spec(model, cfg, activation=activation)
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


