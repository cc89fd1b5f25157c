"""What a ``tritonserver`` is asked to do, as one value checked when made; :meth:`TritonServerConfig.to_args_list`
is its command line (after pytriton's ``TritonServerConfig``: the arguments are data, the process class only starts,
watches and stops)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class TritonServerConfig:
    """A server of ``repository`` on ``host``.

    Ports given as 0 are chosen free when the server starts (:meth:`with_ports`). ``models`` (names) are loaded with
    ``--model-control-mode=explicit``; ``None`` serves every model (``--model-control-mode=none``).
    ``extra_args`` go to ``tritonserver`` last (keep HTTP enabled: readiness is polled over HTTP). ``log_path``:
    where the server's stdout and stderr go (default: a temporary work folder's file). ``backend_directory``: where
    the backend directory is laid out (default: the work folder; rebuilt at each start, kept).
    """

    repository: Path
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    models: tuple[str, ...] | None = None
    model_config_name: str | None = None
    log_path: Path | None = None
    startup_timeout_s: float = 120.0
    stop_timeout_s: float = 30.0
    backend_directory: Path | None = None
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # paths may come as strings and names as lists: stored as Path and tuples, then checked
        for name in ("repository", "log_path", "backend_directory"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.models is not None:
            object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        for name, value in (("startup_timeout_s", self.startup_timeout_s), ("stop_timeout_s", self.stop_timeout_s)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        for kind, port in self.ports.items():
            if not 0 <= port <= 65535:
                raise ValueError(f"--{kind}-port must be in [0, 65535], got {port}")
        if self.models is not None and (not self.models or not all(self.models)):
            raise ValueError(f"models must name at least one model (or be None for all of them), got {self.models}")
        if not self.host:
            raise ValueError("host must be an address such as 127.0.0.1 or 0.0.0.0, got ''")

    @property
    def ports(self) -> dict[str, int]:
        """``{"grpc": ..., "http": ..., "metrics": ...}``, 0 where any free port will do."""
        return {"grpc": self.grpc_port, "http": self.http_port, "metrics": self.metrics_port}

    def with_ports(self, ports: dict[str, int]) -> TritonServerConfig:
        """This config with the ports of ``ports`` (kind -> port), e.g. the free ones chosen at start."""
        return replace(self, **{f"{kind}_port": port for kind, port in ports.items()})

    def url(self, kind: str) -> str:
        """``HOST:PORT`` of the ``grpc``, ``http`` or ``metrics`` endpoint (an IPv6 host in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.ports[kind]}"

    def to_args_list(self, *, backend_directory: Path, cache_directory: Path) -> list[str]:
        """The ``tritonserver`` arguments (the binary not included), ports as they are in this config."""
        args = [
            f"--model-repository={self.repository.resolve()}",
            f"--backend-directory={Path(backend_directory).resolve()}",
            f"--cache-directory={cache_directory}",
        ]
        for kind, port in self.ports.items():
            args += [f"--{kind}-address={self.host}", f"--{kind}-port={port}"]
        args.append("--allow-gpu-metrics=false")
        if self.models is None:
            args.append("--model-control-mode=none")
        else:
            args.append("--model-control-mode=explicit")
            args.extend(f"--load-model={name}" for name in self.models)
        if self.model_config_name:
            args.append(f"--model-config-name={self.model_config_name}")
        return args + list(self.extra_args)
