"""MobileNetV2 building blocks: cheap enough for a 2-core CPU at 20+ FPS."""
from __future__ import annotations

from torch import Tensor, nn


def conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
                act: bool = True) -> nn.Sequential:
    """Conv + BatchNorm (+ ReLU6); BN folds into the conv at export, ReLU6 exports as Clip."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expand 1x1 -> depthwise 3x3 -> linear project 1x1, residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 6) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_act(cin, hidden, 1))
        layers += [conv_bn_act(hidden, hidden, 3, stride, groups=hidden),
                   conv_bn_act(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return x + y if self.residual else y


def make_stage(cin: int, cout: int, n: int, stride: int, expand: int = 6) -> nn.Sequential:
    """n inverted residuals; only the first one changes resolution and width."""
    blocks = [InvertedResidual(cin if i == 0 else cout, cout, stride if i == 0 else 1, expand)
              for i in range(n)]
    return nn.Sequential(*blocks)
