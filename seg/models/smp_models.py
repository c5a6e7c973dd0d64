"""Encoder-decoder models from segmentation-models-pytorch (smp), never with hub weights.

Names are ``<decoder>-<encoder>``: ``unet-resnet34`` is ``smp.Unet(encoder_name="resnet34",
encoder_weights=None, in_channels=1, classes=...)``; ``fpn-resnet34``, ``unetplusplus-resnet18``,
``deeplabv3plus-densenet121`` ... use the other smp decoders (:data:`DECODERS`). Extra params are
passed to the smp class (e.g. ``decoder_channels``, ``encoder_depth``, ``decoder_attention_type``).

Weights: ``encoder_weights`` is always None (random init; smp then builds the first conv for
``in_channels`` directly), so nothing is downloaded; ``HF_HUB_OFFLINE=1`` is set as a safeguard before
smp is imported. Pretrained encoders come from :func:`seg.models.load_encoder_weights`.

Sizes: output size = input size; H and W must be multiples of ``size_divisor(model)`` =
``model.encoder.output_stride`` (32 for a depth-5 encoder; 16 for DeepLabV3+ and 8 for PSPNet by
default), which smp itself checks in ``forward``. PAN also needs H, W >= 128 (its pyramid pools the
stride-16 map three more times).
"""

from __future__ import annotations

import os

import segmentation_models_pytorch as smp
from torch import nn

from seg.errors import SegError

#: decoder name in a registry name -> smp class name
DECODERS = {
    "unet": "Unet",
    "unetplusplus": "UnetPlusPlus",
    "fpn": "FPN",
    "linknet": "Linknet",
    "pspnet": "PSPNet",
    "deeplabv3": "DeepLabV3",
    "deeplabv3plus": "DeepLabV3Plus",
    "manet": "MAnet",
    "pan": "PAN",
    "upernet": "UPerNet",
}
#: decoders that dilate the encoder (DenseNets cannot be dilated)
DILATED_DECODERS = ("deeplabv3", "deeplabv3plus", "pan")
#: encoders registered by name (any other smp encoder also builds when named explicitly)
REGISTERED_ENCODERS = ("resnet18", "resnet34", "resnet50", "densenet121", "densenet169")


def _smp():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    return smp


def smp_encoder_names() -> list[str]:
    """Names smp's own encoder table knows (timm ``tu-*`` encoders are not offered)."""
    return list(_smp().encoders.get_encoder_names())


def get_smp_encoder(name: str, in_channels: int = 1, depth: int = 5) -> nn.Module:
    """A randomly initialised smp encoder (``forward`` returns depth + 1 maps, the input first)."""
    smp = _smp()
    if name not in smp.encoders.encoders:
        raise SegError(f"encoder {name!r} is not an smp encoder (known: {', '.join(REGISTERED_ENCODERS)}, ...)")
    return smp.encoders.get_encoder(name, in_channels=in_channels, depth=depth, weights=None)


def build_smp(decoder: str, encoder: str, *, in_channels: int = 1, classes: int = 2, **params) -> nn.Module:
    """``smp.<Decoder>(encoder_name=encoder, encoder_weights=None, ...)``; params go to the class.

    Raises:
        SegError: unknown decoder or encoder, ``encoder_weights`` given, or smp rejects the params.
    """
    if decoder not in DECODERS:
        raise SegError(f"model {decoder}-{encoder}: unknown decoder {decoder!r} (choices: {', '.join(DECODERS)})")
    if params.get("encoder_weights") is not None:
        raise SegError(f"model {decoder}-{encoder}: params.encoder_weights: hub weights are not fetched; "
                       "use the variant's `pretrained: <path>` or `inhouse`")
    params.pop("encoder_weights", None)
    smp = _smp()
    if encoder not in smp.encoders.encoders:
        raise SegError(f"model {decoder}-{encoder}: unknown smp encoder {encoder!r} "
                       f"(registered: {', '.join(REGISTERED_ENCODERS)}; smp has {len(smp.encoders.encoders)})")
    if "decoder_channels" in params and isinstance(params["decoder_channels"], list):
        params["decoder_channels"] = tuple(params["decoder_channels"])
    cls = getattr(smp, DECODERS[decoder])
    try:
        return cls(encoder_name=encoder, encoder_weights=None, in_channels=in_channels, classes=classes, **params)
    except (TypeError, ValueError, KeyError) as e:
        raise SegError(f"model {decoder}-{encoder}: smp.{cls.__name__} rejected params {params}: {e}") from None


def smp_size_divisor(model: nn.Module) -> int:
    """Input sizes should be multiples of this: the encoder's output stride.

    smp checks it in ``forward`` except for ``Unet`` (``requires_divisible_input_shape = False``),
    which also runs on other sizes by interpolating decoder maps to the skip sizes; multiples of the
    stride keep every skip exactly aligned, so they are what this contract promises.
    """
    return int(model.encoder.output_stride)
