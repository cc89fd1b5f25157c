"""Label conventions: dataset.json labels, the rule that decides a file's convention, labels written per convention."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from brats_client import conventions, dataset_json, postprocess
from brats_client.errors import InputError

# dataset.json "labels" as the datasets users have write them
MSD_TASK01 = {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"}
NNUNET_V2 = {"background": 0, "edema": 1, "non_enhancing_and_necrosis": 2, "enhancing_tumor": 3}
NNUNET_REGIONS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
BRATS_2021_STYLE = {"0": "background", "1": "NCR/NET", "2": "ED", "4": "ET"}
BRATS_2023_STYLE = {"background": 0, "NETC": 1, "SNFH edema": 2, "ET": 3}


@pytest.mark.parametrize(
    ("labels", "expected"),
    [(MSD_TASK01, "msd"), (NNUNET_V2, "msd"), (NNUNET_REGIONS, "msd"), (BRATS_2021_STYLE, "brats2019"),
     (BRATS_2023_STYLE, "brats2023"), ({"0": "background", "1": "liver", "2": "tumour"}, None)],
)
def test_dataset_labels(labels: dict, expected: str | None) -> None:
    assert conventions.from_dataset_labels(labels) == expected


def test_dataset_json_beside_or_above(tmp_path: Path) -> None:
    (tmp_path / "labelsTr").mkdir()
    truth = tmp_path / "labelsTr" / "BRATS_001.nii.gz"
    assert dataset_json.label_convention(truth) is None
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": MSD_TASK01}))
    assert dataset_json.label_convention(truth) == ("msd", tmp_path / "dataset.json")
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"1": "liver"}}))
    with pytest.raises(InputError, match="match none of"):
        dataset_json.label_convention(truth)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(InputError, match="not a readable dataset.json"):
        dataset_json.label_convention(truth)


def _decide(values, **kw) -> conventions.Decision:
    return conventions.decide(values, path=Path("t.nii.gz"), role="truth", option_flag="--truth-labels", **kw)


def test_values_that_fit_two_conventions_which_score_differently_are_refused() -> None:
    for values in ({0, 1, 2, 3}, {0, 1, 2}, {0, 1}):
        with pytest.raises(InputError, match="score differently") as e:
            _decide(values)
        assert "--truth-labels" in str(e.value) and "msd" in str(e.value)


def test_what_decides() -> None:
    assert _decide({0, 1, 2, 4}) == conventions.Decision("brats2019", "values")  # only BraTS 2019 has a 4
    assert _decide({0, 3}).convention in conventions.NAMES  # ET alone is ET in every convention
    assert _decide({0}).convention in conventions.NAMES
    assert _decide({0, 1, 2, 3}, option="msd").convention == "msd"
    assert _decide({0, 1, 2, 3}, descrip=conventions.header_mark("brats2023")).convention == "brats2023"
    assert _decide({0, 1, 2, 3}, dataset=("msd", Path("dataset.json"))).convention == "msd"
    brats_name = frozenset({"brats2019", "brats2023"})
    assert _decide({0, 1, 2, 3}, name_hint=brats_name).convention == "brats2023"
    assert _decide({0, 1, 2}, name_hint=brats_name).convention in brats_name
    # an option or a source that contradicts the values is refused, not obeyed
    with pytest.raises(InputError, match="do not fit"):
        _decide({0, 1, 2, 4}, option="msd")
    with pytest.raises(InputError, match="fit none of"):
        _decide({0, 5})


def test_labels_written_in_each_convention() -> None:
    prob = np.zeros((3, 8, 8, 8), dtype=np.float32)
    prob[0, 1:7, 1:7, 1:7] = 0.9  # WT
    prob[1, 2:6, 2:6, 2:6] = 0.9  # TC
    prob[2, 3:5, 2:6, 2:6] = 0.9  # ET, 32 voxels: kept only above 32
    prob[2, 5, 2:4, 2:6] = 0.9
    for name, c in conventions.CONVENTIONS.items():
        labels = postprocess.labels_from_probabilities(prob, convention=name)
        assert set(np.unique(labels)) == {0, c.edema, c.core, c.enhancing}
        masks = postprocess.region_masks(labels, name)
        for i, region in enumerate(("WT", "TC", "ET")):
            np.testing.assert_array_equal(masks[region], prob[i] > 0.5)


def test_header_mark_round_trip() -> None:
    for name in conventions.NAMES:
        mark = conventions.header_mark(name)
        assert len(mark) < 80 and conventions.from_header_mark(mark) == name
    assert conventions.from_header_mark("FSL5.0") is None
