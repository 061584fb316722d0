"""ONNX Runtime backend: the CPU path that needs no torch (numpy + OpenCV + ORT only).

Runs the fused graph, or the backbone/Reflector pair chained (to check the pair a
TensorRT build will use, or to swap backbones). Pre/post-processing is core/'s numpy.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from reflector_ros.backends.base import DepthResult, NetMaps, check_frame, host_finish
from reflector_ros.core.depth import Validity
from reflector_ros.core.pointcloud import CloudSpec
from reflector_ros.meta import ModelMeta, NetInput

FEATURES = ("rel_depth", "feat0", "feat1", "feat2", "feat3")


def physical_cores() -> int:
    """Physical cores this process may use: hyper-threads slow ORT's GEMMs down."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for cpu in allowed:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topo.joinpath("physical_package_id").read_text().strip(),
                       topo.joinpath("core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def _open_session(path: Path, providers: list, num_threads: int, spin_wait: bool = False) -> ort.InferenceSession:
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = num_threads if num_threads > 0 else physical_cores()
    opts.inter_op_num_threads = 1
    # By default no busy-waiting: spinning pool threads steal the cores that the camera
    # driver, DDS and the node's publishing need, and a preempted thread then stalls a
    # whole parallel op. On cores of its own, spinning is faster, most at low frame rates
    # (bench/bench_ort_spinning.py; README "Speed").
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as err:  # ORT raises its own Fail/InvalidProtobuf/... types
        raise ValueError(f"{path}: not a loadable ONNX model ({type(err).__name__}: {err})") from None


def _meta_of(session: ort.InferenceSession, path: Path) -> ModelMeta:
    try:
        return ModelMeta.from_props(dict(session.get_modelmeta().custom_metadata_map))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _require(session: ort.InferenceSession, path: Path, inputs: set[str], outputs: set[str]) -> None:
    have_in = {i.name for i in session.get_inputs()}
    have_out = {o.name for o in session.get_outputs()}
    if not inputs <= have_in or not outputs <= have_out:
        raise ValueError(f"{path}: expected inputs {sorted(inputs)} and outputs {sorted(outputs)}, "
                         f"found inputs {sorted(have_in)} and outputs {sorted(have_out)}")


def pair_paths(model_path: Path) -> tuple[Path, Path]:
    """X.onnx -> (X_backbone.onnx, X_reflector.onnx) beside it."""
    return (model_path.with_name(f"{model_path.stem}_backbone.onnx"),
            model_path.with_name(f"{model_path.stem}_reflector.onnx"))


class OnnxRuntimeBackend:
    """Backend protocol implementation on ONNX Runtime (CPU, or CUDA when installed)."""

    def __init__(self, model_path: str | os.PathLike[str], use_pair: bool = False, cuda: bool = False,
                 num_threads: int = 0, spin_wait: bool = False) -> None:
        from reflector_ros.core import preprocess  # numpy/OpenCV only

        self._preprocess = preprocess.preprocess
        path = Path(model_path).expanduser()
        providers: list = ["CPUExecutionProvider"]
        if cuda:
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise RuntimeError("onnxruntime-cuda asked for, but this onnxruntime has no "
                                   "CUDAExecutionProvider (pip install onnxruntime-gpu)")
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        self.name = "onnxruntime-cuda" if cuda else "onnxruntime-cpu"
        self.builds_cloud = False   # outputs come back to the host anyway: the node packs there
        self.model_path = path
        backbone, reflector = pair_paths(path)
        self.pair = bool(use_pair and backbone.is_file() and reflector.is_file())
        if use_pair and not self.pair:
            raise FileNotFoundError(f"use_pair: {backbone} and {reflector} must exist beside {path}")
        if self.pair:
            self._backbone = _open_session(backbone, providers, num_threads, spin_wait)
            self._reflector = _open_session(reflector, providers, num_threads, spin_wait)
            _require(self._backbone, backbone, {"image"}, set(FEATURES))
            self._reflector_inputs = {i.name for i in self._reflector.get_inputs()}
            _require(self._reflector, reflector, {"focal_scale"}, {"depth", "confidence"})  # image is optional: unused inputs may be pruned
            self.meta = _meta_of(self._backbone, backbone)
        else:
            self._session = _open_session(path, providers, num_threads, spin_wait)
            _require(self._session, path, {"image", "focal_scale"}, {"depth", "confidence"})
            self.meta = _meta_of(self._session, path)
        threads = num_threads if num_threads > 0 else physical_cores()
        self.reason = (f"{self.name} with {threads} intra-op thread(s){' (spin-waiting)' if spin_wait else ''}, "
                       f"{'backbone+reflector pair' if self.pair else 'fused graph'} {path.name}")

    def forward(self, x: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Network only: (1,3,H,W) float32 -> depth, confidence at the network size."""
        s = np.array([scale], dtype=np.float32)
        if not self.pair:
            depth, conf = self._session.run(["depth", "confidence"], {"image": x, "focal_scale": s})
            return depth, conf
        feats = self._backbone.run(list(FEATURES), {"image": x})
        feed = {"image": x, "focal_scale": s, **dict(zip(FEATURES, feats))}
        feed = {k: v for k, v in feed.items() if k in self._reflector_inputs}
        depth, conf = self._reflector.run(["depth", "confidence"], feed)
        return depth, conf

    def infer(self, rgb: np.ndarray, net: NetInput) -> NetMaps:
        check_frame(rgb, net)
        t0 = time.perf_counter()
        x = self._preprocess(rgb, self.meta, net)
        t1 = time.perf_counter()
        depth_net, conf_net = self.forward(x, net.focal_scale)
        t2 = time.perf_counter()
        return NetMaps(depth_net, conf_net, rgb, {"preprocess": 1e3 * (t1 - t0), "inference": 1e3 * (t2 - t1)})

    def finish(self, maps: NetMaps, out_hw: tuple[int, int], validity: Validity, scale: float = 1.0,
               cloud: CloudSpec | None = None) -> DepthResult:
        return host_finish(maps, out_hw, validity, scale, cloud)
