"""Stage 1: relative inverse depth (MiDaS convention) plus the features the Reflector head reads.

Every backbone returns ``(rel_depth [B,1,H,W], [feat0 (1/32), feat1 (1/16), feat2 (1/8),
feat3 (1/4)])`` with the same channel count ``out_ch`` on every feature, so the head
does not care which backbone fed it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reflector_ros.model.efficientnet_lite import EfficientNetLite0
from reflector_ros.model.layers.fusion import FeatureFusionBlock, SeparableConv, upsample_to
from reflector_ros.model.layers.inverted_residual import conv_bn_act, make_stage
from reflector_ros.model.layers.transformer import PlainLayerNorm, TransformerBlock


class DPTDecoder(nn.Module):
    """Project four encoder maps to one width and fuse them coarse to fine (DPT).

    feat0 is the projected bottleneck; feat1..feat3 are the fused decoder maps.
    """

    def __init__(self, in_chs: tuple[int, int, int, int], ch: int) -> None:
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, ch, 1, bias=False) for c in in_chs)  # 1/4 .. 1/32
        self.fuse = nn.ModuleList(FeatureFusionBlock(ch) for _ in range(4))          # 1/32 .. 1/4
        self.out_head = nn.Sequential(nn.Conv2d(ch, ch // 2, 3, 1, 1), nn.ReLU(inplace=True))
        self.half_head = nn.Sequential(SeparableConv(ch // 2, 16), nn.ReLU(inplace=True),
                                       nn.Conv2d(16, 1, 1))

    def forward(self, image: Tensor, encs: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        p = [proj(e) for proj, e in zip(self.proj, encs)]   # fine -> coarse
        feat0 = p[3]
        x = self.fuse[0](None, feat0)                        # 1/32
        f1 = self.fuse[1](x, p[2])                           # 1/16
        f2 = self.fuse[2](f1, p[1])                          # 1/8
        f3 = self.fuse[3](f2, p[0])                          # 1/4
        y = F.interpolate(self.out_head(f3), scale_factor=2.0, mode="bilinear", align_corners=False)
        rel = F.softplus(upsample_to(self.half_head(y), image))
        return rel, [feat0, f1, f2, f3]


class SmallBackbone(nn.Module):
    """MobileNetV2-style encoder (inverted residuals, depthwise convs) + light DPT decoder."""

    out_ch = 64

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn_act(3, 16, 3, 2), make_stage(16, 16, 1, 1, expand=1))  # 1/2
        self.enc4 = make_stage(16, 24, 2, 2)                                                   # 1/4
        self.enc8 = make_stage(24, 32, 3, 2)                                                   # 1/8
        self.enc16 = nn.Sequential(make_stage(32, 64, 3, 2), make_stage(64, 96, 2, 1))        # 1/16
        self.enc32 = nn.Sequential(make_stage(96, 160, 3, 2), make_stage(160, 320, 1, 1))     # 1/32
        self.decoder = DPTDecoder((24, 32, 96, 320), self.out_ch)

    def forward(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.stem(image)
        e4 = self.enc4(x)
        e8 = self.enc8(e4)
        e16 = self.enc16(e8)
        e32 = self.enc32(e16)
        return self.decoder(image, [e4, e8, e16, e32])


class Lite0Backbone(nn.Module):
    """EfficientNet-Lite0 encoder (ImageNet weights via ``load_imagenet``) + the light DPT
    decoder on its stride 4, 8, 16 and 32 maps (24, 40, 112, 320 channels), as MiDaS-small
    does with Lite3."""

    out_ch = 64

    def __init__(self) -> None:
        super().__init__()
        self.encoder = EfficientNetLite0(classifier=False)
        self.decoder = DPTDecoder((24, 40, 112, 320), self.out_ch)

    def forward(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        _, e4, e8, e16, e32 = self.encoder(image)
        return self.decoder(image, [e4, e8, e16, e32])

    def load_imagenet(self, path: str | None = None) -> None:
        """Initialise the encoder from the ImageNet state dict (strict, by name)."""
        from reflector_ros.model.efficientnet_lite import load_imagenet

        load_imagenet(self.encoder, path)


class BaseBackbone(nn.Module):
    """ViT encoder (16x16 patches) with DPT reassembly of four blocks to 1/4 .. 1/32."""

    out_ch = 64

    def __init__(self, grid_hw: tuple[int, int], dim: int = 384, depth: int = 8, heads: int = 6) -> None:
        super().__init__()
        self.grid_hw = grid_hw
        self.patch = nn.Conv2d(3, dim, 16, 16)
        self.pos = nn.Parameter(torch.randn(1, dim, grid_hw[0], grid_hw[1]) * 0.02)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads) for _ in range(depth))
        self.norm = PlainLayerNorm(dim)
        step = depth // 4
        self.taps = tuple(step * (i + 1) - 1 for i in range(4))
        chs = (96, 192, 384, 384)
        self.reassemble = nn.ModuleList([
            nn.Sequential(nn.Conv2d(dim, chs[0], 1), nn.ConvTranspose2d(chs[0], chs[0], 4, 4)),  # 1/4
            nn.Sequential(nn.Conv2d(dim, chs[1], 1), nn.ConvTranspose2d(chs[1], chs[1], 2, 2)),  # 1/8
            nn.Conv2d(dim, chs[2], 1),                                                          # 1/16
            nn.Sequential(nn.Conv2d(dim, chs[3], 1), nn.Conv2d(chs[3], chs[3], 3, 2, 1)),        # 1/32
        ])
        self.decoder = DPTDecoder(chs, self.out_ch)

    def forward(self, image: Tensor) -> tuple[Tensor, list[Tensor]]:
        x = self.patch(image)
        b, c, h, w = (int(v) for v in x.shape)
        pos: Tensor = self.pos
        if (h, w) != self.grid_hw:  # other input sizes than the meta's: resample the grid
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
        tokens = (x + pos).flatten(2).transpose(1, 2)
        maps: list[Tensor] = []
        for i, blk in enumerate(self.blocks):
            tokens = blk(tokens)
            if i in self.taps:
                t = self.norm(tokens) if i == self.taps[-1] else tokens
                maps.append(t.transpose(1, 2).reshape(b, c, h, w))
        encs = [r(m) for r, m in zip(self.reassemble, maps)]
        return self.decoder(image, encs)


class HeadEncoder(nn.Module):
    """For arch ``head``: a light conv encoder on image + the user's rel depth stands in for
    the backbone features (top-down summed so fine levels see coarse context)."""

    out_ch = 32

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn_act(4, 16, 3, 2)
        chs = (24, 32, 48, 64)
        self.stages = nn.ModuleList([make_stage(16, chs[0], 1, 2, 4), make_stage(chs[0], chs[1], 1, 2, 4),
                                     make_stage(chs[1], chs[2], 1, 2, 4), make_stage(chs[2], chs[3], 1, 2, 4)])
        self.proj = nn.ModuleList(nn.Conv2d(c, self.out_ch, 1) for c in chs)

    def forward(self, image: Tensor, rel_norm: Tensor) -> list[Tensor]:
        x = self.stem(torch.cat([image, rel_norm], dim=1))
        encs = []
        for stage in self.stages:
            x = stage(x)
            encs.append(x)
        feats: list[Tensor] = []
        prev: Tensor | None = None
        for proj, e in zip(reversed(self.proj), reversed(encs)):  # 1/32 -> 1/4
            f = proj(e)
            if prev is not None:
                f = f + upsample_to(prev, f)
            feats.append(f)
            prev = f
        return feats
