"""mypy against tensorrt-stubs: our TensorRT code passes, and a wrong TensorRT call fails.

The second half proves the check bites: without py.typed markers or with the stub
syntax errors unfixed, mypy would treat tensorrt as Any and accept anything.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHECKED = ["reflector_ros/backends/tensorrt_backend.py", "reflector_ros/backends/tensorrt_pycuda.py",
           "reflector_ros/backends/engine_build.py"]

BAD = '''\
import tensorrt as trt


def wrong(path: str) -> None:
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(open(path, "rb").read())
    context = engine.create_execution_context()
    context.set_tensor_address(0, "not a pointer")
    context.execute_async_v4(0)
'''


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory) -> tuple[int, str, Path]:
    pytest.importorskip("mypy")
    try:
        import tensorrt_stubs  # noqa: F401
    except ImportError:
        pytest.skip("tensorrt-stubs not installed (make venv installs it)")
    bad = tmp_path_factory.mktemp("typecheck") / "bad_trt_usage.py"
    bad.write_text(BAD)
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "mypy.ini", *CHECKED, str(bad)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr, bad


def test_tensorrt_code_typechecks(mypy_output) -> None:
    _, out, bad = mypy_output
    ours = [line for line in out.splitlines() if any(line.startswith(c) for c in CHECKED)]
    assert not ours, "\n".join(ours)
    assert "syntax" not in out.lower(), out  # the stub fixes were applied


def test_wrong_tensorrt_calls_are_caught(mypy_output) -> None:
    rc, out, bad = mypy_output
    assert rc != 0
    bad_lines = [line for line in out.splitlines() if bad.name in line]
    assert any("execute_async_v4" in line for line in bad_lines), out
    assert any("set_tensor_address" in line for line in bad_lines), out
