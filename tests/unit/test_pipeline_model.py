"""What brats-export writes for the served pipeline (brats_export.pipeline_model): the config clients detect it by,
the network table its BLS calls follow, and the code it carries."""

from __future__ import annotations

import json

import pytest
from brats_client.served import NETWORK_KEY, NETWORKS_KEY, PIPELINE, PIPELINE_KEY
from brats_export import pipeline_model
from brats_export.cli import main
from brats_export.configs import parse_config
from brats_export.errors import RepositoryError


def test_config_marks_the_pipeline_and_tables_the_networks_as_their_configs_say():
    cfg = parse_config(pipeline_model.config_text(["onnx", "onnx_flip4", "torchscript"]))
    assert cfg.backend == "python" and cfg.max_batch_size == 0
    assert [i.name for i in cfg.input] == ["t1", "t1ce", "t2", "flair"]
    assert [o.name for o in cfg.output] == ["segmentation", "report"]
    assert cfg.parameters[PIPELINE_KEY].string_value == PIPELINE
    assert cfg.parameters[NETWORK_KEY].string_value == "brats_onnx"  # openvino was not exported
    assert json.loads(cfg.parameters[NETWORKS_KEY].string_value) == {
        "brats_onnx": {"max_batch_size": 4, "companion": "brats_onnx_flip4"},
        "brats_onnx_flip4": {"max_batch_size": 1, "server_flips": "flip4"},
        "brats_torchscript": {"max_batch_size": 4},
    }


def test_configs_only_with_pipeline_writes_the_model_and_its_code(tmp_path):
    repo = tmp_path / "repo"
    assert main(["--configs-only", "--pipeline", "--repository", str(repo), "--formats", "openvino", "--quiet"]) == 0
    version = repo / pipeline_model.NAME / "1"
    assert (version / "model.py").read_text().count("from brats_client.served import TritonPythonModel") == 1
    assert (version / "brats_client" / "served.py").is_file() and not list(version.rglob("__pycache__"))
    cfg = parse_config((repo / pipeline_model.NAME / "config.pbtxt").read_text())
    assert cfg.parameters[NETWORK_KEY].string_value == "brats_openvino"
    # an existing version is kept unless --force
    assert main(["--configs-only", "--pipeline", "--repository", str(repo), "--formats", "openvino"]) == 5
    assert main(["--configs-only", "--pipeline", "--force", "--repository", str(repo), "--formats", "openvino"]) == 0


def test_no_network_no_pipeline(tmp_path):
    with pytest.raises(RepositoryError, match="needs a network model"):
        pipeline_model.write(tmp_path, [])
