"""Batches through the real ``tritonserver``: overlapped cases (``--cases-in-memory``) write what one case after
another writes, keep resume and failure behaviour, and ``--num-parts/--part-id`` split a folder over machines.

They use an instant stand-in model (benchmarks/instant.py, a python-backend model answering
``INPUT__0[:, :3] > 0``) in a server of this module, with the client's defaults (whole-crop tile, four flips, two
requests in flight, shared memory auto); one test also uses its server-side-flip companion. The default batch
through the exported network is in test_client_segment.py; the stages' threads and bounds are unit-tested with
fakes in tests/unit/test_batch_stages.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from brats_client import cli, exit_codes
from brats_serve import instant

pytestmark = pytest.mark.integration

SHAPE = (64, 64, 48)
FLIPPING = "brats_instant_sf"  # the instant model with a server-side-flip companion


@pytest.fixture(scope="module")
def instant_server(tmp_path_factory):
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    repo = instant.write_repository(tmp_path_factory.mktemp("instant") / "repository")
    instant.write_repository(repo, FLIPPING, server_flips=True)  # and its companion FLIPPING_flip4
    with TritonServer(TritonServerConfig(repo, grpc_port=0, http_port=0, metrics_port=0)) as server:
        yield server


@pytest.fixture(scope="module")
def batch_dir(small_case_factory) -> Path:
    """Four small phantom cases in one folder, one of them larger than the others."""
    for seed, shape in ((9201, SHAPE), (9202, (96, 80, 64)), (9203, SHAPE), (9204, SHAPE)):
        folder = small_case_factory(seed, shape, parent="batch")
    return folder.parent


def segment(source: Path, out: Path, url: str, model: str, *extra: str) -> int:
    return cli.main(["--quiet", "segment", str(source), "-o", str(out), "--url", url, "--model", model, *extra])


def files_in(folder: Path) -> list[str]:
    """Every entry, hidden temporary files included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def without_timing(report: dict) -> dict:
    return {k: v for k, v in report.items() if k not in ("time_s", "server_compute_s", "outputs")}


def test_overlapped_batch_writes_what_the_sequential_one_writes(batch_dir, instant_server, tmp_path):
    url, model = instant_server.grpc_url, instant.NAME
    seq, overlapped = tmp_path / "sequential", tmp_path / "overlapped"
    assert segment(batch_dir, seq, url, model, "--cases-in-memory", "1") == exit_codes.EXIT_OK
    assert segment(batch_dir, overlapped, url, model) == exit_codes.EXIT_OK  # the default overlaps
    names = files_in(seq)
    assert names == files_in(overlapped) and len(names) == 8, names
    for name in names:
        if name.endswith(".json"):
            a, b = (json.loads((d / name).read_text()) for d in (seq, overlapped))
            assert without_timing(a) == without_timing(b), name
            assert set(b["time_s"]) == {"load", "preprocess", "inference", "postprocess", "write", "total"}
            continue
        a, b = nib.load(str(seq / name)), nib.load(str(overlapped / name))
        np.testing.assert_array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj), err_msg=name)
        np.testing.assert_array_equal(a.affine, b.affine)
        assert a.header.binaryblock == b.header.binaryblock, name
    labels = [np.asanyarray(nib.load(str(overlapped / n)).dataobj) for n in names if n.endswith(".nii.gz")]
    assert all((lab > 0).sum() > 100 for lab in labels), "each case gets labels"
    assert len({lab.tobytes() for lab in labels}) == len(labels), "and its own labels"


def test_a_batch_uses_the_instant_companion_for_server_flips(batch_dir, instant_server, tmp_path):
    """The stand-in companion (benchmarks/bench_batch.py's server-flip rows): one request per tile, the labels of
    the client's own flips (--server-flips on: on this host auto flips in the client); --server-flips off keeps the
    client's four."""
    url = instant_server.grpc_url
    client, server, off = tmp_path / "client", tmp_path / "server", tmp_path / "off"
    assert segment(batch_dir, client, url, instant.NAME) == exit_codes.EXIT_OK  # no companion: the client flips
    assert segment(batch_dir, server, url, FLIPPING, "--server-flips", "on") == exit_codes.EXIT_OK
    assert segment(batch_dir, off, url, FLIPPING, "--server-flips", "off") == exit_codes.EXIT_OK
    names = files_in(client)
    assert names == files_in(server) == files_in(off) and len(names) == 8, names
    for name in names:
        if name.endswith(".nii.gz"):
            reference = np.asanyarray(nib.load(str(client / name)).dataobj)
            for folder in (server, off):
                np.testing.assert_array_equal(np.asanyarray(nib.load(str(folder / name)).dataobj), reference,
                                              err_msg=f"{folder.name}/{name}")
            continue
        a, b, c = (json.loads((d / name).read_text()) for d in (client, server, off))
        assert (a["server"]["model"], a["server"]["server_flips"], a["requests"]) == (
            instant.NAME, None, 4 * a["tiles"])
        assert (b["server"]["model"], b["server"]["server_flips"], b["requests"]) == (
            instant.companion_name(FLIPPING), "flip4", b["tiles"])
        assert (c["server"]["model"], c["server"]["server_flips"], c["requests"]) == (FLIPPING, None, 4 * c["tiles"])


def test_failed_cases_are_reported_and_a_rerun_redoes_only_them(batch_dir, instant_server, tmp_path, capsys):
    """A truncated modality fails its case at loading, an existing report (a folder) fails another before any
    request; the other cases are written, exit 6, nothing half-written. After the fix, a rerun does only those."""
    import shutil

    source = tmp_path / "cases"
    shutil.copytree(batch_dir, source)
    ids = sorted(p.name for p in source.iterdir())
    bad_input, bad_output = ids[1], ids[2]
    t2 = source / bad_input / f"{bad_input}_t2.nii.gz"
    original = t2.read_bytes()
    t2.write_bytes(original[: len(original) // 2])
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    (out / f"{bad_output}.json").mkdir(parents=True)
    url, model = instant_server.grpc_url, instant.NAME

    code = segment(source, out, url, model, "--report", str(summary))
    err = capsys.readouterr().err
    assert code == exit_codes.EXIT_PARTIAL, err
    result = json.loads(summary.read_text())
    assert result["done"] == [ids[0], ids[3]] and result["skipped"] == []
    assert [f["case"] for f in result["failed"]] == [bad_input, bad_output]
    assert str(t2) in result["failed"][0]["error"] and "truncated or corrupt" in result["failed"][0]["error"]
    assert f"{bad_output}.json" in result["failed"][1]["error"]
    assert f"{bad_input} failed: " in err and f"failed: {bad_output}: " in err
    expected = sorted([f"{ids[0]}.json", f"{ids[0]}.nii.gz", f"{ids[3]}.json", f"{ids[3]}.nii.gz",
                       f"{bad_output}.json"])
    assert files_in(out) == expected, "no partial or temporary output may be left"
    kept = {name: (out / name).stat().st_mtime_ns for name in expected if name.endswith(".nii.gz")}

    t2.write_bytes(original)
    (out / f"{bad_output}.json").rmdir()
    code = segment(source, out, url, model, "--report", str(summary))
    assert code == exit_codes.EXIT_OK, capsys.readouterr().err
    result = json.loads(summary.read_text())
    assert result == {"done": [bad_input, bad_output], "skipped": [ids[0], ids[3]], "failed": []}
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept
    assert len(files_in(out)) == 8


def test_parts_cover_the_batch_once_and_resume_per_part(batch_dir, instant_server, tmp_path, capsys):
    url, model = instant_server.grpc_url, instant.NAME
    out = tmp_path / "out"
    ids = sorted(p.name for p in batch_dir.iterdir())
    parts = []
    for k in range(3):
        summary = tmp_path / f"part-{k}.json"
        code = segment(batch_dir, out, url, model, "--num-parts", "3", "--part-id", str(k), "--report", str(summary))
        assert code == exit_codes.EXIT_OK, capsys.readouterr().err
        parts.append(json.loads(summary.read_text()))
    assert [p["part"] for p in parts] == [{"id": k, "of": 3, "cases": n} for k, n in enumerate((2, 1, 1))]
    done = [case for p in parts for case in p["done"]]
    assert sorted(done) == ids and len(done) == len(ids)
    assert all(p["skipped"] == [] and p["failed"] == [] for p in parts)
    assert files_in(out) == sorted(f"{i}{ext}" for i in ids for ext in (".json", ".nii.gz"))

    # a part run again (a restarted pod) redoes its missing case only
    lost = parts[0]["done"][0]
    (out / f"{lost}.nii.gz").unlink()
    (out / f"{lost}.json").unlink()
    summary = tmp_path / "again.json"
    code = segment(batch_dir, out, url, model, "--num-parts", "3", "--part-id", "0", "--report", str(summary))
    assert code == exit_codes.EXIT_OK
    again = json.loads(summary.read_text())
    assert again["done"] == [lost] and again["skipped"] == parts[0]["done"][1:] and again["failed"] == []


@pytest.mark.parametrize(("extra", "message"), [
    (("--part-id", "1"), "--num-parts and --part-id go together"),
    (("--num-parts", "2", "--part-id", "2"), "--part-id must be in [0, 1] for --num-parts 2, got 2"),
    (("--cases-in-memory", "0"), "--cases-in-memory must be >= 1, got 0"),
])
def test_bad_batch_options_are_usage_errors_before_any_request(batch_dir, tmp_path, capsys, extra, message):
    from brats_serve.ports import free_port

    out = tmp_path / "out"
    code = segment(batch_dir, out, f"127.0.0.1:{free_port()}", "brats_onnx", *extra)
    err = capsys.readouterr().err
    assert code == exit_codes.EXIT_USAGE, err
    assert message in err and "no Triton server" not in err
    assert not out.exists()


def test_parts_of_one_case_are_a_usage_error(batch_dir, tmp_path, capsys):
    from brats_serve.ports import free_port

    case = sorted(batch_dir.iterdir())[0]
    code = segment(case, tmp_path / "seg.nii.gz", f"127.0.0.1:{free_port()}", "brats_onnx",
                   "--num-parts", "2", "--part-id", "0")
    assert code == exit_codes.EXIT_USAGE
    assert "split a folder of cases; the input is one case" in capsys.readouterr().err
