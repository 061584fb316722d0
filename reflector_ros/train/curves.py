"""Learning curves of a run: its metrics.jsonl (one JSON object per logged step) drawn as
learning_curves.png."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(jsonl: Path, png: Path) -> None:
    """learning_curves.png: train loss, val AbsRel and val δ1 against step (stage confidence:
    the most confident half's AbsRel and the confidence gain), and the 2x-zoom ratio when the
    run logs it (data.val_focal_frames)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(jsonl)
    tr = [r for r in rows if "loss" in r]
    va = [r for r in rows if "val" in r]
    focal = any("focal_ratio" in v for r in va for v in r["val"].values())
    fig, ax = plt.subplots(1, 4 if focal else 3, figsize=(20 if focal else 15, 4))
    if tr:
        st = np.array([r["step"] for r in tr])
        lo = np.array([r["loss"] for r in tr])
        k = max(1, len(lo) // 30)
        ax[0].plot(st, lo, "o-" if len(lo) < 3 else "-", lw=0.6 if k > 1 else 1.5, alpha=0.4 if k > 1 else 1.0,
                   label="train loss")
        if k > 1:   # a running mean once there are enough points to need one
            ax[0].plot(st[k - 1:], np.convolve(lo, np.ones(k) / k, mode="valid"), lw=1.5, label=f"mean of {k}")
        ax[0].legend()
    ax[0].set_title("train loss")
    names = sorted({n for r in va for n in r["val"]})
    # stage confidence logs the AbsRel of the most confident half and the gain over all pixels
    conf = any("confidence_gain" in v for r in va for v in r["val"].values())
    k1, k2 = ("confident_half_abs_rel", "confidence_gain") if conf else ("abs_rel", "d1")
    for n in names:
        pts = [(r["step"], r["val"][n]) for r in va if n in r["val"] and k1 in r["val"][n]]
        ax[1].plot([p[0] for p in pts], [p[1][k1] for p in pts], "o-", ms=3, label=n)
        ax[2].plot([p[0] for p in pts], [p[1][k2] for p in pts], "o-", ms=3, label=n)
        if focal:
            fp = [(r["step"], r["val"][n]["focal_ratio"]) for r in va if "focal_ratio" in r["val"].get(n, {})]
            ax[3].plot([p[0] for p in fp], [p[1] for p in fp], "o-", ms=3, label=n)
    ax[1].set_title("val AbsRel, most confident half (lower is better)" if conf else "val AbsRel (lower is better)")
    ax[2].set_title("val confidence gain: 1 - half / all (higher is better)" if conf else "val δ1 (higher is better)")
    for a in ax:
        a.set_xlabel("step")
        a.grid(alpha=0.3)
    if focal:
        ax[3].axhspan(0.95, 1.05, color="green", alpha=0.1)
        ax[3].axhline(1.0, color="k", lw=0.8)
        ax[3].set_title("val 2x-zoom depth ratio, fx doubled (1 is right)")
    if names:
        for a in ax[1:]:
            a.legend()
    else:
        for a in ax[1:]:
            a.text(0.5, 0.5, "no validation set (data.val)", ha="center", va="center", transform=a.transAxes,
                   color="0.4")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
