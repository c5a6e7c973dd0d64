"""Classic classification networks that torchvision and timm do not ship: LeNet-5, ZFNet, DenseNet-264.

All take NCHW float32 input and return (N, classes) logits.

- :class:`LeNet5`: LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied to document
  recognition", Proc. IEEE 86(11), section II.B, built faithfully (not the common simplified
  variant): input (N, 1, 32, 32); C1 6@28x28 (5x5); S2 6@14x14 trainable sub-sampling (the sum of
  each 2x2 window times one trainable coefficient plus one trainable bias per map); C3 16@10x10 with
  the paper's *partial* connection table (Table I: maps 0-5 see 3 contiguous S2 maps, 6-11 see 4
  contiguous, 12-14 see 4 non-contiguous, 15 sees all 6); S4 16@5x5; C5 120@1x1 (5x5 conv); F6 84;
  squashing f(a) = 1.7159 tanh(2a/3) after every layer up to F6; output: 10 Euclidean RBF units
  whose +-1 parameter vectors are fixed (a buffer, not trained; the paper drew them as 7x12 bitmaps,
  here they are a seeded random +-1 code). Trainable parameters: exactly 60,000 as the paper says
  (C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164); connections 340,908 (paper: 340,908).
  The common simplified variant (full C3, average pooling, linear output) has 61,706.
- :class:`ZFNet`: Zeiler & Fergus 2013 (arXiv:1311.2901, ECCV 2014), Fig. 3: input (N, 3, 224, 224);
  96 7x7/2 filters -> 110x110, 3x3/2 max-pool -> 55x55, contrast normalisation; 256 5x5/2 -> 26x26,
  pool -> 13x13, normalisation; 384, 384, 256 3x3/1 -> 13x13; pool -> 6x6; FC 4096, 4096, 1000.
  Dense (single-GPU) connections, unlike AlexNet's two towers. Paddings (conv1 1, others as needed)
  and ceil-mode pooling are chosen to reproduce the paper's map sizes; 62.36M parameters.
- :func:`densenet264`: Huang et al. 2017, Table 1, DenseNet-264 (k = 32, blocks 6-12-64-48,
  DenseNet-BC: bottleneck 4k, compression 0.5) built with torchvision's DenseNet class; 33.34M
  parameters (PaddleClas lists 33.37M).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# LeNet-5 C3 connection table (LeCun et al. 1998, Table I): C3 map -> the S2 maps it reads.
LENET5_C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)  # fmt: skip


class Squash(nn.Module):
    """LeCun's squashing function f(a) = A tanh(S a), A = 1.7159, S = 2/3 (paper, Appendix A)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1.7159 * torch.tanh(x * (2.0 / 3.0))


class Subsample(nn.Module):
    """LeNet S-layer: sum of each 2x2 window (stride 2) times a per-map coefficient plus a per-map bias.

    Input (N, C, H, W) -> output (N, C, H // 2, W // 2); 2 trainable parameters per map.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.avg_pool2d(x, 2) * 4.0
        return s * self.weight[None, :, None, None] + self.bias[None, :, None, None]


class PartialConv(nn.Module):
    """LeNet C3: a 5x5 convolution where output map j reads only the input maps ``table[j]``.

    Implemented as one grouped convolution per fan-in size (3, 4 and 6 inputs) on the gathered input
    channels, so parameter and multiply-add counts are exactly those of the sparse table.
    Input (N, 6, H, W) -> output (N, len(table), H - 4, W - 4).
    """

    def __init__(self, table=LENET5_C3_TABLE, kernel_size: int = 5):
        super().__init__()
        by_size: dict[int, list[int]] = {}
        for j, inputs in enumerate(table):
            by_size.setdefault(len(inputs), []).append(j)
        self.sizes = tuple(sorted(by_size))
        self.convs = nn.ModuleList()
        order = []
        for size in self.sizes:
            outs = by_size[size]
            idx = [i for j in outs for i in table[j]]
            self.register_buffer(f"index{size}", torch.tensor(idx, dtype=torch.long), persistent=False)
            self.convs.append(nn.Conv2d(len(idx), len(outs), kernel_size, groups=len(outs)))
            order += outs
        # position of output map j in the concatenation of the group outputs
        self.register_buffer("order", torch.tensor(np.argsort(order), dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [conv(x[:, getattr(self, f"index{s}")]) for s, conv in zip(self.sizes, self.convs)]
        return torch.cat(parts, dim=1)[:, self.order]


class RBFOutput(nn.Module):
    """Euclidean RBF output units y_i = sum_j (x_j - w_ij)^2 with fixed +-1 parameters (a buffer).

    Returns -y (N, classes) so that larger means more likely, like logits. ``seed`` fixes the code.
    """

    def __init__(self, in_features: int = 84, classes: int = 10, seed: int = 0):
        super().__init__()
        code = np.random.default_rng(seed).choice([-1.0, 1.0], size=(classes, in_features))
        self.register_buffer("centers", torch.tensor(code, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -((x[:, None, :] - self.centers[None]) ** 2).sum(-1)


class LeNet5(nn.Module):
    """LeNet-5 exactly as in LeCun et al. 1998 (see module docstring). Input (N, 1, 32, 32) float32."""

    def __init__(self, classes: int = 10, in_channels: int = 1, seed: int = 0):
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, 6, 5)
        self.s2 = Subsample(6)
        self.c3 = PartialConv()
        self.s4 = Subsample(16)
        self.c5 = nn.Conv2d(16, 120, 5)
        self.f6 = nn.Linear(120, 84)
        self.output = RBFOutput(84, classes, seed)
        self.act = Squash()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """C1..C5: (N, in_channels, H, W) -> (N, 120, (H - 28) / 4, (W - 28) / 4), e.g. 32 -> 1."""
        for layer in (self.c1, self.s2, self.c3, self.s4, self.c5):
            x = self.act(layer(x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)
        return self.output(self.act(self.f6(x)))


class ZFNet(nn.Module):
    """ZFNet (Zeiler & Fergus 2013, Fig. 3). Input (N, 3, 224, 224) float32 -> (N, classes)."""

    def __init__(self, classes: int = 1000, in_channels: int = 3, dropout: float = 0.5):
        super().__init__()

        def norm() -> nn.Module:  # "local contrast normalisation across feature maps"
            return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)

        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 96, 7, stride=2, padding=1),  # 110x110
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),  # 55x55
            norm(),
            nn.Conv2d(96, 256, 5, stride=2),  # 26x26
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),  # 13x13
            norm(),
            nn.Conv2d(256, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),  # 6x6
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def densenet264(classes: int = 1000) -> nn.Module:
    """DenseNet-264 (k = 32, blocks 6-12-64-48) from torchvision's DenseNet class, random weights."""
    from torchvision.models.densenet import DenseNet

    return DenseNet(growth_rate=32, block_config=(6, 12, 64, 48), num_init_features=64, num_classes=classes)


def to_resnet_v1(model: nn.Module) -> nn.Module:
    """Move each bottleneck's stride from the 3x3 conv (v1.5, torchvision/timm) to the first 1x1 (v1).

    v1 is what He et al. 2016 (ResNet-50: 3.8 G mult-adds) and Hu et al. 2018 (SE-ResNet-50: 3.87 G)
    counted; parameters are unchanged, mult-adds drop (~4.09 -> ~3.86 G for ResNet-50). Works on any
    module whose bottlenecks have ``conv1`` (1x1) and ``conv2`` (3x3). Changes ``model`` in place.
    """
    for m in model.modules():
        c1, c2 = getattr(m, "conv1", None), getattr(m, "conv2", None)
        if isinstance(c1, nn.Conv2d) and isinstance(c2, nn.Conv2d) and c1.kernel_size == (1, 1):
            if c2.stride != (1, 1):
                c1.stride, c2.stride = c2.stride, (1, 1)
    return model
