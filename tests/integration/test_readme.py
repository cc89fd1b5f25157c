"""The README's first hour, verbatim: every ``.venv/bin/brats-serve`` and ``.venv/bin/brats-client`` command of its
code blocks, its ``bash examples/segment_with_curl.sh`` line and every Python example, run as written in a folder
laid out as ``make demo`` leaves it (the phantom case in BraTS files and in the Decathlon's layout, a repository of
``brats_openvino``, its companion and the pipeline model), with ``.venv`` and ``examples`` links to this
checkout's.

Not run here: ``brats-export`` of the published checkpoint (users download it; tests/integration/test_export.py
exports the demo checkpoint), ``docker`` (no Docker here), ``make`` and ``pip`` lines, and the commands that name
files a user brings (shown without ``.venv/bin/``, which this test refuses for brats-client / brats-serve).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SERVE, CLIENT = ".venv/bin/brats-serve", ".venv/bin/brats-client"
CURL_EXAMPLE = "examples/segment_with_curl.sh"  # plain HTTP against the served pipeline
READY_TIMEOUT_S = 300.0
COMMAND_TIMEOUT_S = 600.0
STOP_TIMEOUT_S = 60.0


def _blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced code block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def _commands(text: str) -> list[list[str]]:
    """The argv of every shell line of the README's code blocks, in order (comments dropped)."""
    lines = []
    for language, body in _blocks(text):
        if language == "python":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                lines.append(argv)
    return lines


def test_readme_commands_of_this_project_all_start_with_the_venv() -> None:
    """A brats-client / brats-serve line without .venv/bin/ would be left out of the run below."""
    for argv in _commands(README.read_text()):
        if Path(argv[0]).name in ("brats-client", "brats-serve"):
            assert argv[0] in (SERVE, CLIENT), f"README command not runnable verbatim here: {shlex.join(argv)}"


def _demo_layout(clone: Path, model_repository: Path) -> None:
    """What `make demo` leaves in the checkout (brats_demo.run writes the same files)."""
    from brats_demo.phantom import case_id, write_case, write_msd_case
    from brats_export import pipeline_model
    from brats_export.phantom import make_phantom

    (clone / ".venv").symlink_to(ROOT / ".venv")
    demo = clone / "out" / "demo"
    phantom = make_phantom(9001)
    write_case(phantom, demo / "cases", case_id(9001))
    write_msd_case(phantom, demo / "Task01_BrainTumour", "BRATS_9001")
    for model in ("brats_openvino", "brats_openvino_flip4"):
        shutil.copytree(model_repository / model, demo / "model_repository" / model)
    pipeline_model.write(demo / "model_repository", ["openvino", "openvino_flip4"])  # brats-export --pipeline
    (clone / "examples").symlink_to(ROOT / "examples")


def _wait_ready(server: subprocess.Popen, url: str, log: Path) -> None:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    deadline = time.monotonic() + READY_TIMEOUT_S
    client = grpcclient.InferenceServerClient(url)
    try:
        while time.monotonic() < deadline:
            assert server.poll() is None, f"brats-serve exited {server.returncode}:\n{log.read_text()[-3000:]}"
            try:
                if client.is_server_ready(client_timeout=2):
                    return
            except InferenceServerException:  # not listening yet
                pass
            time.sleep(1)
    finally:
        client.close()
    raise AssertionError(f"brats-serve not ready at {url} in {READY_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(server: subprocess.Popen) -> int:
    server.send_signal(signal.SIGINT)
    try:
        return server.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
        raise AssertionError(f"brats-serve did not stop within {STOP_TIMEOUT_S:.0f} s of Ctrl-C") from None


def _serve(argv: list[str], clone: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=clone, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _run(argv: list[str] | tuple[str, ...], clone: Path) -> None:
    done = subprocess.run(argv, cwd=clone, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 0, f"{shlex.join(argv)} exited {done.returncode}:\n{done.stderr[-4000:]}"


def _grpc_url(argv: list[str]) -> str:
    port = argv[argv.index("--grpc-port") + 1] if "--grpc-port" in argv else "8001"
    return f"127.0.0.1:{port}"


def test_readme_first_hour_verbatim(model_repository, tmp_path) -> None:
    text = README.read_text()
    commands = _commands(text)
    serves = list(dict.fromkeys(shlex.join(a) for a in commands if a[0] == SERVE))
    clients = [a for a in commands if a[0] == CLIENT or a[:2] == ["bash", CURL_EXAMPLE]]
    python = [body for language, body in _blocks(text) if language == "python"]
    assert serves and len(clients) >= 8 and len(python) >= 2, "the README lost its examples"
    clone = tmp_path / "clone"
    clone.mkdir()
    _demo_layout(clone, model_repository)

    first, *others = [shlex.split(s) for s in serves]
    log = tmp_path / "serve.log"
    server = _serve(first, clone, log)
    try:
        _wait_ready(server, _grpc_url(first), log)
        for argv in clients:
            _run(argv, clone)
        for code in python:
            _run((str(ROOT / ".venv" / "bin" / "python"), "-c", code), clone)
    finally:
        code = _stop(server) if server.poll() is None else server.returncode
    assert code == 0, f"brats-serve exited {code} after Ctrl-C:\n{log.read_text()[-3000:]}"
    for argv in others:  # the other serve lines, one at a time on the default HTTP and metrics ports
        log = tmp_path / f"serve_{len(argv)}.log"
        server = _serve(argv, clone, log)
        try:
            _wait_ready(server, _grpc_url(argv), log)
        finally:
            code = _stop(server) if server.poll() is None else server.returncode
        assert code == 0, f"{shlex.join(argv)} exited {code} after Ctrl-C:\n{log.read_text()[-3000:]}"

    out = clone / "out"
    for produced in ("seg/Phantom_9001.nii.gz", "seg/Phantom_9001.png", "seg/metrics.csv", "msd/BRATS_9001.nii.gz",
                     "msd.csv", "explicit.nii.gz", "api/Phantom_9001.nii.gz", "perf/perf_brats_openvino.csv",
                     "Phantom_9001_served.nii.gz", "Phantom_9001_curl.nii.gz"):
        assert (out / produced).is_file(), f"the README's commands did not write out/{produced}"
    assert os.path.islink(clone / ".venv")
