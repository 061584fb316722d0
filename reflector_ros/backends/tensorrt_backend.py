"""TensorRT backend, kept thin: deserialise (or build and cache) engines, bind named
tensors, enqueue. Pre/post-processing is torch_ops on the same CUDA stream, shared
with (and tested through) the torch backend.

Only named-tensor APIs that exist in TensorRT 8.5, 10.3 and desktop 10.x are used:
num_io_tensors, get_tensor_name/mode/shape/dtype, set_input_shape,
set_tensor_address and execute_async_v3. Buffers and the stream are torch's (CUDA
tensors' data_ptr(), torch.cuda.current_stream()); where torch has no CUDA (a Jetson
without NVIDIA's torch wheel) tensorrt_pycuda runs the same engines on pycuda buffers.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

import tensorrt as trt
import torch

from reflector_ros.backends.torch_ops import DevicePipeline, OnDeviceBackend

LOG = logging.getLogger(__name__)


def torch_dtype(dt: trt.DataType) -> torch.dtype:
    """TensorRT tensor dtype -> torch dtype (the ones our graphs use)."""
    table: dict[trt.DataType, torch.dtype] = {
        trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
        trt.DataType.INT32: torch.int32, trt.DataType.INT8: torch.int8, trt.DataType.BOOL: torch.bool,
    }
    if dt not in table:
        raise ValueError(f"unsupported TensorRT I/O dtype {dt}")
    return table[dt]


class TrtGraph:
    """One engine + execution context with named I/O and static output buffers."""

    def __init__(self, engine: trt.ICudaEngine, device: torch.device, label: str,
                 input_hw: tuple[int, int] | None = None) -> None:
        from reflector_ros.backends.engine_build import open_context

        self.engine = engine
        self.label = label
        self.context, tensors = open_context(engine, label, input_hw)
        self.inputs: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        for name, shape, trt_dtype, is_input in tensors:
            dtype = torch_dtype(trt_dtype)
            if is_input:
                self.inputs[name] = (shape, dtype)
            else:
                out = torch.empty(shape, dtype=dtype, device=device)
                self.outputs[name] = out
                self.context.set_tensor_address(name, int(out.data_ptr()))
        self._keep: list[torch.Tensor] = []

    def __call__(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Enqueue on torch's current stream; outputs are this graph's static buffers,
        valid until the next call (the pipeline copies them out before that)."""
        keep = []
        for name, (shape, dtype) in self.inputs.items():
            if name not in feeds:
                raise KeyError(f"{self.label}: no value for engine input {name!r}")
            t = feeds[name].to(dtype).reshape(shape).contiguous()
            keep.append(t)
            self.context.set_tensor_address(name, int(t.data_ptr()))
        self._keep = keep  # inputs must outlive the asynchronous execution
        stream = torch.cuda.current_stream().cuda_stream
        if not self.context.execute_async_v3(stream):
            raise RuntimeError(f"{self.label}: execute_async_v3 failed")
        return self.outputs


class TensorRTBackend(OnDeviceBackend):
    """Backend protocol on TensorRT engines built from ``model_path`` (X.onnx), cached
    under engine_dir and rebuilt when TensorRT, the GPU, the ONNX bytes, precision or the
    input size change. Canonical-camera models get one engine per input size, built the
    first time a camera of that size is seen (cached on disk after that)."""

    def __init__(self, model_path: str | os.PathLike[str], engine_dir: str | os.PathLike[str] | None = None,
                 precision: str = "fp16", use_pair: bool = False, workspace_mb: int | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        from reflector_ros.backends.engine_build import load_engines, startup_reason

        if not torch.cuda.is_available():
            raise RuntimeError("the TensorRT backend with torch buffers needs torch with CUDA "
                               "(tensorrt_pycuda covers machines with pycuda and no CUDA torch)")
        self._args = (model_path, engine_dir, precision, use_pair, workspace_mb)
        self._log = log or LOG.info
        engines, cache_dir, built_any, self.meta, hw = load_engines(model_path, engine_dir, precision, use_pair,
                                                                    workspace_mb)
        self.device = torch.device("cuda")
        self.name = "tensorrt"
        self.builds_cloud = True   # torch_ops.build_cloud, next to the network
        self._sets: dict[tuple[int, int], list[TrtGraph]] = {}
        self._failed: dict[tuple[int, int], str] = {}
        self.warm_hw = hw if engines else None     # start_backend warms up here; None: nothing built yet
        if engines:
            self._sets[hw] = [TrtGraph(engine, self.device, label, hw) for engine, label in engines]
        # TrtGraph casts its inputs to the engine's dtype, so float32 is right until an engine says otherwise
        image_dtype = self._sets[hw][0].inputs["image"][1] if engines else torch.float32
        self.pipeline = DevicePipeline(self.meta, self.device, input_dtype=image_dtype)
        self.reason = startup_reason(f"tensorrt {trt.__version__} {precision} on {torch.cuda.get_device_name()}, "
                                     "torch buffers", use_pair, engines, hw, built_any, cache_dir, model_path)

    def _graphs(self, hw: tuple[int, int]) -> list[TrtGraph]:
        """The engine set for this input size (a canonical-camera model's camera decides it):
        loaded from the cache, or built (minutes) the first time; a failed build is said once
        and not retried on every frame."""
        from reflector_ros.backends.engine_build import engine_for_size

        if hw not in self._sets:
            model_path, engine_dir, precision, use_pair, workspace_mb = self._args
            engines = engine_for_size(hw, self._failed, self._log, model_path, engine_dir, precision, use_pair,
                                      workspace_mb)
            self._sets[hw] = [TrtGraph(engine, self.device, label, hw) for engine, label in engines]
        return self._sets[hw]

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        graphs = self._graphs((int(x.shape[2]), int(x.shape[3])))
        if len(graphs) == 1:
            out = graphs[0]({"image": x, "focal_scale": s})
            return out["depth"], out["confidence"]
        backbone, reflector = graphs
        feats = backbone({"image": x})
        feeds = {"image": x, "focal_scale": s, **feats}
        out = reflector({k: v for k, v in feeds.items() if k in reflector.inputs})
        return out["depth"], out["confidence"]

