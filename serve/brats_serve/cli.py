"""``brats-serve``: run Triton (the nvidia-pytriton wheel's ``tritonserver``) on a model repository until stopped.

Exit codes (the table brats-client, brats-export and brats-serve share, :mod:`brats_client.exit_codes`): 0 stopped
by SIGINT/SIGTERM; 2 usage error; 3 the repository is missing or its models have no files; 4 the server did not start
(port, binary, a model that failed to load: the message says why) or exited by itself; 6 a model's backend process
died and the server was stopped; 1 unexpected error.

A dead backend process (the python backend stub of a model instance, killed by the kernel's OOM killer or crashed)
stops the server: Triton 24.10 neither restarts the stub nor marks the model unready, and answers that model's
requests with errors (after a stall, with other requests' outputs), so a reload inside the same server is not
trusted. brats-serve logs which model died and how, stops the server within seconds, keeps its log and exits 6, for
whatever supervises it (systemd, a Kubernetes restart policy, ``docker run --restart``) to start a fresh one.

The help text is ``DESCRIPTION`` and ``EPILOG`` below (plain text, no markup: argparse prints them as they are).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import NoReturn

from brats_client import exit_codes
from brats_client.exit_codes import EXIT_PARTIAL, exit_code

from .errors import BackendDiedError, ServeError, ServerExitedError, StopRequested

log = logging.getLogger("brats_serve")

POLL_S = 0.5  # how often the running server and its backend processes are looked at
BF16_CONFIG = "bf16"
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # native bf16; without them OpenVINO emulates it on AVX-512
CPUINFO = "/proc/cpuinfo"

DESCRIPTION = """\
Run Triton (the tritonserver binary of the nvidia-pytriton wheel) on a model repository until stopped.

Model files: the repository's models need their files (written by brats-export; a fresh clone's
model_repository/ has configs only). A model named with --models that has none is an error before Triton
starts. Without --models, the models that have files are served and the others are named in one warning; a
repository where no model has files is an error.

A dead model: when the backend process of a model (its python backend stub) dies, killed by the kernel's OOM
killer or crashed, brats-serve logs which model died and how, stops the server within seconds, keeps the
server's log (its path is printed) and exits with code 6, so that whatever supervises it (systemd, Kubernetes,
docker run --restart) starts a fresh server. It does not reload the model in place: Triton 24.10 neither
restarts the process nor marks the model unready.
"""

EPILOG = f"""\
arguments after -- go to tritonserver unchanged.

{exit_codes.epilog()}

examples:
  brats-serve --repository out/demo/model_repository           # after make demo
  brats-export --checkpoint CKPT --repository model_repository  # writes the model files, then:
  brats-serve --repository model_repository
  brats-serve --repository model_repository --models brats_onnx --grpc-port 9001 --http-port 9000 --metrics-port 9002
  brats-serve --repository model_repository --model-config-name gpu -- --log-verbose=1
"""


def _say(stream, text: str) -> None:
    """The CLI's output: one message, flushed at once (the server may run for hours after it)."""
    stream.write(text + "\n")
    stream.flush()


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port is an integer in [0, 65535], got {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is an integer in [0, 65535], got {port}")
    return port


def _positive(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {value!r}") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {seconds:g}")
    return seconds


def _models(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"--models takes comma-separated model names, got {value!r}")
    return names


def cpu_flags(path: str = CPUINFO) -> set[str] | None:
    """The first CPU's flags from /proc/cpuinfo, or None where that cannot be read (not Linux)."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        return None
    return None


def bf16_warning(flags: set[str] | None) -> str | None:
    """Why ``--model-config-name bf16`` would be slow here, or None (bf16 instructions present, or unknown CPU)."""
    if flags is None or any(f in flags for f in BF16_FLAGS):
        return None
    if "avx512f" in flags:
        effect = "OpenVINO emulates bf16 on AVX-512, about 2-3x slower than f32"
    else:
        effect = "OpenVINO keeps f32 (no speed-up)"
    return (f"--model-config-name {BF16_CONFIG}: this CPU has neither {' nor '.join(BF16_FLAGS)}, so {effect}; "
            "serve config.pbtxt instead (leave out --model-config-name)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="brats-serve", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--repository", required=True, metavar="DIR",
                   help="model repository folder, written by brats-export (required; no default)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default %(default)s: this machine only; 0.0.0.0 for all)")
    p.add_argument("--grpc-port", type=_port, default=8001, metavar="PORT",
                   help="gRPC port (default %(default)s; 0 = any free)")
    p.add_argument("--http-port", type=_port, default=8000, metavar="PORT",
                   help="HTTP port (default %(default)s; 0 = any free)")
    p.add_argument("--metrics-port", type=_port, default=8002, metavar="PORT",
                   help="Prometheus metrics port (default %(default)s; 0 = any free)")
    p.add_argument("--models", type=_models, metavar="LIST",
                   help="comma-separated models to load (default: every model of the repository that has model "
                        "files)")
    p.add_argument("--model-config-name", metavar="NAME",
                   help="load <model>/configs/NAME.pbtxt instead of config.pbtxt where it exists, e.g. gpu or bf16 "
                        "(default: none, every model loads its config.pbtxt)")
    p.add_argument("--log-file", metavar="FILE",
                   help="write the server's log here (default: a temporary file, shown at start, removed after a "
                        "clean stop and kept after an abnormal one)")
    p.add_argument("--startup-timeout-s", type=_positive, default=120.0, metavar="S",
                   help="give up when not ready after this many seconds (default %(default)g)")
    p.add_argument("--stop-timeout-s", type=_positive, default=30.0, metavar="S",
                   help="on stop, kill the server when it has not exited after this long (default %(default)g; "
                        "3 when a backend process is dead)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also log the tritonserver command line and progress (default: off, warnings and errors)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:  # everything after -- goes to tritonserver unchanged
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return exit_code(e)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if args.model_config_name == BF16_CONFIG and (warning := bf16_warning(cpu_flags())):
        log.warning("%s", warning)

    from .banner import banner, ready_models
    from .launcher import TritonServer
    from .server_config import TritonServerConfig

    def interrupt(signum: int, _frame) -> None:
        raise StopRequested(signum)

    server = TritonServer(TritonServerConfig(
        args.repository, host=args.host, grpc_port=args.grpc_port, http_port=args.http_port,
        metrics_port=args.metrics_port, models=args.models, model_config_name=args.model_config_name,
        log_path=args.log_file, startup_timeout_s=args.startup_timeout_s, stop_timeout_s=args.stop_timeout_s,
        extra_args=extra,
    ))
    keep_log = False
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, interrupt) for s in signals}
    try:
        server.start()
        models = ready_models(server.http_url)
        _say(sys.stdout, banner(args.repository, server.grpc_url, server.http_url, server.metrics_url,
                                server.log_path, models))
        _watch(server)
    except (ServeError, StopRequested) as e:
        keep_log = isinstance(e, (ServerExitedError, BackendDiedError))
        _say(sys.stderr, f"brats-serve: {e}")
        return exit_code(e)
    finally:
        for s in signals:  # stopping is not interrupted by a second Ctrl-C
            signal.signal(s, signal.SIG_IGN)
        try:
            server.stop(keep_log=keep_log)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _watch(server) -> NoReturn:
    """Watch the running server until it exits by itself or loses a backend process; raises the error that says
    which (each dead backend process is logged as it is found)."""
    from .readiness import log_tail

    while True:
        code = server.wait(timeout_s=POLL_S)
        if code is not None:
            raise ServerExitedError(f"tritonserver exited by itself (code {code}); log {server.log_path}:\n"
                                    f"{log_tail(server.log_path)}")
        if dead := server.poll_backends():
            what = "; ".join(f"{d.backend.model} ({d.how})" for d in dead)
            raise BackendDiedError(
                f"a backend process died: {what}. Triton neither restarts it nor marks the model unready, so "
                f"brats-serve stops the server and exits with code {EXIT_PARTIAL} for its supervisor to start a "
                f"fresh one. Server log kept: {server.log_path}"
            )

if __name__ == "__main__":
    sys.exit(main())
