"""What brats-export writes for the served pipeline (brats_export.pipeline_model): the config clients detect it by,
the networks its BLS calls go to (read live by brats_client.served_networks), its queue, and the code it carries
with its version and hash."""

from __future__ import annotations

import json
import re

import pytest
from brats_client import identity, served_networks
from brats_client.served import NETWORK_KEY, NETWORKS_KEY, PIPELINE, PIPELINE_KEY
from brats_export import pipeline_model
from brats_export.catalogue import FORMATS
from brats_export.cli import build_parser, main
from brats_export.configs import parse_config, write_configs
from brats_export.errors import RepositoryError
from tritonclient.grpc import model_config_pb2 as mc


def test_config_marks_the_pipeline_names_its_networks_and_bounds_its_queue():
    cfg = parse_config(pipeline_model.config_text(["onnx", "onnx_flip4", "torchscript"]))
    assert cfg.backend == "python" and cfg.max_batch_size == 0
    assert [i.name for i in cfg.input] == ["t1", "t1ce", "t2", "flair"]
    assert [o.name for o in cfg.output] == ["segmentation", "report"]
    assert cfg.parameters[PIPELINE_KEY].string_value == PIPELINE
    assert cfg.parameters[NETWORK_KEY].string_value == "brats_onnx"  # openvino was not exported
    # the names only: their configs are read from the repository when the model loads
    assert json.loads(cfg.parameters[NETWORKS_KEY].string_value) == ["brats_onnx", "brats_onnx_flip4",
                                                                      "brats_torchscript"]
    groups = [(g.count, g.kind) for g in cfg.instance_group]
    assert groups == [(pipeline_model.INSTANCES, mc.ModelInstanceGroup.KIND_CPU)]
    policy = cfg.dynamic_batching.default_queue_policy
    assert policy.max_queue_size == pipeline_model.MAX_QUEUE and policy.timeout_action == mc.ModelQueuePolicy.REJECT
    assert policy.default_timeout_microseconds == pipeline_model.QUEUE_TIMEOUT_S * 1e6 and policy.allow_timeout_override
    assert list(cfg.dynamic_batching.preferred_batch_size) == [] and cfg.max_batch_size == 0  # a queue, no batches


def test_config_records_the_version_and_the_hash_of_the_client_code_it_carries(tmp_path):
    repo = tmp_path / "repo"
    folder = pipeline_model.write(repo, ["openvino"], settings=pipeline_model.PipelineSettings(3, 5, 7.5))
    cfg = parse_config((folder / "config.pbtxt").read_text())
    carried = identity.package_sha256(folder / "1" / "brats_client")
    assert cfg.parameters[identity.CLIENT_SHA256_KEY].string_value == carried == identity.package_sha256()
    assert cfg.parameters[identity.VERSION_KEY].string_value == identity.version() != identity.UNKNOWN
    assert cfg.instance_group[0].count == 3 and cfg.dynamic_batching.default_queue_policy.max_queue_size == 5
    entry = json.loads((repo / "manifest.json").read_text())["models"][pipeline_model.NAME]
    assert entry["brats_client_sha256"] == carried and entry["networks"] == ["brats_openvino"]
    assert (entry["instances"], entry["max_queue_size"], entry["queue_timeout_s"]) == (3, 5, 7.5)


def test_the_pipelines_reader_reads_every_config_brats_export_writes_as_protobuf_does(tmp_path):
    """served_networks parses config.pbtxt without protobuf (inside Triton); it must agree with protobuf on what
    the pipeline uses, for every model and variant brats-export writes, --fixed-size included."""
    for fixed in (None, 128):
        repo = tmp_path / f"repo{fixed}"
        written = write_configs(repo, FORMATS, fixed_size=fixed)
        assert len(written) >= 6
        for path in written:
            text = path.read_text()
            cfg = parse_config(text)
            info = served_networks.info_from_config(served_networks.parse_text_config(text), cfg.name)
            assert info.max_batch_size == cfg.max_batch_size, path
            assert info.parameters == {k: v.string_value for k, v in cfg.parameters.items()}, path
            assert (info.input_name, info.output_name) == (cfg.input[0].name, cfg.output[0].name), path
            dims = tuple(cfg.input[0].dims)[-3:]
            assert info.fixed_spatial == (None if -1 in dims else dims), path
            assert (info.fixed_spatial is not None) == (fixed is not None), path


def test_the_export_options_defaults_are_the_pipeline_models():
    text = build_parser().format_help()
    defaults = pipeline_model.PipelineSettings()
    for flag, value in (("--pipeline-instances", defaults.instances), ("--pipeline-queue", defaults.max_queue),
                        ("--pipeline-queue-timeout-s", defaults.queue_timeout_s)):
        assert re.search(rf"{flag} \w+\s+.*?\(default: {value:g}[;)]", text, re.S), flag
    with pytest.raises(RepositoryError, match="instances must be >= 1, got 0"):
        pipeline_model.PipelineSettings(instances=0)


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
