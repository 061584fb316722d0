"""Loss invariances and behaviour on real tensors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reflector_ros.model.losses import (chamfer_bins_loss, gradient_matching_loss, normalise_median_mad, rpnl_loss,
                                        silog_loss, ssi_loss, feature_match_loss)

torch.set_num_threads(1)


def _maps(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(3, 1, 32, 40, generator=g) * 4 + 0.5
    pred = target * (1 + 0.3 * torch.randn(3, 1, 32, 40, generator=g)).clamp_min(0.1)
    mask = torch.rand(3, 1, 32, 40, generator=g) > 0.3
    return pred, target, mask


def test_ssi_and_gradient_matching_ignore_affine_changes_of_the_prediction() -> None:
    pred, target, mask = _maps()
    for a, b in [(3.0, 2.0), (0.01, -5.0)]:
        torch.testing.assert_close(ssi_loss(a * pred + b, target, mask), ssi_loss(pred, target, mask))
        torch.testing.assert_close(gradient_matching_loss(a * pred + b, target, mask),
                                   gradient_matching_loss(pred, target, mask), rtol=1e-4, atol=1e-5)
    assert ssi_loss(2 * target - 1, target, mask) < 1e-5
    assert ssi_loss(pred, target, mask) > 0.05
    assert gradient_matching_loss(pred, target, mask) > 0.05


def test_ssi_trimming_drops_the_worst_residuals() -> None:
    """Against a by-hand numpy reference: lower median, mean |x - median|, largest 20 % dropped."""
    pred, target, mask = _maps(1)
    pred = pred.clone()
    pred[:, :, :3] += 50.0  # outlier rows
    refs = []
    for i in range(pred.shape[0]):
        p, t = pred[i][mask[i]].numpy(), target[i][mask[i]].numpy()

        def norm(x: np.ndarray) -> np.ndarray:
            med = np.sort(x)[(x.size - 1) // 2]
            return (x - med) / np.abs(x - med).mean()
        res = np.sort(np.abs(norm(p) - norm(t)))
        refs.append(res[: int(np.ceil(res.size * 0.8))].mean())
    trimmed = ssi_loss(pred, target, mask, trim=0.2)
    assert abs(float(trimmed) - float(np.mean(refs))) < 1e-4
    assert trimmed < 0.7 * ssi_loss(pred, target, mask, trim=0.0)


def test_silog_scale_invariance_and_zero_at_truth() -> None:
    pred, target, mask = _maps(2)
    torch.testing.assert_close(silog_loss(4.0 * pred, target, mask, lam=1.0), silog_loss(pred, target, mask, lam=1.0))
    assert silog_loss(4.0 * pred, target, mask) > silog_loss(pred, target, mask)  # lam < 1 penalises scale
    assert silog_loss(target, target, mask) < 1e-3
    # 10 * sqrt(Var(g) + 0.15 mean(g)^2) by hand
    g = torch.log(pred[mask]) - torch.log(target[mask])
    ref = 10 * torch.sqrt(g.var(unbiased=False) + 0.15 * g.mean() ** 2)
    torch.testing.assert_close(silog_loss(pred, target, mask), ref, rtol=1e-4, atol=1e-4)


def test_losses_run_in_fp32_under_autocast() -> None:
    pred, target, mask = _maps(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for loss in (silog_loss(pred.bfloat16(), target, mask), ssi_loss(pred.bfloat16(), target, mask),
                     gradient_matching_loss(pred.bfloat16(), target, mask)):
            assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_empty_mask_gives_a_differentiable_zero() -> None:
    pred, target, _ = _maps()
    pred.requires_grad_(True)
    empty = torch.zeros_like(target, dtype=torch.bool)
    total = (ssi_loss(pred, target, empty) + silog_loss(pred, target, empty) + rpnl_loss(pred, target, empty)
             + gradient_matching_loss(pred, target, empty))
    total.backward()
    assert float(total.detach()) == 0.0 and torch.isfinite(pred.grad).all()


def test_rpnl_is_local_affine_invariant_and_reproducible() -> None:
    pred, target, mask = _maps(4)
    a = rpnl_loss(pred, target, mask, generator=torch.Generator().manual_seed(0))
    b = rpnl_loss(3 * pred + 1, target, mask, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    assert a > 0.05 and rpnl_loss(target, target, mask, generator=torch.Generator().manual_seed(0)) < 1e-5


def test_chamfer_bins_zero_when_bins_cover_the_depths_exactly() -> None:
    g = torch.Generator().manual_seed(5)
    target = torch.tensor([1.0, 2.0, 4.0]).repeat(1, 1, 4, 4)[:, :, :, :12].reshape(1, 1, 4, 12)
    mask = torch.ones_like(target, dtype=torch.bool)
    exact = torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1).expand(1, 3, 4, 12)
    assert chamfer_bins_loss(exact, target, mask, generator=g) < 1e-6
    off = exact * 1.5
    assert chamfer_bins_loss(off, target, mask, generator=g) > 0.1
    glob = torch.tensor([[1.0, 2.0, 4.0]])  # [B, K] global bins work too
    assert chamfer_bins_loss(glob, target, mask, generator=g) < 1e-6


def test_median_mad_normalisation() -> None:
    x = torch.tensor([[[[1.0, 2.0, 3.0, 100.0]]]])
    m = torch.tensor([[[[True, True, True, False]]]])
    out = normalise_median_mad(x, m)
    torch.testing.assert_close(out[0], torch.tensor([[-1.5, 0.0, 1.5, 0.0]]))


def test_bin_nll_is_a_proper_score_for_the_bin_distribution() -> None:
    """Lowest when the mass sits on the two bins bracketing the target in the right split;
    a confident wrong distribution costs more than a spread one (what makes confidence honest)."""
    import math

    import torch

    from reflector_ros.model.losses import bin_nll_loss

    k, h, w = 4, 2, 3
    centers = torch.tensor([1.0, 2.0, 4.0, 8.0]).view(1, k, 1, 1).expand(1, k, h, w).contiguous()
    target = torch.full((1, 1, h, w), 2.0 * math.sqrt(2.0))   # halfway between 2 and 4 in log depth
    mask = torch.ones_like(target, dtype=torch.bool)

    def probs(*p: float) -> torch.Tensor:
        return torch.tensor(p).view(1, k, 1, 1).expand(1, k, h, w).contiguous()

    right = bin_nll_loss(centers, probs(0.0, 0.5, 0.5, 0.0), target, mask)
    spread = bin_nll_loss(centers, probs(0.25, 0.25, 0.25, 0.25), target, mask)
    wrong_sharp = bin_nll_loss(centers, probs(0.0, 0.0, 0.0, 1.0), target, mask)
    assert right.item() == pytest.approx(math.log(2.0), rel=1e-4)
    assert right < spread < wrong_sharp
    p = probs(0.1, 0.2, 0.3, 0.4).clone().requires_grad_(True)
    bin_nll_loss(centers, p, target, torch.zeros_like(mask)).backward()  # no valid pixel: zero, no NaN
    p.grad = None
    bin_nll_loss(centers, p, target, mask).backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()


def test_feature_match_is_in_units_of_the_teachers_spread() -> None:
    """Zero at the teacher; the same for feature maps of any scale (a map 100x larger with the
    same relative error costs the same); 1 for a student that outputs the teacher's mean; the
    gradient reaches the student."""
    g = torch.Generator().manual_seed(4)
    teacher = torch.randn(2, 8, 6, 8, generator=g)
    noise = 0.1 * torch.randn(2, 8, 6, 8, generator=g)
    assert float(feature_match_loss(teacher.clone(), teacher)) == pytest.approx(0.0, abs=1e-7)
    small = float(feature_match_loss(teacher + noise, teacher))
    assert float(feature_match_loss(100 * (teacher + noise), 100 * teacher)) == pytest.approx(small, rel=1e-4)
    assert 0.005 < small < 0.02
    flat = torch.full_like(teacher, float(teacher.mean()))
    assert float(feature_match_loss(flat, teacher)) == pytest.approx(1.0, rel=0.02)
    student = (teacher + noise).requires_grad_()
    feature_match_loss(student, teacher).backward()
    assert student.grad is not None and float(student.grad.abs().sum()) > 0
