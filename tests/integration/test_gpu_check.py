"""benchmarks/gpu_check.py on its CPU path (``--device cpu --size 32``): the script the GPU table comes from runs."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gpu_check  # noqa: E402


@pytest.mark.slow
def test_cpu_run_prints_one_table_with_every_check(capsys):
    assert gpu_check.main(["--device", "cpu", "--size", "32", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ")][2:]  # after the header and rule
    assert [r.split(" | ")[0].lstrip("| ") for r in rows] == [
        "TorchScript vs eager", "latency per case, flip4", "latency per case, flip4",
        "peak memory, one forward", "peak memory, one forward", "peak memory, one forward",
        "FP16 vs FP32 labels", "BF16 vs FP32 labels"]
    parity = float(re.search(r"max abs diff ([0-9.e+-]+)", rows[0]).group(1))
    assert parity <= 1e-4  # the export's own tolerance
    assert all(float(s) > 0 for s in re.findall(r"([0-9.]+) s \|", "\n".join(rows[1:3])))
    for row in rows[6:]:
        if "unsupported" in row:  # autocast of that dtype missing on this CPU build: said, not hidden
            continue
        dice = [float(d) for d in re.search(r"Dice WT/TC/ET ([0-9./]+)", row).group(1).split("/")]
        assert min(dice) >= 0.99, row


def test_bad_options_exit_2(capsys):
    assert gpu_check.main(["--device", "cpu", "--size", "40"]) == 2
    assert "--size must be a multiple of 16" in capsys.readouterr().err
    assert gpu_check.main(["--device", "cpu", "--repeats", "0"]) == 2


def test_central_window_of_the_crop_keeps_the_middle():
    crop = gpu_check.phantom_crop(None)
    window = gpu_check.phantom_crop(32)
    assert window.shape == (4, 32, 32, 32) and crop.shape[0] == 4
    starts = [(n - 32) // 2 for n in crop.shape[1:]]
    assert (window == crop[:, starts[0]:starts[0] + 32, starts[1]:starts[1] + 32, starts[2]:starts[2] + 32]).all()
