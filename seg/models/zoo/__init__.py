"""The architectures of the field, as a catalogue (``seg zoo``).

LeNet-5, AlexNet, ZFNet, VGG-16/19, GoogLeNet (with its two auxiliary classifiers),
ResNet-18/34/50/101/152, ResNeXt-50, SE-ResNet-50 and DenseNet-121/169/201/264: the classification
networks our segmentation encoders descend from, each with parameter count, multiply-adds at its
native input size and the output shape of each stage. Built from torchvision (``weights=None``) or
timm (``pretrained=False``), or written in :mod:`seg.models.zoo.classic` (LeNet-5, ZFNet,
DenseNet-264); nothing is downloaded. Entries live in :mod:`seg.models.zoo.catalogue`.

API:
    names() -> list[str]; get(name) -> Arch; build(name, device=None) -> nn.Module;
    measure(name, shapes=True) -> dict; catalogue(names=None, shapes=False) -> list[dict];
    trunk(name, in_channels=3) -> (nn.Module, out_channels, stride).

``trunk`` is the convolutional feature extractor of any entry, usable as an FCN encoder: a module
mapping (N, in_channels, H, W) float32 to (N, out_channels, h, w) where ``stride`` is the input-pixel
spacing of output pixels (total down-sampling). Padded networks give h = ceil-or-floor(H / stride);
networks with unpadded layers (LeNet-5, AlexNet, ZFNet) lose a border as well (LeNet-5:
h = (H - 28) / 4, AlexNet: 224 -> 6). In every case adding k * stride to H adds exactly k to h, so
skip/upsampling geometry can be planned from ``stride``. Weights are random (PyTorch/torchvision
initialisation); with ``in_channels`` different from the native count the first convolution is
replaced by a fresh one with the same geometry.
"""

from __future__ import annotations

import copy
import functools
import re

from torch import nn

from seg.errors import SegError
from seg.models.zoo.catalogue import ARCHS, Arch
from seg.models.zoo.counting import count_params, profile, replace_first_conv

__all__ = ["ARCHS", "Arch", "names", "get", "build", "measure", "catalogue", "trunk"]

_BY_NAME = {a.name: a for a in ARCHS}


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


_ALIASES = {_norm(k): a.name for a in ARCHS for k in (a.name, a.title, a.title.split(" (")[0])}
_ALIASES.update({"resnext5032x4d": "resnext50", "inceptionv1": "googlenet", "lenet": "lenet5"})


def names() -> list[str]:
    """Registry keys in catalogue (chronological) order."""
    return [a.name for a in ARCHS]


def get(name: str) -> Arch:
    """Catalogue entry by key or title (case, '-', '_' and spaces ignored: 'ResNet-50' = 'resnet50').

    Raises SegError naming the valid keys.
    """
    key = _ALIASES.get(_norm(name))
    if key is None:
        raise SegError(f"zoo name {name!r}: unknown architecture; choose from {', '.join(names())}")
    return _BY_NAME[key]


def build(name: str, *, device=None) -> nn.Module:
    """Build the classification network with random weights (eval mode not set).

    ``device="meta"`` builds a storage-less model for counting and shape propagation (fast).
    """
    import torch

    arch = get(name)
    if device is None:
        return arch.build()
    with torch.device(device):
        return arch.build()


def measure(name: str, *, shapes: bool = True, device="meta") -> dict:
    """Count and measure one network at its native input size.

    Returns a dict: name, title, year, paper, source, input ([C, H, W]), params (int, trainable,
    without auxiliary heads), params_with_aux (int), mult_adds (int, per image, = FLOPs / 2 from
    torch.utils.flop_counter, convolutions and matrix products only), published_params_m,
    published_madds_g, reference, notes, trunk {channels, stride}, and if ``shapes`` a list
    stages [{"stage", "module", "shape": [C, H, W] or [features]}]. Results are cached per process
    (the networks are fixed), a fresh copy is returned each call.
    """
    out = copy.deepcopy(_measure(get(name).name, str(device)))
    if not shapes:
        del out["stages"]
    return out


@functools.lru_cache(maxsize=None)
def _measure(name: str, device: str) -> dict:
    arch = get(name)
    model = build(arch.name, device=device)
    out = {
        "name": arch.name,
        "title": arch.title,
        "year": arch.year,
        "paper": arch.paper,
        "source": arch.source,
        "input": list(arch.input_chw),
        "params": count_params(model, exclude_prefixes=arch.aux_prefixes),
        "params_with_aux": count_params(model),
        "mult_adds": None,
        "mult_adds_unit": "multiply-adds (FLOPs / 2) per image, conv + matmul only",
        "published_params_m": arch.published_params_m,
        "published_madds_g": arch.published_madds_g,
        "reference": arch.reference,
        "notes": arch.notes,
        "trunk": {"channels": arch.trunk_channels, "stride": arch.trunk_stride},
    }
    # one pass gives both, except where the shapes need training mode (aux heads are not counted)
    stage_paths = [m for _, m in arch.stages]
    both = not arch.shapes_in_train_mode
    out["mult_adds"], got = profile(model, stage_paths if both else [], arch.input_chw)
    if not both:
        got = profile(model, stage_paths, arch.input_chw, train=True, batch=2)[1]
    out["stages"] = [
        {"stage": label, "module": mod, "shape": list(shape)}
        for (label, _), (mod, shape) in zip(arch.stages, got)
    ]
    return out


def catalogue(selected: list[str] | None = None, *, shapes: bool = False) -> list[dict]:
    """:func:`measure` for each selected name (default: all), in catalogue order."""
    chosen = [get(n).name for n in selected] if selected else names()
    return [measure(n, shapes=shapes) for n in chosen]


def trunk(name: str, *, in_channels: int | None = None, device=None) -> tuple[nn.Module, int, int]:
    """The convolutional trunk (feature extractor) of a catalogue network, for use as an encoder.

    Args:
        name: catalogue key or title.
        in_channels: input channels; default the network's native count (3; LeNet-5: 1).
        device: where to build (None = default device; "meta" for shape-only use).

    Returns:
        (module, out_channels, stride): ``module`` maps (N, in_channels, H, W) float32 to
        (N, out_channels, h, w); ``stride`` is its total down-sampling (see the package docstring).
    """

    arch = get(name)
    model = build(arch.name, device=device)
    parts = [(p.replace(".", "_"), model.get_submodule(p)) for p in arch.trunk]
    if arch.trunk_relu:
        parts.append(("relu_out", nn.ReLU()))
    # the same module may appear twice (LeNet's shared squashing): name each position uniquely
    seq = nn.Sequential()
    for i, (label, mod) in enumerate(parts):
        seq.add_module(label if label not in seq._modules else f"{label}{i}", mod)
    if in_channels is not None:
        if in_channels < 1:
            raise SegError(f"in_channels: must be >= 1, got {in_channels}")
        replace_first_conv(seq, in_channels)
    return seq, arch.trunk_channels, arch.trunk_stride
