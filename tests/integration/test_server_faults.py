"""Server faults during ``brats-client segment``, with this module's own ``tritonserver`` processes (``brats_onnx``
only, free loopback ports): no server, a server killed mid-case (SIGKILL to its process group, stubs included, as
a crash would), a batch that loses its server, and failover across several ``--url`` endpoints.

The kill is timed by the client's own progress callback: ``commands._tile_bar`` is wrapped so that the kill happens
right after the first tile of the chosen case has come back, on the thread that consumes the results, so the run is
deterministic (the remaining tiles are all sent after the kill).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from brats_client import cli, commands

pytestmark = pytest.mark.integration

MODEL = "brats_onnx"
SHAPE = (64, 64, 48)
FAST = ["--tta", "none", "--tile", "32", "--concurrency", "1"]  # 18 tiles of 32^3 per 64x64x48 case


@pytest.fixture(scope="module")
def cases(small_case_factory) -> list[Path]:
    """Three small phantom cases in one folder (a batch)."""
    return [small_case_factory(seed, SHAPE, parent="faults") for seed in (9101, 9102, 9103)]


@pytest.fixture
def start_server(model_repository):
    """``start(grpc_port=0) -> TritonServer`` (started); every server is stopped at the end of the test."""
    from brats_serve.launcher import TritonServer

    servers = []

    def start(grpc_port: int = 0):
        server = TritonServer(model_repository, models=[MODEL], grpc_port=grpc_port, http_port=0, metrics_port=0)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def kill(server) -> None:
    """SIGKILL the server and its python backend stubs (one process group: the launcher starts a new session)."""
    os.killpg(server.pid, signal.SIGKILL)
    assert server.wait(timeout_s=30) == -signal.SIGKILL


def on_first_tile(monkeypatch, case_id: str | None, action: Callable[[], None]) -> list[int]:
    """Run ``action`` once, right after the first tile of ``case_id`` (any case when None) has come back.
    Returns the list of tiles seen per progress call (for assertions)."""
    original = commands._tile_bar
    seen: list[int] = []

    def tile_bar(quiet: bool, desc: str):
        update, close = original(quiet, desc)

        def hooked(done: int, total: int) -> None:
            update(done, total)
            if case_id is None or desc == case_id:
                seen.append(done)
                if len(seen) == 1:
                    action()

        return hooked, close

    monkeypatch.setattr(commands, "_tile_bar", tile_bar)
    return seen


def segment(*argv, url: str) -> int:
    return cli.main(["--quiet", "segment", *map(str, argv), "--url", url, "--model", MODEL])


def labels(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(str(path)).dataobj)


def stats(server) -> dict[str, int]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        s = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
    finally:
        client.close()
    inference = s.get("inference_stats", {})
    return {
        "inference_count": int(s.get("inference_count", 0)),
        "success": int(inference.get("success", {}).get("count", 0)),
        "fail": int(inference.get("fail", {}).get("count", 0)),
    }


def files_in(folder: Path) -> list[str]:
    """Every entry, hidden temporary files included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ------------------------------------------------------------------------------------------------- no server


def test_no_server_fails_fast_with_a_clear_error(cases, tmp_path, capsys):
    from brats_serve.launcher import free_port

    out = tmp_path / "seg.nii.gz"
    urls = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    code = segment(cases[0], "-o", out, *FAST, url=urls)
    elapsed_s = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == cli.EXIT_SERVER
    assert elapsed_s < 15, f"took {elapsed_s:.1f} s to say there is no server"
    assert err.count("no Triton server answers") == 2, err  # both endpoints named
    assert not out.exists()


def test_a_silent_server_is_an_error_within_the_deadline(cases, tmp_path, capsys):
    """A port that accepts connections but never answers (a hung host): exit 4 after the 10 s connect deadline,
    not a hang."""
    out = tmp_path / "seg.nii.gz"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel completes handshakes; nobody ever reads or writes
        url = f"127.0.0.1:{listener.getsockname()[1]}"
        t0 = time.monotonic()
        code = segment(cases[0], "-o", out, *FAST, url=url)
        elapsed_s = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == cli.EXIT_SERVER
    assert 5 < elapsed_s < 30, elapsed_s
    assert f"no Triton server answers at {url} within 10 s" in err and "DEADLINE_EXCEEDED" in err, err
    assert not out.exists()


# ------------------------------------------------------------------------------------------- killed mid-case


def test_server_killed_mid_case_leaves_no_output(cases, start_server, tmp_path, monkeypatch, capsys):
    server = start_server()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    seg, probs, report = out_dir / "seg.nii.gz", out_dir / "prob.nii.gz", out_dir / "seg.json"
    seen = on_first_tile(monkeypatch, None, lambda: kill(server))
    t0 = time.monotonic()
    code = segment(cases[0], "-o", seg, "--probabilities", probs, "--report", report, "--retries", "1", *FAST,
                   url=server.grpc_url)
    elapsed_s = time.monotonic() - t0
    err = capsys.readouterr().err
    assert seen == [1], "the server died after the first tile; no other tile may come back"
    assert code == cli.EXIT_SERVER, err
    assert f"inference of '{MODEL}' at {server.grpc_url} failed: StatusCode.UNAVAILABLE" in err, err
    assert "retrying in 1.0 s" in err  # one retry, then the case is given up
    assert files_in(out_dir) == [], "no partial or temporary output may be left"
    assert elapsed_s < 30


def test_batch_goes_on_after_a_lost_server_and_a_rerun_redoes_the_failed_case(
    cases, start_server, tmp_path, monkeypatch, capsys
):
    """Kill the server during the 2nd of 3 cases and bring a new one up on the same port before the 3rd: the 2nd
    fails, the 3rd is done, the summary says so, exit 6. Run again: the finished cases are skipped, the failed one
    is redone, exit 0."""
    from brats_serve.launcher import TritonServer

    first, second, third = (c.name for c in cases)
    server = start_server()
    port = server.ports["grpc"]
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    restarted: list[TritonServer] = []
    plain = commands._tile_bar
    on_first_tile(monkeypatch, second, lambda: kill(server))
    original = commands._tile_bar

    def restart_before_third(quiet: bool, desc: str):
        if desc == third and not restarted:
            restarted.append(start_server(grpc_port=port))
        return original(quiet, desc)

    monkeypatch.setattr(commands, "_tile_bar", restart_before_third)
    # the client's channel retries the connection at most 2 s apart: two retries (1 + 2 s) reach the new server
    code = segment(cases[0].parent, "-o", out, "--report", summary, "--retries", "2", *FAST, url=server.grpc_url)
    err = capsys.readouterr().err
    assert code == cli.EXIT_BATCH_FAILED, err
    assert restarted, "the third case was never started"
    result = json.loads(summary.read_text())
    assert result["done"] == [first, third] and result["skipped"] == []
    assert [f["case"] for f in result["failed"]] == [second]
    assert "UNAVAILABLE" in result["failed"][0]["error"]
    assert f"{second} failed: inference of" in err and f"failed: {second}: inference of" in err  # and summary
    problems = "\n".join(line for line in err.splitlines() if "trained only on BraTS data" not in line)
    assert first not in problems and third not in problems  # only the small cases' grid warnings name them
    assert files_in(out) == sorted([f"{first}.json", f"{first}.nii.gz", f"{third}.json", f"{third}.nii.gz"])
    kept = {name: (out / name).stat().st_mtime_ns for name in files_in(out)}

    monkeypatch.setattr(commands, "_tile_bar", plain)
    code = segment(cases[0].parent, "-o", out, "--report", summary, *FAST, url=restarted[0].grpc_url)
    err = capsys.readouterr().err
    assert code == cli.EXIT_OK, err
    result = json.loads(summary.read_text())
    assert result == {"done": [second], "skipped": [first, third], "failed": []}
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept  # finished cases untouched
    assert (out / f"{second}.nii.gz").is_file() and labels(out / f"{second}.nii.gz").shape == SHAPE


# -------------------------------------------------------------------------------------------- several servers


def test_several_urls_spread_the_tiles(cases, start_server, tmp_path):
    a, b = start_server(), start_server()
    out, report = tmp_path / "seg.nii.gz", tmp_path / "seg.json"
    before = stats(a), stats(b)  # the warm-up request of each server is counted too
    code = segment(cases[0], "-o", out, "--report", report, "--tta", "none", "--tile", "32", "--concurrency", "2",
                   url=f"{a.grpc_url},{b.grpc_url}")
    assert code == cli.EXIT_OK
    tiles = json.loads(report.read_text())["tiles"]
    (a0, b0), deadline = before, time.monotonic() + 15
    while True:  # Triton's statistics trail the responses slightly
        sa, sb = stats(a), stats(b)
        served_a, served_b = sa["success"] - a0["success"], sb["success"] - b0["success"]
        if served_a + served_b >= tiles or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert served_a > 0 and served_b > 0, (served_a, served_b)
    assert served_a + served_b == tiles and sa["fail"] == sb["fail"] == 0


def test_failover_when_one_server_dies_gives_the_same_labels(cases, start_server, tmp_path, monkeypatch, capsys):
    a, b = start_server(), start_server()
    single, failover = tmp_path / "single.nii.gz", tmp_path / "failover.nii.gz"
    args = ["--tta", "none", "--tile", "32", "--concurrency", "2"]
    assert segment(cases[1], "-o", single, *args, url=a.grpc_url) == cli.EXIT_OK
    before = stats(a)["success"]
    capsys.readouterr()

    on_first_tile(monkeypatch, None, lambda: kill(b))
    report = tmp_path / "failover.json"
    code = segment(cases[1], "-o", failover, "--report", report, *args, url=f"{a.grpc_url},{b.grpc_url}")
    err = capsys.readouterr().err
    assert code == cli.EXIT_OK, err
    assert f"{b.grpc_url} stopped answering" in err and "sending its requests elsewhere" in err, err
    assert not b.is_running()
    assert json.loads(report.read_text())["server"]["url"] == f"{a.grpc_url},{b.grpc_url}"
    assert stats(a)["success"] > before and stats(a)["fail"] == 0
    np.testing.assert_array_equal(labels(failover), labels(single))
    assert (labels(single) > 0).any()
