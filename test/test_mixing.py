"""BalancedMix: shares follow the weights, not the dataset sizes; deterministic; clear refusals."""
from __future__ import annotations

import numpy as np
import pytest

from reflector_ros.core.camera import Intrinsics
from reflector_ros.data.mixing import BalancedMix
from reflector_ros.data.sample import Sample


class Tagged(list):
    """A real Sequence of Samples whose pixel value encodes (set, index)."""

    def __init__(self, tag: int, n: int) -> None:
        super().__init__(Sample(np.full((2, 2, 3), tag, np.uint8), np.full((2, 2), float(i), np.float32),
                                Intrinsics(1.0, 1.0, 0.5, 0.5, 2, 2), name=f"{tag}:{i}") for i in range(n))


def test_shares_follow_weights_not_sizes() -> None:
    sets = [Tagged(0, 7), Tagged(1, 400), Tagged(2, 50)]
    mix = BalancedMix(sets, [0.5, 0.2, 0.3], length=20000, seed=3)
    assert len(mix) == 20000
    share = np.bincount(mix.which, minlength=3) / len(mix)
    assert np.allclose(share, [0.5, 0.2, 0.3], atol=0.03), share
    # items really come from the drawn set, at a valid index, and cover the small set
    tags = [int(mix[i].image[0, 0, 0]) for i in range(0, 20000, 97)]
    assert tags == [int(mix.which[i]) for i in range(0, 20000, 97)]
    small = {int(mix[i].depth[0, 0]) for i in np.nonzero(mix.which == 0)[0][:300]}
    assert small == set(range(7))


def test_default_equal_weights_and_length() -> None:
    sets = [Tagged(0, 10), Tagged(1, 990)]
    mix = BalancedMix(sets)
    assert len(mix) == 1000
    share = np.bincount(mix.which, minlength=2) / len(mix)
    assert np.allclose(share, [0.5, 0.5], atol=0.05), share
    z = BalancedMix(sets, [0.0, 1.0], length=500)
    assert (z.which == 1).all()


def test_deterministic_and_prefix_stable() -> None:
    sets = [Tagged(0, 5), Tagged(1, 9)]
    a = BalancedMix(sets, [1, 2], length=300, seed=11)
    b = BalancedMix(sets, [1, 2], length=300, seed=11)
    c = BalancedMix(sets, [1, 2], length=300, seed=12)
    longer = BalancedMix(sets, [1, 2], length=600, seed=11)
    assert [a.source(i) for i in range(300)] == [b.source(i) for i in range(300)]
    assert [a.source(i) for i in range(300)] != [c.source(i) for i in range(300)]
    assert [a.source(i) for i in range(300)] == [longer.source(i) for i in range(300)]
    assert a[-1].name == a[299].name
    with pytest.raises(IndexError):
        a[300]


@pytest.mark.parametrize("args, msg", [
    (([],), "no datasets"),
    (([Tagged(0, 3), []],), "empty"),
    (([Tagged(0, 3)], [1.0, 2.0]), "2 weights for 1"),
    (([Tagged(0, 3), Tagged(1, 3)], [1.0, -1.0]), ">= 0"),
    (([Tagged(0, 3), Tagged(1, 3)], [0.0, 0.0]), "sum > 0"),
    (([Tagged(0, 3)], [float("nan")]), "finite"),
    (([Tagged(0, 3)], None, 0), "length"),
])
def test_validation(args: tuple, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        BalancedMix(*args)
