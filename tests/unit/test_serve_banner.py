"""What brats-serve prints once ready: its addresses and every model it serves with what it is (the running server
is asked in tests/integration/test_first_hour.py and test_serve.py)."""

from __future__ import annotations

from brats_client.served import PIPELINE, PIPELINE_KEY
from brats_client.server_flips import COMPANION_KEY, SERVER_FLIPS_KEY
from brats_serve.banner import ServedModel, banner, role


def _config(**parameters: str) -> dict:
    """A model config as Triton's HTTP API returns it (parameters as string_value)."""
    return {"name": "m", "parameters": {k: {"string_value": v} for k, v in parameters.items()}}


def test_the_role_of_each_model_comes_from_its_config() -> None:
    assert role(_config(**{PIPELINE_KEY: PIPELINE})).startswith("the whole pipeline")
    assert role(_config(**{SERVER_FLIPS_KEY: "flip4"})).startswith("network with flip4 test-time flips inside")
    plain = role(_config(**{COMPANION_KEY: "brats_onnx_flip4"}))
    assert plain == role({"name": "m"}) == "network (brats-client --model)"
    assert role(_config(brats_precision="int8 convolutions, f32 elsewhere")) == (
        "network, int8 convolutions, f32 elsewhere (brats-client --model)")


def test_the_banner_lists_the_addresses_and_every_model() -> None:
    models = [ServedModel("brats_openvino", "network (brats-client --model)"),
              ServedModel("brats_segment", "the whole pipeline: ...")]
    text = banner("out/demo/model_repository", "127.0.0.1:8001", "127.0.0.1:8000", "http://127.0.0.1:8002",
                  "/tmp/t.log", models)
    lines = text.splitlines()
    assert lines[0] == "brats-serve: serving out/demo/model_repository"
    assert lines[1].split()[:2] == ["gRPC", "127.0.0.1:8001"] and "--url 127.0.0.1:8001" in lines[1]
    assert lines[2].split()[:2] == ["HTTP", "http://127.0.0.1:8000"] and "segment_with_curl.sh" in lines[2]
    assert lines[5] == ("  models ready (gRPC 127.0.0.1:8001 --model NAME; HTTP "
                        "http://127.0.0.1:8000/v2/models/NAME):")
    assert lines[6] == "    brats_openvino  network (brats-client --model)"
    assert lines[7] == "    brats_segment   the whole pipeline: ..."
    assert lines[-1] == "Ctrl-C to stop."
    assert "(none)" in banner("r", "g:1", "h:2", "http://m:3", "l", [])
