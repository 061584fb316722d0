"""PyTorch backend: a checkpoint on CUDA (fp16, channels_last, CUDA graph) or on the CPU.

Pre/post-processing runs on the same device through torch_ops (shared with TensorRT),
so on a GPU a frame crosses the bus once in (uint8 image) and once per output.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from reflector_ros.backends.torch_ops import DevicePipeline, OnDeviceBackend

LOG = logging.getLogger(__name__)


class TorchBackend(OnDeviceBackend):
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
        self._setup(model, meta, dev, precision, cuda_graph, f"checkpoint {path.name}")
        self.model_path = path

    @classmethod
    def from_model(cls, model: torch.nn.Module, meta: Any, device: str | torch.device = "cpu") -> "TorchBackend":
        """A backend around an in-memory model (validation while training): fp32, no CUDA
        graphs, the model's mode and weights left as they are (it is not copied)."""
        self = cls.__new__(cls)
        self._setup(model, meta, torch.device(device), "fp32", False, "in-memory model", move=False)
        return self

    def _setup(self, model: torch.nn.Module, meta: Any, dev: torch.device, precision: str, cuda_graph: bool,
               label: str, move: bool = True) -> None:
        self.meta = meta
        half = dev.type == "cuda" and precision == "fp16"
        dtype = torch.float16 if half else torch.float32
        if move:
            model = model.eval().to(dev)
            if dev.type == "cuda":
                model = model.to(memory_format=torch.channels_last)
                if half:
                    model = model.half()
        self.model = model
        self.device = dev
        self.name = "torch-cuda" if dev.type == "cuda" else "torch-cpu"
        self.builds_cloud = True   # torch_ops.build_cloud, next to the network
        self.pipeline = DevicePipeline(meta, dev, input_dtype=dtype, channels_last=dev.type == "cuda" and move)
        self._dtype = dtype
        # CUDA graphs, one per input shape (canonical-camera models follow the camera, so
        # a node sees one shape; a resolution change captures another)
        self._graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...]] | None] = {}
        self._use_graphs = dev.type == "cuda" and cuda_graph
        self.reason = (f"{self.name} on {dev}{' fp16' if half else ' fp32'}"
                       f"{', CUDA graphs' if self._use_graphs else ''}, {label}")

    def _capture(self, shape: tuple[int, ...]) -> tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...]] | None:
        """Record the forward once for this input shape with static buffers; replay per frame.
        None when an op cannot be captured (eager still works; said once in the log)."""
        try:
            x = torch.zeros(shape, dtype=self._dtype, device=self.device).contiguous(
                memory_format=torch.channels_last)
            s = torch.ones((1,), dtype=self._dtype, device=self.device)
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.inference_mode(), torch.cuda.stream(side):
                for _ in range(3):  # warm-up: cudnn autotuning and lazy allocations outside the graph
                    self.model(x, s)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph):
                out = self.model(x, s)
            return graph, (x, s, out["depth"], out["confidence"])
        except Exception as err:  # noqa: BLE001  an op that cannot be captured
            LOG.warning("CUDA graph capture for input %s failed (%s); running eagerly", shape, err)
            return None

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network only, on device tensors; outputs may be static graph buffers."""
        if self._use_graphs:
            shape = tuple(x.shape)
            if shape not in self._graphs:
                self._graphs[shape] = self._capture(shape)
            captured = self._graphs[shape]
            if captured is not None:
                graph, (sx, ss, depth, conf) = captured
                sx.copy_(x)
                ss.copy_(s)
                graph.replay()
                return depth, conf
        out = self.model(x, s)
        return out["depth"], out["confidence"]

