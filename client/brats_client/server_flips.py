"""Test-time flips on the server: use a model's flip4 companion when its config names one.

A plain model's config may name a companion (parameter ``brats_server_flips_model``) whose graph applies the
test-time flips itself (parameter ``brats_server_flips``, e.g. ``flip4``) and averages them: one request per tile
carries the crop in and the averaged probabilities out (28 bytes per voxel instead of 112 for flip4). The client
learns this from the live configs, never from a model's name, and falls back to its own flips when the companion
is missing, not ready or flips otherwise.

What the companion saves is bytes on a network; it computes the same passes one after another, the OpenVINO one
about 1.2-1.35x slower than four plain requests (its loop body misses optimisations the plain graph gets; docs/
performance-notes.md), in the same memory. So ``auto`` uses it only when requests cross a network; on this host
(loopback, shared memory, in-process) the client flips. ``on`` uses it wherever it is offered, ``off`` never.
"""

from __future__ import annotations

import logging

from .errors import ServerError, UsageError
from .model_info import ModelInfo
from .protocol import Transport

log = logging.getLogger(__name__)

SERVER_FLIPS_KEY = "brats_server_flips"  # on a companion: the flips its graph applies
COMPANION_KEY = "brats_server_flips_model"  # on a plain model: its companion's name
MODES = ("auto", "on", "off")


def applied_flips(info: ModelInfo) -> str | None:
    """The test-time flips the model's graph applies itself (``flip4``), or None."""
    return info.parameters.get(SERVER_FLIPS_KEY) or None


def check_tta(info: ModelInfo, tta: str) -> str | None:
    """What the server flips for a request of ``tta``; ServerError when a flipping model meets another ``tta``."""
    applied = applied_flips(info)
    if applied is not None and applied != tta:
        raise ServerError(f"model {info.name!r} applies {applied} test-time flips in its graph; use --tta {applied} "
                          f"or a model without server flips (its plain model) for --tta {tta}")
    return applied


def open_for(transport: Transport, tta: str, mode: str = "auto") -> Transport:
    """``transport`` (checked), or one to its companion when the companion flips ``tta`` and ``mode`` is on, or
    auto and the requests cross a network; the transport not returned is closed."""
    if mode not in MODES:
        raise UsageError(f"server flips must be one of {', '.join(MODES)}; got {mode!r}")
    info = transport.info
    companion = info.parameters.get(COMPANION_KEY)
    if mode == "off" or not companion or applied_flips(info) is not None or tta == "none":
        return transport
    if mode == "auto" and not transport.crosses_network:
        log.info("the server is on this host: test-time flips here, one request per flip (--server-flips on sends "
                 "them to %s, which saves network bytes only and computes the passes one after another)", companion)
        return transport
    candidate = transport.open_model(companion)
    try:
        applied = applied_flips(candidate.info)
    except ServerError as e:
        candidate.close()
        log.info("model %s names %s for server-side flips, which cannot be used (%s): flipping here", info.name,
                 companion, e)
        return transport
    if applied != tta:
        candidate.close()
        log.info("model %s flips %s on the server, not %s: flipping here", companion, applied, tta)
        return transport
    log.info("test-time flips (%s) on the server: model %s, one request per tile", tta, companion)
    transport.close()
    return candidate
