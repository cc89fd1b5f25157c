"""The served pipeline's own logic without Triton (brats_client.served): request parameters, the stages on bytes
against the same stages on files, and the BLS transport with a stand-in for triton_python_backend_utils."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from brats_client import pipeline, server_flips
from brats_client.errors import InputError, ServerError, UsageError
from brats_client.local import LocalTransport
from brats_client.served import (
    BlsTransport,
    BusyError,
    CancelledError,
    RequestWatch,
    options_from_parameters,
    segment_files,
)
from brats_client.served_networks import info_from_config, parse_text_config


def test_parameters_set_the_options_and_the_rest_keep_the_commands_defaults():
    options, model = options_from_parameters({})
    assert (options, model) == (pipeline.SegmentOptions(), None)
    options, model = options_from_parameters({"tta": "none", "tile": "full", "overlap": "0.5", "labels": "msd",
                                              "allow_unprepared": "true", "model": "brats_onnx"})
    assert options == pipeline.SegmentOptions(tta="none", tile=None, overlap=0.5, labels="msd", allow_unprepared=True)
    assert model == "brats_onnx"
    assert options_from_parameters({"tile": 64})[0].tile == 64


@pytest.mark.parametrize(("parameters", "message"), [
    ({"tiles": 64}, "unknown option.*tiles.*known: tile, overlap, .*request parameters: model and the options"),
    ({"tile": "big"}, "tile must be a int, got 'big'"),
    ({"tile": 20}, r"tile \(--tile\) must be a multiple of 16"),
    ({"tta": "flip3"}, "tta must be one of none, flip4, flip8"),
    ({"keep_last_slice": "maybe"}, "keep_last_slice must be true or false"),
])
def test_bad_parameters_are_usage_errors_naming_them(parameters, message):
    with pytest.raises(UsageError, match=message):
        options_from_parameters(parameters)


def test_bytes_in_give_the_labels_of_the_files_path(brain_case, above_mean, tmp_path):
    """The same stages as segment_case; only where the files come from differs."""
    options = pipeline.SegmentOptions(tta="flip4", labels="brats2019")
    data = {ch: path.read_bytes() for ch, path in brain_case.paths.items()}
    (tmp_path / "work").mkdir()
    segmentation, report = segment_files(data, options, LocalTransport(above_mean), tmp_path / "work")
    (tmp_path / "served.nii.gz").write_bytes(segmentation)
    expected = pipeline.segment_case(brain_case, pipeline.CaseOutputs(tmp_path / "files.nii.gz"),
                                     LocalTransport(above_mean), options)
    import nibabel as nib

    served, files = nib.load(tmp_path / "served.nii.gz"), nib.load(tmp_path / "files.nii.gz")
    np.testing.assert_array_equal(np.asarray(served.dataobj), np.asarray(files.dataobj))
    np.testing.assert_array_equal(served.affine, files.affine)
    assert report["region_volumes_ml"] == expected["region_volumes_ml"] and report["region_volumes_ml"]["WT"] > 0
    assert report["inputs"]["t2"].startswith("request input t2") and str(tmp_path) not in str(report)


def test_a_bad_file_names_the_request_input_not_the_temporary_folder(brain_case, above_mean, tmp_path):
    data = {ch: path.read_bytes() for ch, path in brain_case.paths.items()}
    data["t2"] = b"\x1f\x8bnot nifti"
    (tmp_path / "work").mkdir()
    with pytest.raises(InputError, match="t2 file request input t2.nii.gz is not a readable NIfTI") as caught:
        segment_files(data, pipeline.SegmentOptions(), LocalTransport(above_mean), tmp_path / "work")
    assert str(tmp_path) not in str(caught.value)
    with pytest.raises(InputError, match="flair missing or empty"):
        segment_files({**data, "flair": b""}, pipeline.SegmentOptions(), LocalTransport(above_mean), tmp_path / "work")


class FakeBackendUtils:
    """What BlsTransport uses of triton_python_backend_utils: requests to named models of 'this server'."""

    class TritonError:
        UNAVAILABLE, INTERNAL = 14, 13

    def __init__(self, ready: set[str], fail: str | None = None, code: int = 13) -> None:
        self.ready, self.fail, self.code, self.sent = ready, fail, code, []

    def is_model_ready(self, model_name: str) -> bool:
        return model_name in self.ready

    class Tensor:
        def __init__(self, name, array):
            self.name, self.array = name, array

        def as_numpy(self):
            return self.array

    def InferenceRequest(self, model_name, requested_output_names, inputs):  # noqa: N802 (the real API's name)
        utils = self

        class Request:
            def exec(self):
                utils.sent.append(model_name)
                return Response(utils.fail, utils.code, inputs[0].array[:, :3] * 2)

        return Request()

    def get_output_tensor_by_name(self, response, name):
        return self.Tensor(name, response.output)


class Response:
    def __init__(self, error, code, output):
        self.error_message, self.code, self.output = error, code, output

    def has_error(self):
        return self.error_message is not None

    def error(self):
        return type("E", (), {"message": lambda _: self.error_message, "code": lambda _: self.code})()


CONFIGS = {  # as brats-export writes them (protobuf text format), cut to what the pipeline reads
    "net": 'name: "net"\nmax_batch_size: 4\ninput {\n  name: "INPUT__0"\n  dims: 4\n  dims: -1\n  dims: -1\n'
           '  dims: -1\n}\noutput {\n  name: "OUTPUT__0"\n  dims: 3\n  dims: -1\n  dims: -1\n  dims: -1\n}\n'
           'parameters {\n  key: "brats_server_flips_model"\n  value {\n    string_value: "net_flip4"\n  }\n}\n',
    "net_flip4": '# a comment\nname: "net_flip4" max_batch_size: 1 input [{ name: "INPUT__0" dims: [4, 64, 64, 64] }]\n'
                 'output { name: "OUTPUT__0" dims: [3, 64, 64, 64] }\n'
                 'parameters { key: "brats_server_flips" value { string_value: "flip4" } }\n',
}
NETWORKS = {name: info_from_config(parse_text_config(text), name) for name, text in CONFIGS.items()}


def test_the_network_table_is_read_from_the_configs_text():
    assert NETWORKS["net"].max_batch_size == 4 and NETWORKS["net"].fixed_spatial is None
    assert NETWORKS["net"].parameters == {server_flips.COMPANION_KEY: "net_flip4"}
    assert NETWORKS["net_flip4"].fixed_spatial == (64, 64, 64)  # a --fixed-size export: tiles of its shape
    assert NETWORKS["net_flip4"].parameters == {server_flips.SERVER_FLIPS_KEY: "flip4"}
    assert (NETWORKS["net"].input_name, NETWORKS["net"].output_name) == ("INPUT__0", "OUTPUT__0")
    with pytest.raises(ValueError, match="not closed"):
        parse_text_config('input { name: "x"')


def test_bls_transport_streams_to_the_model_and_opens_its_companion_from_the_table():
    utils = FakeBackendUtils({"net", "net_flip4"})
    plain = BlsTransport(utils, "net", NETWORKS)
    assert plain.info.max_batch_size == 4
    assert server_flips.open_for(plain, "flip4", "auto") is plain  # in the server: nothing to save on a network
    chosen = server_flips.open_for(plain, "flip4", "on")
    assert chosen.info.name == "net_flip4" and server_flips.applied_flips(chosen.info) == "flip4"
    batch = np.ones((1, 4, 8, 8, 8), np.float32)
    assert [k for k, _ in chosen.infer_stream([("a", batch), ("b", batch)])] == ["a", "b"]
    assert utils.sent == ["net_flip4", "net_flip4"]
    assert server_flips.open_for(BlsTransport(utils, "net", NETWORKS), "flip4", "off").info.name == "net"


def test_bls_transport_errors_name_the_model():
    with pytest.raises(UsageError, match="'other' is not a network this pipeline calls; choose from net, net_flip4"):
        BlsTransport(FakeBackendUtils(set()), "other", NETWORKS)
    with pytest.raises(ServerError, match="model 'net' is not ready"):
        BlsTransport(FakeBackendUtils(set()), "net", NETWORKS).info  # noqa: B018
    failing = BlsTransport(FakeBackendUtils({"net"}, fail="out of memory"), "net", NETWORKS)
    with pytest.raises(ServerError, match="model 'net': out of memory"):
        list(failing.infer_stream([(0, np.ones((1, 4, 8, 8, 8), np.float32))]))
    busy = BlsTransport(FakeBackendUtils({"net"}, fail="Exceeds maximum queue size", code=14), "net", NETWORKS)
    with pytest.raises(BusyError, match="model 'net' is busy: Exceeds maximum queue size"):
        list(busy.infer_stream([(0, np.ones((1, 4, 8, 8, 8), np.float32))]))
    # a companion that is not loaded: the plain model keeps the flips (open_for's fallback)
    lone = BlsTransport(FakeBackendUtils({"net"}), "net", NETWORKS)
    assert server_flips.open_for(lone, "flip4", "on").info.name == "net"


def test_a_cancelled_request_stops_between_tiles():
    """The watch is asked before each network request: the tiles after the cancellation are never sent."""
    cancelled = []
    utils = FakeBackendUtils({"net"})
    transport = BlsTransport(utils, "net", NETWORKS, RequestWatch(lambda: bool(cancelled)))
    batch = np.ones((1, 4, 8, 8, 8), np.float32)
    stream = transport.infer_stream((i, batch) for i in range(5))
    assert next(stream)[0] == 0 and next(stream)[0] == 1
    cancelled.append(True)
    with pytest.raises(CancelledError, match="cancelled by its client .* after 2 network request"):
        next(stream)
    assert utils.sent == ["net", "net"]


def test_a_request_past_its_timeout_stops_between_tiles(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("brats_client.served.time.monotonic", lambda: clock[0])
    watch = RequestWatch(lambda: False, timeout_us=2_000_000)
    watch.check("now")
    clock[0] += 2.5
    with pytest.raises(CancelledError, match="timeout of 2 s passed after 3 network"):
        watch.check("after 3 network request(s)")
    RequestWatch(lambda: False, timeout_us=0).check("no timeout: never")


def test_every_option_travels_to_the_served_pipeline_and_back():
    """One list: the request parameters are SegmentOptions' fields (max_voxels and flips_per_request included)."""
    options = pipeline.SegmentOptions(tile=None, overlap=0.5, blend="constant", tta="flip8", labels="msd",
                                      keep_last_slice=True, flips_per_request=2, server_flips="off",
                                      allow_unprepared=True, max_voxels=1000)
    sent = json.loads(json.dumps(pipeline.options_to_parameters(options)))  # as a request carries them
    assert set(sent) == {f.name for f in dataclasses.fields(pipeline.SegmentOptions)}
    assert options_from_parameters(sent) == (options, None)
    assert options_from_parameters({k: str(v) for k, v in sent.items()})[0] == options  # strings (curl) too


def test_a_request_may_only_lower_the_servers_voxel_limit():
    with pytest.raises(UsageError, match="max_voxels may only lower this server's limit"):
        options_from_parameters({"max_voxels": pipeline.io.MAX_VOXELS + 1})
