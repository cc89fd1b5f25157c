"""brats-export --int8's pure parts: the served shape, the calibration tiles, the gate's rows and its refusal, the
replay of a case's requests, and the option rules (tests/integration/test_int8.py runs the real thing)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from brats_client import pipeline
from brats_client.exit_codes import EXIT_USAGE
from brats_export import cli, int8, int8_gate
from brats_export.errors import AccuracyError, ExportError


def _prepared(shape, pad=-1.0):
    volume = np.arange(4 * np.prod(shape), dtype=np.float32).reshape(4, *shape)
    return SimpleNamespace(volume=volume, record=SimpleNamespace(pad_value=np.full(4, pad, np.float32)))


def test_the_served_shape_is_the_largest_padded_crop_per_axis():
    assert int8.served_shape([_prepared((144, 176, 128)), _prepared((128, 192, 144))]) == (144, 192, 144)
    with pytest.raises(ExportError, match="no calibration cases"):
        int8.served_shape([])


def test_calibration_tiles_are_what_the_client_sends_a_static_model():
    small = _prepared((16, 16, 8))
    (tile,) = int8.case_tiles(small, (16, 16, 16))  # padded up to the static shape with the case's pad value
    assert tile.shape == (1, 4, 16, 16, 16)
    np.testing.assert_array_equal(tile[0, :, :, :, :8], small.volume)
    assert (tile[0, :, :, :, 8:] == -1.0).all()
    large = _prepared((32, 16, 16))
    tiles = list(int8.case_tiles(large, (16, 16, 16)))
    assert len(tiles) == 3 and all(t.shape == (1, 4, 16, 16, 16) for t in tiles)  # overlapping along the long axis
    (whole,) = int8.case_tiles(large, None)  # a dynamic model: the whole crop
    assert whole.shape == (1, 4, 32, 16, 16)


@pytest.mark.parametrize("shape", [(144, 176), (144, 176, 150), (8, 16, 16)])
def test_a_shape_the_network_cannot_take_is_refused(shape):
    with pytest.raises(ExportError, match="three multiples of 16"):
        int8.check_shape(shape)


def test_the_gate_stops_at_the_first_row_below_the_minimum_and_keeps_the_rows():
    good = int8_gate.GateRow("a", "openvino 2026.4 (brats-serve)", "int8 + f32", {"WT": 0.999, "TC": 0.998,
                             "ET": 0.997}, 0.995, 1.0)
    bad = int8_gate.GateRow("b", "openvino 2024.4.0 (Triton 24.10 container)", "int8 + f32",
                            {"WT": 0.48, "TC": 0.11, "ET": 0.93}, 0.995, 1.0)
    assert good.passed and not bad.passed
    int8_gate._stop_if_failed([good])
    with pytest.raises(AccuracyError, match="below 0.995 on b .*nothing is written") as caught:
        int8_gate._stop_if_failed([good, bad])
    assert caught.value.rows == [good, bad]
    table = int8_gate.format_gate_table([good, bad])
    assert table.splitlines()[0].split()[-4:] == ["WT", "TC", "ET", "ok"]
    assert table.splitlines()[2].endswith("NO") and "0.1100" in table


def test_replayed_outputs_give_the_labels_of_the_runtime_that_computed_them(brain_case, above_mean):
    """The container runtime's rows: the case's requests recorded, computed elsewhere, answered in order."""
    prepared = pipeline.prepare_case(brain_case, pipeline.SegmentOptions(tile=32))
    direct = int8_gate.case_labels(prepared, above_mean, (32, 32, 32))
    recorder = int8_gate._Recorder()
    int8_gate.case_labels(prepared, recorder, (32, 32, 32))
    assert recorder.inputs and all(x.shape == (1, 4, 32, 32, 32) for x in recorder.inputs)
    replayed = int8_gate.case_labels(prepared, int8_gate._Replayer([above_mean(x) for x in recorder.inputs]),
                                     (32, 32, 32))
    np.testing.assert_array_equal(replayed, direct)
    assert int8_gate.region_dice(replayed, direct, prepared.options.labels) == {"WT": 1.0, "TC": 1.0, "ET": 1.0}


def test_int8_option_rules(tmp_path, capsys):
    repo = tmp_path / "repo"
    assert cli.main(["--configs-only", "--repository", str(repo), "--int8", str(tmp_path)]) == EXIT_USAGE
    assert "--int8 quantizes an exported model" in capsys.readouterr().err
    checkpoint = tmp_path / "x.pth"
    checkpoint.write_bytes(b"not read: the option check comes first")
    assert cli.main(["--checkpoint", str(checkpoint), "--repository", str(repo), "--formats", "onnx",
                     "--int8", str(tmp_path), "--quiet"]) == EXIT_USAGE
    assert "add openvino to --formats" in capsys.readouterr().err
    assert not repo.exists()


def test_no_container_python_is_none_and_a_missing_one_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv(int8_gate.CONTAINER_ENV, raising=False)
    monkeypatch.setattr(int8_gate, "CHECKOUT_NGC_PYTHON", tmp_path / "absent")
    assert int8_gate.container_python(None) is None
    with pytest.raises(ExportError, match="does not exist; give the python of an environment with openvino==2024.4"):
        int8_gate.container_python(tmp_path / "nope")
    monkeypatch.setenv(int8_gate.CONTAINER_ENV, str(tmp_path / "nope"))
    with pytest.raises(ExportError, match="nope does not exist"):
        int8_gate.container_python(None)
