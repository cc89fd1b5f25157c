"""Labels from probabilities (spec steps 6-8), unpad/paste, region measures."""

from __future__ import annotations

import numpy as np
import pytest
from brats_client import postprocess
from brats_client.preprocess import PreprocessRecord


def _prob(shape=(20, 20, 20)) -> np.ndarray:
    return np.zeros((3, *shape), dtype=np.float32)


def test_nested_regions_labels() -> None:
    p = _prob()
    p[0, 2:12, 2:12, 2:12] = 0.9  # WT 1000 voxels
    p[1, 4:10, 4:10, 4:10] = 0.8  # TC 216
    p[2, 5:9, 5:9, 5:9] = 0.7  # ET 64 > 32
    labels = postprocess.labels_from_probabilities(p)
    assert labels.dtype == np.uint8
    assert np.count_nonzero(labels == 4) == 64
    assert np.count_nonzero(labels == 1) == 216 - 64
    assert np.count_nonzero(labels == 2) == 1000 - 216
    labels23 = postprocess.labels_from_probabilities(p, convention="brats2023")
    assert np.count_nonzero(labels23 == 3) == 64 and not np.any(labels23 == 4)


def test_threshold_is_strictly_greater() -> None:
    p = _prob()
    p[0, 2:6, 2:6, 2:6] = 0.5
    assert not postprocess.labels_from_probabilities(p).any()
    p[0, 2:6, 2:6, 2:6] = np.nextafter(np.float32(0.5), np.float32(1))
    assert np.count_nonzero(postprocess.labels_from_probabilities(p)) == 64


@pytest.mark.parametrize(("et_voxels", "kept"), [(32, False), (33, True)])
def test_small_et_dropped(et_voxels: int, kept: bool) -> None:
    p = _prob()
    p[0, 2:12, 2:12, 2:12] = 0.9
    p[1, 2:12, 2:12, 2:12] = 0.9
    cube = np.zeros((20, 20, 20), bool)
    cube[2:12, 2:12, 2:12] = True
    et = np.zeros(cube.size, bool)
    et[np.flatnonzero(cube)[:et_voxels]] = True
    p[2][et.reshape(cube.shape)] = 0.9
    labels = postprocess.labels_from_probabilities(p)
    assert np.count_nonzero(labels == 4) == (et_voxels if kept else 0)
    assert np.count_nonzero(labels) == 1000  # the ET voxels stay tumour core when dropped
    assert np.count_nonzero(labels == 1) == (1000 - et_voxels if kept else 1000)


def test_et_outside_wt_still_labelled_like_the_seed() -> None:
    p = _prob()
    p[2, 1:5, 1:5, 1:5] = 0.9  # 64 ET voxels without WT or TC
    labels = postprocess.labels_from_probabilities(p)
    assert np.count_nonzero(labels == 4) == 64


def test_small_components_removed_with_26_connectivity() -> None:
    p = _prob((30, 30, 30))
    p[0, 2:12, 2:12, 2:12] = 0.9  # 1000 voxels
    p[0, 20:24, 20:24, 20:24] = 0.9  # 64 voxels < 10% of 1064 -> removed
    p[0, 12, 12, 12] = 0.9  # touches the big cube only by a corner: same component under 26-connectivity
    p[0, 14:19, 2:12, 2:12] = 0.9  # 500 voxels, separate -> kept
    labels = postprocess.labels_from_probabilities(p)
    assert labels[21, 21, 21] == 0
    assert labels[12, 12, 12] == 2
    assert np.count_nonzero(labels) == 1000 + 1 + 500


def test_component_fraction_boundary_is_strict() -> None:
    labels = np.zeros((40, 10, 10), np.uint8)
    labels[0:9, 0:10, 0:10] = 2  # 900
    labels[20:21, 0:10, 0:10] = 2  # 100 = exactly 10% of 1000 -> kept (only smaller is dropped)
    out = postprocess.remove_small_components(labels.copy(), 0.1)
    assert np.count_nonzero(out) == 1000
    labels[20, 0, 0] = 0  # 99 < 10% of 999
    assert np.count_nonzero(postprocess.remove_small_components(labels.copy(), 0.1)) == 900


def test_all_background() -> None:
    assert not postprocess.labels_from_probabilities(_prob()).any()


def test_bad_convention_and_shape() -> None:
    with pytest.raises(ValueError, match="brats2019, brats2023"):
        postprocess.labels_from_probabilities(_prob(), convention="brats2020")
    with pytest.raises(ValueError, match="WT, TC, ET"):
        postprocess.labels_from_probabilities(np.zeros((2, 4, 4, 4), np.float32))


def _record() -> PreprocessRecord:
    return PreprocessRecord(
        original_shape=(20, 30, 10), crop_start=(2, 5, 1), crop_stop=(19, 25, 9), pad_before=(7, 6, 4),
        pad_after=(8, 6, 4), mean=(0.0,) * 4, std=(1.0,) * 4,
    )


def test_unpad_and_paste() -> None:
    record = _record()
    assert record.padded_shape == (32, 32, 16)
    prob = np.random.default_rng(0).random((3, *record.padded_shape)).astype(np.float32)
    crop = postprocess.unpad(prob, record)
    assert crop.shape == (3, 17, 20, 8)
    np.testing.assert_array_equal(crop, prob[:, 7:24, 6:26, 4:12])
    labels = postprocess.paste(np.ones(record.crop_shape, np.uint8), record)
    assert labels.shape == (20, 30, 10) and labels.dtype == np.uint8
    assert labels.sum() == 17 * 20 * 8 and labels[2:19, 5:25, 1:9].all()
    assert postprocess.paste(crop, record).shape == (3, 20, 30, 10)
    with pytest.raises(ValueError, match="pads to"):
        postprocess.unpad(prob[:, 1:], record)
    with pytest.raises(ValueError, match="the crop is"):
        postprocess.paste(np.ones((3, 3, 3)), record)


def test_region_masks_volumes_and_dice() -> None:
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[0, 0, :4] = 2
    labels[1, 0, :3] = 1
    labels[2, 0, :2] = 4
    masks = postprocess.region_masks(labels)
    assert {k: int(v.sum()) for k, v in masks.items()} == {"WT": 9, "TC": 5, "ET": 2}
    assert postprocess.region_volumes_ml(labels, 8.0) == {"WT": 0.072, "TC": 0.04, "ET": 0.016}
    assert postprocess.region_volumes_ml(labels, 1.0, "brats2023")["ET"] == 0.0
    assert postprocess.dice(masks["WT"], masks["WT"]) == 1.0
    assert postprocess.dice(masks["TC"], masks["ET"]) == pytest.approx(2 * 2 / 7)
    assert postprocess.dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    assert postprocess.dice(np.ones(3, bool), np.zeros(3, bool)) == 0.0
    other = labels.copy()
    other[2, 0, :2] = 1  # enhancing read as necrotic: WT and TC unchanged, ET lost
    assert postprocess.region_dice(labels, other) == {"WT": 1.0, "TC": 1.0, "ET": 0.0}
    assert postprocess.region_dice(labels, labels) == {"WT": 1.0, "TC": 1.0, "ET": 1.0}
