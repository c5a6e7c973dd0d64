"""Fully convolutional networks FCN-32s / 16s / 8s (Long, Shelhamer & Darrell, CVPR 2015).

A classification backbone is "convolutionalized": VGG16's fully connected fc6 / fc7 become a 7x7 and
a 1x1 convolution (``backbone="vgg16"``, the paper), or a ResNet trunk is used as is
(``backbone="resnet18"|"resnet34"|"resnet50"|...``, smp's ResNet encoder). A 1x1 ``score_fr`` layer
gives class scores at stride 32; learned up-sampling (``ConvTranspose2d`` initialised to bilinear
interpolation) brings them back to the input size. FCN-16s first fuses (adds) 2x up-sampled scores with
a 1x1 score of pool4 (stride 16); FCN-8s additionally with pool3 (stride 8).

Sizes: input (N, in_channels, H, W) float32 of any H, W >= 1 (odd included) -> (N, classes, H, W)
logits; the output is cropped to the input size.

- VGG16 follows the reference Caffe/"pytorch-fcn" geometry: conv1_1 pads by 100 pixels, max-pools
  round up (``ceil_mode``), and the score maps are cropped at the fixed offsets of the paper's
  networks (pool4: 5, pool3: 9, final: 19 / 27 / 31 for 32s / 16s / 8s).
- ResNet backbones pad "same"; up-sampled maps are cropped top-left to the skip / input size.

``width`` (VGG16 only, default 1.0) multiplies every channel count (and fc6/fc7's 4096) to make a
small CPU version; width 1.0 has exactly torchvision's VGG16 key names and shapes, so an ImageNet
``vgg16`` state dict loads with :func:`seg.models.load_encoder_weights`. Score layers start at zero
(as in the paper), the backbone with He init.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from seg.errors import SegError

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
STRIDES = {"fcn32s": 32, "fcn16s": 16, "fcn8s": 8}
# Caffe crop offsets of the reference VGG16 FCNs (pad 100 in conv1_1).
_VGG_CROP = {"pool4": 5, "pool3": 9, "fcn32s": 19, "fcn16s": 27, "fcn8s": 31}


def scaled_vgg_cfg(width: float) -> list:
    """VGG16 layer config with channels multiplied by ``width`` (at least 1)."""
    return [v if v == "M" else max(1, int(round(v * width))) for v in VGG16_CFG]


def vgg_layers(in_channels: int, width: float = 1.0) -> nn.Sequential:
    """torchvision's ``vgg16().features`` (same indices and key names), channels scaled by ``width``."""
    from torchvision.models.vgg import make_layers

    feats = make_layers(scaled_vgg_cfg(width), batch_norm=False)
    if in_channels != 3:
        c0 = feats[0]
        feats[0] = nn.Conv2d(in_channels, c0.out_channels, 3, padding=1)
    for m in feats.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return feats


def bilinear_kernel(channels: int, k: int) -> torch.Tensor:
    """(channels, channels, k, k) ConvTranspose2d weight doing bilinear up-sampling per channel."""
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    og = np.ogrid[:k, :k]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    w = torch.zeros(channels, channels, k, k)
    w[range(channels), range(channels)] = torch.as_tensor(filt, dtype=torch.float32)
    return w


def _upsampler(classes: int, stride: int, padding: int) -> nn.ConvTranspose2d:
    up = nn.ConvTranspose2d(classes, classes, 2 * stride, stride=stride, padding=padding, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(classes, 2 * stride))
    return up


class VGGFCNEncoder(nn.Module):
    """Convolutionalized VGG16: ``features`` (torchvision indices) + ``fc6`` (7x7 conv) + ``fc7`` (1x1).

    ``forward(x)`` returns [pool3 (stride 8), pool4 (stride 16), fc7 output (stride 32)] maps.
    ``load_state_dict`` also accepts torchvision VGG16 classification keys: ``classifier.0`` / ``.3``
    (Linear) become ``fc6`` / ``fc7`` (reshaped), ``classifier.6`` (the class head) is dropped.
    """

    def __init__(self, in_channels: int = 1, width: float = 1.0):
        super().__init__()
        if not (isinstance(width, (int, float)) and 0 < width <= 1):
            raise SegError(f"fcn: params.width: must be a number in (0, 1], got {width!r}")
        self.features = vgg_layers(in_channels, width)
        self.features[0].padding = (100, 100)  # the paper's trick: any input size survives 5 pools
        pools = [i for i, m in enumerate(self.features) if isinstance(m, nn.MaxPool2d)]
        for i in pools:
            self.features[i].ceil_mode = True
        self._pool3, self._pool4 = pools[2], pools[3]
        f = max(1, int(round(4096 * width)))
        # channels of pool3, pool4, fc7 (features[i - 2] is the conv before the ReLU and pool i)
        self.out_channels = [self.features[self._pool3 - 2].out_channels,
                             self.features[self._pool4 - 2].out_channels, f]
        c5 = self.features[pools[4] - 2].out_channels
        self.fc6 = nn.Conv2d(c5, f, 7)
        self.fc7 = nn.Conv2d(f, f, 1)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout2d(0.5)
        for m in (self.fc6, self.fc7):
            nn.init.normal_(m.weight, 0, 0.01)  # torchvision's Linear init for the classifier
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in (self._pool3, self._pool4):
                out.append(x)
        x = self.drop(self.relu(self.fc6(x)))
        x = self.drop(self.relu(self.fc7(x)))
        return out + [x]

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        return super().load_state_dict(vgg_classifier_to_encoder(state_dict), strict=strict, **kwargs)


def vgg_classifier_to_encoder(state_dict: dict) -> dict:
    """Map torchvision VGG16 classification keys to :class:`VGGFCNEncoder` keys (fc -> conv)."""
    out = {}
    for k, v in state_dict.items():
        if k.startswith("classifier.6."):
            continue
        for src, dst, ksize in (("classifier.0.", "fc6.", 7), ("classifier.3.", "fc7.", 1)):
            if k.startswith(src):
                k = dst + k.removeprefix(src)
                if v.ndim == 2:
                    v = v.reshape(v.shape[0], -1, ksize, ksize)
        out[k] = v
    return out


class FCN(nn.Module):
    """FCN-32s / 16s / 8s. Input (N, in_channels, H, W) float32 -> (N, classes, H, W) logits.

    Args:
        variant: "fcn32s", "fcn16s" or "fcn8s" (output stride before the last up-sampling).
        in_channels, classes: input channels and output classes.
        backbone: "vgg16" (paper) or an smp ResNet encoder name ("resnet18", "resnet34", ...).
        width: channel multiplier for vgg16 (1.0 = the paper).
    """

    def __init__(self, variant: str = "fcn8s", in_channels: int = 1, classes: int = 2, *,
                 backbone: str = "vgg16", width: float = 1.0):
        super().__init__()
        if variant not in STRIDES:
            raise SegError(f"fcn: {variant!r} is not one of {list(STRIDES)}")
        self.variant, self.backbone = variant, backbone
        if backbone == "vgg16":
            self.encoder = VGGFCNEncoder(in_channels, width)
            c3, c4, cf = self.encoder.out_channels
        else:
            if width != 1.0:
                raise SegError(f"fcn: params.width applies to backbone vgg16 only, not {backbone!r}")
            if not backbone.startswith("resnet"):
                raise SegError(f"fcn: params.backbone: {backbone!r} is not vgg16 or a resnet (resnet18, "
                               "resnet34, resnet50, resnet101, resnet152)")
            from seg.models.smp_models import get_smp_encoder

            self.encoder = get_smp_encoder(backbone, in_channels)
            c3, c4, cf = self.encoder.out_channels[3:6]
        s = STRIDES[variant]
        self.score_fr = nn.Conv2d(cf, classes, 1)
        vgg = backbone == "vgg16"
        if s <= 16:
            self.score_pool4 = nn.Conv2d(c4, classes, 1)
            self.upscore2 = _upsampler(classes, 2, 0 if vgg else 1)
        if s == 8:
            self.score_pool3 = nn.Conv2d(c3, classes, 1)
            self.upscore_pool4 = _upsampler(classes, 2, 0 if vgg else 1)
        self.upscore = _upsampler(classes, s, 0 if vgg else s // 2)
        for name in ("score_fr", "score_pool4", "score_pool3"):
            if hasattr(self, name):
                nn.init.zeros_(getattr(self, name).weight)
                nn.init.zeros_(getattr(self, name).bias)

    def _crop(self, x: torch.Tensor, key: str, h: int, w: int) -> torch.Tensor:
        o = _VGG_CROP[key] if self.backbone == "vgg16" else 0
        return x[..., o : o + h, o : o + w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.backbone == "vgg16":
            pool3, pool4, top = self.encoder(x)
        else:
            pool3, pool4, top = self.encoder(x)[3:6]
        score = self.score_fr(top)
        if self.variant != "fcn32s":
            score = self.upscore2(score)
            skip = self._crop(self.score_pool4(pool4), "pool4", *score.shape[-2:])
            score = score[..., : skip.shape[-2], : skip.shape[-1]] + skip
        if self.variant == "fcn8s":
            score = self.upscore_pool4(score)
            skip = self._crop(self.score_pool3(pool3), "pool3", *score.shape[-2:])
            score = score[..., : skip.shape[-2], : skip.shape[-1]] + skip
        return self._crop(self.upscore(score), self.variant, h, w)

    # size contract
    def output_size(self, n: int) -> int:
        return n

    def input_size_for(self, n: int) -> int:
        return n

    size_divisor = 1
