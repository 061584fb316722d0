"""PyTorch backend: a checkpoint on CUDA (fp16, channels_last, CUDA graph) or on the CPU.

Pre/post-processing runs on the same device through torch_ops (shared with TensorRT),
so on a GPU a frame crosses the bus once in (uint8 image) and once per output.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from reflector_ros.backends.base import DepthResult
from reflector_ros.backends.torch_ops import DevicePipeline
from reflector_ros.core.pointcloud import CloudSpec

LOG = logging.getLogger(__name__)


class TorchBackend:
    """Backend protocol on torch; ``device`` is "cpu", "cuda" or "cuda:N"."""

    def __init__(self, checkpoint: str | os.PathLike[str], device: str = "cpu", precision: str = "fp16",
                 num_threads: int = 0, cuda_graph: bool = True) -> None:
        from reflector_ros.model.reflector import load_checkpoint

        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"torch checkpoint not found: {path}")
        if path.suffix == ".onnx":
            raise ValueError(f"{path}: the torch backend needs a .pt checkpoint, not ONNX "
                             f"(use backend onnxruntime, or the .pt beside it)")
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("torch-cuda asked for, but torch has no CUDA device here "
                               f"(torch {torch.__version__}, cuda build {torch.version.cuda})")
        if precision not in ("fp16", "fp32"):
            raise ValueError(f"torch backend precision must be fp16 or fp32, got {precision!r}")
        if dev.type == "cpu" and num_threads > 0:
            torch.set_num_threads(num_threads)
        model, meta, _ = load_checkpoint(path, map_location="cpu")
        self.meta = meta
        self.model_path = path
        half = dev.type == "cuda" and precision == "fp16"
        dtype = torch.float16 if half else torch.float32
        model = model.eval().to(dev)
        if dev.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
            if half:
                model = model.half()
        self.model = model
        self.device = dev
        self.name = "torch-cuda" if dev.type == "cuda" else "torch-cpu"
        self.builds_cloud = True   # torch_ops.build_cloud, next to the network
        self.pipeline = DevicePipeline(meta, dev, input_dtype=dtype, channels_last=dev.type == "cuda")
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        graph_note = ""
        if dev.type == "cuda" and cuda_graph:
            try:
                self._capture(dtype)
                graph_note = ", CUDA graph"
            except Exception as err:  # an op that cannot be captured: eager still works
                LOG.warning("CUDA graph capture failed (%s); running eagerly", err)
                self._graph, self._static = None, None
                graph_note = f", eager (CUDA graph capture failed: {err})"
        self.reason = (f"{self.name} on {dev}{' fp16' if half else ' fp32'}{graph_note}, "
                       f"checkpoint {path.name}")

    def _capture(self, dtype: torch.dtype) -> None:
        """Record the forward once with static input/output buffers; replay per frame."""
        h, w = self.meta.input_height, self.meta.input_width
        x = torch.zeros((1, 3, h, w), dtype=dtype, device=self.device).contiguous(
            memory_format=torch.channels_last)
        s = torch.ones((1,), dtype=dtype, device=self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(3):  # warm-up: cudnn autotuning and lazy allocations outside the graph
                self.model(x, s)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            out = self.model(x, s)
        self._graph = graph
        self._static = (x, s, out["depth"], out["confidence"])

    def infer(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network only, on device tensors; outputs may be static graph buffers."""
        if self._graph is not None and self._static is not None:
            sx, ss, depth, conf = self._static
            sx.copy_(x)
            ss.copy_(s)
            self._graph.replay()
            return depth, conf
        out = self.model(x, s)
        return out["depth"], out["confidence"]

    def run(self, rgb: np.ndarray, scale: float, out_hw: tuple[int, int],
            rays: np.ndarray | None = None, cloud: CloudSpec | None = None) -> DepthResult:
        return self.pipeline.run(self.infer, rgb, scale, out_hw, rays, cloud)
