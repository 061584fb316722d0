#!/usr/bin/env python3
"""ONNX Runtime inference at camera rates with and without busy-waiting pool threads.

The node runs ORT with `session.intra_op.allow_spinning 0` (see onnxruntime_backend.py);
this measures what that costs when the process has the CPU to itself, side by side in
one run, at each --rates frequency: median, p99 and the slowest one-second window's mean
(ms of session.run, network input only). The last two show whether the machine itself has
slow spells, with no ROS and no other process of ours running.

    .venv/bin/python bench/bench_ort_spinning.py [--model X.onnx] [--rates 5 30] [--seconds 8] [--threads 1 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SETTINGS = {"no spinning (node)": {"session.intra_op.allow_spinning": "0"},
            "spinning": {"session.intra_op.allow_spinning": "1"},
            "spinning, stopped after each run": {"session.intra_op.allow_spinning": "1",
                                                 "session.force_spinning_stop": "1"}}


def measure(model: Path, config: dict[str, str], rate: float, seconds: float, threads: int) -> list[float]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    for key, value in config.items():
        opts.add_session_config_entry(key, value)
    session = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
    feed = {"image": np.random.default_rng(0).random(shape, dtype=np.float32),
            "focal_scale": np.ones(1, np.float32)}
    for _ in range(5):
        session.run(None, feed)
    times: list[float] = []
    period, due = 1.0 / rate, time.monotonic()
    end = due + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(1e3 * (time.perf_counter() - t0))
        due += period
        time.sleep(max(0.0, due - time.monotonic()))
    return times


def worst_window(times: list[float], rate: float) -> float:
    """Mean of the slowest run of one second's worth of consecutive inferences."""
    n = max(1, min(len(times), round(rate)))
    c = np.cumsum(np.concatenate([[0.0], times]))
    return float(np.max(c[n:] - c[:-n]) / n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="ONNX model (default: the embedded one)")
    ap.add_argument("--rates", type=float, nargs="+", default=[5.0, 30.0], help="frame rates to pace at (Hz)")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds per setting and rate")
    ap.add_argument("--threads", type=int, nargs="+", default=[2], help="intra-op thread counts to compare")
    args = ap.parse_args(argv)
    if not all(0 < r <= 200 for r in args.rates) or not 1 <= args.seconds <= 600:
        ap.error("need 0 < rate <= 200 Hz and 1 <= seconds <= 600")
    if not all(1 <= n <= 256 for n in args.threads):
        ap.error("need 1 <= threads <= 256")
    from reflector_ros.weights import default_model

    model = args.model or default_model(".onnx")
    if not model.is_file():
        ap.error(f"model not found: {model}")
    print(f"{model.name}, session.run only; median / p99 / slowest 1 s window, ms")
    print(f"{'setting':<44}" + "".join(f"{f'{r:g} Hz':>24}" for r in args.rates))
    for threads in args.threads:
        for name, config in SETTINGS.items():
            cells = []
            for rate in args.rates:
                t = measure(model, config, rate, args.seconds, threads)
                cells.append(f"{np.median(t):8.1f} / {np.percentile(t, 99):5.1f} / {worst_window(t, rate):5.1f}")
            print(f"{f'{name}, {threads} thread(s)':<44}" + "".join(f"{c:>24}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
