"""``brats-client perf``'s input data: a real tile of exactly the requested edge."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
from brats_client import perf
from brats_client.contract import INPUT_NAME


def _case(folder, shape):
    """A BraTS 2019 case whose brain fills the whole volume (so the crop is the volume, padded to 16)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("t1", "t1ce", "t2", "flair"):
        data = rng.uniform(1, 100, shape).astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(folder / f"case_{name}.nii.gz"))
    return folder


def test_the_tile_has_the_requested_edge_on_every_axis(tmp_path):
    # 80 x 64 x 80 with tile 64: a segmentation plan shrinks the edge to 48 where two tiles are needed anyway
    case = _case(tmp_path / "case", (80, 64, 80))
    shape = perf.write_real_tile(case, tmp_path / "data", 64)
    assert shape == (4, 64, 64, 64)
    data = np.fromfile(tmp_path / "data" / INPUT_NAME, dtype=np.float32)
    assert data.size == 4 * 64**3


def test_a_crop_smaller_than_the_tile_is_padded_with_the_background_and_said(tmp_path, caplog):
    case = _case(tmp_path / "case", (48, 64, 40))  # padded crop 48 x 64 x 48
    with caplog.at_level(logging.INFO, logger="brats_client.perf"):
        shape = perf.write_real_tile(case, tmp_path / "data", 64)
    assert shape == (4, 64, 64, 64)
    tile = np.fromfile(tmp_path / "data" / INPUT_NAME, dtype=np.float32).reshape(shape)
    past = tile[:, 48:]  # beyond the crop along the first axis: one background value per channel
    assert np.all(past == past[:, :1, :1, :1])
    assert not np.allclose(past[:, 0, 0, 0], 0)  # the normalised background (-mean / std), not raw zeros
    assert "48x64x48" in caplog.text and "padded" in caplog.text


def test_case_files_as_pipeline_input_data(brain_case, tmp_path):
    """Each file as one BYTES element in perf_analyzer's raw form: its 32-bit little-endian length, then itself."""
    import base64
    import json
    import struct

    args = perf.write_case_files(brain_case, tmp_path / "data.json")
    assert args == ["--input-data", str(tmp_path / "data.json")]
    entry = json.loads((tmp_path / "data.json").read_text())["data"][0]
    for ch, path in brain_case.paths.items():
        raw = base64.b64decode(entry[ch]["b64"])
        assert struct.unpack("<I", raw[:4])[0] == path.stat().st_size and raw[4:] == path.read_bytes()
        assert entry[ch]["shape"] == [1]


def test_perf_analyzer_gets_the_server_options_of_the_command_line_tls_included():
    from brats_client import ServerOptions, cli

    args = cli.build_parser().parse_args(["perf", "case", "--url", "h:9", "--model", "m", "--model-version", "2",
                                          "--ssl", "--root-certificates", "ca.pem", "--private-key", "k.pem",
                                          "--certificate-chain", "c.pem"])
    server = cli._server_options(args)
    assert server == ServerOptions(url="h:9", model="m", model_version="2", ssl=True, root_certificates="ca.pem",
                                   private_key="k.pem", certificate_chain="c.pem")
    assert perf.server_args(server) == [
        "-m", "m", "-u", "h:9", "-i", "grpc", "-x", "2", "--ssl-grpc-use-ssl", "true",
        "--ssl-grpc-root-certifications-file", "ca.pem", "--ssl-grpc-private-key-file", "k.pem",
        "--ssl-grpc-certificate-chain-file", "c.pem"]
    assert perf.server_args(ServerOptions()) == ["-m", "brats_openvino", "-u", "127.0.0.1:8001", "-i", "grpc"]
