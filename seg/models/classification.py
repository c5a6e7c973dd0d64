"""Classification versions of the segmentation encoders, and moving their weights into the encoders.

For every encoder a segmentation model uses there is a classifier built from the same modules, with
the same key names, so that its state dict loads into ``model.encoder`` strictly:

============  =========================================================  =======================
encoder       classifier (input (N, in_channels, H, W) -> (N, classes))   head keys (dropped)
============  =========================================================  =======================
resnet*       ``torchvision.models.resnet*`` (GAP + linear ``fc``)         ``fc.*``
densenet*     ``torchvision.models.densenet*`` (GAP + linear)              ``classifier.*``
vgg16         torchvision VGG16 layout (7x7 avg-pool, fc6, fc7, fc8)       ``classifier.6.*``
unet          :class:`seg.models.unet.UNetClassifier` (GAP + ``fc``)       ``fc.*``
============  =========================================================  =======================

ResNet/DenseNet encoders are smp's, which are torchvision modules minus the head. For VGG16 the
encoder of the FCNs holds fc6/fc7 as convolutions, so the classifier keeps torchvision's fc6/fc7
(``classifier.0`` / ``classifier.3``) and the transfer reshapes them ((4096, 512*7*7) -> (4096, 512,
7, 7)), exactly the paper's "convolutionalization".

Input channels: the classifiers take ``in_channels`` (1 = grayscale) directly. A 3-channel (RGB,
e.g. ImageNet) first-conv weight loaded into a 1-channel encoder is summed over its input channels
(``w.sum(1, keepdim=True)``, smp's ``patch_first_conv`` rule), so a gray image x gives the response
the RGB network gives to (x, x, x); for other channel counts the RGB weights are cycled and scaled by
3 / in_channels (also smp's rule).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from seg.errors import SegError
from seg.models.fcn import vgg_layers

TORCHVISION_ENCODERS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                        "densenet121", "densenet161", "densenet169", "densenet201")
CLASSIFIER_ENCODERS = TORCHVISION_ENCODERS + ("vgg16", "unet")
_HEADS = {"resnet": ("fc.",), "densenet": ("classifier.",), "vgg16": ("classifier.6.",), "unet": ("fc.",)}
_DENSENET_OLD = re.compile(  # old torchvision DenseNet keys "norm.1" -> "norm1" (smp's pattern)
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


class VGGClassifier(nn.Module):
    """VGG16 classifier with torchvision's keys; channels (and the 4096 of fc6/fc7) times ``width``.

    Input (N, in_channels, H, W), H, W >= 32; output (N, num_classes) logits. width 1.0 and
    in_channels 3 is exactly ``torchvision.models.vgg16()``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: float = 1.0):
        super().__init__()

        self.features = vgg_layers(in_channels, width)
        c5 = [m for m in self.features if isinstance(m, nn.Conv2d)][-1].out_channels
        f = max(1, int(round(4096 * width)))
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(c5 * 49, f), nn.ReLU(True), nn.Dropout(0.5),
            nn.Linear(f, f), nn.ReLU(True), nn.Dropout(0.5), nn.Linear(f, num_classes),
        )
        for m in self.classifier:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _family(encoder: str) -> str:
    for fam in ("resnet", "densenet"):
        if encoder.startswith(fam):
            return fam
    return encoder


def build_classifier(encoder: str, *, in_channels: int = 1, num_classes: int = 2, **params) -> nn.Module:
    """The classification version of ``encoder`` (see the module table).

    Args:
        encoder: one of :data:`CLASSIFIER_ENCODERS`.
        params: ``width`` for vgg16; ``base_channels``, ``depth``, ``batch_norm`` (``padding``
            accepted and ignored: it does not change the weights) for unet.
    """
    if encoder in TORCHVISION_ENCODERS:
        import torchvision

        if params:
            raise SegError(f"encoder {encoder}: takes no params, got {sorted(params)}")
        model = getattr(torchvision.models, encoder)(weights=None, num_classes=num_classes)
        if in_channels != 3:
            parent, name = (model, "conv1") if encoder.startswith("resnet") else (model.features, "conv0")
            old = getattr(parent, name)
            new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False)
            nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
            setattr(parent, name, new)
        return model
    allowed = {"vgg16": ("width",), "unet": ("base_channels", "depth", "batch_norm", "padding")}.get(encoder)
    if allowed is not None and set(params) - set(allowed):
        bad = sorted(set(params) - set(allowed))[0]
        raise SegError(f"encoder {encoder}: params.{bad}: unknown parameter (allowed: {', '.join(allowed)})")
    if encoder == "vgg16":
        return VGGClassifier(in_channels, num_classes, **params)
    if encoder == "unet":
        from seg.models.unet import UNetClassifier

        params = {k: v for k, v in params.items() if k != "padding"}
        return UNetClassifier(in_channels, num_classes, padding="same", **params)
    raise SegError(f"encoder {encoder!r}: no classification version (choices: {', '.join(CLASSIFIER_ENCODERS)})")


def encoder_for(model_name: str, params: dict | None = None) -> tuple[str, dict]:
    """(encoder name, classifier params) of a registry model: what ``seg pretrain --encoder`` takes.

    ``unet`` -> ("unet", {base_channels, depth, batch_norm}); ``fcn8s`` -> (backbone, {width} for
    vgg16); ``<decoder>-<encoder>`` -> (encoder, {}).
    """
    params = params or {}
    if model_name == "unet":
        return "unet", {k: params[k] for k in ("base_channels", "depth", "batch_norm") if k in params}
    if model_name.startswith("fcn"):
        bb = params.get("backbone", "vgg16")
        return bb, ({"width": params["width"]} if bb == "vgg16" and "width" in params else {})
    return model_name.partition("-")[2], {}


def classifier_to_encoder_state(state_dict: dict, encoder: str) -> dict[str, torch.Tensor]:
    """Encoder-keyed state dict from a classifier (or torchvision/ImageNet) state dict.

    Drops the head keys, renames old torchvision DenseNet keys (``norm.1`` -> ``norm1``), strips
    ``module.`` / ``encoder.`` prefixes and turns VGG fc6/fc7 into convolutions.
    """
    fam = _family(encoder)
    if fam not in _HEADS:
        raise SegError(f"encoder {encoder!r}: no classification version (choices: {', '.join(CLASSIFIER_ENCODERS)})")
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        k = k.removeprefix("module.").removeprefix("encoder.")
        if any(k.startswith(h) for h in _HEADS[fam]):
            continue
        if fam == "densenet" and (m := _DENSENET_OLD.match(k)):
            k = m.group(1) + m.group(2)
        out[k] = v
    if fam == "vgg16":
        from seg.models.fcn import vgg_classifier_to_encoder

        out = vgg_classifier_to_encoder(out)
    return out


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(O, 3, k, k) RGB first-conv weights -> (O, in_channels, k, k): sum for 1 channel (smp's rule)."""
    if weight.shape[1] == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    idx = torch.arange(in_channels) % weight.shape[1]
    return weight[:, idx] * (weight.shape[1] / in_channels)


def _first_conv_key(encoder: nn.Module) -> str:
    for name, m in encoder.named_modules():
        if isinstance(m, nn.Conv2d):
            return f"{name}.weight"
    raise SegError("model.encoder has no Conv2d")


def encoder_name_of(model: nn.Module) -> str:
    """The classification-encoder name of a built model (via ``model.seg_name`` / ``seg_params``)."""
    name = getattr(model, "seg_name", None)
    if name is None:
        raise SegError("model was not built by seg.models.build_model (no seg_name)")
    return encoder_for(name, getattr(model, "seg_params", {}))[0]


def load_encoder_weights(model: nn.Module, state_dict: dict) -> list[str]:
    """Load classification-pretrained weights into ``model.encoder``; every encoder tensor is set.

    Args:
        model: a model from :func:`seg.models.build_model` (has ``.encoder``).
        state_dict: a classifier state dict (:func:`build_classifier`, torchvision/ImageNet keys) or
            an encoder state dict (``encoder.pt`` from ``seg pretrain``).

    Returns:
        The encoder keys transferred (all of ``model.encoder.state_dict()``).

    Raises:
        SegError: a key is missing or left over (nothing is skipped silently), or a shape differs.
    """
    enc = model.encoder
    sd = classifier_to_encoder_state(state_dict, encoder_name_of(model))
    own = enc.state_dict()
    first = _first_conv_key(enc)
    if first in sd and sd[first].ndim == 4:
        sd[first] = adapt_first_conv(sd[first], own[first].shape[1])
    missing, extra = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or extra:
        raise SegError(f"encoder weights do not match {getattr(model, 'seg_name', '')}: "
                       f"missing {missing[:5]}{'...' if len(missing) > 5 else ''} "
                       f"({len(missing)}), unexpected {extra[:5]}{'...' if len(extra) > 5 else ''} ({len(extra)})")
    for k, v in own.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise SegError(f"encoder weights: {k}: shape {tuple(sd[k].shape)} != model's {tuple(v.shape)}")
    enc.load_state_dict({k: sd[k].to(v.dtype) for k, v in own.items()})
    return list(own)
