"""The declared public API of brats_client: every name resolves, from the module that defines it."""

from __future__ import annotations

import brats_client
import pytest


@pytest.mark.parametrize("name", brats_client.__all__)
def test_each_public_name_is_defined_where_the_table_says(name):
    value = getattr(brats_client, name)
    assert value.__module__ == f"brats_client.{brats_client._HOMES[name]}"


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'segment'"):
        brats_client.segment  # noqa: B018


def test_transports_satisfy_the_protocol():
    declared = {n for n in vars(brats_client.Transport) if not n.startswith("_") or n in ("__enter__", "__exit__")}
    declared -= {"_is_protocol", "_is_runtime_protocol"}
    local = brats_client.LocalTransport(lambda batch: batch[:, :3])  # info is set per instance
    for transport in (brats_client.TritonTransport, local):
        missing = sorted(n for n in declared if not hasattr(transport, n))
        assert not missing, f"{transport} lacks {missing}"
