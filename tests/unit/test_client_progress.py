"""Progress on long waits (:mod:`brats_client.progress`): the ticker, the estimate from a model's server statistics and
the lines a case's inference logs. Through the real server: tests/integration/test_first_hour.py."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
from brats_client import pipeline, progress
from brats_client.local import LocalTransport


def _stats(inferences: int, compute_s: float) -> dict[str, int]:
    return {"inference_count": inferences, "execution_count": inferences, "compute_infer_ns": int(compute_s * 1e9),
            "queue_ns": 0}


def test_the_heartbeat_logs_until_the_block_ends(caplog) -> None:
    calls: list[float] = []
    twice = threading.Event()

    def message(elapsed_s: float) -> str:
        calls.append(elapsed_s)
        if len(calls) == 2:
            twice.set()
        return f"waited {len(calls)}"

    logger = logging.getLogger("test.heartbeat")
    with caplog.at_level(logging.INFO, logger="test.heartbeat"), \
            progress.Heartbeat(message, logger=logger, first_s=0.01, every_s=0.01):
        assert twice.wait(30), "no second line"
    after = len(calls)
    assert [r.getMessage() for r in caplog.records][:2] == ["waited 1", "waited 2"]
    assert calls == sorted(calls) and calls[0] >= 0
    assert len(calls) == after, "the ticker goes on after the block"


def test_the_heartbeat_starts_no_thread_when_its_level_is_dropped() -> None:
    logger = logging.getLogger("test.heartbeat.quiet")
    logger.setLevel(logging.WARNING)
    with progress.Heartbeat(lambda s: "never", logger=logger, first_s=0.0, every_s=0.0) as beat:
        assert beat._thread is None


def test_mean_compute_is_per_inference_and_none_on_a_fresh_server() -> None:
    assert progress.mean_compute_s(_stats(4, 8.0)) == pytest.approx(2.0)
    assert progress.mean_compute_s(_stats(0, 0.0)) is None
    assert progress.mean_compute_s(None) is None


def test_the_warm_up_weighs_by_its_size_and_alone_gives_no_estimate() -> None:
    """Triton counts the config's warm-up (here 2 items of 1000 voxels) in the statistics: 10 s over 2 x 1000 +
    1 x 8000 voxels is 1 ms per voxel, so an 8000-voxel item takes 8 s."""
    warmup = ((2, 1000),)
    assert progress.mean_compute_s(_stats(3, 10.0), 8000, warmup) == pytest.approx(8.0)
    assert progress.mean_compute_s(_stats(2, 0.2), 8000, warmup) is None
    wait = progress.InferenceWait("C", "m", "1 tile in 1 request", 1, lambda: _stats(2, 0.2), 8000, warmup)
    assert wait.start_message() == ("C: 1 tile in 1 request to m; no estimate yet (m has computed nothing but its "
                                    "warm-up since the server started; the next case gets one)")
    wait.statistics = lambda: _stats(3, 10.0)
    assert "estimate about 8 s (the server's mean compute of m over 1 inference)" in wait.start_message()


def test_a_one_tile_wait_says_elapsed_and_time_left_from_the_models_statistics() -> None:
    wait = progress.InferenceWait("Case1", "brats_openvino_flip4", "1 tile in 1 request", 1, lambda: _stats(3, 120.0))
    assert wait.start_message() == (
        "Case1: 1 tile in 1 request to brats_openvino_flip4; estimate about 40 s (the server's mean compute of "
        "brats_openvino_flip4 over 3 inferences)"
    )
    wait.update(0, 1)
    assert wait.message(15.2) == "Case1: 15 s elapsed, 0/1 tile done; about 25 s left of about 40 s"
    assert wait.message(41.0).endswith("; over the estimate of 40 s (a busy server or a larger case takes longer)")


def test_without_statistics_the_wait_says_there_is_no_estimate_yet() -> None:
    wait = progress.InferenceWait("Case1", "m", "2 tiles in 8 requests", 8, lambda: _stats(0, 0.0), tiles=2)
    assert wait.message(5.0) == "Case1: 5 s elapsed, 0/2 tiles done; no estimate yet"
    assert wait.start_message().endswith("; no estimate yet (m has computed nothing since the server started; the "
                                         "next case gets one)")
    served = progress.InferenceWait("Case1", "brats_segment", "the four files in one request", 1, lambda: None)
    assert served.message(5.0) == "Case1: 5 s elapsed; no estimate"
    assert served.start_message().endswith("; no estimate (brats_segment gives no statistics)")


def test_a_case_logs_its_work_and_progress_on_a_local_transport(brain_case, caplog, monkeypatch) -> None:
    """tiles x flips, as the pipeline sends them; a predictor slow enough for the ticker to speak."""
    monkeypatch.setattr(progress, "FIRST_S", 0.0)
    monkeypatch.setattr(progress, "EVERY_S", 0.01)
    seen = threading.Event()

    def predict(batch: np.ndarray) -> np.ndarray:
        seen.wait(30)  # until the ticker has logged a line
        return np.zeros((batch.shape[0], 3, *batch.shape[2:]), np.float32)

    class Caught(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "elapsed" in record.getMessage():
                seen.set()

    logger = logging.getLogger("test.progress.case")
    logger.addHandler(Caught())
    prepared = pipeline.prepare_case(brain_case, pipeline.SegmentOptions(tile=32, tta="flip4"))
    count = pipeline.count_requests(prepared, LocalTransport(predict).info)
    tiles, requests = count.tiles, count.requests
    assert (requests, count.items, count.item_voxels) == (4 * tiles, 4 * tiles, 32**3) and tiles > 1
    with caplog.at_level(logging.INFO, logger="test.progress.case"):
        inferred = progress.infer_case(prepared, LocalTransport(predict), logger)
    assert inferred.prediction.tiles == tiles
    lines = [r.getMessage() for r in caplog.records if r.name == "test.progress.case"]
    assert lines[0] == f"{brain_case.case_id}: {tiles} tiles in {requests} requests to local; no estimate (local " \
        "gives no statistics)"
    assert any("s elapsed, 0/" in line for line in lines[1:]), lines


@pytest.mark.torch  # brats_export writes the configs
def test_the_warm_up_of_an_exported_config_is_read_into_the_model_info() -> None:
    from brats_client.model_info import _warmup
    from brats_export.configs import config_texts
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    cpu = text_format.Parse(config_texts("openvino")["config.pbtxt"], mc.ModelConfig())
    assert _warmup(cpu) == [(1, 32**3)]  # one 32^3 tile, once: far cheaper than a case's crop
    gpu = text_format.Parse(config_texts("torchscript")["configs/gpu.pbtxt"], mc.ModelConfig())
    assert _warmup(gpu) == [(2, 144 * 176 * 144)]  # a whole crop, twice
