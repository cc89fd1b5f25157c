"""gRPC over TLS: the local ``tritonserver`` with Triton's ``--grpc-use-ssl`` options and certificates made in the
test by the ``openssl`` command (a CA, a server certificate for 127.0.0.1 / localhost, a client certificate, and an
unrelated CA), and ``brats-client segment --ssl``.

The launcher polls readiness over HTTP, which stays plain; only gRPC is encrypted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from brats_client import cli, exit_codes

pytestmark = pytest.mark.integration

MODEL = "brats_onnx"
FAST = ["--tta", "none", "--tile", "full", "--retries", "0"]


def _openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=60)


def _key(name: str, cwd: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{name}.key", cwd=cwd)


def _ca(name: str, cwd: Path) -> None:
    _key(name, cwd)
    _openssl("req", "-x509", "-new", "-key", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=cwd)


def _leaf(name: str, ca: str, extensions: str, cwd: Path) -> None:
    _key(name, cwd)
    _openssl("req", "-new", "-key", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=cwd)
    (cwd / f"{name}.ext").write_text(extensions)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=cwd)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """ca.crt signs server.crt (127.0.0.1, localhost) and client.crt; other_ca.crt signs other_client.crt."""
    assert shutil.which("openssl"), "the openssl command is needed to make test certificates"
    folder = tmp_path_factory.mktemp("pki")
    _ca("ca", folder)
    _ca("other_ca", folder)
    _leaf("server", "ca", "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
          "extendedKeyUsage=serverAuth\n", folder)
    _leaf("client", "ca", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n", folder)
    _leaf("other_client", "other_ca", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n", folder)
    return folder


@pytest.fixture(scope="module")
def case(small_case_factory) -> Path:
    return small_case_factory(9201, (64, 64, 48), parent="tls")


def _tls_server(model_repository, pki: Path, mutual: bool):
    from brats_serve.launcher import TritonServer
    from brats_serve.server_config import TritonServerConfig

    args = [f"--grpc-server-cert={pki / 'server.crt'}", f"--grpc-server-key={pki / 'server.key'}",
            f"--grpc-root-cert={pki / 'ca.crt'}"]
    args.append("--grpc-use-ssl-mutual=true" if mutual else "--grpc-use-ssl=true")
    return TritonServer(TritonServerConfig(
        model_repository, models=[MODEL], grpc_port=0, http_port=0, metrics_port=0, extra_args=args
    ))


@pytest.fixture
def tls_server(model_repository, pki):
    with _tls_server(model_repository, pki, mutual=False) as server:
        yield server


@pytest.fixture
def mtls_server(model_repository, pki):
    with _tls_server(model_repository, pki, mutual=True) as server:
        yield server


def _segment(case: Path, out: Path, server, *tls: str | Path) -> int:
    return cli.main(["--quiet", "segment", str(case), "-o", str(out), "--url", server.grpc_url, "--model", MODEL,
                     *FAST, *map(str, tls)])


def _error_lines(err: str) -> list[str]:
    """stderr without the warning that the small test case is not on the BraTS grid."""
    return [line for line in err.strip().splitlines() if "the network was trained only on BraTS data" not in line]


def _refused(capsys, code: int, out: Path) -> str:
    err = capsys.readouterr().err
    assert code == exit_codes.EXIT_SERVER, err
    assert "Traceback" not in err and len(_error_lines(err)) == 1, err
    assert not out.exists()
    return err


def test_tls_client_that_trusts_the_ca_succeeds_and_others_are_refused(tls_server, pki, case, tmp_path, capsys):
    out = tmp_path / "seg.nii.gz"
    assert _segment(case, out, tls_server, "--ssl", "--root-certificates", pki / "ca.crt") == exit_codes.EXIT_OK
    assert out.is_file()
    capsys.readouterr()

    refused = tmp_path / "refused.nii.gz"
    # the system's trust store does not know the test CA
    err = _refused(capsys, _segment(case, refused, tls_server, "--ssl"), refused)
    assert f"the TLS handshake with {tls_server.grpc_url} failed" in err and "CERTIFICATE_VERIFY_FAILED" in err, err
    assert "--root-certificates" in err
    # a CA that did not sign the server certificate
    err = _refused(capsys, _segment(case, refused, tls_server, "--ssl", "--root-certificates",
                                    pki / "other_ca.crt"), refused)
    assert "the TLS handshake" in err and "CERTIFICATE_VERIFY_FAILED" in err, err
    # plain text to a TLS port
    err = _refused(capsys, _segment(case, refused, tls_server), refused)
    assert "closed the connection" in err and "it may expect TLS: pass --ssl" in err, err


def test_the_cli_prints_one_line_for_a_refused_handshake(tls_server, pki, case, tmp_path):
    """As a command (gRPC's C core would add its own log line to stderr unless GRPC_VERBOSITY is set)."""
    env = {k: v for k, v in os.environ.items() if k != "GRPC_VERBOSITY"}
    out = tmp_path / "seg.nii.gz"
    run = subprocess.run(
        [sys.executable, "-m", "brats_client.cli", "--quiet", "segment", str(case), "-o", str(out), "--url",
         tls_server.grpc_url, "--model", MODEL, *FAST, "--ssl", "--root-certificates", str(pki / "other_ca.crt")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert run.returncode == exit_codes.EXIT_SERVER, run.stderr
    assert len(_error_lines(run.stderr)) == 1, run.stderr
    assert "the TLS handshake" in run.stderr and not out.exists()


def test_mutual_tls_needs_a_client_certificate_from_the_ca(mtls_server, pki, case, tmp_path, capsys):
    out = tmp_path / "seg.nii.gz"
    trust = ["--ssl", "--root-certificates", pki / "ca.crt"]
    code = _segment(case, out, mtls_server, *trust, "--private-key", pki / "client.key",
                    "--certificate-chain", pki / "client.crt")
    assert code == exit_codes.EXIT_OK, capsys.readouterr().err
    assert out.is_file()
    capsys.readouterr()

    refused = tmp_path / "refused.nii.gz"
    for client in ([], ["--private-key", pki / "other_client.key", "--certificate-chain", pki / "other_client.crt"]):
        # no client certificate; one signed by another CA: the server ends the handshake
        err = _refused(capsys, _segment(case, refused, mtls_server, *trust, *client), refused)
        assert "closed the connection" in err and "--private-key and --certificate-chain" in err, err


def test_tls_options_are_checked_before_connecting(pki, case, tmp_path, capsys):
    """Missing files are input errors (exit 3) naming the file; TLS files without --ssl, or half a client identity,
    are usage errors (exit 2): a user who passes a CA but forgets --ssl must not silently get plain text."""
    from brats_serve.ports import free_port

    class Dead:
        grpc_url = f"127.0.0.1:{free_port()}"

    out = tmp_path / "seg.nii.gz"
    missing = tmp_path / "nope.crt"
    assert _segment(case, out, Dead, "--ssl", "--root-certificates", missing) == exit_codes.EXIT_INPUT
    err = capsys.readouterr().err
    assert f"--root-certificates {missing} does not exist" in err and len(err.strip().splitlines()) == 1
    assert _segment(case, out, Dead, "--root-certificates", pki / "ca.crt") == exit_codes.EXIT_USAGE
    assert "without --ssl" in capsys.readouterr().err
    assert _segment(case, out, Dead, "--ssl", "--private-key", pki / "client.key") == exit_codes.EXIT_USAGE
    assert "both --private-key and --certificate-chain" in capsys.readouterr().err
    assert not out.exists()
