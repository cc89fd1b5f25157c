"""Run the ``tritonserver`` binary of the nvidia-pytriton wheel on a model repository, without Docker.

The wheel carries Triton 2.51 with only the ``python`` backend. ``build_backend_directory`` lays out a backend
directory with *copies* (Triton refuses libraries that escape the backend directory) of the python backend and the
stub for the running interpreter, plus this package's Python stand-ins for the ``onnxruntime``, ``pytorch`` and
``openvino`` backends, so a repository written for the NGC container loads unchanged.

The stub is an executable linked against ``libpython3.X.so`` that starts an *isolated* interpreter: it ignores
``PYTHONPATH`` and ``PYTHONHOME`` and finds its prefix by looking ``python3`` up on ``PATH`` (a ``pyvenv.cfg`` next
to it selects that venv). ``server_environment`` therefore puts the running interpreter's ``bin`` first on ``PATH``
(the stub then imports this venv's numpy, onnxruntime, torch and openvino, not the base interpreter's) and its
``LIBDIR`` first on ``LD_LIBRARY_PATH`` (the stub loads this interpreter's libpython, not the system's).

``tritonserver`` runs under ``supervisor.py`` in a session of its own: when the Python process that started it ends,
even by SIGKILL, the supervisor kills the server and its stubs, so none is left holding ports and memory.

Each model instance runs in a python backend stub, a child process of ``tritonserver`` whose command line names the
model's version folder and the instance (``triton_python_backend_stub <repo>/<model>/1/model.onnx ... <model>_0_0
...``). When a stub dies (the kernel's OOM killer, a crash), Triton 24.10 neither restarts it nor marks the model
unready: it answers every request of that model with ``Stub process '<model>_0_0' is not healthy.`` and, on
SIGTERM, waits its whole exit timeout (30 s) for the model to unload. ``TritonServer.poll_backends`` finds such
stubs in ``/proc`` (a dead child stays a zombie, its wait status readable in ``/proc/PID/stat``) and says which model
died and how; ``stop`` then gives SIGTERM only ``DEAD_BACKEND_STOP_TIMEOUT_S`` and keeps the server's log.

    with TritonServer("model_repository", grpc_port=0, http_port=0, metrics_port=0) as server:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import importlib.util
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ServeError, ServeRepositoryError

log = logging.getLogger(__name__)

STAND_IN_BACKENDS = ("onnxruntime", "pytorch", "openvino")
BACKENDS_SOURCE = Path(__file__).resolve().parent / "backends"
SUPERVISOR = Path(__file__).resolve().parent / "supervisor.py"
LOG_TAIL_LINES = 30
POLL_INTERVAL_S = 0.25
GROUP_EXIT_TIMEOUT_S = 10.0  # after SIGKILL, how long stop() waits for the server's processes to be gone
DEAD_BACKEND_STOP_TIMEOUT_S = 3.0  # SIGTERM's grace when a stub is dead (Triton would wait 30 s for its model)
STUB_EXECUTABLE = "triton_python_backend_stub"
COMM_LENGTH = 15  # Linux keeps this many characters of a process's name in /proc/PID/stat (zombies too)
DEMO_REPOSITORY = Path("out") / "demo" / "model_repository"  # where `make demo` exports, relative to the checkout


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


def check_repository(repository: str | os.PathLike, models: Sequence[str] = ()) -> list[str]:
    """Names of the model folders (those with a config) in ``repository``; a ``ServeRepositoryError`` when there is
    none."""
    repo = Path(repository)
    if not repo.exists():
        raise ServeRepositoryError(
            f"model repository {repo} does not exist; write it with brats-export --repository {repo}"
        )
    if not repo.is_dir():
        raise ServeRepositoryError(
            f"model repository {repo} is not a directory; pass the folder that holds the model folders"
        )
    found = sorted(
        p.name for p in repo.iterdir()
        if p.is_dir() and ((p / "config.pbtxt").is_file() or any((p / "configs").glob("*.pbtxt")))
    )
    if not found:
        raise ServeRepositoryError(
            f"model repository {repo} holds no model (no <model>/config.pbtxt); write it with brats-export"
        )
    missing = [m for m in models if m not in found]
    if missing:
        raise ServeRepositoryError(f"model(s) {missing} not in repository {repo}; it holds {found}")
    return found


def has_model_files(model_dir: str | os.PathLike) -> bool:
    """Whether a version folder (``<model>/1/``, any number) of ``model_dir`` holds anything (hidden names aside).

    Which file a backend wants is Triton's to say (it names a missing ``model.pt`` itself); this tells a model that
    was exported from one that has only its configs, as the committed ``model_repository/`` does.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return False
    return any(
        version.is_dir() and version.name.isdigit() and any(not e.name.startswith(".") for e in version.iterdir())
        for version in model_dir.iterdir()
    )


def models_without_files(repository: str | os.PathLike, models: Sequence[str]) -> list[str]:
    """Those of ``models`` whose folder in ``repository`` has no model files in any version folder."""
    return [name for name in models if not has_model_files(Path(repository) / name)]


def export_hint(repository: str | os.PathLike) -> str:
    """What writes a repository's model files: brats-export, and the folder `make demo` exported to when there is
    one here (relative to the current directory) other than ``repository``."""
    hint = f"run brats-export --checkpoint CKPT --repository {repository}"
    demo = DEMO_REPOSITORY
    with contextlib.suppress(OSError):
        if demo.is_dir() and demo.resolve() != Path(repository).resolve():
            hint += f"; make demo exported one to {demo} (brats-serve --repository {demo})"
    return hint


def missing_files_error(repository: str | os.PathLike, missing: Sequence[str]) -> ServeRepositoryError:
    """The error for models that have a config but no model files."""
    return ServeRepositoryError(
        f"no model files for {', '.join(missing)} in model repository {repository}: "
        f"{'each has' if len(missing) > 1 else 'it has'} a config.pbtxt but nothing in a version folder such as "
        f"{missing[0]}/1/ (the weights are written by brats-export; a fresh clone has configs only). "
        f"To write them, {export_hint(repository)}"
    )


def port_in_use(host: str, port: int) -> bool:
    """Whether a server could not listen on ``host:port`` (bound like servers do, with ``SO_REUSEADDR``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise ServeError(f"cannot listen on {host}:{port}: {e}; check --host and the port") from e
    return False


def free_port(host: str = "127.0.0.1", exclude: Sequence[int] = ()) -> int:
    """A port on ``host`` that nobody listens on now (the kernel's choice), not in ``exclude``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(20):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in exclude:
            return port
    raise ServeError(f"no free port found on {host}")


def log_tail(path: str | os.PathLike, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ("" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class ProcessStat:
    """What ``/proc/PID/stat`` says of one process (``man 5 proc``)."""

    pid: int
    name: str  # the first COMM_LENGTH characters of the executable's name ("comm")
    state: str  # "R", "S", ... "Z" a zombie: ended, not yet waited for by its parent
    ppid: int
    pgrp: int
    wait_status: int  # of an ended process, as waitpid(2) reports it (field 52, "exit_code"); 0 while it runs

    @property
    def ended(self) -> bool:
        return self.state in ("Z", "X")


def process_stats() -> list[ProcessStat]:
    """Every process of this machine (Linux ``/proc``; none where there is no ``/proc``)."""
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                text = f.read()
        except OSError:
            continue
        name, rest = text[text.find("(") + 1 : text.rfind(")")], text[text.rfind(")") + 1 :].split()
        status = int(rest[49]) if len(rest) > 49 else 0
        found.append(ProcessStat(int(entry), name, rest[0], int(rest[1]), int(rest[2]), status))
    return found


def running_in_group(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` that still run (Linux ``/proc``). Zombies are left out: they hold no
    memory or port, and where PID 1 does not reap orphans they never go away."""
    return [p.pid for p in process_stats() if p.pgrp == pgid and not p.ended]


def describe_wait_status(status: int) -> str:
    """``killed by SIGKILL`` or ``exited with code 1``, from a waitpid(2) status."""
    try:
        code = os.waitstatus_to_exitcode(status)
    except ValueError:
        return f"ended with wait status {status:#x}"
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"killed by {name}" + (" (core dumped)" if status & 0x80 else "")


@dataclass(frozen=True)
class BackendProcess:
    """A python backend stub of a running ``tritonserver``: one model instance."""

    pid: int
    model: str
    instance: str  # Triton's instance name, "<model>_<group>_<index>" by default


@dataclass(frozen=True)
class DeadBackend:
    """A stub that died while its server ran."""

    backend: BackendProcess
    wait_status: int  # as waitpid(2) reports it

    @property
    def how(self) -> str:
        """``killed by SIGKILL``, ``exited with code 1``, ..."""
        return describe_wait_status(self.wait_status)

    def __str__(self) -> str:
        b = self.backend
        oom = os.WIFSIGNALED(self.wait_status) and os.WTERMSIG(self.wait_status) == signal.SIGKILL
        return (f"model {b.model!r} lost its backend process (instance {b.instance}, pid {b.pid}): {self.how}"
                + (" (as by the kernel's out-of-memory killer: see dmesg or journalctl -k)" if oom else ""))


def stub_identity(pid: int) -> BackendProcess | None:
    """The model and instance of a running python backend stub, from its command line (``stub <repo>/<model>/<version>/
    <file> <shm region> ... <instance> <backend dir>``); ``None`` for any other process or one that is gone."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if len(argv) < 2 or Path(os.fsdecode(argv[0])).name != STUB_EXECUTABLE:
        return None
    model = Path(os.fsdecode(argv[1])).parent.parent.name
    instance = os.fsdecode(argv[8]) if len(argv) > 8 else ""
    return BackendProcess(pid, model or instance, instance or model)


def wait_group_gone(pgid: int, timeout_s: float) -> bool:
    """Wait until no process of group ``pgid`` runs; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while running_in_group(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


_FAILED_LOAD = re.compile(r"failed to load '(?P<model>[^']+)' version (?P<version>\d+): (?P<reason>.*)")


def load_failures(path: str | os.PathLike) -> list[str]:
    """What Triton's log says went wrong at start-up: each model's load failure (first line of the reason),
    repository errors, and the server's final ``error:`` line."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    found: list[str] = []
    for line in text.splitlines():
        match = _FAILED_LOAD.search(line)
        if match:
            reason = match["reason"].split("\\n")[0].rstrip('"')
            entry = f"model '{match['model']}' version {match['version']}: {reason}"
        elif line.startswith("error:") or (line.startswith("E") and "model_repository_manager" in line):
            entry = line.strip()
        else:
            continue
        if entry not in found:
            found.append(entry)
    return found


class TritonServer:
    """A ``tritonserver`` process serving ``repository``; a context manager (``start`` / ``stop``).

    Ports given as 0 are chosen free at ``start``. ``models`` (names) are loaded with
    ``--model-control-mode=explicit``; ``None`` serves every model in the repository (``--model-control-mode=none``).
    Before Triton starts, ``start`` refuses named models without model files (nothing in a version folder: a config
    written without its weights), naming them and what writes them; with ``models=None`` it serves the models that
    have files (explicitly, see ``served_models``) and logs one warning naming the others, and refuses a repository
    where none has files. ``extra_args`` are passed to ``tritonserver`` last (keep HTTP enabled: readiness is polled
    over HTTP). The server's stdout and stderr go to ``log_path`` (default: a file in a temporary work folder that
    ``stop`` removes, kept when start-up failed or the stop was abnormal: the server had exited by itself, a backend
    process had died, or it needed SIGKILL). The backend directory is laid out in that work folder, or in
    ``backend_directory`` when given (rebuilt at each start, kept). ``start`` raises ``ServeError`` with the cause,
    Triton's reasons for models that did not load, and the log's last lines; ``poll_backends`` tells which model lost
    its backend process; ``stop`` is safe to call twice and runs at exit.
    """

    def __init__(
        self,
        repository: str | os.PathLike,
        *,
        host: str = "127.0.0.1",
        grpc_port: int = 8001,
        http_port: int = 8000,
        metrics_port: int = 8002,
        models: Sequence[str] | None = None,
        model_config_name: str | None = None,
        log_path: str | os.PathLike | None = None,
        startup_timeout_s: float = 120.0,
        stop_timeout_s: float = 30.0,
        backend_directory: str | os.PathLike | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        for name, value in (("startup_timeout_s", startup_timeout_s), ("stop_timeout_s", stop_timeout_s)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for flag, port in (("--grpc-port", grpc_port), ("--http-port", http_port), ("--metrics-port", metrics_port)):
            if not 0 <= port <= 65535:
                raise ValueError(f"{flag} must be in [0, 65535], got {port}")
        self.repository = Path(repository)
        self.host = host
        self.models = list(models) if models is not None else None
        self.model_config_name = model_config_name
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.extra_args = list(extra_args)
        self._requested_ports = {"grpc": grpc_port, "http": http_port, "metrics": metrics_port}
        self._ports = dict(self._requested_ports)
        self._given_log_path = Path(log_path) if log_path is not None else None
        self._log_path = self._given_log_path
        self._backend_directory = Path(backend_directory) if backend_directory is not None else None
        self._workdir: Path | None = None
        self._process: subprocess.Popen | None = None
        self._log_file = None
        self._lifeline: int | None = None  # write end of the pipe the supervisor watches
        self._served: list[str] | None = self.models  # what --load-model names (None: every model)
        self._stubs: dict[int, BackendProcess] = {}  # pid -> the stub seen running there
        self._ended_stubs: set[int] = set()  # stubs seen ended (zombies) at the last look
        self._dead: dict[int, DeadBackend] = {}
        self._lock = threading.Lock()

    # -- endpoints -------------------------------------------------------------------------------------------
    def _url(self, kind: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self._ports[kind]}"

    @property
    def grpc_url(self) -> str:
        """``HOST:PORT`` of the gRPC endpoint (what ``tritonclient.grpc`` takes)."""
        return self._url("grpc")

    @property
    def http_url(self) -> str:
        """``HOST:PORT`` of the HTTP endpoint (what ``tritonclient.http`` takes)."""
        return self._url("http")

    @property
    def metrics_url(self) -> str:
        """``http://HOST:PORT`` of the Prometheus endpoint (metrics under ``/metrics``)."""
        return f"http://{self._url('metrics')}"

    @property
    def log_path(self) -> Path | None:
        """The server's log file (known once ``start`` ran, or when given)."""
        return self._log_path

    @property
    def ports(self) -> dict[str, int]:
        """``{"grpc": ..., "http": ..., "metrics": ...}`` as used (free ports filled in at ``start``)."""
        return dict(self._ports)

    @property
    def pid(self) -> int | None:
        """The id of the supervisor that runs tritonserver (``supervisor.py``), also the process group of the
        supervisor, tritonserver and its python backend stubs; ``None`` before start."""
        return None if self._process is None else self._process.pid

    @property
    def served_models(self) -> list[str] | None:
        """The models loaded (``--load-model``); ``None``: every model of the repository. Set by ``start``: with
        ``models=None``, the models that have files when some have none."""
        return None if self._served is None else list(self._served)

    @property
    def dead_backends(self) -> list[DeadBackend]:
        """Every backend process found dead so far (by ``poll_backends`` or ``stop``)."""
        return list(self._dead.values())

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- backend processes -----------------------------------------------------------------------------------
    def backend_processes(self) -> list[BackendProcess]:
        """The python backend stubs running now: children of ``tritonserver`` (itself the supervisor's child)."""
        with self._lock:
            self._look_at_backends()
            return sorted(self._stubs.values(), key=lambda b: b.pid)

    def poll_backends(self) -> list[DeadBackend]:
        """Backend processes found dead since the last call, each logged once as an error naming its model and how
        it ended. Call it now and then while the server runs (``brats-serve`` does, every 0.5 s)."""
        with self._lock:
            return self._look_at_backends()

    def _look_at_backends(self) -> list[DeadBackend]:
        process = self._process
        if process is None:
            return []
        stats = process_stats()
        servers = {p.pid for p in stats if p.ppid == process.pid}
        ended, new = set(), []
        for p in stats:
            if p.ppid not in servers:
                continue
            if not p.ended:
                identity = stub_identity(p.pid)  # read each time: a pid may be reused
                if identity is not None:
                    self._stubs[p.pid] = identity
                continue
            if p.name != STUB_EXECUTABLE[:COMM_LENGTH] or p.pid in self._dead:
                continue
            ended.add(p.pid)
            # Triton waits for a stub it stops at once; a zombie that stays, or one that failed, died on its own.
            if p.wait_status == 0 and p.pid not in self._ended_stubs:
                continue
            backend = self._stubs.pop(p.pid, None) or BackendProcess(p.pid, "(unknown)", "(unknown)")
            dead = DeadBackend(backend, p.wait_status)
            self._dead[p.pid] = dead
            new.append(dead)
            log.error("%s", dead)
        self._ended_stubs = ended
        return new

    # -- command line ----------------------------------------------------------------------------------------
    def command(self, backend_directory: str | os.PathLike) -> list[str]:
        """The ``tritonserver`` command line (ports as they are now: call after ``start`` for chosen ports)."""
        cmd = [
            str(tritonserver_binary()),
            f"--model-repository={self.repository.resolve()}",
            f"--backend-directory={Path(backend_directory).resolve()}",
            f"--cache-directory={pytriton_root() / 'tritonserver' / 'caches'}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self._ports['grpc']}",
            f"--http-address={self.host}",
            f"--http-port={self._ports['http']}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self._ports['metrics']}",
            "--allow-gpu-metrics=false",
        ]
        if self._served is None:
            cmd.append("--model-control-mode=none")
        else:
            cmd.append("--model-control-mode=explicit")
            cmd.extend(f"--load-model={name}" for name in self._served)
        if self.model_config_name:
            cmd.append(f"--model-config-name={self.model_config_name}")
        return cmd + self.extra_args

    def _choose_ports(self) -> None:
        flags = {"grpc": "--grpc-port", "http": "--http-port", "metrics": "--metrics-port"}
        chosen = {k: v for k, v in self._requested_ports.items() if v}
        if len(set(chosen.values())) != len(chosen):
            raise ServeError(f"the ports must differ, got {chosen}; change --grpc-port, --http-port or --metrics-port")
        for kind, port in chosen.items():
            if port_in_use(self.host, port):
                raise ServeError(
                    f"port {port} on {self.host} ({kind}) is already in use; pass another with {flags[kind]} "
                    f"(or {kind}_port=...; 0 picks a free port) or stop the process listening there"
                )
        for kind, port in self._requested_ports.items():
            self._ports[kind] = port or free_port(self.host, exclude=list(chosen.values()))
            chosen[kind] = self._ports[kind]

    # -- life cycle ------------------------------------------------------------------------------------------
    def start(self) -> TritonServer:
        """Start the server and wait until it is ready; a ``ServeError`` with the cause and the log's tail if not."""
        with self._lock:
            if self._process is not None:
                raise ServeError("this TritonServer is already started; stop() it first")
            found = check_repository(self.repository, self.models or ())
            self._served = self._choose_models(found)
            tritonserver_binary()  # fails early, with what to install, when the serve extra is missing
            self._choose_ports()
            self._workdir = Path(tempfile.mkdtemp(prefix="brats-serve-"))
            try:
                self._launch()
            except BaseException:  # nothing runs: leave no log handle, pipe or work folder behind
                if self._log_file is not None:
                    self._log_file.close()
                    self._log_file = None
                self._close_lifeline()
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None
                raise
            atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop(keep_log=True)
            raise
        self._look_at_backends()  # know each stub's model while it runs: a dead one's command line is empty
        log.info("tritonserver ready: grpc %s, http %s, metrics %s", self.grpc_url, self.http_url, self.metrics_url)
        return self

    def _choose_models(self, found: list[str]) -> list[str] | None:
        """What to load, given the model folders ``found``: a ``ServeRepositoryError`` for named models without
        files, or for a repository where no model has any; the models with files when only some have them."""
        missing = models_without_files(self.repository, self.models if self.models is not None else found)
        if not missing:
            return self.models
        if self.models is not None or len(missing) == len(found):
            raise missing_files_error(self.repository, missing)
        served = [name for name in found if name not in missing]
        log.warning(
            "not serving %s: no model files in %s (a config.pbtxt only); serving %s. To serve them too, %s",
            ", ".join(missing), "their version folders" if len(missing) > 1 else "its version folders",
            ", ".join(served), export_hint(self.repository),
        )
        return served

    def _failure(self, cause: str) -> ServeError:
        failures = load_failures(self._log_path) if self._log_path else []
        reasons = "".join(f"\n  {line}" for line in failures[-10:])
        tail = log_tail(self._log_path) if self._log_path else ""
        return ServeError(
            f"tritonserver did not start: {cause}"
            + (f"\nTriton says:{reasons}" if reasons else "")
            + f"\nlast lines of {self._log_path}:\n{tail}"
        )

    def _ready(self, path: str) -> bool:
        url = f"http://{self.http_url}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 - our own loopback endpoint
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        paths = ["/v2/health/ready", *(f"/v2/models/{name}/ready" for name in self._served or ())]
        while True:
            code = self._process.poll()
            if code is not None:
                raise self._failure(f"the process exited with code {code}")
            if all(self._ready(p) for p in paths):
                return
            if time.monotonic() > deadline:
                raise self._failure(
                    f"not ready after {self.startup_timeout_s:g} s (raise startup_timeout_s / --startup-timeout-s)"
                )
            time.sleep(POLL_INTERVAL_S)

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait for the process to exit; its exit code, or ``None`` on timeout or when not started."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def _launch(self) -> None:
        """Backends folder, log file, process: the part of ``start`` that runs inside the work folder."""
        backend_dir = self._backend_directory or self._workdir / "backends"
        build_backend_directory(backend_dir)
        self._log_path = self._given_log_path or self._workdir / "tritonserver.log"
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command(backend_dir)
        if not (os.path.isfile(cmd[0]) and os.access(cmd[0], os.X_OK)):
            raise ServeError(f"cannot run {cmd[0]}: not an executable file; reinstall the serve extra")
        log.info("starting %s", " ".join(cmd))
        self._log_file = open(self._log_path, "wb")  # noqa: SIM115 - open as long as the process runs
        # The supervisor reads the other end of this pipe: when this process ends, however it dies, the pipe
        # closes and the supervisor kills tritonserver and its stubs (supervisor.py). Only we hold this end.
        watched, self._lifeline = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", str(SUPERVISOR), str(watched), "--", *cmd],
                stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT, pass_fds=(watched,),
                env=server_environment(), cwd=self._workdir, start_new_session=True,
            )
        except OSError as e:
            raise ServeError(f"cannot run {cmd[0]} under {SUPERVISOR}: {e}; reinstall the serve extra") from e
        finally:
            os.close(watched)

    def stop(self, keep_log: bool = False) -> int | None:
        """SIGTERM, wait ``stop_timeout_s``, then SIGKILL; remove the work folder. Safe to call again.

        A dead backend process (see ``poll_backends``; looked for here too) makes Triton wait its whole exit timeout
        for that model to unload, so SIGTERM then gets only ``DEAD_BACKEND_STOP_TIMEOUT_S``. The log is kept when
        ``keep_log`` or when the stop is abnormal (the server had exited by itself, a backend process died, SIGTERM
        was not enough, or an exit code other than 0 or SIGTERM's); an abnormal stop logs a warning with the log's
        path. Returns the exit code (``None`` when there was nothing to stop).
        """
        with self._lock:
            process = self._process
            if process is None:
                return None
            self._look_at_backends()
            self._process = None
            atexit.unregister(self.stop)
            code = process.poll()
            problems = [] if code is None else [f"it had exited by itself with code {code}"]
            grace_s = self.stop_timeout_s
            if self._dead:
                grace_s = min(grace_s, DEAD_BACKEND_STOP_TIMEOUT_S)
                models = sorted({d.backend.model for d in self._dead.values()})
                problems.append(f"the backend process of {', '.join(models)} died")
            if code is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    code = process.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    if self._dead:  # expected: Triton waits for the dead model's unload
                        log.info("tritonserver still unloading %g s after SIGTERM with a dead backend; killing it",
                                 grace_s)
                    else:
                        log.warning("tritonserver did not stop in %g s; killing it", grace_s)
                        problems.append(f"it did not stop within {grace_s:g} s of SIGTERM and was killed")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)  # its stubs too: they share its session
                    code = process.wait()
                else:
                    if code not in (0, -signal.SIGTERM):
                        problems.append(f"it exited with code {code}")
            # Python backend stubs left behind (the server killed from outside, or exiting without reaping them)
            # would hold memory and shared-memory regions: end whatever remains of the server's own session,
            # and return once it is gone (its ports free again).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            if not wait_group_gone(process.pid, GROUP_EXIT_TIMEOUT_S):
                log.warning("processes of group %d still run %g s after SIGKILL", process.pid, GROUP_EXIT_TIMEOUT_S)
            self.wait_ports_free(GROUP_EXIT_TIMEOUT_S)
            self._close_lifeline()
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            self._remove_workdir(keep_log=keep_log or bool(problems))
            if problems and not keep_log:  # a caller that asked to keep the log shows it itself
                log.warning("tritonserver stopped abnormally (%s); its log is kept: %s", "; ".join(problems),
                            self._log_path)
            log.info("tritonserver stopped (exit code %s)", code)
            return code

    def _remove_workdir(self, keep_log: bool) -> None:
        """Remove the work folder; with ``keep_log``, all but the log when the log is in it."""
        workdir, self._workdir = self._workdir, None
        if workdir is None:
            return
        log_inside = self._log_path is not None and workdir in self._log_path.parents
        if keep_log and log_inside:
            shutil.rmtree(workdir / "backends", ignore_errors=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            if log_inside:
                self._log_path = None

    def wait_ports_free(self, timeout_s: float) -> bool:
        """Wait until nothing listens on this server's ports; False on timeout. The kernel may close a killed
        process's sockets a moment after the process itself is gone."""
        deadline = time.monotonic() + timeout_s
        while any(port and port_in_use(self.host, port) for port in self._ports.values()):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _close_lifeline(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
