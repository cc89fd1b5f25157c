"""examples/segment_with_curl.sh says that it waits, with an estimate from brats_segment's statistics, and how long
it has waited, while the server computes (against a stand-in HTTP server: the whole script against the real served
pipeline is tests/integration/test_served_pipeline.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "segment_with_curl.sh"
pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def _server(stats: dict, release: threading.Event) -> ThreadingHTTPServer:
    """Answers brats_segment's statistics at once, and its inference with HTTP 400 once ``release`` is set."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _answer(self, code: int, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer(200, json.dumps(stats, separators=(",", ":")).encode())

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            release.wait(60)
            self._answer(400, b'{"error":"stand-in"}')

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _stats(count: int, infer_ns: int) -> dict:
    """Triton's /v2/models/NAME/stats, as its HTTP endpoint writes it (compact JSON, numbers unquoted)."""
    return {"model_stats": [{"name": "brats_segment", "version": "1", "inference_count": count,
                             "execution_count": count, "inference_stats": {
                                 "success": {"count": count, "ns": infer_ns + 1},
                                 "compute_infer": {"count": count, "ns": infer_ns}}}]}


@pytest.mark.parametrize(("stats", "said"), [
    (_stats(2, 60_000_000_000), "(about 30 s, brats_segment's mean over 2 request(s) on this server)"),
    (_stats(0, 0), "(no estimate yet: brats_segment has segmented nothing since the server started"),
])
def test_the_curl_script_says_it_waits_with_an_estimate_and_the_time(stats, said, tmp_path):
    case = tmp_path / "Case"
    for modality in ("t1", "t1ce", "t2", "flair"):
        Path(f"{case}_{modality}.nii.gz").write_bytes(b"\x1f\x8b stand-in")
    release = threading.Event()
    server = _server(stats, release)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    process = subprocess.Popen(["bash", str(SCRIPT), url, str(case), str(tmp_path / "out.nii.gz")],
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "WAIT_EVERY_S": "0.1"})
    try:
        lines = [process.stderr.readline()]
        while lines[-1] and not lines[-1].startswith("  still waiting: "):
            lines.append(process.stderr.readline())
        release.set()
        rest = process.stderr.read()
        assert process.wait(60) == 1
    finally:
        release.set()
        if process.poll() is None:
            process.kill()
        server.shutdown()
    assert lines[0].startswith(f"sent {case}_{{t1,t1ce,t2,flair}}.nii.gz to {url}/v2/models/brats_segment; "
                               "waiting for the segmentation "), lines
    assert said in lines[0], lines
    assert lines[-1].startswith("  still waiting: ") and lines[-1].rstrip().endswith(" s"), lines
    assert "brats_segment answered HTTP 400" in rest, rest
    assert not (tmp_path / "out.nii.gz").exists()
