"""EfficientNet-Lite's mobile inverted bottleneck (MBConv) with the parameter names of the
lukemelas EfficientNet-PyTorch layout, so ImageNet weights load by name.

Lite variant (Google's EfficientNet-Lite, 2020): no squeeze-and-excitation and ReLU6
instead of swish, both for integer-friendly, accelerator-friendly inference; BatchNorm
eps 1e-3 as in the TensorFlow original.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01   # TensorFlow's 0.99 decay


class MBConvBlock(nn.Module):
    """1x1 expand (skipped when expand == 1) -> kxk depthwise (stride) -> 1x1 linear project.

    Shapes: (B, cin, H, W) -> (B, cout, ceil(H / stride), ceil(W / stride)). Identity skip
    when stride is 1 and cin == cout. Padding is k // 2 on every side (symmetric).
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._project_conv = nn.Conv2d(hidden, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.skip else y
