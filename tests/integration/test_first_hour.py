"""The first hour of a new user, through the real ``tritonserver`` (issue 30): the HTTP port given as ``--url`` is
named as such with the gRPC address to use, a case of one tile shows its elapsed time and an estimate from the
model's own statistics while the server computes, ``brats-serve`` lists the models it serves, and an MSD batch names
the channel that fed each input.

The models are instant stand-ins (``brats_serve.instant``) whose executions wait ``delay_s``: the server, its
statistics and the files are real, and no network has to be exported.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from brats_client import cli, exit_codes, progress
from brats_serve import instant

pytestmark = pytest.mark.integration

SHAPE = (64, 64, 48)  # one tile
SLOW = "brats_slow"  # each execution takes DELAY_S; with its flip companion brats_slow_flip4
FAST = "brats_fast"
DELAY_S = 2.0
MSD_ORDER = ("FLAIR", "T1w", "t1gd", "T2w")  # Task01_BrainTumour's dataset.json "modality"


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    repo = instant.write_repository(tmp_path_factory.mktemp("first_hour") / "repository", SLOW, delay_s=DELAY_S,
                                    server_flips=True)
    return instant.write_repository(repo, FAST)


@pytest.fixture(scope="module")
def server(repository):
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    with TritonServer(TritonServerConfig(repository, grpc_port=0, http_port=0, metrics_port=0)) as server:
        yield server


@pytest.fixture(scope="module")
def case(small_case_factory) -> Path:
    return small_case_factory(9301, SHAPE, parent="first_hour")


def test_the_http_port_is_named_with_the_grpc_address_to_use(server, case, tmp_path, capsys):
    out = tmp_path / "seg.nii.gz"
    code = cli.main(["segment", str(case), "-o", str(out), "--url", server.http_url, "--model", FAST])
    err = capsys.readouterr().err
    assert code == exit_codes.EXIT_SERVER, err
    assert f"{server.http_url} answers HTTP, not gRPC" in err and "--url 127.0.0.1:GRPC_PORT" in err, err
    assert "may expect TLS" not in err
    code = cli.main(["segment", str(case), "-o", str(out), "--url", f"http://{server.http_url}", "--model", FAST])
    err = capsys.readouterr().err
    assert code == exit_codes.EXIT_USAGE, err
    assert f"--url http://{server.http_url} is an HTTP address" in err and "gRPC" in err, err
    assert not out.exists()
    assert cli.main(["--quiet", "segment", str(case), "-o", str(out), "--url", server.grpc_url, "--model", FAST,
                     "--tta", "none"]) == exit_codes.EXIT_OK  # the gRPC address works


def test_a_one_tile_case_shows_elapsed_time_and_an_estimate_from_the_model(server, case, tmp_path, capsys,
                                                                            monkeypatch):
    """The first case on a fresh model says there is no estimate yet; the next one has the model's mean compute
    time. The content of the lines is asserted, not their timing."""
    monkeypatch.setattr(progress, "FIRST_S", 0.2)
    monkeypatch.setattr(progress, "EVERY_S", 0.5)
    companion = instant.companion_name(SLOW)
    lines = []
    for name in ("first", "second"):
        code = cli.main(["segment", str(case), "-o", str(tmp_path / f"{name}.nii.gz"), "--url", server.grpc_url,
                         "--model", SLOW, "--server-flips", "on"])
        err = capsys.readouterr().err
        assert code == exit_codes.EXIT_OK, err
        lines.append(err)
    first, second = lines
    assert f"{case.name}: 1 tile in 1 request to {companion}; no estimate yet ({companion} has computed nothing" \
        in first, first
    assert re.search(rf"{case.name}: \d+ s elapsed, 0/1 tile done; no estimate yet\n", first), first
    assert re.search(rf"{case.name}: 1 tile in 1 request to {companion}; estimate about \d+ s \(the server's mean "
                     rf"compute of {companion} over 1 inference\)", second), second
    assert re.search(rf"{case.name}: \d+ s elapsed, 0/1 tile done; (about \d+ s left of about \d+ s|over the "
                     rf"estimate of \d+ s)", second), second


def test_brats_serve_lists_the_models_it_serves_and_their_addresses(repository):
    cmd = [sys.executable, "-m", "brats_serve.cli", "--repository", str(repository), "--grpc-port", "0",
           "--http-port", "0", "--metrics-port", "0"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = []
        while not banner or banner[-1] and not banner[-1].startswith("Ctrl-C to stop"):
            banner.append(process.stdout.readline())
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, "".join(banner) + err
    grpc = re.search(r"gRPC +(127\.0\.0\.1:\d+) ", banner[1]).group(1)
    http = re.search(r"HTTP +(http://127\.0\.0\.1:\d+) ", banner[2]).group(1)
    assert banner[5].strip() == f"models ready (gRPC {grpc} --model NAME; HTTP {http}/v2/models/NAME):"
    models = {line.split()[0]: line.split(None, 1)[1].strip() for line in banner[6:-1]}
    assert models == {
        FAST: "network (brats-client --model)",
        SLOW: "network (brats-client --model)",
        instant.companion_name(SLOW): "network with flip4 test-time flips inside (brats-client uses it from "
                                         "another host, or with --server-flips on)",
    }, banner


def test_an_msd_batch_names_the_channel_that_fed_each_input(server, case, tmp_path, capsys):
    """A Decathlon dataset (4-D files, dataset.json): the log and each case's report say which channel of the file
    fed which input, not the same path four times."""
    names = {"FLAIR": "flair", "T1w": "t1", "t1gd": "t1ce", "T2w": "t2"}
    images = tmp_path / "Task01_BrainTumour" / "imagesTr"
    images.mkdir(parents=True)
    (images.parent / "dataset.json").write_text(json.dumps({
        "modality": {str(i): n for i, n in enumerate(MSD_ORDER)},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
    }))
    first = nib.load(str(case / f"{case.name}_t1.nii.gz"))
    stacked = np.stack([np.asanyarray(nib.load(str(case / f"{case.name}_{names[n]}.nii.gz")).dataobj)
                        for n in MSD_ORDER], axis=-1)
    for case_id in ("BRATS_001", "BRATS_002"):
        nib.save(nib.Nifti1Image(stacked, first.affine), images / f"{case_id}.nii.gz")
    out = tmp_path / "out"
    code = cli.main(["segment", str(images), "-o", str(out), "--url", server.grpc_url, "--model", FAST,
                     "--tta", "none"])
    err = capsys.readouterr().err
    assert code == exit_codes.EXIT_OK, err
    dataset = images.parent / "dataset.json"
    for case_id in ("BRATS_001", "BRATS_002"):
        path = images / f"{case_id}.nii.gz"
        report = json.loads((out / f"{case_id}.json").read_text())
        assert report["inputs"] == {"t1": f"{path}[..., 1]", "t1ce": f"{path}[..., 2]", "t2": f"{path}[..., 3]",
                                    "flair": f"{path}[..., 0]"}
        assert (f"{case_id}: channels of {path}: t1 <- [..., 1], t1ce <- [..., 2], t2 <- [..., 3], "
                f"flair <- [..., 0] (order from {dataset})") in err, err
