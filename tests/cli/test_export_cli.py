"""brats-export's command line (issue 22): a client-only install (no torch) gets a message, not a traceback;
--help states every option's default; the refusal to replace a model version speaks to CLI users."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from brats_client.exit_codes import EXIT_UNEXPECTED
from brats_export import repository
from brats_export.cli import EXPORT_MODULES, build_parser
from brats_export.errors import RepositoryError

pytestmark = pytest.mark.torch  # needs brats_export (not torch itself: the tests below block it)

# imported before anything else in the child: every module of the export extra is "not installed"
BLOCKER = f'''
import importlib.abc, sys

class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {set(EXPORT_MODULES)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
'''


def _run_without_export_extra(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "site").mkdir(exist_ok=True)
    (tmp_path / "site" / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "site"),
                                                                     os.environ.get("PYTHONPATH")]))}
    script = Path(sys.executable).with_name("brats-export")  # the installed entry point, as a user runs it
    command = [str(script)] if script.exists() else [sys.executable, "-m", "brats_export.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=120)


def test_export_without_torch_says_what_to_install(tmp_path):
    repo = tmp_path / "repo"
    done = _run_without_export_extra(tmp_path, "--checkpoint", str(tmp_path / "model.pth"), "--repository", str(repo))
    assert done.returncode == EXIT_UNEXPECTED, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("brats-export: error: torch, onnx, onnxruntime, openvino are not installed here")
    assert "pip install torch==2.13.0" in done.stderr and "pip install '.[export]'" in done.stderr
    assert not repo.exists()


def test_configs_only_needs_no_torch(tmp_path):
    repo = tmp_path / "repo"
    done = _run_without_export_extra(tmp_path, "--configs-only", "--repository", str(repo), "--quiet")
    assert done.returncode == 0, done.stderr
    assert (repo / "brats_onnx" / "config.pbtxt").is_file()


def test_a_module_that_fails_to_import_is_named(tmp_path):
    """find_spec sees torch, yet importing it fails (a broken install): the message names it, no traceback."""
    code = ("import sys; sys.modules['torch'] = None\n"  # `import torch` now raises ModuleNotFoundError
            "from brats_export import cli\n"
            "cli.missing_export_modules = lambda: []\n"
            f"sys.exit(cli.main(['--checkpoint', 'm.pth', '--repository', {str(tmp_path / 'repo')!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == EXIT_UNEXPECTED, done.stderr
    assert "Traceback" not in done.stderr
    assert "exporting needs torch, which cannot be imported here" in done.stderr
    assert "pip install '.[export]'" in done.stderr


def test_help_states_every_default_without_rst_markup():
    parser = build_parser()
    text = parser.format_help()
    assert "``" not in text
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert "default" in action.help or "required" in action.help, action.option_strings
    words = " ".join(text.split())  # argparse wraps lines
    assert "30-60 s" not in words and "a whole default export (all formats and companions) took 2-3 min" in words


def test_refusal_to_replace_a_version_reads_as_a_cli_instruction(tmp_path):
    (tmp_path / "repo" / "brats_onnx" / "1").mkdir(parents=True)
    with pytest.raises(RepositoryError) as caught:
        repository.check_versions_writable(tmp_path / "repo", ["onnx", "torchscript"])
    assert str(caught.value).endswith("already exists; run brats-export again with --force to replace it "
                                      "(from Python: force=True)")
    (tmp_path / "repo" / "brats_torchscript" / "1").mkdir(parents=True)
    with pytest.raises(RepositoryError, match="exist; run brats-export again with --force to replace them"):
        repository.check_versions_writable(tmp_path / "repo", ["onnx", "torchscript"])
