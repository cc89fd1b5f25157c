"""Crop, pad and z-score as the seed does, and the record that undoes them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from brats_client import postprocess
from brats_client.errors import InputError
from brats_client.preprocess import PreprocessRecord, bounding_box, pad_widths, preprocess, seed_statistics
from hypothesis import given, settings
from hypothesis import strategies as st


def _volume(shape=(30, 41, 22), box=((3, 20), (5, 38), (2, 19)), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = np.zeros((4, *shape), dtype=np.float32)
    sl = tuple(slice(a, b) for a, b in box)
    v[(slice(None), *sl)] = rng.uniform(1, 100, size=(4, *(b - a for a, b in box)))
    return v


def test_crop_is_the_seeds_by_default() -> None:
    _, record = preprocess(_volume())
    assert record.crop_start == (3, 5, 2)
    assert record.crop_stop == (19, 37, 18)  # the seed's [min, max): the last nonzero slice dropped
    assert not record.keep_last_slice


def test_keep_last_slice_opts_in_to_the_whole_box() -> None:
    _, record = preprocess(_volume(), keep_last_slice=True)
    assert record.crop_start == (3, 5, 2)
    assert record.crop_stop == (20, 38, 19)  # [min, max + 1): every nonzero voxel kept
    assert record.keep_last_slice


def test_bbox_over_all_modalities() -> None:
    v = np.zeros((4, 10, 10, 10), np.float32)
    v[0, 2, 3, 4] = 1
    v[3, 7, 1, 5] = -2  # nonzero counts, even negative
    assert bounding_box(v, keep_last_slice=True) == ((2, 1, 4), (8, 4, 6))
    assert bounding_box(v) == ((2, 1, 4), (7, 3, 5))  # the seed's [min, max)


def test_one_slice_extent_with_seed_crop_keeps_the_slice() -> None:
    v = np.zeros((4, 10, 10, 10), np.float32)
    v[:, 4, 2:6, 3:8] = 1
    start, stop = bounding_box(v)
    assert start[0] == 4 and stop[0] == 5
    assert (start[1], stop[1]) == (2, 5)  # the seed's [min, max) elsewhere


@pytest.mark.parametrize(
    ("shape", "before", "after"),
    [((17, 32, 1), (7, 0, 7), (8, 0, 8)), ((16, 31, 33), (0, 0, 7), (0, 1, 8)), ((18,), (7,), (7,))],
)
def test_pad_split_evenly_extra_on_the_right(shape, before, after) -> None:
    assert pad_widths(shape) == (before, after)


def test_padded_shape_and_pad_position() -> None:
    v = _volume()
    out, record = preprocess(v, keep_last_slice=True)
    assert record.crop_shape == (17, 33, 17)
    assert record.padded_shape == (32, 48, 32) == out.shape[1:]
    assert record.pad_before == (7, 7, 7) and record.pad_after == (8, 8, 8)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    # padding holds the normalised zero of each channel
    np.testing.assert_allclose(out[:, 0, 0, 0], record.pad_value, rtol=1e-6)
    np.testing.assert_allclose(out[:, -1, -1, -1], record.pad_value, rtol=1e-6)


def test_seed_zscore_hand_computed_with_negative_intensities() -> None:
    """The seed divides sums over ALL voxels by the count of voxels > 0: here n = 2 (the 2 and the 4),
    mean = (2 + 4 - 2) / 2 = 2, E[x^2] = (4 + 16 + 4) / 2 = 12, std = sqrt(12 - 4) = sqrt(8).
    The mean over voxels > 0 would be 3 with std 1."""
    assert seed_statistics(np.array([0.0, 2.0, 4.0, -2.0], np.float32)) == (2.0, pytest.approx(np.sqrt(8.0)))
    assert seed_statistics(np.array([0.0, 2.0, 4.0], np.float32)) == (3.0, 1.0)  # no negatives: the fg mean


def test_zscore_applied_everywhere_with_the_seeds_statistics() -> None:
    v = _volume()
    v[1, 10, 10:30, 10] = -500.0  # negative voxels enter the sums but not the count
    out, record = preprocess(v)
    crop = v[(slice(None), *record.crop_slices)].astype(np.float64)
    for c in range(4):
        n = np.count_nonzero(crop[c] > 0)
        mean = crop[c].sum() / n
        std = np.sqrt((crop[c] ** 2).sum() / n - mean**2)
        assert record.mean[c] == pytest.approx(mean, rel=1e-12)
        assert record.std[c] == pytest.approx(std, rel=1e-12)
        np.testing.assert_allclose(out[c][record.unpad_slices], (crop[c] - mean) / std, rtol=1e-5, atol=1e-5)
    fg = crop[1][crop[1] > 0]
    assert record.mean[1] < fg.mean() - 0.5  # the negatives moved it: not the mean over voxels > 0


def test_constant_or_empty_channel_divides_by_one() -> None:
    v = _volume()
    v[2][v[2] > 0] = 0.1  # std 0 (0.1 is not exact in binary: the variance rounds to ~1e-18, not 0)
    v[3] = 0.0  # no voxel > 0
    v[3, 3, 5, 2] = -1.0
    out, record = preprocess(v)
    assert record.std[2] == 1.0 and record.mean[2] == pytest.approx(0.1)
    assert record.mean[3] == 0.0 and record.std[3] == 1.0
    assert np.isfinite(out).all()
    assert out[3].min() == -1.0


def test_all_zero_volume_raises() -> None:
    with pytest.raises(InputError, match="all-zero volume"):
        preprocess(np.zeros((4, 8, 8, 8), np.float32))


@settings(max_examples=20, deadline=None)
@given(
    shape=st.tuples(*(st.integers(1, 30) for _ in range(3))),
    data=st.data(),
    keep_last_slice=st.booleans(),
)
def test_round_trip_gives_back_the_nonzero_region(shape, data, keep_last_slice) -> None:
    box = []
    for s in shape:
        a = data.draw(st.integers(0, s - 1))
        b = data.draw(st.integers(a + 1, s))
        box.append((a, b))
    v = _volume(shape, box, seed=len(box))
    out, record = preprocess(v, keep_last_slice=keep_last_slice)
    assert all(p % 16 == 0 for p in record.padded_shape)
    # a channel scaled back to intensities, then unpadded and pasted, is the input inside the crop and 0 outside
    restored = out[:1] * record.std[0] + record.mean[0]
    back = postprocess.paste(postprocess.unpad(restored, record), record)[0]
    expected = np.zeros_like(v[0])
    expected[record.crop_slices] = v[0][record.crop_slices]
    np.testing.assert_allclose(back, expected, rtol=1e-4, atol=1e-3)
    if keep_last_slice:
        np.testing.assert_allclose(back, v[0], rtol=1e-4, atol=1e-3)  # nothing lost


def test_record_to_dict_round_trip_and_json() -> None:
    _, record = preprocess(_volume(), keep_last_slice=True)
    d = record.to_dict()
    assert d["padded_shape"] == [32, 48, 32] and d["crop_shape"] == [17, 33, 17]
    json.dumps(d)
    assert PreprocessRecord.from_dict(json.loads(json.dumps(d))) == record


def test_record_is_frozen() -> None:
    _, record = preprocess(_volume())
    with pytest.raises(AttributeError):
        record.crop_start = (0, 0, 0)  # type: ignore[misc]
