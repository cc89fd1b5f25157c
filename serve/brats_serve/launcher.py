"""Start, watch and stop the ``tritonserver`` of the nvidia-pytriton wheel on a model repository, without Docker.

What it runs is a :class:`~brats_serve.server_config.TritonServerConfig`; the backend directory and environment
come from :mod:`.install`, the repository's checks from :mod:`.repository_check`, the ports from :mod:`.ports`,
readiness from :mod:`.readiness`, and the backend processes from :mod:`.processes`.

``tritonserver`` runs under ``supervisor.py`` in a session of its own: when the Python process that started it ends,
even by SIGKILL, the supervisor kills the server and its stubs, so none is left holding ports and memory. A dead
python backend stub (:mod:`.processes`) is found by ``TritonServer.poll_backends``; ``stop`` then gives SIGTERM only
``DEAD_BACKEND_STOP_TIMEOUT_S`` (Triton would wait 30 s for that model to unload) and keeps the server's log.

    config = TritonServerConfig("model_repository", grpc_port=0, http_port=0, metrics_port=0)
    with TritonServer(config) as server:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from . import install
from .errors import ServeError
from .ports import choose_ports, wait_ports_free
from .processes import BackendProcess, BackendWatch, DeadBackend, wait_group_gone
from .readiness import wait_ready
from .repository_check import choose_models
from .server_config import TritonServerConfig

log = logging.getLogger(__name__)

SUPERVISOR = Path(__file__).resolve().parent / "supervisor.py"
GROUP_EXIT_TIMEOUT_S = 10.0  # after SIGKILL, how long stop() waits for the server's processes to be gone
DEAD_BACKEND_STOP_TIMEOUT_S = 3.0  # SIGTERM's grace when a stub is dead (Triton would wait 30 s for its model)


class TritonServer:
    """A ``tritonserver`` process as ``config`` asks; a context manager (``start`` / ``stop``).

    Before Triton starts, ``start`` refuses named models without model files (nothing in a version folder: a config
    written without its weights), naming them and what writes them; with ``models=None`` it serves the models that
    have files (explicitly, see ``served_models``) and logs one warning naming the others, and refuses a repository
    where none has files. The server's stdout and stderr go to the config's ``log_path`` (default: a file in a
    temporary work folder that ``stop`` removes, kept when start-up failed or the stop was abnormal: the server had
    exited by itself, a backend process had died, or it needed SIGKILL). ``start`` raises ``ServeError`` with the
    cause, Triton's reasons for models that did not load, and the log's last lines; ``poll_backends`` tells which
    model lost its backend process; ``stop`` is safe to call twice and runs at exit.
    """

    def __init__(self, config: TritonServerConfig) -> None:
        self.config = config
        self._running = config  # with the chosen ports and served models once started
        self._log_path = config.log_path
        self._workdir: Path | None = None
        self._process: subprocess.Popen | None = None
        self._log_file = None
        self._lifeline: int | None = None  # write end of the pipe the supervisor watches
        self._watch: BackendWatch | None = None
        self._lock = threading.Lock()

    # -- endpoints -------------------------------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        """``HOST:PORT`` of the gRPC endpoint (what ``tritonclient.grpc`` takes)."""
        return self._running.url("grpc")

    @property
    def http_url(self) -> str:
        """``HOST:PORT`` of the HTTP endpoint (what ``tritonclient.http`` takes)."""
        return self._running.url("http")

    @property
    def metrics_url(self) -> str:
        """``http://HOST:PORT`` of the Prometheus endpoint (metrics under ``/metrics``)."""
        return f"http://{self._running.url('metrics')}"

    @property
    def log_path(self) -> Path | None:
        """The server's log file (known once ``start`` ran, or when given)."""
        return self._log_path

    @property
    def ports(self) -> dict[str, int]:
        """``{"grpc": ..., "http": ..., "metrics": ...}`` as used (free ports filled in at ``start``)."""
        return self._running.ports

    @property
    def pid(self) -> int | None:
        """The id of the supervisor that runs tritonserver (``supervisor.py``), also the process group of the
        supervisor, tritonserver and its python backend stubs; ``None`` before start."""
        return None if self._process is None else self._process.pid

    @property
    def served_models(self) -> list[str] | None:
        """The models loaded (``--load-model``); ``None``: every model of the repository. Set by ``start``: with
        ``models=None``, the models that have files when some have none."""
        models = self._running.models
        return None if models is None else list(models)

    @property
    def dead_backends(self) -> list[DeadBackend]:
        """Every backend process found dead so far (by ``poll_backends`` or ``stop``)."""
        return [] if self._watch is None else list(self._watch.dead.values())

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self, backend_directory: str | os.PathLike) -> list[str]:
        """The ``tritonserver`` command line (ports as they are now: call after ``start`` for chosen ports)."""
        args = self._running.to_args_list(backend_directory=Path(backend_directory),
                                          cache_directory=install.cache_directory())
        return [str(install.tritonserver_binary()), *args]

    # -- backend processes -----------------------------------------------------------------------------------
    def backend_processes(self) -> list[BackendProcess]:
        """The python backend stubs running now: children of ``tritonserver`` (itself the supervisor's child)."""
        with self._lock:
            self._look_at_backends()
            return [] if self._watch is None else sorted(self._watch.running.values(), key=lambda b: b.pid)

    def poll_backends(self) -> list[DeadBackend]:
        """Backend processes found dead since the last call, each logged once as an error naming its model and how
        it ended. Call it now and then while the server runs (``brats-serve`` does, every 0.5 s)."""
        with self._lock:
            return self._look_at_backends()

    def _look_at_backends(self) -> list[DeadBackend]:
        return [] if self._process is None or self._watch is None else self._watch.look()

    # -- life cycle ------------------------------------------------------------------------------------------
    def start(self) -> TritonServer:
        """Start the server and wait until it is ready; a ``ServeError`` with the cause and the log's tail if not."""
        with self._lock:
            if self._process is not None:
                raise ServeError("this TritonServer is already started; stop() it first")
            served = choose_models(self.config.repository, self.config.models)
            install.tritonserver_binary()  # fails early, with what to install, when the serve extra is missing
            ports = choose_ports(self.config.host, self.config.ports)
            self._running = dataclasses.replace(self.config.with_ports(ports), models=served)
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
            wait_ready(self._process, self.http_url, self._running.models, self.config.startup_timeout_s,
                       self._log_path)
        except BaseException:
            self.stop(keep_log=True)
            raise
        self._look_at_backends()  # know each stub's model while it runs: a dead one's command line is empty
        log.info("tritonserver ready: grpc %s, http %s, metrics %s", self.grpc_url, self.http_url, self.metrics_url)
        return self

    def _launch(self) -> None:
        """Backends folder, log file, process: the part of ``start`` that runs inside the work folder."""
        backend_dir = self.config.backend_directory or self._workdir / "backends"
        install.build_backend_directory(backend_dir)
        self._log_path = self.config.log_path or self._workdir / "tritonserver.log"
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
                env=install.server_environment(), cwd=self._workdir, start_new_session=True,
            )
        except OSError as e:
            raise ServeError(f"cannot run {cmd[0]} under {SUPERVISOR}: {e}; reinstall the serve extra") from e
        finally:
            os.close(watched)
        self._watch = BackendWatch(self._process.pid)

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Wait for the process to exit; its exit code, or ``None`` on timeout or when not started."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, keep_log: bool = False) -> int | None:
        """SIGTERM, wait the config's ``stop_timeout_s``, then SIGKILL; remove the work folder. Safe to call again.

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
            code, problems = self._end(process)
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

    def _end(self, process: subprocess.Popen) -> tuple[int, list[str]]:
        """SIGTERM, then SIGKILL after the grace: the exit code and what was abnormal about the end."""
        code = process.poll()
        problems = [] if code is None else [f"it had exited by itself with code {code}"]
        dead = self.dead_backends
        grace_s = self.config.stop_timeout_s
        if dead:
            grace_s = min(grace_s, DEAD_BACKEND_STOP_TIMEOUT_S)
            models = sorted({d.backend.model for d in dead})
            problems.append(f"the backend process of {', '.join(models)} died")
        if code is not None:
            return code, problems
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            if dead:  # expected: Triton waits for the dead model's unload
                log.info("tritonserver still unloading %g s after SIGTERM with a dead backend; killing it", grace_s)
            else:
                log.warning("tritonserver did not stop in %g s; killing it", grace_s)
                problems.append(f"it did not stop within {grace_s:g} s of SIGTERM and was killed")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its stubs too: they share its session
            return process.wait(), problems
        if code not in (0, -signal.SIGTERM):
            problems.append(f"it exited with code {code}")
        return code, problems

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
        """Wait until nothing listens on this server's ports; False on timeout."""
        return wait_ports_free(self._running.host, list(self.ports.values()), timeout_s)

    def _close_lifeline(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
