"""The catalogue: one frozen :class:`Arch` entry per classic classification network.

Each entry says how to build the network (torchvision with ``weights=None``, timm with
``pretrained=False``, or :mod:`seg.models.zoo.classic`; nothing is downloaded), its native input
size, which submodules are its stages (for per-stage output shapes), which submodules form its
convolutional trunk (for use as an FCN encoder), and the published figures we check against.

Published figures (``published_params_m`` in 10^6 parameters, ``published_madds_g`` in 10^9
multiply-adds at the native input size) are for the implementation built here; where that differs
from the paper (ResNet v1.5 puts the stride on the 3x3 conv; torchvision's AlexNet is the one-tower
variant) ``notes`` gives the paper's figure too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from seg.models.zoo import classic

TV_DOCS = "torchvision model docs (Params, GFLOPS = mult-adds at 224)"


@dataclass(frozen=True)
class Arch:
    """One catalogue entry.

    Attributes:
        name: registry key (``resnet50``); ``title`` is the display name (``ResNet-50``).
        year, paper: publication year and short citation.
        source: how it is built (``torchvision``, ``timm``, ``seg`` for networks written here).
        build: zero-argument constructor returning the classification network (random weights).
        input_chw: native input (C, H, W), the size the mult-adds and stage shapes are measured at.
        stages: (label, submodule path) pairs whose outputs the stage table reports.
        trunk: module paths, in order, whose composition is the convolutional feature extractor;
            ``trunk_relu`` appends a ReLU (DenseNet's ``features`` end with a norm, the ReLU is in
            ``forward``). ``trunk_channels`` / ``trunk_stride``: its output channels and total stride.
        aux_prefixes: parameter-name prefixes of auxiliary heads, excluded from the headline count.
        shapes_in_train_mode: run the stage-shape pass in training mode (GoogLeNet's aux heads).
        published_params_m, published_madds_g: figures to compare with (None = none published).
        reference: where the published figures come from; notes: variant, conventions, caveats.
    """

    name: str
    title: str
    year: int
    paper: str
    source: str
    build: Callable[[], nn.Module] = field(repr=False, compare=False)
    input_chw: tuple[int, int, int]
    stages: tuple[tuple[str, str], ...]
    trunk: tuple[str, ...]
    trunk_channels: int
    trunk_stride: int
    published_params_m: float | None
    published_madds_g: float | None
    reference: str
    notes: str = ""
    trunk_relu: bool = False
    aux_prefixes: tuple[str, ...] = ()
    shapes_in_train_mode: bool = False


def _tv(fn: str, **kw) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return torchvision.models.get_model(fn, weights=None, **kw)

    return build


def _timm(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False)

    return build


def _classic(fn: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return getattr(classic, fn)()

    return build


def _seq_stages(prefix: str, labels_idx: list[tuple[str, int]]) -> tuple[tuple[str, str], ...]:
    return tuple((label, f"{prefix}.{i}") for label, i in labels_idx)


_RESNET_STAGES = (
    ("conv1", "conv1"), ("pool1", "maxpool"), ("layer1", "layer1"), ("layer2", "layer2"),
    ("layer3", "layer3"), ("layer4", "layer4"), ("pool", "avgpool"), ("fc", "fc"),
)  # fmt: skip
_RESNET_TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
_DENSENET_STAGES = tuple(
    (n, f"features.{n}")
    for n in ("conv0", "pool0", "denseblock1", "transition1", "denseblock2", "transition2",
              "denseblock3", "transition3", "denseblock4", "norm5")
) + (("fc", "classifier"),)  # fmt: skip


def _vgg_stages(pools: tuple[int, ...]) -> tuple[tuple[str, str], ...]:
    blocks = tuple((f"block{i + 1}", f"features.{p}") for i, p in enumerate(pools))
    return blocks + (("fc6", "classifier.0"), ("fc7", "classifier.3"), ("fc8", "classifier.6"))


_HE = "He et al., Deep residual learning for image recognition, CVPR 2016"
_HUANG = "Huang et al., Densely connected convolutional networks, CVPR 2017"
_RESNET_V15 = (
    "torchvision ResNet v1.5 (stride on the 3x3 conv); the paper's v1 (stride on the first 1x1) "
    "has {} G mult-adds (He et al. Table 1)"
)


def _resnet(depth: int, params: float, madds: float, paper_madds: float, ch: int) -> Arch:
    return Arch(
        f"resnet{depth}", f"ResNet-{depth}", 2015, _HE, "torchvision", _tv(f"resnet{depth}"),
        (3, 224, 224), _RESNET_STAGES, _RESNET_TRUNK, ch, 32, params, madds, TV_DOCS,
        _RESNET_V15.format(paper_madds),
    )  # fmt: skip


def _densenet(depth: int, params: float, madds: float, ch: int, build=None, ref=TV_DOCS) -> Arch:
    return Arch(
        f"densenet{depth}", f"DenseNet-{depth}", 2016, _HUANG,
        "seg (torchvision DenseNet class)" if build else "torchvision",
        build or _tv(f"densenet{depth}"), (3, 224, 224), _DENSENET_STAGES, ("features",), ch, 32,
        params, madds, ref, "DenseNet-BC, growth k = 32", trunk_relu=True,
    )  # fmt: skip


_GOOGLENET_BLOCKS = (
    "conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
    "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
    "inception5a", "inception5b",
)  # fmt: skip

ARCHS: tuple[Arch, ...] = (
    Arch(
        "lenet5", "LeNet-5", 1998,
        "LeCun et al., Gradient-based learning applied to document recognition, Proc. IEEE 1998",
        "seg", _classic("LeNet5"), (1, 32, 32),
        (("C1", "c1"), ("S2", "s2"), ("C3", "c3"), ("S4", "s4"), ("C5", "c5"), ("F6", "f6"),
         ("RBF", "output")),
        ("c1", "act", "s2", "act", "c3", "act", "s4", "act", "c5", "act"), 120, 4,
        0.060, None, "LeCun et al. 1998 section II.B: 60,000 trainable parameters, 340,908 connections",
        "faithful variant: C3 partial connection table (Table I), trainable sub-sampling, fixed RBF "
        "output (a buffer); the simplified variant (full C3, linear output) has 61,706 parameters. "
        "Mult-adds count conv/linear weights only (325,680); the paper's 340,908 connections add "
        "biases (6,508), sub-sampling (7,880) and RBF (840).",
    ),
    Arch(
        "alexnet", "AlexNet", 2012,
        "Krizhevsky, Sutskever & Hinton, ImageNet classification with deep CNNs, NeurIPS 2012",
        "torchvision", _tv("alexnet"), (3, 224, 224),
        _seq_stages("features", [("conv1", 0), ("pool1", 2), ("conv2", 3), ("pool2", 5),
                                 ("conv3", 6), ("conv4", 8), ("conv5", 10), ("pool5", 12)])
        + (("fc6", "classifier.1"), ("fc7", "classifier.4"), ("fc8", "classifier.6")),
        ("features",), 256, 32, 61.1, 0.71, TV_DOCS,
        "torchvision's one-tower variant (Krizhevsky 2014, 'One weird trick'; 64-192-384-256-256 "
        "filters; the 2012 two-tower net has 60M); native size 224 with conv1 padding 2 gives the "
        "paper's 55x55 conv1 map (the paper's 227 without padding)",
    ),  # fmt: skip
    Arch(
        "zfnet", "ZFNet", 2013,
        "Zeiler & Fergus, Visualizing and understanding convolutional networks, ECCV 2014 "
        "(arXiv 2013)", "seg", _classic("ZFNet"), (3, 224, 224),
        _seq_stages("features", [("conv1", 0), ("pool1", 2), ("conv2", 4), ("pool2", 6),
                                 ("conv3", 8), ("conv4", 10), ("conv5", 12), ("pool5", 14)])
        + (("fc6", "classifier.2"), ("fc7", "classifier.5"), ("fc8", "classifier.7")),
        ("features",), 256, 32, None, None, "Zeiler & Fergus 2013 Fig. 3 (layer sizes; no count given)",
        "7x7/2 conv1 with 96 filters, map sizes 110-55-26-13-13-13-6 as in Fig. 3",
    ),  # fmt: skip
    Arch(
        "vgg16", "VGG-16", 2014,
        "Simonyan & Zisserman, Very deep convolutional networks, ICLR 2015", "torchvision",
        _tv("vgg16"), (3, 224, 224), _vgg_stages((4, 9, 16, 23, 30)), ("features",), 512, 32,
        138.4, 15.5, TV_DOCS + "; VGG paper Table 2: 138M", "configuration D",
    ),  # fmt: skip
    Arch(
        "vgg19", "VGG-19", 2014,
        "Simonyan & Zisserman, Very deep convolutional networks, ICLR 2015", "torchvision",
        _tv("vgg19"), (3, 224, 224), _vgg_stages((4, 9, 18, 27, 36)), ("features",), 512, 32,
        143.7, 19.6, TV_DOCS + "; VGG paper Table 2: 144M", "configuration E",
    ),  # fmt: skip
    Arch(
        "googlenet", "GoogLeNet", 2014,
        "Szegedy et al., Going deeper with convolutions, CVPR 2015", "torchvision",
        _tv("googlenet", aux_logits=True, init_weights=True), (3, 224, 224),
        tuple((b, b) for b in _GOOGLENET_BLOCKS[:9]) + (("aux1", "aux1"),)
        + tuple((b, b) for b in _GOOGLENET_BLOCKS[9:12]) + (("aux2", "aux2"),)
        + tuple((b, b) for b in _GOOGLENET_BLOCKS[12:]) + (("pool", "avgpool"), ("fc", "fc")),
        _GOOGLENET_BLOCKS, 1024, 32, 6.62, 1.5,
        TV_DOCS + "; paper: 1.5 billion multiply-adds, ~6.8M by its Table 1",
        "Inception v1 with both auxiliary classifiers (aux1 after 4a, aux2 after 4d; not in the "
        "headline count, which is without them). torchvision adds batch norm and uses 3x3 in the "
        "'5x5' branch; seg.models.zoo.googlenet_paper rebuilds the paper's blocks for Table 1",
        aux_prefixes=("aux1.", "aux2."), shapes_in_train_mode=True,
    ),  # fmt: skip
    _resnet(18, 11.7, 1.81, 1.8, 512),
    _resnet(34, 21.8, 3.66, 3.6, 512),
    _resnet(50, 25.6, 4.09, 3.8, 2048),
    _resnet(101, 44.5, 7.80, 7.6, 2048),
    _resnet(152, 60.2, 11.51, 11.3, 2048),
    Arch(
        "resnext50", "ResNeXt-50 (32x4d)", 2016,
        "Xie et al., Aggregated residual transformations for deep neural networks, CVPR 2017",
        "torchvision", _tv("resnext50_32x4d"), (3, 224, 224), _RESNET_STAGES, _RESNET_TRUNK, 2048, 32,
        25.0, 4.23, TV_DOCS + "; paper Table 1: 25.0M, 4.2 GFLOPs", "cardinality 32, width 4",
    ),  # fmt: skip
    _densenet(121, 8.0, 2.83, 1024),
    _densenet(169, 14.1, 3.36, 1664),
    _densenet(201, 20.0, 4.29, 1920),
    _densenet(
        264, 33.3, 5.77, 2688, _classic("densenet264"),
        "PaddleClas DPN_DenseNet model table: 33.37M params, 11.54 GFLOPs (= 2 x mult-adds)",
    ),
    Arch(
        "seresnet50", "SE-ResNet-50", 2017,
        "Hu, Shen & Sun, Squeeze-and-excitation networks, CVPR 2018", "timm",
        _timm("seresnet50"), (3, 224, 224),
        _RESNET_STAGES[:-2] + (("pool", "global_pool"), ("fc", "fc")),
        ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4"), 2048, 32,
        28.1, 4.11, "Hu et al. Table 2: 28.1M params; timm's tables: 4.11 GMACs",
        "timm's SE-ResNet-50 puts the stride on the 3x3 conv (v1.5); the paper's (stride on the 1x1) "
        "has 3.87 G mult-adds; reduction ratio 16",
    ),  # fmt: skip
)  # fmt: skip
