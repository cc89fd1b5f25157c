"""``brats-serve --model-config-name bf16`` warns where the CPU has no bf16 instructions."""

from __future__ import annotations

import logging

import pytest
from brats_client import exit_codes
from brats_serve import cli

AVX512_NO_BF16 = {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"}


@pytest.mark.parametrize(("flags", "expected"), [
    (AVX512_NO_BF16, "emulates bf16 on AVX-512"),
    ({"avx2", "fma"}, "keeps f32"),
    (AVX512_NO_BF16 | {"avx512_bf16"}, None),
    ({"avx2", "amx_bf16", "amx_tile"}, None),
    (None, None),  # /proc/cpuinfo unreadable: no guess
])
def test_bf16_warning_by_cpu_flags(flags, expected):
    warning = cli.bf16_warning(flags)
    if expected is None:
        assert warning is None
    else:
        assert expected in warning and "avx512_bf16 nor amx_bf16" in warning and "config.pbtxt" in warning


def test_cpu_flags_reads_the_first_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cli.cpu_flags(str(info)) == {"fpu", "avx512f", "avx512_bf16"}
    assert cli.cpu_flags(str(tmp_path / "missing")) is None


@pytest.mark.parametrize(("config_name", "warned"), [("bf16", True), ("gpu", False), (None, False)])
def test_main_warns_before_starting(tmp_path, monkeypatch, caplog, config_name, warned):
    monkeypatch.setattr(cli, "cpu_flags", lambda: AVX512_NO_BF16)
    argv = ["--repository", str(tmp_path / "no-such-repository")]
    if config_name:
        argv += ["--model-config-name", config_name]
    with caplog.at_level(logging.WARNING, logger="brats_serve"):
        assert cli.main(argv) == exit_codes.EXIT_INPUT  # the repository is missing: nothing is launched
    assert any("emulates bf16" in r.getMessage() for r in caplog.records) == warned
