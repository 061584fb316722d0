"""The Reflector network in torch: shapes, bin invariants, gradients, canonical camera, checkpoints."""
from __future__ import annotations

import math

import pytest
import torch

from reflector_ros.core.errors import InputError
from reflector_ros.meta import ModelMeta
from reflector_ros.model.canonical import from_canonical, to_canonical
from reflector_ros.model.layers.attractor import attract
from reflector_ros.model.losses import chamfer_bins_loss, gradient_matching_loss, rpnl_loss, silog_loss, ssi_loss
from reflector_ros.model.reflector import (build_model, load_checkpoint, load_pretrained_backbone,
                                           save_checkpoint)

torch.set_num_threads(1)  # 2 OpenMP threads on a shared 2-core VM mostly wait for each other
SIZES = [(64, 80), (96, 128), (128, 160)]


def _image(hw: tuple[int, int], seed: int = 0, batch: int = 1) -> torch.Tensor:
    """A smooth gradient plus texture, normalised like the real input (not a constant)."""
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    base = torch.stack([xx, yy, xx * yy]).unsqueeze(0).repeat(batch, 1, 1, 1)
    return base + 0.5 * torch.randn(batch, 3, h, w, generator=g)


def _run(meta: ModelMeta, hw: tuple[int, int], batch: int = 2, scale: float = 1.0) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(meta).eval()
    image = _image(hw, batch=batch)
    rel = torch.rand(batch, 1, *hw) + 0.1 if meta.arch == "head" else None
    with torch.no_grad():
        return model(image, torch.full((batch,), scale), rel)


@pytest.mark.parametrize("arch", ["small", "base", "head"])
@pytest.mark.parametrize("hw", SIZES)
def test_shapes_sorted_bins_and_range(arch: str, hw: tuple[int, int]) -> None:
    meta = ModelMeta(arch=arch, input_height=hw[0], input_width=hw[1], n_bins=16, min_depth=0.2, max_depth=15.0)
    scale = 1.7
    out = _run(meta, hw, scale=scale)
    b, (h, w) = 2, hw
    for key in ("depth", "confidence", "canonical", "rel_depth"):
        assert out[key].shape == (b, 1, h, w), key
        assert torch.isfinite(out[key]).all(), key
    k = meta.n_bins
    assert out["centers"].shape[:2] == (b, k) and out["probs"].shape == out["centers"].shape
    assert out["centers"].shape[2:] == (math.ceil(h / 4), math.ceil(w / 4))  # the bins live at 1/4
    # centres sorted along the bin axis and inside the canonical range
    assert (out["centers"].diff(dim=1) >= 0).all()
    assert out["centers"].min() >= meta.min_depth * (1 - 1e-5) and out["centers"].max() <= meta.max_depth * (1 + 1e-5)
    torch.testing.assert_close(out["probs"].sum(dim=1), torch.ones(b, *out["probs"].shape[2:]))
    d = out["depth"]
    assert d.min() >= meta.min_depth * scale * (1 - 1e-5) and d.max() <= meta.max_depth * scale * (1 + 1e-5)
    c = out["confidence"]
    assert c.min() >= 0 and c.max() <= 1
    assert (out["rel_depth"] >= 0).all()  # inverse depth is non-negative
    assert out["canonical"].std() > 0     # not a constant map


def test_depth_scales_with_focal_scale() -> None:
    meta = ModelMeta(arch="small", input_height=64, input_width=80, n_bins=16)
    model = build_model(meta).eval()
    image = _image((64, 80), batch=2)
    with torch.no_grad():
        a = model(image, torch.tensor([1.0, 0.5]))
        b = model(image, torch.tensor([2.0, 1.0]))
    torch.testing.assert_close(b["depth"], 2 * a["depth"])
    torch.testing.assert_close(b["canonical"], a["canonical"])
    torch.testing.assert_close(b["confidence"], a["confidence"])  # relative spread: scale-free


def test_canonical_round_trip() -> None:
    depth = torch.rand(3, 1, 8, 10) * 10 + 0.1
    scale = torch.tensor([0.5, 1.0, 3.0])
    canon = to_canonical(depth, scale)
    torch.testing.assert_close(canon[2], depth[2] / 3.0)
    torch.testing.assert_close(from_canonical(canon, scale), depth)


def test_attractor_update_keeps_order() -> None:
    """The inv-kernel mean update is monotone in c: sorted in, sorted out, inside [0, 1]."""
    g = torch.Generator().manual_seed(1)
    centres = torch.sort(torch.rand(4, 64, 5, 6, generator=g), dim=1).values
    for n in (1, 4, 16):
        attractors = torch.rand(4, n, 5, 6, generator=g)
        out = attract(centres, attractors, alpha=1000.0)
        assert (out.diff(dim=1) >= -1e-7).all()
        assert out.min() >= 0 and out.max() <= 1
        assert not torch.allclose(out, centres)  # they did move


@pytest.mark.parametrize("arch", ["small", "base", "head"])
def test_gradients_reach_every_parameter(arch: str) -> None:
    torch.manual_seed(0)
    hw = (64, 80)
    meta = ModelMeta(arch=arch, input_height=hw[0], input_width=hw[1], n_bins=16)
    model = build_model(meta).train()
    image = _image(hw, batch=2)
    scale = torch.tensor([1.0, 1.3])
    g = torch.Generator().manual_seed(3)
    target = torch.rand(2, 1, *hw, generator=g) * 5 + 0.5
    mask = torch.rand(2, 1, *hw, generator=g) > 0.2
    rel_in = torch.rand(2, 1, *hw, generator=g) + 0.1 if arch == "head" else None
    out = model(image, scale, rel_in)
    canon_t = to_canonical(target, scale)
    loss = (silog_loss(out["canonical"], canon_t, mask)
            + silog_loss(out["canonical_lowres"], torch.nn.functional.interpolate(canon_t, size=out["canonical_lowres"].shape[-2:]),
                         torch.ones_like(out["canonical_lowres"], dtype=torch.bool))
            + chamfer_bins_loss(out["centers"], canon_t, mask, generator=g)
            + rpnl_loss(out["canonical"], canon_t, mask, generator=g))
    if arch != "head":
        loss = loss + ssi_loss(out["rel_depth"], 1 / target, mask) + 0.5 * gradient_matching_loss(out["rel_depth"], 1 / target, mask)
    loss = loss - out["confidence"].mean()  # the confidence path must be differentiable too
    loss.backward()
    params = list(model.named_parameters())
    missing = [n for n, p in params if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for _, p in params)
    nonzero = sum(bool(p.grad.abs().sum() > 0) for _, p in params)
    assert nonzero >= 0.9 * len(params), f"only {nonzero}/{len(params)} parameters got a nonzero gradient"


def test_checkpoint_round_trip(tmp_path) -> None:
    meta = ModelMeta(arch="small", input_height=64, input_width=80, n_bins=8, focal_canonical=500.0,
                     extra={"dataset": "synthetic"})
    torch.manual_seed(0)
    model = build_model(meta).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, meta, epoch=3, metrics={"absrel": 0.1})
    loaded, meta2, extra = load_checkpoint(path)
    assert meta2 == meta
    assert extra == {"epoch": 3, "metrics": {"absrel": 0.1}}
    image = _image((64, 80))
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, torch.ones(1))["depth"], model(image, torch.ones(1))["depth"])


def test_load_checkpoint_refuses_bad_files(tmp_path) -> None:
    meta = ModelMeta(arch="small", input_height=64, input_width=80, n_bins=8)
    good = save_checkpoint(tmp_path / "good.pt", build_model(meta), meta)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    other = tmp_path / "other_bins.pt"
    state = torch.load(good, weights_only=True)
    state["meta"]["n_bins"] = 16  # weights no longer fit the described model
    torch.save(state, other)
    unsafe = tmp_path / "unsafe.pt"
    import fractions

    torch.save({"model": {}, "meta": fractions.Fraction(1, 3)}, unsafe)   # an object weights_only will not unpickle
    for path, words in [(truncated, "not a readable"), (garbage, "not a torch checkpoint"),
                        (unsafe, "not loaded"),
                        (foreign, "not a Reflector checkpoint"), (other, "do not match"),
                        (tmp_path / "missing.pt", "not found")]:
        with pytest.raises(InputError, match=words):
            load_checkpoint(path)


def test_build_model_refuses_bad_meta() -> None:
    with pytest.raises(InputError, match="arch"):
        build_model(ModelMeta(arch="huge"))
    with pytest.raises(InputError, match="out of range"):
        build_model(ModelMeta(input_height=100000))
    with pytest.raises(InputError, match="divisible by 16"):
        build_model(ModelMeta(arch="base", input_height=70, input_width=80))
    with pytest.raises(InputError, match="min_depth"):
        build_model(ModelMeta(min_depth=5.0, max_depth=1.0))
    with pytest.raises(InputError, match="confidence 'guess'"):
        build_model(ModelMeta(confidence="guess"))


def test_load_pretrained_backbone(tmp_path) -> None:
    meta = ModelMeta(arch="small", input_height=64, input_width=80, n_bins=8)
    torch.manual_seed(1)
    src = build_model(meta)
    save_checkpoint(tmp_path / "src.pt", src, meta)
    torch.save(src.backbone.state_dict(), tmp_path / "bare.pt")
    for name in ("src.pt", "bare.pt"):
        torch.manual_seed(2)
        dst = build_model(meta)
        load_pretrained_backbone(dst, tmp_path / name)
        for k, v in src.backbone.state_dict().items():
            torch.testing.assert_close(dst.backbone.state_dict()[k], v)
    renamed = src.backbone.state_dict()
    renamed["stem.extra.weight"] = renamed.pop("stem.0.0.weight")
    torch.save(renamed, tmp_path / "renamed.pt")
    with pytest.raises(InputError, match="1 missing: stem.0.0.weight; 1 unexpected: stem.extra.weight"):
        load_pretrained_backbone(build_model(meta), tmp_path / "renamed.pt")
    with pytest.raises(InputError, match="no backbone"):
        load_pretrained_backbone(build_model(ModelMeta(arch="head", input_height=64, input_width=80)),
                                 tmp_path / "bare.pt")


def test_head_learns_a_metric_scene_from_relative_depth() -> None:
    """A few Adam steps fit two scenes whose rel depth is identical but whose metric scale differs
    by 2x (told apart only by the image): the head really maps relative to metric depth."""
    torch.manual_seed(0)
    meta = ModelMeta(arch="head", input_height=64, input_width=80, n_bins=16)
    model = build_model(meta).train()
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 80), indexing="ij")
    target = (1.0 + 4.0 * yy).expand(2, 1, 64, 80).clone()  # a floor plane receding upwards
    target[1] *= 2.0
    image = torch.stack([xx, yy, xx * yy]).unsqueeze(0).repeat(2, 1, 1, 1)
    image[1] += 0.5
    rel = 1.0 / (1.0 + 4.0 * yy).expand(2, 1, 64, 80)  # same relative map for both
    mask = torch.ones_like(target, dtype=torch.bool)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = silog_loss(model(image, torch.ones(2), rel)["canonical"], target, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.3 * losses[0], losses


def _with_error_head(meta: ModelMeta) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The same weights without and with the learned error head (a fresh one)."""
    from dataclasses import replace

    torch.manual_seed(0)
    plain = build_model(meta).eval()
    learned = build_model(replace(meta, confidence="learned")).eval()
    fresh = {k: v for k, v in learned.state_dict().items() if k.startswith("head.error.")}
    assert fresh and not any(k.startswith("head.error.") for k in plain.state_dict())
    learned.load_state_dict({**plain.state_dict(), **fresh})
    return plain, learned


@pytest.mark.parametrize("arch", ["small", "head"])
def test_error_head_leaves_depth_alone_and_learns_only_from_its_own_loss(arch: str) -> None:
    """confidence: learned changes the confidence output only; the head's Laplace NLL sends
    gradients to the head and nowhere else (its inputs are detached)."""
    from reflector_ros.model.layers.error_head import laplace_nll

    hw = (64, 80)
    plain, learned = _with_error_head(ModelMeta(arch=arch, input_height=hw[0], input_width=hw[1], n_bins=16))
    image, scale = _image(hw, batch=2), torch.tensor([1.0, 1.4])
    rel = torch.rand(2, 1, *hw) + 0.1 if arch == "head" else None
    with torch.no_grad():
        a, b = plain(image, scale, rel), learned(image, scale, rel)
    assert torch.equal(a["depth"], b["depth"])
    assert b["log_error_scale"].shape == b["canonical_lowres"].shape == (2, 1, hw[0] // 4, hw[1] // 4)
    assert b["confidence"].shape == (2, 1, *hw) and ((b["confidence"] > 0) & (b["confidence"] <= 1)).all()
    up = torch.nn.functional.interpolate(b["log_error_scale"], size=hw, mode="bilinear", align_corners=False)
    torch.testing.assert_close(b["confidence"], torch.exp(-torch.exp(up)))
    learned.train()
    torch.nn.init.normal_(learned.head.error.net[-1].weight, std=0.1)  # as after training (init: zeros)
    out = learned(image, scale, rel)
    low = out["canonical_lowres"]
    target = low.detach() * (1.0 + 0.3 * torch.rand_like(low))
    residual = torch.abs(torch.log(low) - torch.log(target))
    laplace_nll(out["log_error_scale"], residual, target > 0).backward()
    got = {n for n, p in learned.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    head = {n for n, _ in learned.named_parameters() if n.startswith("head.error.")}
    assert got == head


def test_laplace_nll_is_minimal_where_b_is_the_mean_residual() -> None:
    """r / b + log b over pixels is minimal at b = mean(r) (the Laplace scale's MLE)."""
    from reflector_ros.model.layers.error_head import laplace_nll

    r = torch.tensor([0.1, 0.3, 0.1, 0.3, 0.5, 0.0]).view(1, 1, 2, 3)
    mask = torch.tensor([True, True, True, True, False, True]).view(1, 1, 2, 3)  # mean of kept: 0.16
    grid = torch.linspace(math.log(0.02), math.log(1.0), 401)
    losses = torch.stack([laplace_nll(torch.full_like(r, float(s)), r, mask) for s in grid])
    assert math.exp(float(grid[int(losses.argmin())])) == pytest.approx(0.16, rel=0.02)


def test_pixel_grid_spans_minus_one_to_one_at_any_size() -> None:
    from reflector_ros.model.layers.error_head import pixel_grid

    g = pixel_grid(torch.randn(2, 5, 3, 4))
    assert g.shape == (2, 2, 3, 4)
    torch.testing.assert_close(g[1, 0, 2], torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]))
    torch.testing.assert_close(g[0, 1, :, 3], torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.equal(pixel_grid(torch.randn(1, 1, 1, 1)), torch.full((1, 2, 1, 1), -1.0))


def test_checkpoints_without_the_confidence_field_load_as_spread(tmp_path) -> None:
    """Checkpoints written before meta.confidence existed keep the bin-spread confidence."""
    meta = ModelMeta(arch="small", input_height=64, input_width=80, n_bins=8)
    path = save_checkpoint(tmp_path / "old.pt", build_model(meta), meta)
    ck = torch.load(path, weights_only=True)
    del ck["meta"]["confidence"]
    torch.save(ck, path)
    model, meta2, _ = load_checkpoint(path)
    assert meta2.confidence == "spread" and model.head.error is None


def test_relative_residual_is_one_on_average_per_image() -> None:
    """The error head's target: |log d - log d*| over its mean on each image's valid pixels,
    so a frame that is wrong everywhere by the same factor gives 1 everywhere."""
    from reflector_ros.model.layers.error_head import relative_residual

    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 1, 8, 9, generator=g) * 4 + 0.5
    depth = target * torch.tensor([1.5, 0.9]).view(2, 1, 1, 1)
    depth[1, 0, :4] *= 1.3                            # image 1: worse in its top half
    mask = torch.rand(2, 1, 8, 9, generator=g) > 0.3
    r = relative_residual(depth, target, mask)
    torch.testing.assert_close(r[0][mask[0]], torch.ones(int(mask[0].sum())))
    assert float(r[1][mask[1]].mean()) == pytest.approx(1.0, rel=1e-5)
    top, bottom = float(r[1, 0, :4][mask[1, 0, :4]].mean()), float(r[1, 0, 4:][mask[1, 0, 4:]].mean())
    assert top / bottom == pytest.approx(math.log(0.9 * 1.3) / -math.log(0.9), rel=1e-4)
    assert float(r[~mask].abs().sum()) == 0.0
