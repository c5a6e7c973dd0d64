"""The original U-Net (Ronneberger, Fischer & Brox, MICCAI 2015), with its size arithmetic.

Architecture (defaults = the paper): ``depth`` = 4 down / 4 up levels, ``base_channels`` = 64 doubling
per level to 1024 at the bottom; each level is two 3x3 convolutions + ReLU (optional batch norm);
2x2 max-pool (stride 2) down; 2x2 up-convolution (``ConvTranspose2d``, stride 2) halving the channels
up; the skip map of the same level is concatenated (center-cropped first when ``padding="valid"``);
a 1x1 convolution gives ``classes`` logits. Weights use He (Kaiming normal, fan-in, ReLU) init, biases 0.

Sizes:
    - ``padding="valid"`` (the paper): every 3x3 conv removes 2 pixels, so 572x572 in gives 388x388
      out at depth 4. ``output = input - 2 * valid_border`` (``valid_border`` = 92 at depth 4) for a
      *legal* input: one where every map entering a max-pool has an even size. Legal outputs form
      an arithmetic sequence with step ``2**depth`` (388, 372, ...; 260 is legal, 256 is not).
    - ``padding="same"``: output size = input size; the input must be a multiple of ``2**depth``.

The contracting path is ``model.encoder`` (a :class:`UNetEncoder`); its classification version
:class:`UNetClassifier` (the same modules plus global average pooling and a linear ``fc``) has a
state dict that ``model.encoder.load_state_dict`` accepts (``fc.*`` is dropped, as smp does).
"""

from __future__ import annotations

import torch
from torch import nn

from seg.errors import SegError

PADDINGS = ("same", "valid")


def _conv_block(cin: int, cout: int, *, pad: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in in (cin, cout):
        layers.append(nn.Conv2d(c_in, cout, 3, padding=pad, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _he_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def center_crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Center-crop an (N, C, H, W) tensor to (N, C, h, w) (the U-Net paper's skip cropping)."""
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top : top + h, left : left + w]


def check_params(padding: str, base_channels: int, depth: int) -> None:
    if padding not in PADDINGS:
        raise SegError(f"unet: params.padding: {padding!r} is not one of {list(PADDINGS)}")
    if not (isinstance(base_channels, int) and base_channels >= 1):
        raise SegError(f"unet: params.base_channels: must be a positive integer, got {base_channels!r}")
    if not (isinstance(depth, int) and 1 <= depth <= 8):
        raise SegError(f"unet: params.depth: must be an integer in 1..8, got {depth!r}")


class UNetEncoder(nn.Module):
    """The contracting path: ``depth + 1`` conv blocks (the last is the bottleneck), max-pool between.

    ``forward(x)`` takes (N, in_channels, H, W) float32 and returns ``depth + 1`` feature maps, finest
    first, with ``base_channels * 2**i`` channels (the smp encoder convention minus the input itself).
    """

    def __init__(self, in_channels: int = 1, *, base_channels: int = 64, depth: int = 4,
                 padding: str = "same", batch_norm: bool = False):
        super().__init__()
        check_params(padding, base_channels, depth)
        self.depth, self.padding = depth, padding
        self.out_channels = [base_channels * 2**i for i in range(depth + 1)]
        pad = 1 if padding == "same" else 0
        cins = [in_channels] + self.out_channels[:-1]
        self.blocks = nn.ModuleList(
            _conv_block(ci, co, pad=pad, batch_norm=batch_norm) for ci, co in zip(cins, self.out_channels)
        )
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        size = tuple(x.shape[-2:])
        feats = []
        for i, block in enumerate(self.blocks):
            if i:
                if x.shape[-2] % 2 or x.shape[-1] % 2:
                    raise SegError(
                        f"unet: input size {size} is not legal (padding {self.padding}, depth {self.depth}): "
                        f"a map of size {tuple(x.shape[-2:])} reaches max-pool {i}; see seg.models.input_size_for"
                    )
                x = self.pool(x)
            x = block(x)
            feats.append(x)
        return feats

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        """Load a :class:`UNetEncoder` or :class:`UNetClassifier` state dict (``fc.*`` is dropped)."""
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        return super().load_state_dict(state_dict, strict=strict, **kwargs)


class UNetClassifier(UNetEncoder):
    """Classification version of :class:`UNetEncoder`: global average pooling + linear ``fc``.

    Input (N, in_channels, H, W) float32 with H, W multiples of ``2**depth`` (same padding) or legal
    valid sizes; output (N, num_classes) logits.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 2, **params):
        super().__init__(in_channels, **params)
        self.fc = nn.Linear(self.out_channels[-1], num_classes)
        _he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(super().forward(x)[-1], 1), 1))


class UNet(nn.Module):
    """The classic U-Net. Input (N, in_channels, H, W) float32 -> (N, classes, H', W') logits.

    Args:
        in_channels: image channels (1 for grayscale).
        classes: output classes.
        padding: "valid" (paper; H' = H - 2 * valid_border for legal H) or "same" (H' = H).
        base_channels: channels of the first level (64 in the paper).
        depth: number of max-pools (4 in the paper).
        batch_norm: batch norm after every 3x3 conv (not in the paper).
    """

    def __init__(self, in_channels: int = 1, classes: int = 2, *, padding: str = "same",
                 base_channels: int = 64, depth: int = 4, batch_norm: bool = False):
        super().__init__()
        self.encoder = UNetEncoder(in_channels, base_channels=base_channels, depth=depth,
                                   padding=padding, batch_norm=batch_norm)
        self.depth, self.padding = depth, padding
        pad = 1 if padding == "same" else 0
        chans = self.encoder.out_channels
        self.upconvs = nn.ModuleList(nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2)
                                     for i in reversed(range(depth)))
        self.decoder = nn.ModuleList(_conv_block(2 * chans[i], chans[i], pad=pad, batch_norm=batch_norm)
                                     for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], classes, 1)
        _he_init(self)
        if padding == "valid":
            m = _smallest_legal_input(depth)
            #: (input - output) / 2 in pixels for any legal input size (92 at depth 4).
            self.valid_border = (m - unet_output_size(m, depth, padding)) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        x = feats[-1]
        for up, block, skip in zip(self.upconvs, self.decoder, reversed(feats[:-1])):
            x = up(x)
            x = block(torch.cat([center_crop(skip, x.shape[-2], x.shape[-1]), x], dim=1))
        return self.head(x)

    # size contract (used by seg.models.output_size / input_size_for / size_divisor)
    def output_size(self, n: int) -> int:
        return unet_output_size(n, self.depth, self.padding)

    def input_size_for(self, n: int) -> int:
        return unet_input_size_for(n, self.depth, self.padding)

    @property
    def size_divisor(self) -> int:
        return 2**self.depth


def unet_output_size(n: int, depth: int, padding: str) -> int:
    """Output size of a U-Net for input size ``n`` (pixels, one axis); SegError if ``n`` is illegal."""
    if padding == "same":
        if n % 2**depth or n <= 0:
            raise SegError(f"unet: input size {n} must be a positive multiple of {2**depth} (padding same)")
        return n
    s = n
    for level in range(depth):
        s -= 4
        if s <= 0 or s % 2:
            raise SegError(f"unet: input size {n} is not legal for padding valid, depth {depth} "
                           f"(map of size {s} reaches max-pool {level + 1}); use seg.models.input_size_for")
        s //= 2
    s -= 4
    if s <= 0:
        raise SegError(f"unet: input size {n} too small for padding valid, depth {depth}")
    for _ in range(depth):
        s = 2 * s - 4
    if s <= 0:
        raise SegError(f"unet: input size {n} too small for padding valid, depth {depth}")
    return s


def unet_input_size_for(n: int, depth: int, padding: str) -> int:
    """Smallest legal input size whose output is >= ``n`` (== ``n`` iff ``n`` is a legal output)."""
    if n <= 0:
        raise SegError(f"unet: output size must be positive, got {n}")
    if padding == "same":
        return -(-n // 2**depth) * 2**depth
    m = _smallest_legal_input(depth)
    border = m - unet_output_size(m, depth, padding)
    while m - border < n:  # legal inputs are m + k * 2**depth
        m += 2**depth
    return m


def _smallest_legal_input(depth: int) -> int:
    """Smallest input size a valid-padding U-Net of this depth accepts (legal sizes step 2**depth)."""
    for n in range(1, 2 ** (depth + 4) + 8 * 2**depth):
        try:
            unet_output_size(n, depth, "valid")
            return n
        except SegError:
            pass
    raise AssertionError("unreachable")  # pragma: no cover
