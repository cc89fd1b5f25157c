"""``segment_cases``: the one path of one case and many (``brats-client segment`` takes it), on a LocalTransport:
outcomes in job order with their reports, failed cases kept apart or raised, and the first case prepared before
the server is connected."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from brats_client import CaseFiles, CaseOutputs, SegmentOptions, pipeline, segment_cases
from brats_client.errors import InputError
from brats_client.local import LocalTransport
from brats_client.server_options import ServerOptions

OPTIONS = SegmentOptions(tta="none", tile=None)


def _bad(files: CaseFiles, tmp_path) -> CaseFiles:
    """``files`` with a t1 that is not a NIfTI file."""
    (tmp_path / "bad_t1.nii.gz").write_text("not an image")
    return CaseFiles("bad", {**files.paths, "t1": tmp_path / "bad_t1.nii.gz"}, files.naming)


def _job(files: CaseFiles, tmp_path, name: str) -> tuple[CaseFiles, CaseOutputs]:
    return files, CaseOutputs(tmp_path / f"{name}.nii.gz", report=tmp_path / f"{name}.json")


def test_one_case_and_many_take_the_same_path(tmp_path, brain_case, above_mean):
    with LocalTransport(above_mean, "above_mean") as transport:
        [one] = segment_cases([_job(brain_case, tmp_path, "one")], transport, OPTIONS)
        many = segment_cases([_job(brain_case, tmp_path, f"many{i}") for i in range(3)], transport, OPTIONS)
    assert one.error is None and one.report["case"] == "case" and (tmp_path / "one.json").is_file()
    assert [o.index for o in many] == [0, 1, 2] and all(o.error is None for o in many)
    expected = np.asarray(nib.load(tmp_path / "one.nii.gz").dataobj)
    for i in range(3):
        np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / f"many{i}.nii.gz").dataobj), expected)
    assert many[1].report["region_volumes_ml"] == one.report["region_volumes_ml"]


def test_a_failed_case_is_kept_apart_with_keep_going_and_raised_without(tmp_path, brain_case, above_mean):
    def jobs(run: str) -> list[tuple[CaseFiles, CaseOutputs]]:
        return [_job(brain_case, tmp_path, f"a{run}"), _job(_bad(brain_case, tmp_path), tmp_path, f"bad{run}"),
                _job(brain_case, tmp_path, f"b{run}")]

    seen = []
    with LocalTransport(above_mean, "above_mean") as transport:
        outcomes = segment_cases(jobs("1"), transport, OPTIONS, keep_going=True, on_outcome=seen.append)
        assert [o.index for o in outcomes] == [0, 1, 2] and sorted(o.index for o in seen) == [0, 1, 2]
        assert outcomes[0].error is None and outcomes[2].error is None
        assert "bad_t1.nii.gz" in outcomes[1].error and outcomes[1].report is None
        assert not (tmp_path / "bad1.nii.gz").exists() and (tmp_path / "b1.nii.gz").exists()
        with pytest.raises(InputError, match="bad_t1.nii.gz"):
            segment_cases(jobs("2"), transport, OPTIONS, keep_going=False)
        assert not (tmp_path / "b2.nii.gz").exists()  # the batch stopped


@pytest.mark.parametrize("first_is_bad", [True, False])
def test_the_first_case_is_prepared_before_the_server_is_connected(tmp_path, brain_case, above_mean, monkeypatch,
                                                                   first_is_bad):
    events = []
    real_prepare = pipeline.prepare_case

    def prepare(files, options):
        events.append(f"prepare {files.case_id}")
        return real_prepare(files, options)

    def connect(server, options):
        events.append("connect")
        return LocalTransport(above_mean, "above_mean")

    monkeypatch.setattr(pipeline, "prepare_case", prepare)
    monkeypatch.setattr(pipeline, "open_transport", connect)
    files = _bad(brain_case, tmp_path) if first_is_bad else brain_case
    if first_is_bad:
        with pytest.raises(InputError):
            segment_cases([_job(files, tmp_path, "x")], ServerOptions(url="127.0.0.1:1"), OPTIONS)
        assert events == ["prepare bad"]  # no connection
    else:
        segment_cases([_job(files, tmp_path, "x")], ServerOptions(url="127.0.0.1:1"), OPTIONS)
        assert events == ["prepare case", "connect"]


def test_no_cases_connect_to_nothing(monkeypatch):
    monkeypatch.setattr(pipeline, "open_transport", lambda *a: pytest.fail("connected"))
    assert segment_cases([], ServerOptions()) == []
