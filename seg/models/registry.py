"""The model registry: one name -> builder table, one builder, and the size contract.

Every model takes (N, in_channels, H, W) float32 and returns (N, classes, H', W') logits.

Names (``seg models`` lists them with parameter counts):
    - ``unet``: the classic U-Net (:mod:`seg.models.unet`); params padding, base_channels, depth,
      batch_norm.
    - ``fcn32s``, ``fcn16s``, ``fcn8s``: FCNs (:mod:`seg.models.fcn`); params backbone, width.
    - ``<decoder>-<encoder>``: smp models (:mod:`seg.models.smp_models`), e.g. ``unet-resnet34``,
      ``fpn-resnet34``; the registered ones combine :data:`DECODERS` with ResNet-18/34/50 and
      DenseNet-121/169, and any other smp decoder/encoder pair also builds by name.

Size contract (pixels along one axis; the same holds for H and W):
    - :func:`output_size` (model, input size) -> output size (identity for same-padding models);
    - :func:`input_size_for` (model, output size) -> the smallest legal input size whose output is
      >= the request (equal when the request is itself a legal output; for same-padding models:
      the request rounded up to a multiple of :func:`size_divisor`);
    - :func:`size_divisor` -> inputs of same-padding models must be multiples of it (16 for the
      depth-4 U-Net, 32 for depth-5 smp encoders, 1 for FCNs which take any size);
    - valid-padding models also have ``model.valid_border`` = (input - output) / 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from seg.errors import SegError
from seg.models.fcn import FCN
from seg.models.smp_models import DECODERS, DILATED_DECODERS, REGISTERED_ENCODERS, build_smp
from seg.models.unet import UNet


@dataclass(frozen=True)
class ModelEntry:
    """One registry entry.

    Attributes:
        name: registry name (e.g. "unet-resnet34").
        family: "unet", "fcn" or "smp".
        builder: ``builder(in_channels=..., classes=..., **params) -> nn.Module``.
        description: one line for ``seg models``.
        defaults: default params, shown by ``seg models`` (the builder's own defaults apply anyway).
    """

    name: str
    family: str
    builder: Callable[..., nn.Module]
    description: str
    defaults: dict = field(default_factory=dict, hash=False, compare=False)


def _unet(in_channels: int, classes: int, **params) -> nn.Module:
    _check_keys("unet", params, ("padding", "base_channels", "depth", "batch_norm"))
    return UNet(in_channels, classes, **params)


def _fcn(variant: str) -> Callable[..., nn.Module]:
    def build(in_channels: int, classes: int, **params) -> nn.Module:
        _check_keys(variant, params, ("backbone", "width"))
        return FCN(variant, in_channels, classes, **params)

    return build


def _smp_builder(decoder: str, encoder: str) -> Callable[..., nn.Module]:
    def build(in_channels: int, classes: int, **params) -> nn.Module:
        return build_smp(decoder, encoder, in_channels=in_channels, classes=classes, **params)

    return build


def _check_keys(name: str, params: dict, allowed: tuple[str, ...]) -> None:
    extra = sorted(set(params) - set(allowed))
    if extra:
        raise SegError(f"model {name}: params.{extra[0]}: unknown parameter (allowed: {', '.join(allowed)})")


def _entries() -> dict[str, ModelEntry]:
    out = {"unet": ModelEntry("unet", "unet", _unet, "classic U-Net (Ronneberger 2015)",
                              {"padding": "same", "base_channels": 64, "depth": 4, "batch_norm": False})}
    for v in ("fcn32s", "fcn16s", "fcn8s"):
        out[v] = ModelEntry(v, "fcn", _fcn(v), f"FCN-{v[3:]} (Long 2015), convolutionalized backbone",
                            {"backbone": "vgg16", "width": 1.0})
    for dec in DECODERS:
        for enc in REGISTERED_ENCODERS:
            if enc.startswith("densenet") and dec in DILATED_DECODERS:
                continue  # smp: DenseNet encoders cannot be dilated
            name = f"{dec}-{enc}"
            out[name] = ModelEntry(name, "smp", _smp_builder(dec, enc), f"smp {DECODERS[dec]}, {enc} encoder")
    return out


REGISTRY: dict[str, ModelEntry] = _entries()


def model_names() -> list[str]:
    return list(REGISTRY)


def get_entry(name: str) -> ModelEntry:
    """The registry entry for ``name``; unregistered ``<smp decoder>-<smp encoder>`` pairs resolve too.

    Raises:
        SegError: unknown name, listing the registered names.
    """
    if name in REGISTRY:
        return REGISTRY[name]
    dec, sep, enc = name.partition("-")
    if sep and dec in DECODERS:
        from seg.models.smp_models import smp_encoder_names

        if enc in smp_encoder_names():
            return ModelEntry(name, "smp", _smp_builder(dec, enc), f"smp {DECODERS[dec]}, {enc} encoder")
    raise SegError(f"model {name!r}: unknown model name (registered: {', '.join(REGISTRY)}; or "
                   f"<decoder>-<smp encoder> with decoder one of {', '.join(DECODERS)})")


def build_model(name: str, *, in_channels: int = 1, classes: int = 2, **params) -> nn.Module:
    """Build a model by registry name. Input (N, in_channels, H, W) -> (N, classes, H', W') logits.

    ``params`` are the model's keyword arguments (a variant's ``params`` in the config); the built
    model records ``model.seg_name`` and ``model.seg_params``.
    """
    if not (isinstance(in_channels, int) and in_channels >= 1):
        raise SegError(f"model {name}: in_channels must be a positive integer, got {in_channels!r}")
    if not (isinstance(classes, int) and classes >= 1):
        raise SegError(f"model {name}: classes must be a positive integer, got {classes!r}")
    model = get_entry(name).builder(in_channels=in_channels, classes=classes, **dict(params))
    model.seg_name, model.seg_params = name, dict(params)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- size contract
def _is_smp(model: nn.Module) -> bool:
    return not hasattr(model, "output_size") and hasattr(model, "encoder") and hasattr(model, "decoder")


def size_divisor(model: nn.Module) -> int:
    """Input sizes must be multiples of this (same-padding models; 1 = any size)."""
    if _is_smp(model):
        from seg.models.smp_models import smp_size_divisor

        return smp_size_divisor(model)
    if hasattr(model, "valid_border"):
        return 2**model.depth  # legal valid sizes step by this (see input_size_for)
    return int(getattr(model, "size_divisor", 1))


def output_size(model: nn.Module, input_size: int) -> int:
    """Output size for ``input_size`` (pixels). SegError if the model cannot take that size."""
    if hasattr(model, "output_size"):
        return model.output_size(int(input_size))
    d = size_divisor(model)
    if input_size <= 0 or input_size % d:
        raise SegError(f"model: input size {input_size} must be a positive multiple of {d}")
    return int(input_size)


def input_size_for(model: nn.Module, output_size: int) -> int:
    """Smallest legal input size whose output size is >= ``output_size`` (== for legal outputs)."""
    if output_size <= 0:
        raise SegError(f"model: output size must be positive, got {output_size}")
    if hasattr(model, "input_size_for"):
        return model.input_size_for(int(output_size))
    d = size_divisor(model)
    return -(-int(output_size) // d) * d
