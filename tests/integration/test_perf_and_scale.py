"""perf_analyzer against the real local server, and the client reaching two servers through one dns:/// name."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from brats_client import cli

pytestmark = pytest.mark.integration


def test_perf_sweep_on_real_tiles(small_case_factory, triton_server, tmp_path, capsys):
    case = small_case_factory(9011, (64, 64, 48), parent="perf")
    out = tmp_path / "perf"
    code = cli.main(["perf", str(case), "--url", triton_server.grpc_url, "--model", "brats_onnx", "--tile", "32",
                     "--concurrency", "1,2", "--request-count", "3", "--out", str(out)])
    assert code == 0
    with open(out / "perf_brats_onnx.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["Concurrency"]) for r in rows) == [1, 2]
    assert all(float(r["Inferences/Second"]) > 0 for r in rows)
    assert (out / "perf_brats_onnx.png").stat().st_size > 1000
    data = np.fromfile(out / "input_data" / "INPUT__0", dtype=np.float32)
    assert data.size == 4 * 32**3 and np.any(data != 0)  # a real (normalised) tile, not zeros
    table = capsys.readouterr().out
    assert "tiles/s" in table and len(table.strip().splitlines()) == 4


@pytest.mark.parametrize("scheme", ["dns", "ipv4"])
def test_round_robin_target_reaches_two_servers(scheme, small_case_factory, model_repository, tmp_path):
    """One gRPC target naming two servers (127.0.0.1 and 127.0.0.2, same port): the round_robin policy spreads
    the requests over both. ``dns:///NAME:PORT`` is what a Kubernetes headless Service gives; here no name
    resolves to two loopback addresses without editing /etc/hosts, so the dns case uses a name that resolves to
    127.0.0.1 only (and must reach that server), and the ipv4 case lists both addresses, as a resolver would."""
    from brats_client.transport import ServerOptions, TritonTransport
    from brats_serve.launcher import TritonServer, free_port

    port = free_port()
    hosts = ("127.0.0.1", "127.0.0.2")
    servers = [TritonServer(model_repository, host=host, grpc_port=port, http_port=0, metrics_port=0,
                            models=["brats_onnx"]) for host in hosts]
    target = f"dns:///localhost:{port}" if scheme == "dns" else f"ipv4:{hosts[0]}:{port},{hosts[1]}:{port}"
    case = small_case_factory(9012 if scheme == "dns" else 9013, (64, 64, 48), parent=f"rr_{scheme}")
    with servers[0], servers[1]:
        before = []
        for server in servers:
            with TritonTransport(ServerOptions(url=server.grpc_url, model="brats_onnx")) as t:
                before.append(t.inference_statistics()["inference_count"])
        out, report = tmp_path / "seg.nii.gz", tmp_path / "report.json"
        code = cli.main(["--quiet", "segment", str(case), "-o", str(out), "--url", target, "--report", str(report),
                         "--model", "brats_onnx", "--tile", "32", "--tta", "flip4", "--concurrency", "2"])
        assert code == 0 and nib.load(str(out)).shape == (64, 64, 48)
        served = []
        for server, b in zip(servers, before, strict=True):
            with TritonTransport(ServerOptions(url=server.grpc_url, model="brats_onnx")) as t:
                served.append(t.inference_statistics()["inference_count"] - b)
    tiles = json.loads(report.read_text())["tiles"]
    assert tiles > 1 and sum(served) == 4 * tiles  # four flips per tile
    if scheme == "ipv4":
        assert all(n > 0 for n in served), f"requests per server: {served}"
    else:
        assert served == [4 * tiles, 0], f"requests per server: {served}"
