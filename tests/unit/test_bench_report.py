"""bench_end_to_end rewrites its own sections of docs/benchmarks.md and keeps the others."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_end_to_end  # noqa: E402


def test_other_sections_keeps_only_what_the_benchmark_does_not_write() -> None:
    page = "\n".join([
        "# End-to-end benchmark", "old header", "## Machine", "old cpu", "## Results", "| old | table |",
        "## GPU check (`benchmarks/gpu_check.py`)", "gpu rows", "## Targets (issue 6, item 3)", "old targets",
        "## Bytes on the wire per case", "bytes rows", "",
    ])
    kept = bench_end_to_end.other_sections(page)
    assert kept == "## GPU check (`benchmarks/gpu_check.py`)\ngpu rows\n## Bytes on the wire per case\nbytes rows\n"
    assert bench_end_to_end.other_sections("") == ""
    assert all(s in bench_end_to_end.SECTIONS for s in ("## Machine", "## Results", "## Targets (issue 6, item 3)"))


def test_bench_precision_replaces_its_own_section_and_keeps_the_rest(tmp_path) -> None:
    import bench_precision

    page = tmp_path / "benchmarks.md"
    page.write_text("# End-to-end benchmark\nhead\n## Results\nrows\n" + bench_precision.SECTION + "\nold\n## GPU\ng\n")
    bench_precision.write_section(page, bench_precision.SECTION + "\nnew\n")
    assert page.read_text() == ("# End-to-end benchmark\nhead\n## Results\nrows\n## GPU\ng\n\n"
                                + bench_precision.SECTION + "\nnew\n")
    fresh = tmp_path / "fresh.md"
    bench_precision.write_section(fresh, bench_precision.SECTION + "\nrows\n")
    assert fresh.read_text() == bench_precision.SECTION + "\nrows\n"
