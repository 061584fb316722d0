"""Average the weights of several checkpoints of one run (stochastic weight averaging,
Izmailov et al. 2018): the last snapshots of a one-cycle run sit around one minimum, and
their mean is usually steadier than any one of them, the metric scale included.

    .venv/bin/python tools/average_checkpoints.py OUT.pt runs/x/snapshots/step*.pt
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from reflector_ros.core.errors import InputError  # noqa: E402
from reflector_ros.model.reflector import load_checkpoint, save_checkpoint  # noqa: E402


def average(paths: list[Path]) -> tuple[torch.nn.Module, object]:
    """(model with the mean of every floating-point tensor, meta); integer buffers (BatchNorm's
    batch counters) come from the last checkpoint. The checkpoints must share their meta."""
    if not paths:
        raise InputError("no checkpoints to average")
    models = [load_checkpoint(p) for p in paths]
    meta = models[0][1]
    if any(m[1] != meta for m in models[1:]):
        raise InputError("the checkpoints have different model metadata: not one run")
    states = [m[0].state_dict() for m in models]
    mean = {k: (torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point()
                else states[-1][k]) for k, v in states[0].items()}
    model = models[-1][0]
    model.load_state_dict(mean)
    return model, meta


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__)
        return 2
    try:
        model, meta = average([Path(p) for p in argv[2:]])
    except InputError as exc:
        print(f"average_checkpoints: {exc}", file=sys.stderr)
        return 2
    save_checkpoint(argv[1], model, meta, averaged=[str(p) for p in argv[2:]])
    print(f"wrote {argv[1]}: mean of {len(argv) - 2} checkpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
