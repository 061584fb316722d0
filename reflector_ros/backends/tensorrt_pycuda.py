"""TensorRT on pycuda buffers, for machines where torch has no CUDA (typically a Jetson
without NVIDIA's torch wheel): the same cached engines as tensorrt_backend, with device
memory, pinned host buffers and the stream from pycuda, and core/'s numpy pre- and
post-processing on the host (there is no torch to run torch_ops on the GPU).

A pair's backbone outputs stay on the device: they are bound straight as the
Reflector engine's inputs. TensorRT calls are the same named-tensor set as
tensorrt_backend (set_input_shape, set_tensor_address, execute_async_v3).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

import numpy as np
import pycuda.driver as cuda
import tensorrt as trt

from reflector_ros.backends.base import DepthResult, NetMaps, check_frame, host_finish
from reflector_ros.core.depth import Validity
from reflector_ros.core.pointcloud import CloudSpec
from reflector_ros.core.preprocess import preprocess
from reflector_ros.meta import NetInput

LOG = logging.getLogger(__name__)


def numpy_dtype(dt: trt.DataType) -> np.dtype:
    """TensorRT tensor dtype -> numpy dtype (the ones our graphs use)."""
    table: dict[trt.DataType, np.dtype] = {
        trt.DataType.FLOAT: np.dtype(np.float32), trt.DataType.HALF: np.dtype(np.float16),
        trt.DataType.INT32: np.dtype(np.int32), trt.DataType.INT8: np.dtype(np.int8),
        trt.DataType.BOOL: np.dtype(np.bool_),
    }
    if dt not in table:
        raise ValueError(f"unsupported TensorRT I/O dtype {dt}")
    return table[dt]


class PycudaGraph:
    """One engine + execution context; a device buffer per I/O tensor, allocated once."""

    def __init__(self, engine: trt.ICudaEngine, label: str, input_hw: tuple[int, int] | None = None) -> None:
        from reflector_ros.backends.engine_build import open_context

        self.label = label
        self.context, tensors = open_context(engine, label, input_hw)
        self.inputs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self.outputs: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        self.buffers: dict[str, Any] = {}   # name -> pycuda DeviceAllocation
        for name, shape, trt_dtype, is_input in tensors:
            dtype = numpy_dtype(trt_dtype)
            self.buffers[name] = cuda.mem_alloc(max(1, int(np.prod(shape)) * dtype.itemsize))
            self.bind(name, self.buffers[name])
            (self.inputs if is_input else self.outputs)[name] = (shape, dtype)

    def bind(self, name: str, allocation: Any) -> None:
        """Point a tensor at device memory (another graph's output, for a pair)."""
        if not self.context.set_tensor_address(name, int(allocation)):
            raise RuntimeError(f"{self.label}: set_tensor_address({name}) refused")

    def enqueue(self, stream: Any) -> None:
        if not self.context.execute_async_v3(int(stream.handle)):
            raise RuntimeError(f"{self.label}: execute_async_v3 failed")


class EngineSet:
    """The engines of one input size with their pinned host buffers: the fused graph, or a
    backbone/Reflector pair whose features never leave the device."""

    def __init__(self, engines: list[tuple[trt.ICudaEngine, str]], input_hw: tuple[int, int]) -> None:
        self.graphs = [PycudaGraph(engine, label, input_hw) for engine, label in engines]
        if len(self.graphs) == 2:
            backbone, reflector = self.graphs
            for name in ("image", *backbone.outputs):   # the image is shared, features passed on
                if name in reflector.inputs:
                    reflector.bind(name, backbone.buffers[name])
        first, last = self.graphs[0], self.graphs[-1]
        # pinned host memory for every copy: the asynchronous copies read it later
        self.image = cuda.pagelocked_empty(*first.inputs["image"])
        self.scales = [cuda.pagelocked_empty((1,), g.inputs["focal_scale"][1])
                       if "focal_scale" in g.inputs else None for g in self.graphs]
        self.host_out = {n: cuda.pagelocked_empty(shape, dtype)
                         for n, (shape, dtype) in last.outputs.items() if n in ("depth", "confidence")}

    def forward(self, x: np.ndarray, scale: float, stream: Any) -> tuple[np.ndarray, np.ndarray]:
        """(1,3,H,W) float32 on the host -> network-size depth, confidence on the host."""
        first, last = self.graphs[0], self.graphs[-1]
        self.image[...] = x.reshape(self.image.shape)   # casts to the engine's input dtype
        cuda.memcpy_htod_async(first.buffers["image"], self.image, stream)
        for graph, host in zip(self.graphs, self.scales):
            if host is not None:
                host[0] = scale
                cuda.memcpy_htod_async(graph.buffers["focal_scale"], host, stream)
            graph.enqueue(stream)
        for name, host in self.host_out.items():
            cuda.memcpy_dtoh_async(host, last.buffers[name], stream)
        stream.synchronize()
        return (self.host_out["depth"].astype(np.float32, copy=True),
                self.host_out["confidence"].astype(np.float32, copy=True))


class TensorRTPycudaBackend:
    """Backend protocol on TensorRT engines with pycuda memory; see the module docstring."""

    def __init__(self, model_path: str | os.PathLike[str], engine_dir: str | os.PathLike[str] | None = None,
                 precision: str = "fp16", use_pair: bool = False, workspace_mb: int | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        from reflector_ros.backends.engine_build import load_engines, startup_reason

        cuda.init()
        device = cuda.Device(0)
        # the runtime API (and so TensorRT) works in the primary context; the node calls
        # infer() from its worker thread, so every call pushes it and pops it again
        self._ctx = device.retain_primary_context()
        self._ctx.push()
        try:
            self._args = (model_path, engine_dir, precision, use_pair, workspace_mb)
            self._log = log or LOG.info
            engines, cache_dir, built_any, self.meta, hw = load_engines(model_path, engine_dir, precision, use_pair,
                                                                        workspace_mb)
            self._sets: dict[tuple[int, int], EngineSet] = {hw: EngineSet(engines, hw)} if engines else {}
            self._failed: dict[tuple[int, int], str] = {}
            self.warm_hw = hw if engines else None   # start_backend warms up here; None: nothing built yet
            self.stream = cuda.Stream()
        finally:
            self._ctx.pop()
        self.name = "tensorrt"
        self.builds_cloud = False   # no torch on the device: post-processing is core's numpy
        self.reason = startup_reason(f"tensorrt {trt.__version__} {precision} on {device.name()}, pycuda buffers "
                                     "(torch has no CUDA)", use_pair, engines, hw, built_any, cache_dir, model_path)

    def _set(self, hw: tuple[int, int]) -> EngineSet:
        """The engine set for this input size; see TensorRTBackend._graphs."""
        from reflector_ros.backends.engine_build import engine_for_size

        if hw not in self._sets:
            model_path, engine_dir, precision, use_pair, workspace_mb = self._args
            engines = engine_for_size(hw, self._failed, self._log, model_path, engine_dir, precision, use_pair,
                                      workspace_mb)
            self._sets[hw] = EngineSet(engines, hw)
        return self._sets[hw]

    def infer(self, rgb: np.ndarray, net: NetInput) -> NetMaps:
        check_frame(rgb, net)
        t0 = time.perf_counter()
        x = preprocess(rgb, self.meta, net)
        t1 = time.perf_counter()
        self._ctx.push()
        try:
            depth_net, conf_net = self._set((net.height, net.width)).forward(x, net.focal_scale, self.stream)
        finally:
            self._ctx.pop()
        t2 = time.perf_counter()
        return NetMaps(depth_net, conf_net, rgb, {"preprocess": 1e3 * (t1 - t0), "inference": 1e3 * (t2 - t1)})

    def finish(self, maps: NetMaps, out_hw: tuple[int, int], validity: Validity, scale: float = 1.0,
               cloud: CloudSpec | None = None) -> DepthResult:
        return host_finish(maps, out_hw, validity, scale, cloud)
