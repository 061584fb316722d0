"""make_backend(): pick and build an inference backend by name, or the best one here.

Heavy runtimes are imported only inside the branch that uses them, so the
ONNX Runtime path (and `auto` on a machine without a GPU) never imports torch.
"""
from __future__ import annotations

import ctypes
from functools import partial
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Callable

from reflector_ros.backends.base import Backend, DepthResult

__all__ = ["BACKENDS", "Backend", "DepthResult", "cuda_device_count", "make_backend", "open_backend", "trt_runtime_version"]

BACKENDS = ("auto", "tensorrt", "torch", "torch-cuda", "torch-cpu", "onnxruntime", "onnxruntime-cuda")
LOG = logging.getLogger(__name__)


def cuda_device_count() -> tuple[int, str]:
    """(number of CUDA devices, why zero) through the driver API: no torch import needed."""
    for lib in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            cuda = ctypes.CDLL(lib)
            break
        except OSError:
            continue
    else:
        return 0, "no CUDA driver (libcuda not found)"
    if cuda.cuInit(0) != 0:
        return 0, "CUDA driver present but cuInit failed (no device or driver/runtime mismatch)"
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return 0, "CUDA driver present but no CUDA device"
    return count.value, ""


def trt_runtime_version() -> str:
    """Import the real TensorRT runtime; ImportError if absent or only tensorrt-stubs
    (whose folder without __init__.py imports as an empty namespace package)."""
    import tensorrt

    if not hasattr(tensorrt, "Runtime"):
        where = list(getattr(tensorrt, "__path__", []))
        raise ImportError(f"'tensorrt' at {where} is type stubs only, not the TensorRT runtime")
    return str(getattr(tensorrt, "__version__", "?"))


def _say(logger: Any, msg: str) -> None:
    if logger is None:
        LOG.info(msg)
    elif hasattr(logger, "info"):
        logger.info(msg)
    else:
        logger(msg)


def _with_suffix(path: Path, suffix: str) -> Path:
    """The sibling file with another suffix when it exists (X.onnx <-> X.pt), else path."""
    other = path.with_suffix(suffix)
    return other if path.suffix != suffix and other.is_file() else path


def _default(suffix: str) -> Path:
    from reflector_ros.weights import default_model

    return default_model(suffix)


def make_backend(name: str = "auto", model_path: str | os.PathLike[str] | None = None,
                 engine_dir: str | os.PathLike[str] | None = None, precision: str = "fp16",
                 num_threads: int = 0, logger: Any | Callable[[str], None] | None = None,
                 use_pair: bool = False, cpu_spin_wait: bool = False) -> Backend:
    """Build a backend. ``model_path`` None = the embedded default model (.onnx or .pt as
    the backend needs); an .onnx and a .pt with the same stem are interchangeable.

    The returned object has ``.name`` (what runs) and ``.reason`` (why, and how).
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    if precision not in ("fp16", "fp32", "int8"):
        raise ValueError(f"precision must be fp16, fp32 or int8, got {precision!r}")
    path = Path(model_path).expanduser() if model_path else None
    if path is not None and not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    why: list[str] = []
    auto = name == "auto"
    if auto:
        name = _choose(path, why)
    log = partial(_say, logger)
    try:
        backend = _build(name, path, engine_dir, precision, num_threads, use_pair, cpu_spin_wait, log)
    except Exception as exc:  # noqa: BLE001  (TensorRT raises its own types, and a newer one other APIs)
        if not auto or name != "tensorrt":
            raise
        # auto chose TensorRT and it cannot run this model here: the next choice runs instead
        why.append(f"tensorrt failed to start ({type(exc).__name__}: {exc})")
        name = _choose(path, why, tensorrt=False)
        backend = _build(name, path, engine_dir, precision, num_threads, use_pair, cpu_spin_wait, log)
    if why:
        backend.reason = f"auto: {'; '.join(why)}; using {backend.name} ({backend.reason})"
    _say(logger, f"backend {backend.name}: {backend.reason}")
    return backend


def open_backend(name: str = "auto", model_path: str | os.PathLike[str] | None = None, **kwargs: Any) -> Backend:
    """make_backend for the command-line tools: a backend that cannot start here (not
    installed, TensorRT stubs only, no CUDA device, a model it cannot load) is an InputError
    that names the backend and why, not a traceback."""
    from reflector_ros.core.errors import InputError

    try:
        return make_backend(name, model_path, **kwargs)
    except InputError:
        raise
    except (ValueError, FileNotFoundError) as exc:   # a wrong name or path: the user's words, as they are
        raise InputError(str(exc)) from None
    except (ImportError, RuntimeError, OSError) as exc:
        raise InputError(f"backend {name!r} cannot start here: {exc}") from None


def _choose(path: Path | None, why: list[str], tensorrt: bool = True) -> str:
    """The `auto` policy: TensorRT, then torch CUDA, then ONNX Runtime CPU; notes why.
    ``tensorrt`` False: TensorRT already failed, choose among the rest."""
    n_cuda, no_cuda = cuda_device_count()
    wants_pt = path is not None and path.suffix == ".pt" and not path.with_suffix(".onnx").is_file()
    if tensorrt:
        try:
            trt_runtime_version()
            buffers = _torch_has_cuda() is True or importlib.util.find_spec("pycuda") is not None
            if n_cuda and not wants_pt and buffers:
                return "tensorrt"
            why.append(f"tensorrt importable but {no_cuda or ('model is a .pt checkpoint' if wants_pt else 'no device buffers: neither torch with CUDA nor pycuda')}")
        except ImportError as err:
            why.append(f"tensorrt not importable ({err})")
        except Exception as err:  # a broken install raises other errors at import
            why.append(f"tensorrt import failed ({type(err).__name__}: {err})")
    if not n_cuda:
        why.append(f"torch-cuda: {no_cuda}")
    else:
        ckpt = _with_suffix(path, ".pt") if path else _default(".pt")
        try:
            import torch

            if not torch.cuda.is_available():
                why.append(f"torch-cuda: torch {torch.__version__} has no CUDA")
            elif not ckpt.is_file() or ckpt.suffix != ".pt":
                why.append(f"torch-cuda: no checkpoint ({ckpt})")
            else:
                return "torch-cuda"
        except ImportError as err:
            why.append(f"torch-cuda: torch not importable ({err})")
    if wants_pt:
        return "torch-cpu"
    return "onnxruntime"


def _build(name: str, path: Path | None, engine_dir: str | os.PathLike[str] | None, precision: str,
           num_threads: int, use_pair: bool, cpu_spin_wait: bool = False,
           log: Callable[[str], None] | None = None) -> Any:
    if name in ("onnxruntime", "onnxruntime-cuda"):
        from reflector_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

        onnx = _with_suffix(path, ".onnx") if path else _default(".onnx")
        if onnx.suffix != ".onnx":
            raise ValueError(f"{onnx}: onnxruntime needs an .onnx model (none beside this file)")
        return OnnxRuntimeBackend(onnx, use_pair=use_pair, cuda=name == "onnxruntime-cuda",
                                  num_threads=num_threads, spin_wait=cpu_spin_wait)
    if name in ("torch", "torch-cuda", "torch-cpu"):
        from reflector_ros.backends.torch_backend import TorchBackend

        ckpt = _with_suffix(path, ".pt") if path else _default(".pt")
        if name == "torch":
            import torch

            name = "torch-cuda" if torch.cuda.is_available() else "torch-cpu"
        return TorchBackend(ckpt, device="cuda" if name == "torch-cuda" else "cpu",
                            precision="fp32" if precision == "fp32" or name == "torch-cpu" else "fp16",
                            num_threads=num_threads)
    trt_runtime_version()  # a clear ImportError when only the stubs (or nothing) are installed
    model = path if path else _default(".onnx")
    if model.suffix == ".pt":
        model = _with_suffix(model, ".onnx")
    torch_cuda = _torch_has_cuda()
    if torch_cuda is True:   # buffers, stream and pre/post-processing on the GPU through torch
        from reflector_ros.backends.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(model, engine_dir=engine_dir, precision=precision, use_pair=use_pair, log=log)
    try:
        import pycuda.driver  # noqa: F401
    except ImportError as err:
        raise RuntimeError(f"the TensorRT backend needs device buffers from torch with CUDA ({torch_cuda}) "
                           f"or from pycuda ({err}); on Jetson install NVIDIA's torch wheel for your "
                           "JetPack, or `pip install pycuda`") from None
    from reflector_ros.backends.tensorrt_pycuda import TensorRTPycudaBackend

    return TensorRTPycudaBackend(model, engine_dir=engine_dir, precision=precision, use_pair=use_pair, log=log)


def _torch_has_cuda() -> bool | str:
    """True, or why not (torch missing, or a CPU build, or no device)."""
    try:
        import torch
    except ImportError as err:
        return f"torch not importable: {err}"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} has no CUDA device"
    return True


def start_backend(name: str, model_path: str | os.PathLike[str] | None = None,
                  **kwargs: Any) -> tuple[Backend, str, float]:
    """make_backend, then two throw-away inferences at the nominal input size, so the first
    camera frame does not pay for the runtime's lazy allocations (ONNX Runtime's first run is
    several times slower; CUDA graphs and TensorRT contexts are made here).

    Returns (backend, why it was chosen, warm-up ms). RuntimeError with a message for the
    user when the model cannot be loaded or the backend fails its warm-up (a model whose
    metadata lies about its input, a runtime that cannot run it)."""
    import time

    import numpy as np

    from reflector_ros.backends.base import run
    from reflector_ros.core.errors import InputError
    from reflector_ros.meta import NetInput

    try:
        backend = make_backend(name, model_path, **kwargs)
    except InputError as exc:
        raise RuntimeError(f"cannot load the model: {exc}") from None
    except Exception as exc:  # noqa: BLE001  (onnxruntime/TensorRT raise their own types on bad files)
        raise RuntimeError(f"backend '{name}' with model '{model_path or 'embedded default'}' could not start: "
                           f"{type(exc).__name__}: {exc}") from None
    why = str(getattr(backend, "reason", "") or ("requested" if name != "auto" else "auto"))
    hw = getattr(backend, "warm_hw", (backend.meta.input_height, backend.meta.input_width))
    if hw is None:           # TensorRT with no engine for this model yet: the camera decides its size
        return backend, why, 0.0
    dummy = np.full((*hw, 3), 127, np.uint8)
    t0 = time.perf_counter()
    try:
        for _ in range(2):
            run(backend, dummy, NetInput(*hw, 1.0), hw)
    except Exception as exc:  # noqa: BLE001  (runtimes raise their own types)
        raise RuntimeError(f"backend {backend.name} failed its warm-up inference: "
                           f"{type(exc).__name__}: {exc}") from None
    return backend, why, (time.perf_counter() - t0) * 1e3
