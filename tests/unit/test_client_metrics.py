"""Dice and HD95 against values computed by hand on small masks, empty regions included."""

from __future__ import annotations

import math

import numpy as np
import pytest
from brats_client import metrics


def _mask(shape, *voxels) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    for v in voxels:
        m[v] = True
    return m


def test_empty_regions_follow_the_brats_convention() -> None:
    empty, one = np.zeros((4, 4, 4), bool), _mask((4, 4, 4), (1, 1, 1))
    assert metrics.hd95(empty, empty, (1, 1, 1)) == 0.0
    assert metrics.hd95(one, empty, (1, 1, 1)) == metrics.HD95_EMPTY_MM == 373.13
    assert metrics.hd95(empty, one, (1, 1, 1)) == 373.13
    assert math.isclose(metrics.HD95_EMPTY_MM, math.hypot(240, 240, 155), abs_tol=0.005)  # the grid's diagonal


def test_two_single_voxels_are_their_distance_apart_in_mm() -> None:
    a, b = _mask((8, 8, 8), (2, 2, 2)), _mask((8, 8, 8), (2, 2, 5))
    assert metrics.hd95(a, b, (1, 1, 1)) == 3.0
    assert metrics.hd95(a, b, (1, 1, 2)) == 6.0  # the voxel size of the third axis
    assert metrics.hd95(a, a, (1, 1, 1)) == 0.0


def test_cubes_shifted_by_one_slice() -> None:
    """2x2x2 cubes (every voxel on the surface) one voxel apart along z: half of each surface lies on the other,
    the other half 1 voxel away; rank 0.95 * 15 of the 16 distances is among the 1s -> HD95 1 voxel;
    Dice 2*4 / (8+8)."""
    pred, truth = np.zeros((6, 6, 6), bool), np.zeros((6, 6, 6), bool)
    truth[2:4, 2:4, 2:4] = True
    pred[2:4, 2:4, 3:5] = True
    assert metrics.hd95(pred, truth, (1, 1, 1)) == 1.0
    assert metrics.hd95(pred, truth, (1.0, 1.0, 2.5)) == 2.5
    scores = metrics.region_scores(pred.astype(np.uint8) * 2, truth.astype(np.uint8) * 2, (1, 1, 1))
    assert scores["WT"].dice == 0.5


def test_the_95th_percentile_discounts_an_outlier() -> None:
    """A 9-voxel line, and the same line with one voxel 5 voxels away (x). Distances pred -> truth: nine 0s and
    one 5; truth -> pred: nine 0s. numpy's linear 95th percentile of these 19 values sits at rank 0.95 * 18 = 17.1,
    i.e. 0 + 0.1 * (5 - 0) = 0.5 (the plain Hausdorff distance would be 5; the larger of the two directions'
    own percentiles would be 0.55 * 5 = 2.75, at rank 0.95 * 9 = 8.55 of pred -> truth)."""
    truth = np.zeros((10, 4, 12), bool)
    truth[2, 2, :9] = True
    pred = truth.copy()
    pred[7, 2, 0] = True
    assert metrics.hd95(pred, truth, (1, 1, 1)) == pytest.approx(0.5)
    assert metrics.hd95(truth, pred, (1, 1, 1)) == pytest.approx(0.5)  # symmetric
    assert metrics.hd95(pred, truth, (2, 1, 1)) == pytest.approx(1.0)  # the outlier is 10 mm away


def test_surface_at_the_array_border_and_a_filled_volume() -> None:
    """truth fills a 3x3x3 array (26 surface voxels, the centre is inside), pred is the centre voxel alone.
    pred -> truth: 1 (a face neighbour). truth -> pred: 6 faces at 1, 12 edges at sqrt(2), 8 corners at sqrt(3).
    Of the 27 distances, rank 0.95 * 26 = 24.7 falls among the corners -> sqrt(3). Dice = 2 * 1 / (27 + 1)."""
    truth = np.ones((3, 3, 3), bool)
    pred = _mask((3, 3, 3), (1, 1, 1))
    assert int(metrics.surface(truth).sum()) == 26
    assert metrics.hd95(pred, truth, (1, 1, 1)) == pytest.approx(math.sqrt(3))
    scores = metrics.region_scores(pred.astype(np.uint8), truth.astype(np.uint8), (1, 1, 1))
    assert scores["TC"].dice == pytest.approx(1 / 14)


def test_region_scores_per_region_with_volumes() -> None:
    """BraTS 2019 labels, voxels of 1 x 1 x 2 mm (2 mm^3 = 0.002 mL)."""
    truth = np.zeros((6, 6, 6), np.uint8)
    truth[1:5, 1:5, 1:5] = 2  # edema: 64 voxels of WT
    truth[2:4, 2:4, 2:4] = 1  # core: 8 voxels of TC
    truth[2, 2, 2] = 4  # one enhancing voxel
    pred = truth.copy()
    pred[pred == 4] = 1  # no enhancing tumour predicted
    scores = metrics.region_scores(pred, truth, (1, 1, 2))
    assert list(scores) == ["WT", "TC", "ET"]  # the network's channels (contract.REGIONS), as the segment report
    wt, et, tc = scores["WT"], scores["ET"], scores["TC"]
    assert (wt.dice, wt.hd95_mm, tc.dice, tc.hd95_mm) == (1.0, 0.0, 1.0, 0.0)
    assert (et.dice, et.hd95_mm) == (0.0, 373.13)
    assert wt.truth_ml == pytest.approx(64 * 0.002) and wt.pred_ml == pytest.approx(64 * 0.002)
    assert tc.truth_ml == pytest.approx(8 * 0.002)
    assert et.truth_ml == pytest.approx(0.002) and et.pred_ml == 0.0
    both_empty = metrics.region_scores(np.zeros_like(truth), np.zeros_like(truth), (1, 1, 1))
    assert all((s.dice, s.hd95_mm) == (1.0, 0.0) for s in both_empty.values())


def test_conventions_of_prediction_and_truth_may_differ() -> None:
    truth = np.zeros((5, 5, 5), np.uint8)
    truth[1:4, 1:4, 1:4] = 2
    truth[2, 2, 2] = 3  # BraTS 2023 enhancing
    pred = np.where(truth == 3, 4, truth).astype(np.uint8)  # the same, labelled BraTS 2019
    scores = metrics.region_scores(pred, truth, (1, 1, 1), pred_convention="brats2019", truth_convention="brats2023")
    assert all(s.dice == 1.0 and s.hd95_mm == 0.0 for s in scores.values())
    wrong = metrics.region_scores(pred, truth, (1, 1, 1))  # truth read as BraTS 2019: its 3 is no label
    assert wrong["ET"].dice == 0.0


def test_masks_of_different_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="different shapes"):
        metrics.hd95(np.ones((2, 2, 2), bool), np.ones((2, 2, 3), bool), (1, 1, 1))


def test_one_region_order_in_the_scores_the_csv_the_table_and_the_segment_report() -> None:
    """WT, TC, ET (the network's channels, contract.REGIONS) everywhere; evaluate's CSV and table had WT, ET, TC."""
    from brats_client import evaluate, postprocess
    from brats_client.contract import REGIONS

    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1:3, 1:3, 1:3], labels[3:5, 3:5, 3:5] = 2, 4
    scores = metrics.region_scores(labels, labels, (1.0, 1.0, 1.0))
    assert tuple(scores) == REGIONS == ("WT", "TC", "ET")
    assert tuple(postprocess.region_volumes_ml(labels, 1.0)) == REGIONS  # the report's region_volumes_ml
    row = {"case": "A", "regions": {r: vars(s) for r, s in scores.items()}, "prediction": "p", "truth": "t"}
    header = evaluate.to_csv([row]).splitlines()[0].split(",")
    assert header[1:4] == [f"dice_{r}" for r in REGIONS]
    table = evaluate.format_table(evaluate.summarise([row]), 1).splitlines()[0].split()
    assert table[2:8] == ["Dice", "WT", "Dice", "TC", "Dice", "ET"]
