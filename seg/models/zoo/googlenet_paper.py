"""GoogLeNet exactly as Table 1 of Szegedy et al. 2015 ("Going deeper with convolutions") states it.

torchvision's ``googlenet`` adds batch norm and uses a 3x3 convolution where the paper's "#5x5" branch
has a 5x5 one, so its per-block counts differ from the paper's. Here every Table 1 row is rebuilt from
its filter columns: plain convolutions with ReLU, no batch norm, the 5x5 branch really 5x5.

Counting convention of the paper's "params" and "ops" columns (determined by fitting the rows whose
figures agree with their own filter columns; ``tests/test_zoo.py`` checks it):
  - params: convolution weights, **no biases**, in K = 1024 (3a: 163,328 weights = 159.5K; mean
    error over the rows 0.71%, vs 0.83% with biases, 3.1% with K = 1000);
  - ops: multiply-adds = weights x output positions (H x W), in M = **10^6** (3a: 128.05M; mean
    error 0.25%; with M = 2^20 it would be 122.1M, mean error 4.6%).
Known inconsistencies of the published table (the filter columns are taken as the truth; they
also agree with torchvision and the Caffe reference model): conv1 says 2.7K / 34M but a 7x7x3x64
filter bank has 9.2K weights and 118M mult-adds at 112x112; 4c says 463K while its columns give
497.5K (its 100M ops do match); 5a says 1072K / 54M while its columns (= 4e's) give 1018K / 51.1M.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seg.models.zoo.counting import count_mult_adds


@dataclass(frozen=True)
class Table1Row:
    """One row of the paper's Table 1 (filter counts, output size, published params (K) / ops (M))."""

    name: str
    in_channels: int
    size: int  # output H = W
    n1x1: int
    n3x3red: int
    n3x3: int
    n5x5red: int
    n5x5: int
    pool_proj: int
    params_k: float  # published, K = 1024, weights only
    ops_m: float  # published, multiply-adds, M = 10^6
    reproducible: bool = True  # False: the published figure contradicts the row's own columns


# The inception rows of Table 1 (plus conv2, the 1x1-reduce + 3x3 layer, as an inception-like row
# with only the 3x3 branch). Output channels = n1x1 + n3x3 + n5x5 + pool_proj.
TABLE1: tuple[Table1Row, ...] = (
    Table1Row("conv2", 64, 56, 0, 64, 192, 0, 0, 0, 112, 360),
    Table1Row("inception3a", 192, 28, 64, 96, 128, 16, 32, 32, 159, 128),
    Table1Row("inception3b", 256, 28, 128, 128, 192, 32, 96, 64, 380, 304),
    Table1Row("inception4a", 480, 14, 192, 96, 208, 16, 48, 64, 364, 73),
    Table1Row("inception4b", 512, 14, 160, 112, 224, 24, 64, 64, 437, 88),
    Table1Row("inception4c", 512, 14, 128, 128, 256, 24, 64, 64, 463, 100, reproducible=False),
    Table1Row("inception4d", 512, 14, 112, 144, 288, 32, 64, 64, 580, 119),
    Table1Row("inception4e", 528, 14, 256, 160, 320, 32, 128, 128, 840, 170),
    Table1Row("inception5a", 832, 7, 256, 160, 320, 32, 128, 128, 1072, 54, reproducible=False),
    Table1Row("inception5b", 832, 7, 384, 192, 384, 48, 128, 128, 1388, 71),
)


def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2), nn.ReLU(inplace=True))


class InceptionV1(nn.Module):
    """Inception module with dimension reductions (paper Fig. 2b), plain conv + ReLU, biases on.

    Input (N, in_channels, H, W) -> (N, n1x1 + n3x3 + n5x5 + pool_proj, H, W). A branch with 0
    filters is omitted (used for the conv2 row, which is a 1x1 reduce + 3x3 conv).
    """

    def __init__(self, row: Table1Row):
        super().__init__()
        cin = row.in_channels
        branches = []
        if row.n1x1:
            branches.append(_conv(cin, row.n1x1, 1))
        if row.n3x3:
            branches.append(nn.Sequential(_conv(cin, row.n3x3red, 1), _conv(row.n3x3red, row.n3x3, 3)))
        if row.n5x5:
            branches.append(nn.Sequential(_conv(cin, row.n5x5red, 1), _conv(row.n5x5red, row.n5x5, 5)))
        if row.pool_proj:
            branches.append(nn.Sequential(nn.MaxPool2d(3, 1, padding=1), _conv(cin, row.pool_proj, 1)))
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


def paper_block_counts(row: Table1Row) -> dict:
    """Build the row's block, count it in the paper's convention and compare with the table.

    Returns a dict: name; weights (int, no biases); params_k (weights / 1024); mult_adds (int,
    measured by ``torch.utils.flop_counter`` at the row's output size, FLOPs / 2); ops_m
    (mult_adds / 1e6); out_channels; published params_k / ops_m; relative errors; reproducible.
    """

    with torch.device("meta"):
        block = InceptionV1(row)
    weights = sum(m.weight.numel() for m in block.modules() if isinstance(m, nn.Conv2d))
    madds = count_mult_adds(block, (row.in_channels, row.size, row.size))
    out_c = row.n1x1 + row.n3x3 + row.n5x5 + row.pool_proj
    return {
        "name": row.name,
        "weights": weights,
        "params_k": weights / 1024,
        "mult_adds": madds,
        "ops_m": madds / 1e6,
        "out_channels": out_c,
        "published_params_k": row.params_k,
        "published_ops_m": row.ops_m,
        "params_rel_err": weights / 1024 / row.params_k - 1,
        "ops_rel_err": madds / 1e6 / row.ops_m - 1,
        "reproducible": row.reproducible,
    }
