"""Test-time flips: the choice, apply/undo, and the mean in order."""

from __future__ import annotations

import numpy as np
import pytest
from brats_client import tta


def test_flips() -> None:
    assert tta.flips("none") == [()]
    assert tta.flips("flip4") == [(), (0,), (1,), (0, 1)]
    eight = tta.flips("flip8")
    assert len(eight) == 8 and len(set(eight)) == 8 and eight[0] == ()
    assert set(eight) >= {(0,), (1,), (2,), (0, 1, 2)}
    with pytest.raises(ValueError, match="none, flip4, flip8; got 'flip2'"):
        tta.flips("flip2")


def test_apply_flips_spatial_axes_and_undo_restores() -> None:
    a = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(tta.apply(a, (0,)), a[:, ::-1])
    np.testing.assert_array_equal(tta.apply(a, (1, 2)), a[:, :, ::-1, ::-1])
    assert tta.apply(a, ()) is a
    for axes in tta.flips("flip8"):
        np.testing.assert_array_equal(tta.undo(tta.apply(a, axes), axes), a)
    assert tta.dims((0, 1), 2) == (2, 3)


def test_mean_sums_in_order_then_divides() -> None:
    parts = [np.float32(1e8), np.float32(1.0), np.float32(-1e8), np.float32(1.0)]
    for arrival in ([0, 1, 2, 3], [3, 1, 2, 0], [2, 0, 3, 1]):
        mean = tta.Mean(4)
        for position in arrival:
            assert not mean.done
            mean.add(position, parts[position])
        assert mean.done
        # ((1e8 + 1) - 1e8) + 1 in float32 is 1, in every arrival order: summed by position, not as they came
        assert mean.result() == np.float32(0.25)  # 1e8 - 1e8 first (arrival [2, 0, ...]) would give 0.5
    with pytest.raises(ValueError, match="already added"):
        mean.add(0, parts[0])
    with pytest.raises(ValueError, match="out of range"):
        tta.Mean(2).add(2, parts[0])
    half = tta.Mean(2)
    half.add(1, parts[1])
    with pytest.raises(ValueError, match="1 of 2"):
        half.result()
