"""Training augmentation keeps geometry exact: a 3-D point lands where its depth went.

Depth maps here hold a distinct value per pixel (value -> source pixel), so any error
in the intrinsics that augment.py's resize / zoom / crop / mirror carry along shows up
as a point landing on the wrong source pixel.
"""
from __future__ import annotations

import numpy as np
import pytest

from reflector_ros.core.camera import Intrinsics
from reflector_ros.data.sample import Sample
from reflector_ros.meta import ModelMeta
from reflector_ros.train.augment import CropSet, random_rescale, random_view, to_network_scale
from reflector_ros.train.config import AugmentConfig

H0, W0 = 96, 120
META = ModelMeta(input_height=64, input_width=80)
CROP = (40, 48)
SCALES = (0.7, 1.6)


def _labelled() -> Sample:
    """Depth = 0.5 m + 1 mm * (row-major pixel index): unique and exactly invertible in float32."""
    rng = np.random.default_rng(0)
    depth = (0.5 + 0.001 * np.arange(H0 * W0, dtype=np.float64)).reshape(H0, W0).astype(np.float32)
    img = rng.integers(0, 256, (H0, W0, 3), dtype=np.uint8)
    return Sample(img, depth, Intrinsics(101.0, 97.0, 57.3, 49.6, W0, H0), name="labelled")


def _source(val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.rint((val.astype(np.float64) - 0.5) * 1000).astype(np.int64)
    return idx // W0, idx % W0


def _augment(s: Sample, seed: int, flip: bool = True) -> Sample:
    rng = np.random.default_rng(seed)
    return random_view(random_rescale(to_network_scale(s, META), rng, SCALES), rng, CROP, flip, color=True)


def _mirrored(a: Sample) -> bool:
    """Whether the crop's left edge came from further right in the original than its right
    edge (edges of the valid region: a padded crop has depth 0 around it)."""
    rows, cols = np.nonzero(a.depth)
    r = rows[0]
    row_cols = cols[rows == r]
    _, xs = _source(a.depth[r, [row_cols.min(), row_cols.max()]])
    return bool(xs[0] > xs[1])


def _landing_errors(s: Sample, a: Sample) -> tuple[np.ndarray, np.ndarray]:
    """For 3-D points behind every original pixel: (dx, dy) between the original pixel
    and the source of the depth found where the augmented intrinsics project the point.

    A mirrored view is the mirrored world (X -> -X) seen through the new intrinsics.
    """
    v0, u0 = np.mgrid[0:H0, 0:W0].astype(np.float64)
    Z = s.depth.astype(np.float64)
    X, Y = (u0 - s.camera.cx) * Z / s.camera.fx, (v0 - s.camera.cy) * Z / s.camera.fy
    if _mirrored(a):
        X = -X
    ua, va = np.rint(a.camera.fx * X / Z + a.camera.cx).astype(int), np.rint(a.camera.fy * Y / Z + a.camera.cy).astype(int)
    h, w = a.depth.shape
    inside = (ua >= 0) & (ua < w) & (va >= 0) & (va < h)
    assert inside.sum() > 0.3 * h * w    # the crop sees a good part of the frame
    found = a.depth[va[inside], ua[inside]]
    ys, xs = _source(found)
    return xs - u0[inside], ys - v0[inside]


def test_points_land_on_their_depth() -> None:
    s = _labelled()
    flips = 0
    for seed in range(24):
        a = _augment(s, seed)
        zoom = a.camera.fx / s.camera.fx
        assert a.camera.fy / s.camera.fy == pytest.approx(zoom, rel=0.05)
        dx, dy = _landing_errors(s, a)
        # each of the two nearest-neighbour resizes may pick a neighbour up to one of its
        # source pixels away (1.5 original px at 120 -> 80), and rounding adds half an output
        # pixel; a wrong crop offset, mirror or focal moves points by many pixels
        tol = 1.5 + 1.5 + 0.5 / zoom + 0.01
        assert np.abs(dx).max() <= tol and np.abs(dy).max() <= tol, (seed, zoom, np.abs(dx).max(), np.abs(dy).max())
        # depth values are carried, not rescaled: each augmented value is an original one
        assert np.isin(a.depth, s.depth).all()
        flips += int(_mirrored(a))
    assert 3 <= flips <= 21    # both the mirrored and the plain branch were checked


def test_no_flip_keeps_orientation() -> None:
    s = _labelled()
    for seed in range(6):
        a = _augment(s, seed, flip=False)
        assert not _mirrored(a)
        dx, dy = _landing_errors(s, a)
        assert np.abs(dx).max() <= 1.5 + 0.5 * s.camera.fx / a.camera.fx + 0.01


def test_depth_resize_is_centre_aligned() -> None:
    s = _labelled()
    bias = np.mean([np.stack(_landing_errors(s, _augment(s, seed))).mean(axis=1) for seed in range(12)], axis=0)
    assert np.abs(bias).max() < 0.3, bias


def test_crop_set_focal_scale_matches_augmented_intrinsics() -> None:
    import torch

    s = _labelled()
    aug = AugmentConfig(crop_hw=CROP, scale_range=SCALES, flip=True, color=True)
    cs = CropSet([s], META, aug)
    assert len(cs) == 1
    for seed in range(8):
        item = cs[(0, seed)]
        a = _augment(s, seed)
        assert item["image"].shape == (3, *CROP) and item["depth"].shape == (1, *CROP)
        assert torch.equal(item["depth"][0], torch.from_numpy(a.depth))
        assert float(item["focal_scale"]) == pytest.approx(0.5 * (a.camera.fx + a.camera.fy) / META.focal_canonical, rel=1e-6)
    # without zoom the scale is the network-resolution focal over f_c, computed by hand
    fixed = CropSet([s], META, AugmentConfig(crop_hw=CROP, scale_range=(1.0, 1.0)))
    want = 0.5 * (s.camera.fx * META.input_width / W0 + s.camera.fy * META.input_height / H0) / META.focal_canonical
    assert float(fixed[(0, 5)]["focal_scale"]) == pytest.approx(want, rel=1e-6)


def test_zoom_out_below_the_crop_pads_with_invalid_depth() -> None:
    """A zoom that leaves the frame smaller than the crop pads it (depth 0 = invalid) at a
    random offset; every crop keeps the configured size (a batch must collate) and points
    still land on their depth through the shifted principal point."""
    s = _labelled()
    for seed in range(8):
        rng = np.random.default_rng(seed)
        a = random_view(random_rescale(to_network_scale(s, META), rng, (0.5, 0.55)), rng, CROP, True, color=False)
        assert a.depth.shape == CROP and a.image.shape == (*CROP, 3)
        pad = a.depth == 0
        assert pad.any() and not pad.all()
        dx, dy = _landing_errors(s, a)
        tol = 1.5 + 1.5 + 0.5 / 0.5 + 0.01
        assert np.abs(dx).max() <= tol and np.abs(dy).max() <= tol, seed
        assert np.isin(a.depth[~pad], s.depth).all()
    cs = CropSet([s], META, AugmentConfig(crop_hw=CROP, scale_range=(0.5, 0.55), flip=True, color=True))
    assert all(cs[(0, seed)]["image"].shape == (3, *CROP) for seed in range(4))


def test_image_and_depth_stay_aligned() -> None:
    """RGB coded with each pixel's own (row, col): after any view, the colour found at a
    pixel names about the same source pixel as the depth found there."""
    s = _labelled()
    v, u = np.mgrid[0:H0, 0:W0]
    coded = np.stack([v, u, np.zeros_like(v)], axis=-1).astype(np.uint8)
    s = Sample(coded, s.depth, s.camera, name="coded")
    for seed in range(16):
        rng = np.random.default_rng(seed)
        a = random_view(random_rescale(to_network_scale(s, META), rng, SCALES), rng, CROP, True, color=False)
        ok = a.depth > 0
        ys, xs = _source(a.depth[ok])
        img = a.image[ok].astype(np.int64)
        # bilinear colour vs nearest depth: a source pixel at most, well under one on average;
        # a view that shifts one of them by a single output pixel moves both figures past this
        for err in (np.abs(img[:, 0] - ys), np.abs(img[:, 1] - xs)):
            assert err.max() <= 1 and err.mean() <= 0.7, (seed, err.max(), err.mean())


def test_crops_of_varying_context_are_cut_to_one_batch_size() -> None:
    """crop_scale_range gives crops of several sizes; a batch is cut to its smallest around
    each centre, so image and depth still match pixel for pixel and the focal scale stays."""
    import torch

    from reflector_ros.train.augment import collate_crops

    s = _labelled()
    cs = CropSet([s], META, AugmentConfig(crop_hw=CROP, scale_range=(1.0, 1.0), flip=False, color=False,
                                                crop_scale_range=(0.5, 1.0)))
    items = [cs[(0, seed)] for seed in range(6)]
    sizes = {tuple(it["image"].shape[1:]) for it in items}
    assert len(sizes) > 1 and all(h <= CROP[0] and w <= CROP[1] for h, w in sizes)
    batch = collate_crops(items)
    h = min(z[0] for z in sizes)
    w = min(z[1] for z in sizes)
    assert batch["image"].shape == (6, 3, h, w) and batch["depth"].shape == (6, 1, h, w)
    for it, img, dep in zip(items, batch["image"], batch["depth"]):
        t, l = (it["image"].shape[1] - h) // 2, (it["image"].shape[2] - w) // 2
        assert torch.equal(img, it["image"][:, t:t + h, l:l + w]) and torch.equal(dep, it["depth"][:, t:t + h, l:l + w])
    assert torch.equal(batch["focal_scale"], torch.stack([it["focal_scale"] for it in items]))
    plain = CropSet([s], META, AugmentConfig(crop_hw=CROP, scale_range=(1.0, 1.0)))
    assert plain[(0, 3)]["image"].shape[1:] == CROP     # the default draws nothing and keeps the size


def test_whole_frames_are_the_network_scale_frame_mirrored_or_not() -> None:
    """augment.whole_frames: every item is the whole frame at network scale (as the node
    feeds it), only mirrored and colour-jittered: no crop, no padding, every pixel kept."""
    s = _labelled()
    net = to_network_scale(s, META)
    cs = CropSet([s], META, AugmentConfig(crop_hw=CROP, crop_scale_range=(0.5, 1.0), whole_frames=True))
    mirrored = []
    for seed in range(6):
        d = cs[(0, seed)]["depth"][0].numpy()
        assert d.shape == net.depth.shape and (d > 0).all()
        same, flipped = np.array_equal(d, net.depth), np.array_equal(d, net.depth[:, ::-1])
        assert same or flipped
        mirrored.append(flipped)
    assert any(mirrored) and not all(mirrored)
