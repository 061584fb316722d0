"""INT8 calibration data for TensorRT: preprocessed frames from an image folder or a bag.

The batch generator is pure numpy (core.preprocess, the exact network input), so it
is tested without a GPU; only make_calibrator() touches TensorRT and CUDA.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from reflector_ros.core.errors import InputError
from reflector_ros.meta import ModelMeta

LOG = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
BAG_SUFFIXES = (".mcap", ".db3")


def is_bag(source: Path) -> bool:
    return source.suffix in BAG_SUFFIXES or (source.is_dir() and (source / "metadata.yaml").is_file())


def spread(n_total: int, n_wanted: int) -> list[int]:
    """n_wanted indices spread evenly over n_total: calibration wants variety, not a burst."""
    if n_total <= 0 or n_wanted <= 0:
        return []
    if n_wanted >= n_total:
        return list(range(n_total))
    return sorted({int(round(i)) for i in np.linspace(0, n_total - 1, n_wanted)})


def _folder_frames(folder: Path, frames: int) -> Iterator[np.ndarray]:
    import cv2

    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    for i in spread(len(files), frames):
        bgr = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
        if bgr is None:
            LOG.warning("calibration: skipping unreadable image %s", files[i])
            continue
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _bag_frames(bag: Path, frames: int, image_topic: str | None) -> Iterator[np.ndarray]:
    from reflector_ros.data import rosbag  # the data helper's reader; rosbags imported only here

    if not image_topic:
        raise InputError(f"{bag}: a bag needs --calib-topic (the image topic to calibrate on)")
    step = 1
    for k, (_, rgb, _) in enumerate(rosbag.iter_bag_images(bag, image_topic)):
        if k % step == 0:
            yield rgb
            frames -= 1
            if frames <= 0:
                return


def calibration_batches(source: str | os.PathLike[str], meta: ModelMeta, frames: int = 200,
                        image_topic: str | None = None,
                        input_hw: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Yield up to ``frames`` contiguous (1, 3, H, W) float32 network inputs, preprocessed
    exactly as at run time (a calibrator fed other statistics gives wrong ranges), at the
    engine's input size (default the model's nominal size)."""
    from reflector_ros.core.preprocess import preprocess
    from reflector_ros.meta import NetInput

    net = NetInput(*(input_hw or (meta.input_height, meta.input_width)), 1.0)

    src = Path(source).expanduser()
    if frames <= 0:
        raise InputError(f"calibration frames must be > 0, got {frames}")
    if not src.exists():
        raise InputError(f"calibration source not found: {src}")
    rgbs = _bag_frames(src, frames, image_topic) if is_bag(src) else _folder_frames(src, frames)
    n = 0
    for rgb in rgbs:
        yield np.ascontiguousarray(preprocess(rgb, meta, net), dtype=np.float32)
        n += 1
    if n == 0:
        raise InputError(f"no usable calibration frames in {src}")


def make_calibrator(batches: Iterator[np.ndarray], cache_file: Path, input_name: str = "image",
                    constants: dict[str, np.ndarray] | None = None) -> Any:
    """An IInt8EntropyCalibrator2 fed from ``batches`` through one device buffer.

    ``constants``: the graph's other inputs, fed the same value every batch (the fused
    graph's ``focal_scale``, (1,) float32: the frames are at the canonical focal length, so
    1.0). Every input the builder names must have a buffer; one it names that is neither
    is an error, not a null pointer. The cache file lets a rebuild (new TensorRT, same
    model and input size) skip calibration.
    """
    import tensorrt as trt
    import torch

    from reflector_ros.backends.engine_cache import atomic_write

    fixed = {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)).to("cuda") for k, v in (constants or {}).items()}

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.device_buf: torch.Tensor | None = None
            self.count = 0

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str], *_: Any) -> list[int] | None:
            batch = next(batches, None)
            if batch is None:
                LOG.info("calibration: %d frames used", self.count)
                return None
            host = torch.from_numpy(batch)
            if self.device_buf is None or self.device_buf.shape != host.shape:
                self.device_buf = torch.empty(host.shape, dtype=torch.float32, device="cuda")
            self.device_buf.copy_(host)
            missing = [n for n in names if n != input_name and n not in fixed]
            if missing:
                raise ValueError(f"INT8 calibration has no values for the graph input(s) {missing}")
            torch.cuda.synchronize()
            self.count += 1
            return [int(self.device_buf.data_ptr()) if n == input_name else int(fixed[n].data_ptr()) for n in names]

        def read_calibration_cache(self) -> bytes | None:
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            atomic_write(cache_file, bytes(cache))

    return _EntropyCalibrator()
