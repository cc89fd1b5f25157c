"""What the nvidia-pytriton wheel installs and how it runs here: the ``tritonserver`` binary, the backend directory
laid out from the wheel's python backend, and the environment of the server and its python backend stubs.

The wheel carries Triton 2.51 with only the ``python`` backend. ``build_backend_directory`` lays out a backend
directory with *copies* (Triton refuses libraries that escape the backend directory) of the python backend and the
stub for the running interpreter, plus this package's Python stand-ins for the ``onnxruntime``, ``pytorch`` and
``openvino`` backends, so a repository written for the NGC container loads unchanged.

The stub is an executable linked against ``libpython3.X.so`` that starts an *isolated* interpreter: it ignores
``PYTHONPATH`` and ``PYTHONHOME`` and finds its prefix by looking ``python3`` up on ``PATH`` (a ``pyvenv.cfg`` next
to it selects that venv). ``server_environment`` therefore puts the running interpreter's ``bin`` first on ``PATH``
(the stub then imports this venv's numpy, onnxruntime, torch and openvino, not the base interpreter's) and its
``LIBDIR`` first on ``LD_LIBRARY_PATH`` (the stub loads this interpreter's libpython, not the system's).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import sysconfig
from pathlib import Path

from .errors import ServeError

log = logging.getLogger(__name__)

STAND_IN_BACKENDS = ("onnxruntime", "pytorch", "openvino")
BACKENDS_SOURCE = Path(__file__).resolve().parent / "backends"


def pytriton_root() -> Path:
    """The installed ``pytriton`` package folder; a ``ServeError`` saying what to install when it is missing."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServeError(
            "the tritonserver binary comes with the nvidia-pytriton wheel, which is not installed; "
            "install the serve extra: pip install -e '.[serve]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def tritonserver_binary() -> Path:
    """Path of the ``tritonserver`` executable shipped in the nvidia-pytriton wheel."""
    binary = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file():
        raise ServeError(
            f"tritonserver binary not found at {binary}; reinstall the serve extra: pip install -e '.[serve]' "
            "(nvidia-pytriton 0.7.0 carries Triton 2.51)"
        )
    return binary


def cache_directory() -> Path:
    """The wheel's cache folder, for ``--cache-directory``."""
    return pytriton_root() / "tritonserver" / "caches"


def _server_libs() -> Path:
    return pytriton_root().parent / "nvidia_pytriton.libs"


def build_backend_directory(dest: str | os.PathLike, python_version: str | None = None) -> Path:
    """Lay out a Triton backend directory in ``dest`` (created; existing files are replaced) and return it.

    ``dest/python/`` gets copies of ``libtriton_python.so``, ``triton_python_backend_utils.py`` and the stub for
    ``python_version`` (default: the running interpreter, "3.11"); ``dest/<name>/`` gets ``model.py`` and
    ``_common.py`` for each stand-in backend in ``STAND_IN_BACKENDS``.
    """
    version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    root = pytriton_root() / "tritonserver"
    stubs = root / "python_backend_stubs"
    stub = stubs / version / "triton_python_backend_stub"
    if not stub.is_file():
        available = sorted(p.name for p in stubs.iterdir()) if stubs.is_dir() else []
        raise ServeError(
            f"nvidia-pytriton has no python backend stub for Python {version} (it has {available}); "
            "run brats-serve with one of those Python versions"
        )
    dest = Path(dest)
    python_dir = dest / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(root / "backends" / "python" / name, python_dir / name)
    shutil.copy2(stub, python_dir / "triton_python_backend_stub")  # copy2 keeps the executable bit
    for name in STAND_IN_BACKENDS:
        backend_dir = dest / name
        backend_dir.mkdir(exist_ok=True)
        shutil.copy2(BACKENDS_SOURCE / name / "model.py", backend_dir / "model.py")
        shutil.copy2(BACKENDS_SOURCE / "_common.py", backend_dir / "_common.py")
    return dest


def interpreter_bin() -> Path:
    """The folder of the running interpreter (a venv's ``bin``), which must hold a ``python3`` for the stub."""
    return Path(sys.executable).parent


def _prepend(value: str | None, *paths: str) -> str:
    return os.pathsep.join([*paths, *([value] if value else [])])


def server_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for ``tritonserver`` and the stubs it starts (see the module docstring)."""
    env = dict(os.environ if base is None else base)
    libs = [str(_server_libs())]
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME") or sysconfig.get_config_var("LDLIBRARY")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and soname and (Path(libdir) / soname).is_file():
        # Else the stub takes the system's libpython3.X, possibly another patch release than our standard library.
        libs.insert(0, libdir)
    env["LD_LIBRARY_PATH"] = _prepend(env.get("LD_LIBRARY_PATH"), *libs)
    # The stub's interpreter is isolated (PYTHONPATH and PYTHONHOME are ignored); it finds its prefix by looking
    # up "python3" on PATH, and a pyvenv.cfg next to that makes it use the venv's site-packages.
    bin_dir = interpreter_bin()
    if not (bin_dir / "python3").exists():
        log.warning("%s has no python3: the python backend stub will not see this environment's packages", bin_dir)
    env["PATH"] = _prepend(env.get("PATH"), str(bin_dir))
    return env
