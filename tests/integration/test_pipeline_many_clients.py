"""The served pipeline (``brats_segment``) as a service for many clients: requests overlap and give the labels of
one after another; past its bounded queue a request is refused at once as busy; abandoned requests stop between
tiles; ``brats-client`` retries busy refusals and names both versions when the pipeline carries other client code.
Real ``tritonserver``, the exported OpenVINO network, real NIfTI files.

The module's server runs the pipeline with two instances and a queue of one (so a flood is small), over the
session's exported OpenVINO models (linked, not copied). Each request is a small case (112 x 96 x 80), one pass
(``tta none``). Times are logged, not asserted: the figures are in docs/benchmarks.md
(benchmarks/bench_pipeline_concurrency.py).
"""

from __future__ import annotations

import gzip
import logging
import re
import threading
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from brats_client import cli, find_case_files, identity

pytestmark = pytest.mark.integration

log = logging.getLogger(__name__)

NETWORKS = ("openvino", "openvino_flip4")
PIPELINE = "brats_segment"
OLD_PIPELINE = "brats_segment_old"  # the same pipeline as exported by an older brats-triton
OLD_VERSION = "0.0.9"
SETTINGS = {"instances": 2, "max_queue": 1, "queue_timeout_s": 60.0}
FLOOD = 7  # requests at once: 2 run, 1 waits, the rest are refused
WAIT_S = 300.0  # no wait in this module is longer: joins and deadlines are bounded
ONE_PASS = {"tta": "none", "tile": "full", "labels": "brats2019"}
MANY_TILES = {"tta": "none", "tile": 32, "labels": "brats2019"}  # the same case in ~100 network requests


def _write_old_pipeline(repo: Path) -> None:
    """``brats_segment`` as an older brats-triton exported it: other client code (one changed line), its hash and
    version in the config, under another name so that one server serves both."""
    from brats_export import pipeline_model

    other = repo.parent / "old_export"
    folder = pipeline_model.write(other, pipeline_model.Networks("brats_openvino", ("brats_openvino",)),
                                  settings=pipeline_model.PipelineSettings(instances=1))
    code = folder / "1" / "brats_client"
    (code / "preprocess.py").write_text((code / "preprocess.py").read_text() + "\n# an older release\n")
    config = (folder / "config.pbtxt").read_text()
    config = config.replace(f'name: "{PIPELINE}"', f'name: "{OLD_PIPELINE}"')
    config = config.replace(identity.package_sha256(), identity.package_sha256(code))
    config = config.replace(f'string_value: "{identity.version()}"', f'string_value: "{OLD_VERSION}"')
    assert OLD_VERSION in config and identity.package_sha256(code) in config
    folder.rename(repo / OLD_PIPELINE)
    (repo / OLD_PIPELINE / "config.pbtxt").write_text(config)


@pytest.fixture(scope="module")
def busy_server(pipeline_repository, tmp_path_factory):
    from brats_export import pipeline_model
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    repo = pipeline_repository("many_clients", NETWORKS, pipeline_model.PipelineSettings(**SETTINGS)).parent
    _write_old_pipeline(repo)
    log_path = tmp_path_factory.mktemp("many_clients_server") / "tritonserver.log"
    with TritonServer(TritonServerConfig(repo, grpc_port=0, http_port=0, metrics_port=0, log_path=log_path)) as server:
        yield server


@pytest.fixture(scope="module")
def cases(small_case_factory) -> list[Path]:
    return [small_case_factory(seed, parent="many_clients") for seed in (9301, 9302)]


def _send(url: str, case: Path, parameters: dict, client_timeout_s: float = WAIT_S) -> tuple[str, object]:
    """One plain gRPC request (no retries): ``("done", labels)`` or ``(status code, message)``."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url)
    inputs = []
    for ch, path in find_case_files(case).paths.items():
        tensor = grpcclient.InferInput(ch, [1], "BYTES")
        tensor.set_data_from_numpy(np.array([path.read_bytes()], dtype=np.object_))
        inputs.append(tensor)
    try:
        result = client.infer(PIPELINE, inputs, parameters=parameters, client_timeout=client_timeout_s)
    except InferenceServerException as e:
        return str(e.status()), e.message()
    finally:
        client.close()
    data = gzip.decompress(bytes(result.as_numpy("segmentation")[0]))
    return "done", np.asarray(nib.Nifti1Image.from_bytes(data).dataobj)


def _at_once(calls: list) -> list[tuple[str, object]]:
    """Run the calls on threads started together; every one must end within WAIT_S."""
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(calls))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + WAIT_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), f"a request did not end within {WAIT_S:g} s"
    return results


def _model_counts(url: str, model: str) -> dict[str, int]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
        ready = client.is_server_ready()
    finally:
        client.close()
    counters = stats.get("inference_stats", {})
    return {"executions": int(stats.get("execution_count", 0)), "ready": int(ready),
            "success": int(counters.get("success", {}).get("count", 0)),
            "fail": int(counters.get("fail", {}).get("count", 0))}


def _wait_queue_full(server) -> None:
    """Until the pipeline's queue holds SETTINGS["max_queue"] requests (so every instance is busy): Triton's
    gauge nv_inference_pending_request_count, read from its metrics endpoint, for at most 60 s."""
    pattern = re.compile(rf'^nv_inference_pending_request_count{{model="{PIPELINE}",version="1"}} (\d+)', re.M)
    deadline = time.monotonic() + 60
    while True:
        with urllib.request.urlopen(f"{server.metrics_url}/metrics", timeout=10) as response:
            found = pattern.search(response.read().decode())
        if found and int(found.group(1)) >= SETTINGS["max_queue"]:
            return
        assert time.monotonic() < deadline, "the pipeline's queue never filled"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def serial(busy_server, cases) -> list[np.ndarray]:
    """Each case alone, one after the other."""
    labels = []
    for case in cases:
        start = time.perf_counter()
        outcome, value = _send(busy_server.grpc_url, case, ONE_PASS)
        assert outcome == "done", value
        log.info("%s alone: %.1f s", case.name, time.perf_counter() - start)
        labels.append(value)
    assert all((a > 0).sum() > 1000 for a in labels)
    return labels


def test_two_requests_at_once_give_the_labels_of_one_after_the_other(busy_server, cases, serial):
    start = time.perf_counter()
    results = _at_once([lambda c=c: _send(busy_server.grpc_url, c, ONE_PASS) for c in cases])
    log.info("both at once: %.1f s", time.perf_counter() - start)
    for (outcome, labels), expected in zip(results, serial, strict=True):
        assert outcome == "done", labels
        np.testing.assert_array_equal(labels, expected)


def test_a_flood_past_the_queue_is_refused_busy_at_once_and_the_server_keeps_serving(busy_server, cases, serial):
    """FLOOD requests at once: each ends, either with the labels of the case alone or refused with UNAVAILABLE
    (HTTP 503: checked with an HTTP request during the flood); afterwards the server is ready and serves."""
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    url = busy_server.grpc_url
    calls = [lambda i=i: _send(url, cases[i % 2], ONE_PASS) for i in range(FLOOD)]

    def over_http() -> tuple[str, object]:
        _wait_queue_full(busy_server)  # the gRPC requests filled the instances and the queue
        client = httpclient.InferenceServerClient(busy_server.http_url, network_timeout=WAIT_S)
        inputs = []
        for ch, path in find_case_files(cases[0]).paths.items():
            tensor = httpclient.InferInput(ch, [1], "BYTES")
            tensor.set_data_from_numpy(np.array([path.read_bytes()], dtype=np.object_))
            inputs.append(tensor)
        try:
            client.infer(PIPELINE, inputs, parameters=ONE_PASS)
        except InferenceServerException as e:
            return str(e.status()), e.message()
        finally:
            client.close()
        return "done", None

    results = _at_once([*calls, over_http])
    grpc_results, http_result = results[:-1], results[-1]
    done = [i for i, (outcome, _) in enumerate(grpc_results) if outcome == "done"]
    refused = [message for outcome, message in grpc_results if outcome == "StatusCode.UNAVAILABLE"]
    assert len(done) + len(refused) == FLOOD, grpc_results
    assert done and refused, (len(done), refused)
    assert all("Exceeds maximum queue size" in m for m in refused), refused
    for i in done:
        np.testing.assert_array_equal(grpc_results[i][1], serial[i % 2])
    assert http_result == ("503", http_result[1]) and "Exceeds maximum queue size" in http_result[1], http_result
    assert _model_counts(url, PIPELINE)["ready"] == 1
    outcome, labels = _send(url, cases[0], ONE_PASS)
    assert outcome == "done" and np.array_equal(labels, serial[0])


def test_abandoned_requests_stop_between_tiles_and_the_next_one_is_served(busy_server, cases, serial):
    """Clients that give up (a gRPC deadline of 2 s, well before their ~60 tiles are done) cancel their requests;
    the pipeline stops them at the next tile, so the network computes far fewer tiles than they would have needed
    and the next request finds the instances free (after at most a few busy refusals, while the abandoned ones
    finish their current tile)."""
    url = busy_server.grpc_url
    first = _model_counts(url, "brats_openvino")
    start = time.perf_counter()
    outcome, full = _send(url, cases[0], MANY_TILES)
    alone_s = time.perf_counter() - start
    before = _model_counts(url, "brats_openvino")
    tiles = before["executions"] - first["executions"]  # one request's network passes (nothing else runs now)
    results = _at_once([lambda: _send(url, cases[0], MANY_TILES, client_timeout_s=2.0) for _ in range(3)])
    # each gave up (or, sent in the same instant as two others, was refused: the queue counts a request until an
    # instance takes it)
    outcomes = [outcome for outcome, _ in results]
    assert set(outcomes) <= {"StatusCode.DEADLINE_EXCEEDED", "StatusCode.UNAVAILABLE"}, results
    assert "StatusCode.DEADLINE_EXCEEDED" in outcomes, results
    # the next client, as brats-client does, retries a busy refusal: for a moment after its deadline an abandoned
    # request may still hold an instance (until its current tile ends) or the queue (until the batcher drops it)
    start, refused = time.perf_counter(), 0
    while (result := _send(url, cases[0], MANY_TILES))[0] == "StatusCode.UNAVAILABLE" and refused < 20:
        refused += 1
        time.sleep(0.5)
    next_s = time.perf_counter() - start
    outcome, labels = result
    assert outcome == "done", labels
    np.testing.assert_array_equal(labels, full)
    after = _model_counts(url, "brats_openvino")
    abandoned_tiles = after["executions"] - before["executions"] - tiles
    log.info("alone %.1f s (%d tiles); next after 3 abandoned: %.1f s (refused busy %d times first); the abandoned "
             "ones computed %d tiles (%d if they had run to the end)", alone_s, tiles, next_s, refused,
             abandoned_tiles, 2 * tiles)
    # two of the three ran (the third waited in the queue): together less than one request's tiles, where
    # running to the end would have been two or three times as many
    assert abandoned_tiles < tiles, (abandoned_tiles, tiles)
    pipeline = _model_counts(url, PIPELINE)
    assert pipeline["ready"] == 1


def test_brats_client_retries_a_busy_refusal_and_succeeds_once_the_load_is_gone(busy_server, cases, serial,
                                                                              tmp_path, capsys):
    """The instances and the queue are full (Triton's pending-request gauge); brats-client is refused too, says
    so, retries with its backoff and gets the case's labels when the load is gone."""
    url = busy_server.grpc_url
    load: list = []

    def fill_one() -> None:  # a client that retries until it gets in (at most 60 s)
        deadline = time.monotonic() + 60
        while (outcome := _send(url, cases[1], MANY_TILES))[0] == "StatusCode.UNAVAILABLE":
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        load.append(outcome)

    capacity = SETTINGS["instances"] + SETTINGS["max_queue"]
    fill = [threading.Thread(target=fill_one, daemon=True) for _ in range(capacity)]
    for t in fill:
        t.start()
    _wait_queue_full(busy_server)
    out = tmp_path / "seg.nii.gz"
    code = cli.main(["segment", str(cases[0]), "-o", str(out), "--url", url, "--model", PIPELINE, "--tta", "none",
                     "--labels", "brats2019", "--retries", "6"])
    err = capsys.readouterr().err
    for t in fill:
        t.join(WAIT_S)
    assert code == cli.EXIT_OK, err
    assert "is busy (StatusCode.UNAVAILABLE: " in err and "retry 1 of 6 in 1.0 s" in err, err
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), serial[0])
    assert [outcome for outcome, _ in load] == ["done"] * len(fill)


def test_a_pipeline_exported_by_another_version_is_named_with_both_versions(busy_server, cases, serial, tmp_path,
                                                                          capsys):
    out = tmp_path / "seg.nii.gz"
    code = cli.main(["segment", str(cases[0]), "-o", str(out), "--url", busy_server.grpc_url, "--model",
                     OLD_PIPELINE, "--tta", "none", "--labels", "brats2019"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_OK, err
    assert f"runs brats-triton {OLD_VERSION} (client code " in err, err
    assert f"this client is brats-triton {identity.version()} (client code {identity.package_sha256()[:12]})" in err
    # the current export: no warning
    code = cli.main(["segment", str(cases[0]), "-o", str(tmp_path / "b.nii.gz"), "--url", busy_server.grpc_url,
                     "--model", PIPELINE, "--tta", "none", "--labels", "brats2019"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_OK and "client code" not in err, err


def test_a_network_exported_from_another_checkpoint_is_named(busy_server, cases, checkpoint, tmp_path, capsys):
    """brats-export records the checkpoint's sha256 in each network's config; --checkpoint-sha256 names the one
    the user expects, on the tensor path and through the pipeline (its network's config)."""
    from brats_export.checkpoint import checkpoint_sha256

    ours = checkpoint_sha256(checkpoint)
    for model in ("brats_openvino", PIPELINE):
        for named, warned in ((ours, False), ("0123456789ab", True)):
            code = cli.main(["segment", str(cases[0]), "-o", str(tmp_path / f"{model}.nii.gz"), "--overwrite",
                             "--url", busy_server.grpc_url, "--model", model, "--tta", "none", "--labels",
                             "brats2019", "--checkpoint-sha256", named])
            err = capsys.readouterr().err
            assert code == cli.EXIT_OK, err
            message = f"'brats_openvino' was exported from the checkpoint with sha256 {ours[:12]}..., not the one " \
                      "named (0123456789ab...)"
            assert (message in err) == warned, err
