"""Tiling maths: hand-computed starts, weights, invariants; identity / times-two predictors over odd shapes through
the client's one sliding window (``pipeline.predict`` over a ``LocalTransport``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from brats_client import pipeline, tiling
from brats_client.local import LocalTransport
from hypothesis import given, settings
from hypothesis import strategies as st


def _predict(volume, predictor, tile, overlap=0.0, blend="constant", pad_value=None) -> np.ndarray:
    options = pipeline.SegmentOptions(tile=tile, overlap=overlap, blend=blend, tta="none")
    return pipeline.predict(volume, LocalTransport(predictor), options, pad_value=pad_value).probabilities


def _axis_starts(plan: tiling.TilePlan, axis: int) -> list[int]:
    return sorted({s[axis] for s in plan.starts})


@pytest.mark.parametrize(
    ("size", "tile", "overlap", "expected"),
    [
        (160, 128, 0.0, [0, 32]),  # last tile flush: 32 + 128 = 160
        (128, 128, 0.0, [0]),
        (256, 128, 0.0, [0, 128]),
        (256, 128, 0.5, [0, 64, 128]),
        (257, 128, 0.0, [0, 65, 129]),  # 3 tiles, step 64.5 rounded half up
        (200, 64, 0.25, [0, 45, 91, 136]),  # max step 48 -> n = 1 + ceil(136 / 48) = 4, step 45.33
        (40, 128, 0.5, [0]),  # smaller than a tile: one tile of 48, zero-padded past 40
    ],
)
def test_hand_computed_starts(size: int, tile: int, overlap: float, expected: list[int]) -> None:
    plan = tiling.plan_tiles((size, 16, 16), tile, overlap, shrink=False)
    assert _axis_starts(plan, 0) == expected


def test_plan_shapes_and_counts() -> None:
    plan = tiling.plan_tiles((160, 40, 7), 128, shrink=False)
    assert plan.tile_shape == (128, 48, 16)
    assert plan.tile_padding == (0, 8, 9)
    assert plan.starts == ((0, 0, 0), (32, 0, 0))
    assert len(plan) == 2
    assert plan.voxels_computed == 2 * 128 * 48 * 16
    assert plan.waste == pytest.approx(plan.voxels_computed / (160 * 40 * 7))


@pytest.mark.parametrize(
    ("size", "tile", "overlap", "edge", "starts"),
    [
        (144, 128, 0.0, 80, [0, 64]),  # two tiles either way; 160 voxels computed instead of 256
        (160, 128, 0.0, 80, [0, 80]),  # exact halves, no overlap left
        (176, 128, 0.0, 96, [0, 80]),
        (144, 128, 0.25, 96, [0, 48]),  # overlap kept: 48 shared voxels = 0.5 of 96 >= 0.25
        (100, 128, 0.0, 112, [0]),  # one tile: only the round-up to 16
        (257, 128, 0.0, 96, [0, 81, 161]),
    ],
)
def test_shrink_keeps_the_tile_count_and_cuts_the_edge(size, tile, overlap, edge, starts) -> None:
    plan = tiling.plan_tiles((size, 16, 16), tile, overlap)
    assert plan.tile_shape[0] == edge and edge % 16 == 0 and edge <= tile
    assert _axis_starts(plan, 0) == starts
    assert len(plan) == len(tiling.plan_tiles((size, 16, 16), tile, overlap, shrink=False))
    assert starts[-1] + edge >= size  # last tile flush with (or past) the border


def test_tile_none_is_one_whole_tile() -> None:
    plan = tiling.plan_tiles((37, 50, 23), None)
    assert plan.tile_shape == (48, 64, 32)
    assert plan.starts == ((0, 0, 0),)


@pytest.mark.parametrize("overlap", [-0.1, 1.0, 1.5])
def test_bad_overlap_names_the_value(overlap: float) -> None:
    with pytest.raises(ValueError, match=rf"overlap must be in \[0, 1\), got {overlap}"):
        tiling.plan_tiles((32, 32, 32), 16, overlap)


@pytest.mark.parametrize("tile", [0, 8, 24, 100])
def test_bad_tile(tile: int) -> None:
    with pytest.raises(ValueError, match=f"got {tile}"):
        tiling.plan_tiles((32, 32, 32), tile)


def test_bad_blend_lists_choices() -> None:
    with pytest.raises(ValueError, match="constant, gaussian; got 'gauss'"):
        tiling.tile_weights((16, 16, 16), "gauss")
    with pytest.raises(ValueError, match="constant, gaussian"):
        tiling.Accumulator((16, 16, 16), 1, None, "triangle")


def test_gaussian_weights_positive_peaked_symmetric() -> None:
    w = tiling.tile_weights((32, 48, 16), "gaussian")
    assert w.dtype == np.float32 and w.shape == (32, 48, 16)
    assert w.min() > 0
    assert w.max() == pytest.approx(1.0, abs=1e-3)
    assert w[0, 0, 0] < w[16, 24, 8]
    np.testing.assert_array_equal(w, w[::-1, ::-1, ::-1])
    np.testing.assert_array_equal(tiling.tile_weights((16, 16, 16)), np.ones((16, 16, 16), np.float32))


SHAPES = [(37, 50, 23), (100, 90, 70), (5, 7, 3)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5])
@pytest.mark.parametrize("blend", ["constant", "gaussian"])
def test_identity_predictor_reproduces_input(shape, overlap, blend) -> None:
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(4, *shape)).astype(np.float32)
    out = _predict(volume, lambda x: x[:, :3], 32, overlap, blend)
    assert out.shape == (3, *shape) and out.dtype == np.float32
    np.testing.assert_allclose(out, volume[:3], rtol=1e-5, atol=1e-5)


def test_times_two_predictor_with_other_output_channels() -> None:
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(4, 37, 50, 23)).astype(np.float32)
    shapes = []

    def predictor(batch: np.ndarray) -> np.ndarray:
        shapes.append(batch.shape)
        return 2 * batch[:, :3]

    out = _predict(volume, predictor, 16, 0.25, "gaussian")
    np.testing.assert_allclose(out, 2 * volume[:3], rtol=1e-5, atol=1e-5)
    assert set(shapes) == {(1, 4, 16, 16, 16)}
    assert len(shapes) == len(tiling.plan_tiles(volume.shape[1:], 16, 0.25))


def test_smaller_than_tile_pads_with_pad_value_and_drops_it() -> None:
    volume = np.ones((4, 5, 7, 3), dtype=np.float32)
    plan = tiling.plan_tiles(volume.shape[1:], 128, 0.5)
    assert plan.tile_shape == (16, 16, 16) and len(plan) == 1
    pad = [-1.0, -2.0, -3.0, -4.0]
    tile = tiling.extract_tile(volume, plan, 0, pad_value=pad)
    assert tile.shape == (4, 16, 16, 16) and tile.flags.c_contiguous
    assert np.all(tile[:, :5, :7, :3] == 1)
    assert tile[0, 5:].min() == tile[0, 5:].max() == -1.0
    assert np.all(tile[1, :, 7:] == -2.0)
    assert np.all(tiling.extract_tile(volume, plan, 0)[:, :, :, 3:] == 0)  # default pad 0
    seen = []
    out = _predict(volume, lambda x: seen.append(x.copy()) or x[:, :3], 128, 0.5, pad_value=pad)
    np.testing.assert_array_equal(out, volume[:3])  # the padding is dropped
    (sent,) = seen  # one tile, and it is the padded one
    np.testing.assert_array_equal(sent[0], tile)
    with pytest.raises(ValueError, match="one per channel"):
        tiling.extract_tile(volume, plan, 0, pad_value=[1.0, 2.0, 3.0])


def test_extract_tile_is_a_copy() -> None:
    volume = np.zeros((1, 32, 32, 32), dtype=np.float32)
    plan = tiling.plan_tiles(volume.shape[1:], 16)
    tile = tiling.extract_tile(volume, plan, 3)
    tile[...] = 5
    assert not volume.any()


def test_accumulator_checks() -> None:
    acc = tiling.Accumulator((20, 20, 20), 1, (16, 16, 16))
    with pytest.raises(ValueError, match="differs from the planned tile"):
        acc.add((0, 0, 0), np.zeros((1, 32, 16, 16), np.float32))
    with pytest.raises(ValueError, match="expected"):
        acc.add((0, 0, 0), np.zeros((2, 16, 16, 16), np.float32))
    with pytest.raises(ValueError, match="outside the volume"):
        acc.add((20, 0, 0), np.zeros((1, 16, 16, 16), np.float32))
    acc.add((0, 0, 0), np.ones((1, 16, 16, 16), np.float32))
    with pytest.raises(RuntimeError, match="covered by no tile"):
        acc.result()
    acc.add((4, 4, 4), np.ones((1, 16, 16, 16), np.float32))
    with pytest.raises(RuntimeError):  # corner (0, 0, 19) still uncovered
        acc.result()


def test_accumulator_positional_tile_shape_as_the_pipeline_calls_it() -> None:
    plan = tiling.plan_tiles((20, 20, 20), 16, 0.0)
    acc = tiling.Accumulator(plan.shape, 3, plan.tile_shape, "gaussian")
    for start in plan.starts:
        acc.add(start, np.full((3, *plan.tile_shape), 0.25, np.float32))
    np.testing.assert_allclose(acc.result(), 0.25, rtol=1e-6)


def test_predictor_bad_output_shape() -> None:
    with pytest.raises(ValueError, match="predictor returned shape"):
        _predict(np.zeros((4, 16, 16, 16), np.float32), lambda x: x[:, :3, :8], 16)


@settings(max_examples=30, deadline=None)
@given(
    shape=st.tuples(*(st.integers(1, 70) for _ in range(3))),
    tile=st.sampled_from([16, 32, 48, None]),
    overlap=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75]),
)
def test_plan_invariants(shape, tile, overlap) -> None:
    plan = tiling.plan_tiles(shape, tile, overlap)
    assert all(t % 16 == 0 and t > 0 for t in plan.tile_shape)
    assert len(set(plan.starts)) == len(plan.starts)
    covered = np.zeros(shape, dtype=int)
    for axis, (size, edge) in enumerate(zip(shape, plan.tile_shape, strict=True)):
        starts = _axis_starts(plan, axis)
        assert starts[0] == 0
        if edge <= size:
            assert starts[-1] + edge == size  # last tile flush with the border
        else:
            assert starts == [0] and edge == math.ceil(size / 16) * 16
        if tile is not None and len(starts) > 1:
            max_step = max(1.0, edge * (1 - overlap))
            assert max(b - a for a, b in zip(starts, starts[1:], strict=False)) <= math.ceil(max_step)
    for i in range(len(plan)):
        in_volume, _ = plan.slices(i)
        covered[in_volume] += 1
    assert covered.min() >= 1
    assert plan.voxels_computed == len(plan) * math.prod(plan.tile_shape)


@settings(max_examples=15, deadline=None)
@given(
    shape=st.tuples(*(st.integers(1, 40) for _ in range(3))),
    overlap=st.sampled_from([0.0, 0.25, 0.5]),
    blend=st.sampled_from(["constant", "gaussian"]),
    seed=st.integers(0, 2**16),
)
def test_reassembly_invariant(shape, overlap, blend, seed) -> None:
    volume = np.random.default_rng(seed).uniform(-3, 3, size=(4, *shape)).astype(np.float32)
    out = _predict(volume, lambda x: 1 - x[:, :3], 16, overlap, blend, pad_value=7.0)
    np.testing.assert_allclose(out, 1 - volume[:3], rtol=1e-5, atol=1e-5)
