"""Export a checkpoint to ONNX and serve it until stdin closes: the tritonserver of another environment.

The client tests also run from ``.venv-client`` (numpy 2, the newest tritonclient, no torch, no nvidia-pytriton);
their server comes from ``.venv`` through this script (see ``triton_server`` in ``conftest.py``):

    .venv/bin/python tests/integration/external_server.py CHECKPOINT WORKDIR

prints one JSON line ``{"grpc_url": ...}`` once the server is ready, and stops it when stdin reaches its end.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    from brats_export.cli import main as export
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    checkpoint, work = Path(argv[0]), Path(argv[1])
    repository = work / "model_repository"
    # The client tests talk to brats_onnx only.
    code = export(["--checkpoint", str(checkpoint), "--repository", str(repository), "--formats", "onnx",
                   "--check-sizes", "32", "--quiet"])
    if code != 0:
        return code
    log_path = work / "tritonserver.log"
    with TritonServer(TritonServerConfig(
        repository, grpc_port=0, http_port=0, metrics_port=0, log_path=log_path
    )) as server:
        sys.stdout.write(json.dumps({"grpc_url": server.grpc_url}) + "\n")
        sys.stdout.flush()
        sys.stdin.read()  # until the test session closes the pipe (or ends)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
