"""Choosing server-side flips from the model configs (brats_client.server_flips), with fake transports."""

from __future__ import annotations

import pytest
from brats_client import server_flips
from brats_client.errors import ServerError
from brats_client.model_info import ModelInfo


def _info(name: str, **parameters: str) -> ModelInfo:
    return ModelInfo(name, "1", "INPUT__0", "OUTPUT__0", 1, "onnxruntime_onnx", parameters=parameters)


class FakeTransport:
    """What open_for uses of a Transport: info (ServerError if the model is not there), crosses_network,
    open_model, close."""

    def __init__(self, served: dict[str, ModelInfo], model: str, crosses_network: bool = True) -> None:
        self.served, self.model, self.closed = served, model, False
        self.crosses_network = crosses_network

    @property
    def info(self) -> ModelInfo:
        if self.model not in self.served:
            raise ServerError(f"model {self.model!r} is not ready")
        return self.served[self.model]

    def open_model(self, name: str) -> FakeTransport:
        return FakeTransport(self.served, name, self.crosses_network)

    def close(self) -> None:
        self.closed = True


def serve(*infos: ModelInfo, crosses_network: bool = True) -> FakeTransport:
    return FakeTransport({i.name: i for i in infos}, infos[0].name, crosses_network)


def test_uses_the_companion_its_config_names_for_a_server_on_another_host():
    plain = serve(_info("m", brats_server_flips_model="m_flip4"), _info("m_flip4", brats_server_flips="flip4"))
    chosen = server_flips.open_for(plain, "flip4")
    assert chosen.model == "m_flip4" and plain.closed and not chosen.closed
    assert server_flips.check_tta(chosen.info, "flip4") == "flip4"


def test_on_this_host_auto_flips_here_and_on_uses_the_companion():
    def local():
        return serve(_info("m", brats_server_flips_model="m_flip4"), _info("m_flip4", brats_server_flips="flip4"),
                     crosses_network=False)

    plain = local()
    assert server_flips.open_for(plain, "flip4") is plain and not plain.closed
    plain = local()
    assert server_flips.open_for(plain, "flip4", "on").model == "m_flip4" and plain.closed


@pytest.mark.parametrize(("tta", "mode"), [("none", "auto"), ("flip8", "auto"), ("flip4", "off")])
def test_keeps_the_plain_model_unless_flip4_is_asked_and_allowed(tta, mode):
    plain = serve(_info("m", brats_server_flips_model="m_flip4"), _info("m_flip4", brats_server_flips="flip4"))
    assert server_flips.open_for(plain, tta, mode) is plain and not plain.closed


def test_falls_back_when_the_companion_is_missing_or_flips_otherwise():
    plain = serve(_info("m", brats_server_flips_model="m_flip4"))
    assert server_flips.open_for(plain, "flip4") is plain
    plain = serve(_info("m", brats_server_flips_model="m_flip4"), _info("m_flip4", brats_server_flips="flip8"))
    assert server_flips.open_for(plain, "flip4") is plain and not plain.closed


def test_never_from_the_name_alone():
    """A model called *_flip4 whose config says nothing is not taken for a flipping one."""
    plain = serve(_info("m"), _info("m_flip4"))
    assert server_flips.open_for(plain, "flip4") is plain
    assert server_flips.check_tta(_info("m_flip4"), "flip4") is None


def test_a_flipping_model_refuses_another_tta():
    with pytest.raises(ServerError, match="applies flip4"):
        server_flips.check_tta(_info("m_flip4", brats_server_flips="flip4"), "none")


def test_bad_mode():
    with pytest.raises(ValueError, match="auto, on, off"):
        server_flips.open_for(serve(_info("m")), "flip4", "sometimes")
