"""Size, FLOPs and CPU latency of the Reflector archs: the numbers behind the 20 FPS budget.

    .venv/bin/python bench/bench_model.py [--archs small base] [--runs 30] [--threads 2]

Prints a table: parameters (total and head), GFLOPs of one forward (FlopCounterMode:
conv, linear, matmul), and median latency of the fused ONNX graph under ONNX Runtime
and of the torch model, both on the CPU with --threads threads. The last two columns are the
process CPU time of 1-thread ONNX Runtime and torch runs: unlike wall time they barely move
when other jobs share the machine (2-thread torch wall time there is dominated by OpenMP
threads waiting for a core). MODEL_NOTES' reference model: ORT 57.5 ms at 1 thread, unloaded.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reflector_ros.meta import ModelMeta  # noqa: E402
from reflector_ros.model.export import export_onnx  # noqa: E402
from reflector_ros.model.reflector import build_model  # noqa: E402


def median_ms(fn: Callable[[], object], runs: int, warmup: int, label: str) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in tqdm(range(runs), desc=label, leave=False):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench(arch: str, hw: tuple[int, int], runs: int, threads: int, out: Path) -> dict[str, float]:
    import onnxruntime as ort

    torch.manual_seed(0)
    meta = ModelMeta(arch=arch, input_height=hw[0], input_width=hw[1])
    model = build_model(meta).eval()
    image = torch.randn(1, 3, *hw)
    scale = torch.ones(1)
    rel = torch.rand(1, 1, *hw) if arch == "head" else None
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(image, scale, rel)
    paths = export_onnx(model, meta, out, arch)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    graph = paths.get("fused", paths["reflector"])
    sess = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
    feeds = {"image": image.numpy(), "focal_scale": scale.numpy()}
    if rel is not None:
        feeds["rel_depth"] = rel.numpy()
    torch.set_num_threads(threads)

    def torch_run() -> None:
        with torch.inference_mode():
            model(image, scale, rel)

    so1 = ort.SessionOptions()
    so1.intra_op_num_threads = 1
    so1.inter_op_num_threads = 1
    sess1 = ort.InferenceSession(str(graph), so1, providers=["CPUExecutionProvider"])
    for _ in range(3):
        sess1.run(None, feeds)
    cpu = []
    for _ in tqdm(range(runs), desc=f"{arch} onnxruntime 1 thread cpu time", leave=False):
        t0 = time.process_time()
        sess1.run(None, feeds)
        cpu.append((time.process_time() - t0) * 1e3)

    torch.set_num_threads(1)
    torch_run()
    tcpu = []
    for _ in tqdm(range(runs), desc=f"{arch} torch 1 thread cpu time", leave=False):
        t0 = time.process_time()
        torch_run()
        tcpu.append((time.process_time() - t0) * 1e3)
    torch.set_num_threads(threads)

    return {
        "cpu1_ms": statistics.median(cpu),
        "torch_cpu1_ms": statistics.median(tcpu),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "head_m": sum(p.numel() for p in model.head.parameters()) / 1e6,
        "gflops": counter.get_total_flops() / 1e9,
        "ort_ms": median_ms(lambda: sess.run(None, feeds), runs, 3, f"{arch} onnxruntime"),
        "torch_ms": median_ms(torch_run, runs, 3, f"{arch} torch"),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["small", "base"], choices=["small", "base", "head"])
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in a.archs:
            rows.append((arch, bench(arch, (a.height, a.width), a.runs, a.threads, Path(tmp))))
    print(f"\nload average {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    print(f"Reflector at {a.height}x{a.width}, batch 1, CPU, {a.threads} threads, median of {a.runs} runs")
    print(f"{'arch':6s} {'params M':>9s} {'head M':>7s} {'GFLOPs':>7s} {'ORT ms':>8s} {'ORT FPS':>8s} {'torch ms':>9s} {'ORT 1-thr CPU ms':>17s} {'torch 1-thr CPU ms':>19s}")
    for arch, r in rows:
        print(f"{arch:6s} {r['params_m']:9.2f} {r['head_m']:7.2f} {r['gflops']:7.2f} {r['ort_ms']:8.1f} "
              f"{1000 / r['ort_ms']:8.1f} {r['torch_ms']:9.1f} {r['cpu1_ms']:17.1f} {r['torch_cpu1_ms']:19.1f}")
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
