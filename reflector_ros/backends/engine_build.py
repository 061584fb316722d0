"""Build TensorRT engines from the ONNX graphs: `reflector build-engine` and the backend's
automatic first-start build share build_serialized().

Only APIs present in TensorRT 8.5 (JetPack 5), 10.3 (JetPack 6) and desktop 10.x are
used; newer conveniences (IProgressMonitor) are feature-tested.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

try:
    import tensorrt as trt
except ImportError:  # `reflector build-engine --help` still works and run() says what is missing
    trt = None  # type: ignore[assignment]

from reflector_ros.backends import engine_cache
from reflector_ros.meta import ModelMeta

LOG = logging.getLogger(__name__)


def is_jetson() -> bool:
    return platform.machine() == "aarch64" and Path("/etc/nv_tegra_release").exists()


def default_workspace_mb() -> int:
    """Jetson shares RAM between CPU and GPU and engine builds OOM there: stay modest."""
    return 1024 if is_jetson() else 2048


def trt_major() -> int:
    return int(trt.__version__.split(".")[0])


def gpu_identity(index: int = 0) -> tuple[str, str]:
    """(GPU name, "major.minor" compute capability) from the CUDA driver, without torch."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as err:
        raise RuntimeError(f"no CUDA driver: {err}") from None
    dev = ctypes.c_int(0)
    name = ctypes.create_string_buffer(256)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(dev), index) != 0:
        raise RuntimeError(f"CUDA device {index} not available")
    cuda.cuDeviceGetName(name, 256, dev)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # COMPUTE_CAPABILITY_MAJOR
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # COMPUTE_CAPABILITY_MINOR
    return name.value.decode(errors="replace"), f"{major.value}.{minor.value}"


def _progress_monitor() -> Any:
    """A tqdm bar per build phase where TensorRT has IProgressMonitor (10.0+), else None."""
    if not hasattr(trt, "IProgressMonitor"):
        return None
    from tqdm import tqdm

    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.bars: dict[str, Any] = {}

        def phase_start(self, phase_name: str, parent_phase: str, num_steps: int) -> None:
            depth = len(self.bars)
            self.bars[phase_name] = tqdm(total=num_steps, desc=phase_name, position=depth, leave=depth == 0)

        def step_complete(self, phase_name: str, step: int) -> bool:
            bar = self.bars.get(phase_name)
            if bar is not None:
                bar.update(step + 1 - bar.n)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            bar = self.bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return _Monitor()


def build_serialized(onnx_path: str | os.PathLike[str], precision: str = "fp16",
                     workspace_mb: int | None = None, timing_cache: str | os.PathLike[str] | None = None,
                     calibrator: Any = None, logger: trt.ILogger | None = None,
                     input_hw: tuple[int, int] | None = None) -> bytes:
    """Parse ONNX and build a serialised engine; raises RuntimeError with the parser errors.

    A graph whose image input has a dynamic height and width (canonical-camera models)
    gets an optimisation profile fixed at ``input_hw``: one engine per camera input size.
    """
    if precision not in ("fp16", "fp32", "int8"):
        raise ValueError(f"precision must be fp16, fp32 or int8, got {precision!r}")
    if precision == "int8" and calibrator is None:
        raise ValueError("int8 needs calibration data (--calib DIR|BAG)")
    path = Path(onnx_path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    workspace = workspace_mb if workspace_mb else default_workspace_mb()
    log = logger or trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(log)
    flags = 0
    if trt_major() < 10:  # explicit batch is the default (and the only mode) from 10.0
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, log)
    t0 = time.perf_counter()
    LOG.info("parsing %s", path)
    if not parser.parse(path.read_bytes(), str(path)):
        errors = "\n".join(f"  {parser.get_error(i)}" for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {path}:\n{errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace << 20)
    dynamic = []
    for i in range(network.num_inputs):
        dims = network.get_input(i).shape
        if any(int(dims[k]) < 0 for k in range(len(dims))):
            dynamic.append(network.get_input(i))
    if dynamic:
        if input_hw is None:
            raise ValueError(f"{path.name} has a dynamic input size: give the camera's input size")
        profile = builder.create_optimization_profile()
        for tensor in dynamic:
            if tensor.name != "image":
                raise ValueError(f"{path.name}: only the image input may be dynamic, not {tensor.name}")
            shape = trt.Dims([1, 3, int(input_hw[0]), int(input_hw[1])])
            profile.set_shape(tensor.name, shape, shape, shape)
        config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        if builder.platform_has_fast_fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        else:
            LOG.warning("this GPU has no fast fp16; building %s without the FP16 flag", precision)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
    cache_path = Path(timing_cache) if timing_cache else None
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)
    monitor = _progress_monitor()
    if monitor is not None:
        config.progress_monitor = monitor
    LOG.info("building %s engine for %s (workspace %d MiB, TensorRT %s); this takes minutes the first time",
             precision, path.name, workspace, trt.__version__)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        hint = " On Jetson, try a smaller --workspace-mb." if is_jetson() else ""
        raise RuntimeError(f"TensorRT failed to build an engine for {path} (see its log above).{hint}")
    if cache_path is not None:
        engine_cache.atomic_write(cache_path, bytes(memoryview(config.get_timing_cache().serialize())))
    LOG.info("built %s in %.1f s", path.name, time.perf_counter() - t0)
    return bytes(memoryview(serialized))


def graphs_for(onnx_path: Path, pair: bool) -> list[Path]:
    """The ONNX graphs an engine set is built from: [fused] or [backbone, reflector]."""
    if not pair:
        return [onnx_path]
    stem = onnx_path.stem
    return [onnx_path.with_name(f"{stem}_backbone.onnx"), onnx_path.with_name(f"{stem}_reflector.onnx")]


def input_shape_of(onnx_path: Path, input_hw: tuple[int, int] | None = None) -> tuple[int, ...]:
    """Shape of the graph's `image` input, for the cache key: the static one, or, for a
    dynamic graph, (1, 3, *input_hw)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    for inp in model.graph.input:
        if inp.name == "image":
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inp.type.tensor_type.shape.dim]
            if any(d < 0 for d in dims[2:]):
                if input_hw is None:
                    raise ValueError(f"{onnx_path.name} has a dynamic input size: give the camera's input size")
                return (1, 3, int(input_hw[0]), int(input_hw[1]))
            return tuple(int(d) for d in dims)
    raise ValueError(f"{onnx_path}: no 'image' input")


def engine_key(onnx_path: Path, precision: str, input_hw: tuple[int, int] | None = None) -> engine_cache.EngineKey:
    name, cc = gpu_identity()
    return engine_cache.make_key(onnx_path, trt.__version__, name, cc, precision,
                                 input_shape_of(onnx_path, input_hw))


def open_context(engine: trt.ICudaEngine, label: str, input_hw: tuple[int, int] | None = None
                 ) -> tuple[trt.IExecutionContext, list[tuple[str, tuple[int, ...], trt.DataType, bool]]]:
    """An execution context with every input's shape set (a dynamic image input to
    (1, 3, *input_hw), the engine's one profile), and the engine's I/O tensors as
    (name, shape, dtype, is_input) with the output shapes that follow. Shared by the
    torch- and pycuda-buffer backends, which differ only in where the buffers come from."""
    context = engine.create_execution_context()
    if context is None:
        raise RuntimeError(f"{label}: could not create an execution context (GPU memory?)")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    for name in inputs:
        dims = engine.get_tensor_shape(name)
        shape = tuple(int(dims[k]) for k in range(len(dims)))
        if any(d < 0 for d in shape):
            if name != "image" or input_hw is None:
                raise RuntimeError(f"{label}: input {name} has a dynamic shape {shape} and no size was given")
            shape = (1, 3, int(input_hw[0]), int(input_hw[1]))
        if not context.set_input_shape(name, shape):
            raise RuntimeError(f"{label}: set_input_shape({name}, {shape}) refused")
    tensors: list[tuple[str, tuple[int, ...], trt.DataType, bool]] = []
    for name in names:
        dims = context.get_tensor_shape(name)
        shape = tuple(int(dims[k]) for k in range(len(dims)))
        if any(d < 0 for d in shape):
            raise RuntimeError(f"{label}: tensor {name} still has a dynamic shape {shape}")
        tensors.append((name, shape, engine.get_tensor_dtype(name), name in inputs))
    return context, tensors


def meta_from_onnx(path: Path) -> ModelMeta:
    """The model metadata an engine set runs with (the engine itself does not carry it)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise ValueError(f"{path}: not a readable ONNX model ({err})") from None
    try:
        return ModelMeta.from_props({p.key: p.value for p in model.metadata_props})
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def cached_input_sizes(onnx_path: Path, cache_dir: Path, precision: str, trt_version: str,
                       gpu: tuple[str, str]) -> list[tuple[int, int]]:
    """Input sizes (height, width) with a cached engine for exactly this ONNX file, TensorRT
    version, GPU (name, compute capability) and precision, the newest first: the cameras this
    model already ran with here."""
    if not cache_dir.is_dir():
        return []
    sha = engine_cache.file_sha256(onnx_path)
    found = []
    for sidecar in cache_dir.glob(f"{onnx_path.stem}-*.json"):
        try:
            key = engine_cache.EngineKey.from_json(json.loads(sidecar.read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            continue
        same = (key.onnx_sha256, key.trt_version, (key.gpu_name, key.compute_capability), key.precision) == \
            (sha, trt_version, gpu, precision)
        if same and len(key.input_shape) == 4 and sidecar.with_suffix(".engine").is_file():
            found.append((sidecar.stat().st_mtime, (int(key.input_shape[2]), int(key.input_shape[3]))))
    return [hw for _, hw in sorted(found, reverse=True)]


def check_pair(path: Path, meta: ModelMeta, use_pair: bool) -> None:
    """ValueError for the backbone/Reflector pair of a model whose input size follows the
    camera: TensorRT runs its fused graph only."""
    if use_pair and meta.input_mode == "canonical":
        raise ValueError(f"{path.name} follows the camera's input size: TensorRT runs its fused graph only "
                         "(the backbone/Reflector pair needs a fixed size; drop --pair / use_pair)")


def _no_int8(graph: str, where: str, cache_dir: Path, onnx: Path, size_flag: str) -> str:
    return (f"no cached INT8 engine for {graph}{where} in {cache_dir}: INT8 needs calibration, build it first "
            f"with `reflector build-engine --onnx {onnx} --precision int8 --calib DIR {size_flag}`")


def load_engines(model_path: str | os.PathLike[str], engine_dir: str | os.PathLike[str] | None,
                 precision: str, use_pair: bool, workspace_mb: int | None,
                 input_hw: tuple[int, int] | None = None
                 ) -> tuple[list[tuple[trt.ICudaEngine, str]], Path, bool, ModelMeta, tuple[int, int]]:
    """Deserialise the cached engines for ``model_path`` (X.onnx), building any that are
    missing or stale. Returns ([(engine, file name)], cache dir, built any now, metadata,
    input size (height, width)); shared by the torch-buffer and pycuda-buffer TensorRT
    backends.

    A fixed-size model has one engine set. A canonical-camera model (its input size follows
    the camera) gets one engine per ``input_hw``, fused graph only; without ``input_hw`` the
    newest cached size is loaded, and when none is cached nothing is built (an empty list):
    the camera's size is not known yet, and a build at the nominal size would take minutes
    for an engine no camera uses."""
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    meta = meta_from_onnx(path)
    cache_dir = engine_cache.default_cache_dir(engine_dir)
    check_pair(path, meta, use_pair)
    if meta.input_mode == "canonical":
        if input_hw is None:
            sizes = cached_input_sizes(path, cache_dir, precision, trt.__version__, gpu_identity())
            if not sizes and precision == "int8":   # the node builds FP16/FP32 only: fail now, not on every frame
                raise ValueError(_no_int8(path.name, "", cache_dir, path, "--camera WIDTH HEIGHT FX"))
            if not sizes:
                return [], cache_dir, False, meta, (meta.input_height, meta.input_width)
            input_hw = sizes[0]
    hw = input_hw or (meta.input_height, meta.input_width)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engines: list[tuple[trt.ICudaEngine, str]] = []
    built_any = False
    for i, g in enumerate(graphs_for(path, use_pair)):
        if not g.is_file():
            raise FileNotFoundError(f"ONNX graph not found: {g}")
        # same convention as build-engine: with int8 only the image-fed graph is INT8
        prec = precision if (i == 0 or precision != "int8") else "fp16"
        key = engine_key(g, prec, input_hw)

        def build(g: Path = g, prec: str = prec) -> bytes:
            if prec == "int8":
                raise ValueError(_no_int8(g.name, f" at network input {hw[0]}x{hw[1]} (height x width)", cache_dir,
                                          path, f"--input-size {hw[0]} {hw[1]}"))
            return build_serialized(g, prec, workspace_mb, cache_dir / "timing.cache", input_hw=input_hw)

        def load(data: bytes) -> trt.ICudaEngine | None:
            return runtime.deserialize_cuda_engine(data)

        engine, epath, built = engine_cache.get_or_build(cache_dir, g.stem, key, build, load)
        built_any |= built
        engines.append((engine, epath.name))
    return engines, cache_dir, built_any, meta, hw


def startup_reason(runtime: str, use_pair: bool, engines: list, hw: tuple[int, int], built_any: bool,
                   cache_dir: Path, model_path: str | os.PathLike[str]) -> str:
    """The TensorRT backends' ``reason``: what runs, and where the engines come from; for a
    canonical-camera model with none cached yet, that the first frame builds one and how to
    build it ahead."""
    if not engines:
        return (f"{runtime}, fused engine: none cached in {cache_dir} for this model yet; the first frame builds "
                "the one for its camera's network input (minutes on a Jetson, no depth until then; build it ahead "
                f"with `reflector build-engine --onnx {model_path} --camera WIDTH HEIGHT FX`)")
    return (f"{runtime}, {'pair' if use_pair else 'fused'} engine(s) for network input {hw[0]}x{hw[1]} (height x "
            f"width) {'built now' if built_any else 'from cache'} in {cache_dir}")


def engine_for_size(hw: tuple[int, int], failed: dict[tuple[int, int], str], log: Any,
                    model_path: str | os.PathLike[str], engine_dir: str | os.PathLike[str] | None, precision: str,
                    use_pair: bool, workspace_mb: int | None) -> list[tuple[trt.ICudaEngine, str]]:
    """The engines for a network input size first seen on a frame: from the cache, or built
    now (said through ``log`` first: minutes on a Jetson). A failure is kept in ``failed`` and
    raised again for later frames of that size as an InputError (the node skips the frame and
    says why, throttled) instead of a rebuild per frame."""
    from reflector_ros.core.errors import InputError

    if hw in failed:
        raise InputError(failed[hw])
    log(f"TensorRT: network input {hw[0]}x{hw[1]} (height x width) is new: loading its engine, or building it "
        "(minutes the first time; no depth until it is done)")
    try:
        engines, _, built, _, _ = load_engines(model_path, engine_dir, precision, use_pair, workspace_mb, hw)
    except Exception as exc:  # noqa: BLE001  (TensorRT raises its own types)
        hint = "" if "reflector build-engine" in str(exc) else (
            f"; build it with `reflector build-engine --onnx {model_path} --input-size {hw[0]} {hw[1]}` and restart "
            "the node")
        failed[hw] = f"no TensorRT engine for network input {hw[0]}x{hw[1]} (height x width): {exc}{hint}"
        raise InputError(failed[hw]) from None
    log(f"TensorRT: engine for {hw[0]}x{hw[1]} {'built' if built else 'loaded from the cache'}")
    return engines


def engine_input_size(meta: ModelMeta, input_size: list[int] | None, camera: list[float] | None
                      ) -> tuple[int, int] | None:
    """build-engine's input size (height, width): ``--input-size H W`` as given, or the network
    input of a ``--camera WIDTH HEIGHT FX`` camera (the size the node will use for it), or None
    for a fixed-size model. ValueError for a canonical-camera model given neither."""
    from reflector_ros.core.camera import Intrinsics
    from reflector_ros.core.errors import InputError
    from reflector_ros.meta import network_input

    if input_size and camera:
        raise ValueError("give --input-size or --camera, not both")
    if input_size:
        h, w = (int(v) for v in input_size)
        if not (16 <= h <= 4096 and 16 <= w <= 4096):
            raise ValueError(f"--input-size {h} {w}: height and width must be in [16, 4096]")
        return h, w
    if camera:
        width, height, fx = camera
        if width != int(width) or height != int(height):
            raise ValueError(f"--camera {width:g} {height:g} {fx:g}: the image size must be whole pixels")
        try:
            cam = Intrinsics.centred(fx, int(width), int(height)).checked()
            net = network_input(cam, meta)
        except InputError as exc:
            raise ValueError(f"--camera {width:g} {height:g} {fx:g}: {exc}") from None
        return net.height, net.width
    if meta.input_mode == "canonical":
        raise ValueError("this model's network input follows the camera (canonical focal "
                         f"{meta.focal_canonical:g} px): give --camera WIDTH HEIGHT FX from your CameraInfo, "
                         "or --input-size H W as the node's /diagnostics network_input shows")
    return None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", type=Path, default=None,
                   help="fused graph X.onnx (with --pair: X_backbone/X_reflector beside it); default: the embedded "
                        "default model, which the node runs when its model parameter is empty")
    p.add_argument("--pair", action="store_true", help="build the backbone and Reflector engines instead of the fused one")
    p.add_argument("--precision", choices=("fp16", "fp32", "int8"), default="fp16",
                   help="engine precision (default: fp16; int8 needs --calib)")
    p.add_argument("--calib", type=Path, help="INT8 calibration images: a folder or a ROS 2 bag")
    p.add_argument("--calib-topic", help="image topic when --calib is a bag")
    p.add_argument("--calib-frames", type=int, default=200, help="INT8 calibration frames to use (default: 200)")
    p.add_argument("--workspace-mb", type=int, default=None,
                   help=f"builder workspace (default {default_workspace_mb()} here; keep it modest on Jetson)")
    p.add_argument("--cache-dir", type=Path, default=None, help="engine cache (default: engines/ or $REFLECTOR_ENGINE_DIR)")
    p.add_argument("--timing-cache", type=Path, default=None, help="timing cache file (default <cache-dir>/timing.cache)")
    p.add_argument("--force", action="store_true", help="rebuild even if a valid cached engine exists")
    p.add_argument("--camera", type=float, nargs=3, metavar=("WIDTH", "HEIGHT", "FX"), default=None,
                   help="build for this camera: the image size and the focal length of the image the network "
                        "sees (CameraInfo P's fx when the node rectifies, K's when it does not; (fx + fy) / 2 "
                        "if they differ); the model's network input follows it, and this computes it")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="or the network input size itself, height then width (the node's /diagnostics "
                        "network_input says 'W x H (width x height)')")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from reflector_ros.backends import trt_runtime_version

    try:
        trt_runtime_version()
    except ImportError as err:
        print(f"reflector build-engine: error: TensorRT is not usable here ({err}); "
              f"engines are built on the target GPU (JetPack ships TensorRT)", file=sys.stderr)
        return 1
    cache_dir = engine_cache.default_cache_dir(args.cache_dir)
    timing = args.timing_cache or cache_dir / "timing.cache"
    if args.onnx is None:
        from reflector_ros.weights import default_model

        args.onnx = default_model(".onnx")
    try:
        if not args.onnx.is_file():
            raise FileNotFoundError(f"ONNX model not found: {args.onnx}")
        model_meta = meta_from_onnx(args.onnx)
        check_pair(args.onnx, model_meta, args.pair)
        input_hw = engine_input_size(model_meta, args.input_size, args.camera)
        if input_hw is None:
            input_hw = (model_meta.input_height, model_meta.input_width)
        print(f"network input {input_hw[0]}x{input_hw[1]} (height x width)")
        graphs = graphs_for(args.onnx, args.pair)
        for g in graphs:
            if not g.is_file():
                raise FileNotFoundError(f"ONNX graph not found: {g}")
        for i, g in enumerate(graphs):
            # INT8 calibrates on images, so only the graph fed by images gets it; the
            # Reflector of a pair stays fp16 (its bin centres need the precision anyway).
            precision = args.precision if (i == 0 or args.precision != "int8") else "fp16"
            key = engine_key(g, precision, input_hw)
            if not args.force and engine_cache.lookup(cache_dir, g.stem, key) is not None:
                print(f"{g.name}: cached engine is valid: {engine_cache.engine_paths(cache_dir, g.stem, key)[0]}")
                continue
            calibrator = None
            if precision == "int8":
                if args.calib is None:
                    raise ValueError("--precision int8 needs --calib DIR|BAG")
                from reflector_ros.backends.calibration import calibration_batches, make_calibrator
                from reflector_ros.meta import ModelMeta
                import onnx

                meta = ModelMeta.from_props({p.key: p.value for p in onnx.load(str(g), load_external_data=False).metadata_props})
                batches = calibration_batches(args.calib, meta, args.calib_frames, args.calib_topic, input_hw)
                # the calibration cache belongs to these exact ONNX bytes and input size
                calib_file = cache_dir / f"{g.stem}-{key.onnx_sha256[:16]}-{input_hw[0]}x{input_hw[1]}.calib"
                calibrator = make_calibrator(batches, calib_file, constants={"focal_scale": np.ones(1, np.float32)})
            data = build_serialized(g, precision, args.workspace_mb, timing, calibrator, input_hw=input_hw)
            path = engine_cache.store(cache_dir, g.stem, key, data)
            print(f"{g.name}: wrote {path} ({len(data) / 1e6:.1f} MB)")
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"reflector build-engine: error: {err}", file=sys.stderr)
        return 1
    except (AttributeError, TypeError) as err:   # an API this code does not know (a newer TensorRT)
        print(f"reflector build-engine: error: TensorRT {trt.__version__} does not offer what this build needs "
              f"({type(err).__name__}: {err}); the code is written for TensorRT 8.5-10.x", file=sys.stderr)
        return 1
    return 0
