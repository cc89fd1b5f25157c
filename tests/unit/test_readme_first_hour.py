"""The README's first hour names every model that `make demo` exports and `brats-serve` then serves."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch  # brats_export's model catalogue and the pipeline model's name

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_first_hour_names_every_model_make_demo_exports():
    from brats_demo import run
    from brats_export import pipeline_model
    from brats_export.catalogue import MODELS, model_keys

    model_format = inspect.signature(run.run_demo).parameters["model_format"].default
    names = [MODELS[key].name for key in model_keys([model_format])] + [pipeline_model.NAME]
    text = README.read_text()
    first_hour = text[text.index("## The first hour"):]
    first_hour = first_hour[: first_hour.index("\n## ", 1)]
    assert [name for name in names if f"`{name}`" not in first_hour] == []
    assert "--pipeline" in inspect.getsource(run._export)  # the demo's export writes brats_segment
