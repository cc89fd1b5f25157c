"""Every field of a case's report is explained (brats_client.report_fields: segment --help, and the README), and
nothing explained is missing from the report."""

from __future__ import annotations

import re
from pathlib import Path

from brats_client import cli, exit_codes, pipeline, report_fields
from brats_client.contract import CHANNELS
from brats_client.local import LocalTransport

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_report_has_exactly_the_explained_fields(tmp_path, brain_case, above_mean):
    outputs = pipeline.CaseOutputs(tmp_path / "seg.nii.gz", report=tmp_path / "report.json")
    with LocalTransport(above_mean) as transport:
        report = pipeline.segment_case(brain_case, outputs, transport, pipeline.SegmentOptions(tta="flip4", tile=32))
    assert list(report) == list(report_fields.FIELDS)
    assert report["preprocess"]["channels"] == list(CHANNELS)  # what mean and std are per
    assert len(report["preprocess"]["mean"]) == len(CHANNELS)
    passes = 4
    assert report["tiling_waste"] == report["voxels_computed"] / passes / report["crop_voxels"] >= 1.0


def test_segment_help_and_the_readme_explain_every_field(capsys):
    assert cli.main(["segment", "--help"]) == exit_codes.EXIT_OK
    help_text = capsys.readouterr().out
    readme = README.read_text()
    section = readme[readme.index("### The report"):]
    section = section[: section.index("\n## ")]
    for name in report_fields.FIELDS:
        assert re.search(rf"^  {name}: ", help_text, re.MULTILINE), name
        assert f"`{name}`" in section, f"README's report section does not explain {name}"
