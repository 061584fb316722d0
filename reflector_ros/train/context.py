"""Stage ``context``: a backbone whose features do not depend on how much of the scene it sees.

A canonical-camera model (Metric3D's image transform) sees a 2x zoom with fx doubled as the
centre of the same canonical image: the same pixels, less context. The Reflector head, given
the full view's backbone features over that centre, reproduces the full view's depth (median
ratio 0.997 on HoloLens 250-372); given the features of the centre run alone, it puts the
centre 7 % farther. So the context dependence lives in the backbone.

This stage distils the backbone against a frozen copy of the ``--init`` model (the teacher):

- the full crop's features and relative depth are held to the teacher's (``context_full``),
  so what the head sees on whole frames stays as it was;
- a window of the crop, run alone, is held to the teacher's *full-view* features over that
  window (``context_window``), so the backbone learns to give, from less context, what it
  gives with all of it.

The head is frozen and the whole network runs in eval mode (BatchNorm statistics fixed). No
depth is needed. Windows are whole 32-pixel blocks at 32-pixel offsets, so every feature
map (strides 4 to 32) crops exactly. Feature loss: ``losses.feature_match_loss`` (squared
error in units of the teacher's variance, as FitNets' hints, Romero et al. 2015).
"""
from __future__ import annotations

from typing import Any

from reflector_ros.core.errors import InputError
from reflector_ros.train.config import LossConfig

BLOCK = 32   # the encoder's largest stride


def draw_window(h: int, w: int, frac: tuple[float, float], gen: Any) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a window of whole BLOCK-pixel blocks inside an (h, w)
    image of whole blocks (at least 3 a side): each side a fraction of the image's drawn from
    ``frac``, at least 2 blocks and at most all but one; offsets on the block grid.
    ``gen``: a torch.Generator."""
    import torch

    r = torch.rand(4, generator=gen).tolist()
    out = []
    for side, a, b in ((h, r[0], r[1]), (w, r[2], r[3])):
        blocks = side // BLOCK
        lo = min(max(2, round(frac[0] * blocks)), blocks - 1)
        hi = max(lo, min(blocks - 1, round(frac[1] * blocks)))
        n = lo + min(int(a * (hi - lo + 1)), hi - lo)
        off = min(int(b * (blocks - n + 1)), blocks - n)
        out.append((off * BLOCK, n * BLOCK))
    (t, wh), (l, ww) = out
    return t, l, wh, ww


def context_terms(model: Any, teacher: Any, image: Any, w: LossConfig, gen: Any) -> dict[str, Any]:
    """The stage's loss terms for a batch of crops ``image`` [B,3,H,W] (normalised): cut to
    whole 32-pixel blocks, then 'ctx_full', 'ctx_window' (backbone features) and 'ctx_rel'
    (per-image normalised relative depth, full and window), each already weighted."""
    import torch

    from reflector_ros.model.losses import feature_match_loss
    from reflector_ros.model.reflector import normalise_rel

    h, w_ = (image.shape[-2] // BLOCK) * BLOCK, (image.shape[-1] // BLOCK) * BLOCK
    if min(h, w_) < 3 * BLOCK:
        raise InputError(f"stage context: a training view of {tuple(image.shape[-2:])} pixels leaves fewer than "
                         f"3 blocks of {BLOCK} px a side; use larger crops or frames")
    image = image[..., :h, :w_]
    t, l, wh, ww = draw_window(h, w_, w.context_window_range, gen)
    with torch.no_grad():
        rel_t, feats_t = teacher.backbone(image)
    rel_s, feats_s = model.backbone(image)
    rel_w, feats_w = model.backbone(image[..., t:t + wh, l:l + ww].contiguous())

    def window_of(f: Any) -> Any:
        s = h // f.shape[-2]
        return f[..., t // s:(t + wh) // s, l // s:(l + ww) // s]

    terms: dict[str, Any] = {}
    if w.context_full:
        terms["ctx_full"] = w.context_full * sum(feature_match_loss(a, b) for a, b in zip(feats_s, feats_t))
    if w.context_window:
        terms["ctx_window"] = w.context_window * sum(feature_match_loss(a, window_of(b))
                                                      for a, b in zip(feats_w, feats_t))
    if w.context_rel:
        terms["ctx_rel"] = w.context_rel * (
            feature_match_loss(normalise_rel(rel_s), normalise_rel(rel_t))
            + feature_match_loss(normalise_rel(rel_w), normalise_rel(window_of(rel_t))))
    return terms
