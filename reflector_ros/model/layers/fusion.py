"""DPT decoder blocks: residual conv units and coarse-to-fine feature fusion.

Convolutions are depthwise separable so the 1/4-resolution fusion stays cheap on a CPU.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class SeparableConv(nn.Module):
    """Depthwise 3x3 then pointwise 1x1: ~9x fewer MACs than a dense 3x3."""

    def __init__(self, cin: int, cout: int, dilation: int = 1) -> None:
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, 1, dilation, dilation=dilation, groups=cin, bias=False)
        self.pw = nn.Conv2d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pw(self.dw(x))


class ResidualConvUnit(nn.Module):
    """Pre-activation residual block (DPT's RCU), separable convs."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = SeparableConv(ch, ch)
        self.conv2 = SeparableConv(ch, ch)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(F.relu(x))
        y = self.conv2(F.relu(y))
        return x + y


def upsample_to(x: Tensor, ref: Tensor) -> Tensor:
    """Bilinear resize to ref's spatial size: works for sizes not divisible by 32.

    The size is read from ref's shape, so an ONNX graph exported with dynamic height and
    width (canonical-camera models) follows the input; with a static input shape the
    exporter folds it to constants.
    """
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class FeatureFusionBlock(nn.Module):
    """Upsample the coarser path to the skip's size, add the refined skip, refine again."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.skip_rcu = ResidualConvUnit(ch)
        self.out_rcu = ResidualConvUnit(ch)
        self.out_conv = nn.Conv2d(ch, ch, 1)

    def forward(self, coarse: Tensor | None, skip: Tensor) -> Tensor:
        x = self.skip_rcu(skip)
        if coarse is not None:
            x = x + upsample_to(coarse, skip)
        return self.out_conv(self.out_rcu(x))
