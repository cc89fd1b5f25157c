"""``brats-serve`` / ``TritonServer`` on a repository whose models have a config but no model files (a fresh clone's
``model_repository/``, which holds config.pbtxt files only): refused before Triton starts, naming the models and
what writes their files; without ``--models``, the models that have files are served and the others named once.
And ``brats-serve --help``: plain text (no RST markup) with a default for every option.

No Triton here: ``TritonServer._launch`` is replaced by one that records the command and fails, so a test that
got that far shows that the pre-flight checks let the server start. The same with a real server:
``tests/integration/test_serve.py::test_models_without_files_are_left_out_and_named_once``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from brats_client import exit_codes
from brats_serve import cli, install
from brats_serve.errors import ServeError
from brats_serve.launcher import TritonServer
from brats_serve.repository_check import has_model_files, models_without_files
from brats_serve.server_config import TritonServerConfig

CHECKOUT = Path(__file__).resolve().parents[2]


def write_model(repo: Path, name: str, files: tuple[str, ...] = ()) -> Path:
    """``repo/name/config.pbtxt`` and ``repo/name/1/`` holding ``files`` (empty: a config without weights)."""
    version = repo / name / "1"
    version.mkdir(parents=True)
    (repo / name / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "onnxruntime"\n')
    for file in files:
        (version / file).write_bytes(b"weights")
    return repo / name


class LaunchedError(Exception):
    """Raised by the stand-in ``_launch``: the pre-flight checks passed."""


@pytest.fixture
def launches(monkeypatch, tmp_path) -> list[list[str]]:
    """Replace the launch of tritonserver: record its command line, then raise ``LaunchedError``. The current directory
    is an empty folder (no out/demo/model_repository unless a test makes one)."""
    commands: list[list[str]] = []

    def launch(self: TritonServer) -> None:
        commands.append(self.command(self._workdir / "backends"))
        raise LaunchedError

    monkeypatch.setattr(TritonServer, "_launch", launch)
    monkeypatch.setattr(install, "tritonserver_binary", lambda: Path("/bin/true"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return commands


def server(repo: Path, models: list[str] | None = None) -> TritonServer:
    return TritonServer(TritonServerConfig(repo, models=models, grpc_port=0, http_port=0, metrics_port=0))


def test_model_files_are_anything_in_a_numbered_version_folder(tmp_path):
    model = write_model(tmp_path, "m")
    assert not has_model_files(model)
    (model / "1" / ".model.onnx.tmp").write_bytes(b"")  # hidden: an interrupted write, not a model
    (model / "configs").mkdir()
    (model / "configs" / "gpu.pbtxt").write_text("")  # a config variant, not a version
    (model / "latest").mkdir()
    (model / "latest" / "model.onnx").write_bytes(b"")  # not a version folder: Triton ignores it
    assert not has_model_files(model)
    (model / "2" / "model.savedmodel").mkdir(parents=True)  # a folder counts (some backends load folders)
    assert has_model_files(model)
    assert not has_model_files(tmp_path / "absent")
    assert models_without_files(tmp_path, ["m", "absent"]) == ["absent"]


def test_a_named_model_without_files_is_refused_before_triton_starts(tmp_path, launches):
    repo = tmp_path / "repo"
    write_model(repo, "with_files", ("model.onnx",))
    write_model(repo, "configs_only")
    s = server(repo, ["with_files", "configs_only"])
    with pytest.raises(ServeError) as caught:
        s.start()
    message = str(caught.value)
    assert f"no model files for configs_only in model repository {repo}:" in message, message
    assert "configs_only/1/" in message
    assert f"run brats-export --checkpoint CKPT --repository {repo}" in message
    assert "with_files" not in message and "make demo" not in message  # no out/demo here
    assert launches == [] and s.pid is None
    with pytest.raises(LaunchedError):  # the model that has files alone passes
        server(repo, ["with_files"]).start()


def test_a_repository_without_any_model_files_is_refused_naming_every_model(tmp_path, launches):
    repo = tmp_path / "repo"
    for name in ("brats_onnx", "brats_onnx_flip4"):
        write_model(repo, name)
    with pytest.raises(ServeError, match=r"no model files for brats_onnx, brats_onnx_flip4 in model repository .*: "
                                         r"each has a config.pbtxt but nothing in a version folder"):
        server(repo).start()
    assert launches == []


def test_the_demo_repository_is_named_when_make_demo_wrote_one_here(tmp_path, launches):
    demo = Path("out/demo/model_repository")  # relative to the current directory, as `make demo` writes it
    write_model(demo, "brats_openvino", ("model.xml", "model.bin"))
    repo = tmp_path / "model_repository"
    write_model(repo, "brats_openvino")
    with pytest.raises(ServeError) as caught:
        server(repo).start()
    assert ("make demo exported one to out/demo/model_repository "
            "(brats-serve --repository out/demo/model_repository)") in str(caught.value)
    (demo / "brats_openvino" / "1" / "model.xml").unlink()
    (demo / "brats_openvino" / "1" / "model.bin").unlink()
    with pytest.raises(ServeError) as caught:  # the demo repository itself: no advice to serve it
        server(demo).start()
    assert "make demo" not in str(caught.value)


def test_without_models_those_with_files_are_served_and_the_others_named_once(tmp_path, launches, caplog):
    repo = tmp_path / "repo"
    write_model(repo, "a", ("model.onnx",))
    write_model(repo, "b")
    write_model(repo, "c", ("model.onnx",))
    s = server(repo)
    assert s.served_models is None
    caplog.set_level(logging.WARNING, logger="brats_serve")
    with pytest.raises(LaunchedError):
        s.start()
    assert s.served_models == ["a", "c"] and s.config.models is None
    assert "--model-control-mode=explicit" in launches[0]
    assert [a for a in launches[0] if a.startswith("--load-model")] == ["--load-model=a", "--load-model=c"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("not serving b: no model files") and "serving a, c" in warnings[0]
    assert f"run brats-export --checkpoint CKPT --repository {repo}" in warnings[0]


def test_every_model_with_files_keeps_triton_loading_the_whole_repository(tmp_path, launches):
    repo = tmp_path / "repo"
    write_model(repo, "a", ("model.onnx",))
    with pytest.raises(LaunchedError):
        server(repo).start()
    assert "--model-control-mode=none" in launches[0]


def test_cli_exit_code_and_message(tmp_path, launches, capsys):
    repo = tmp_path / "repo"
    write_model(repo, "brats_onnx")
    code = cli.main(["--repository", str(repo), "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"])
    err = capsys.readouterr().err
    assert code == exit_codes.EXIT_INPUT
    assert err.startswith("brats-serve: no model files for brats_onnx in model repository")
    assert f"run brats-export --checkpoint CKPT --repository {repo}" in err


def test_the_committed_model_repository_says_what_to_do(launches, monkeypatch):
    """Issue 22: the first command of a fresh clone. Skipped where someone exported into it."""
    repo = CHECKOUT / "model_repository"
    models = sorted(p.parent.name for p in repo.glob("*/config.pbtxt"))
    if not models or models_without_files(repo, models) != models:
        pytest.skip(f"{repo} holds model files here")
    monkeypatch.chdir(CHECKOUT)
    with pytest.raises(ServeError) as caught:
        server(Path("model_repository")).start()
    message = str(caught.value)
    assert f"no model files for {', '.join(models)} in model repository model_repository" in message
    assert "run brats-export --checkpoint CKPT --repository model_repository" in message
    assert ("make demo exported one" in message) == (CHECKOUT / "out/demo/model_repository").is_dir()


# -- --help ----------------------------------------------------------------------------------------------------


def test_help_is_plain_text(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out and "`" not in out, out
    assert "exits with code 6" in out and "6  partly failed" in out and "backend process died" in out


def test_help_shows_a_default_for_every_option():
    parser = cli.build_parser()
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert len(options) >= 11
    for action in options:
        text = action.help % {"default": action.default} if "%(default)" in action.help else action.help
        assert "default" in text or "required" in text, f"{action.option_strings[0]}: {text}"
