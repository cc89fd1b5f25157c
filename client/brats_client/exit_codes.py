"""The exit codes of brats-client, brats-export and brats-serve: one table, one meaning per code, and the one
map from error types to codes (:data:`ERRORS`, :func:`exit_code`).

Standard library only: brats-export and brats-serve import it without the client's dependencies.
"""

from __future__ import annotations

import textwrap

EXIT_OK = 0
EXIT_UNEXPECTED = 1  # a bug (a traceback was printed); brats-export: an exporter failed or a module is missing
EXIT_USAGE = 2  # an option value no command accepts
EXIT_INPUT = 3  # what the command reads is missing or wrong: case files, the checkpoint, the model repository
EXIT_SERVER = 4  # the Triton server is unreachable or answered an error; brats-serve: it did not start or it ended
EXIT_OUTPUT = 5  # an output cannot be written (exists without --overwrite / --force, folder not writable)
EXIT_PARTIAL = 6  # some items failed, the rest is done: cases of a batch; a served model's backend process died
EXIT_CHECK = 7  # a check failed: an export differs from PyTorch beyond the tolerance
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT

# (code, meaning, what each command means by it), for --help and the README
TABLE = (
    (EXIT_OK, "ok", "brats-serve: stopped by Ctrl-C or SIGTERM"),
    (EXIT_UNEXPECTED, "unexpected error", "a bug, with a traceback; brats-export: also an exporter that failed, or "
     "torch, onnx, onnxruntime or openvino not installed"),
    (EXIT_USAGE, "usage error", "an option value"),
    (EXIT_INPUT, "bad input", "case files (client), the checkpoint (export), the repository or its model files "
     "(serve)"),
    (EXIT_SERVER, "server error", "unreachable or an error (client); did not start, or exited by itself (serve)"),
    (EXIT_OUTPUT, "output error", "an output exists or cannot be written (client, export)"),
    (EXIT_PARTIAL, "partly failed", "a batch with failed cases (client); a model's backend process died, the server "
     "was stopped, its log kept (serve)"),
    (EXIT_CHECK, "check failed", "an export differs from PyTorch beyond the tolerance, or the INT8 model's labels "
     "from the f32 model's (export)"),
    (EXIT_INTERRUPTED, "interrupted", "Ctrl-C; nothing half-written is kept"),
)


# Every error type of the three commands and its code, by qualified name: this module imports none of them (the
# client must not import the export or serve packages). An error takes the code of the first class of its MRO listed
# here; tests/unit/test_exit_codes.py checks that every error class of the three packages is listed.
ERRORS = {
    "builtins.KeyboardInterrupt": EXIT_INTERRUPTED,  # Ctrl-C in brats-client
    "brats_client.errors.BratsError": EXIT_UNEXPECTED,
    "brats_client.errors.UsageError": EXIT_USAGE,
    "brats_client.errors.InputError": EXIT_INPUT,
    "brats_client.errors.ServerError": EXIT_SERVER,
    "brats_client.errors.ServerUnavailableError": EXIT_SERVER,
    "brats_client.errors.DeadlineError": EXIT_SERVER,
    "brats_client.errors.ModelNotReadyError": EXIT_SERVER,
    "brats_client.errors.BackendLostError": EXIT_SERVER,
    "brats_client.errors.OutputError": EXIT_OUTPUT,
    "brats_export.errors.ExportError": EXIT_UNEXPECTED,  # an exporter failed
    "brats_export.errors.MissingDependencyError": EXIT_UNEXPECTED,
    "brats_export.errors.CheckpointError": EXIT_INPUT,
    "brats_export.errors.RepositoryError": EXIT_OUTPUT,
    "brats_export.errors.ParityError": EXIT_CHECK,
    "brats_export.errors.AccuracyError": EXIT_CHECK,
    "brats_serve.errors.ServeError": EXIT_SERVER,
    "brats_serve.errors.ServeRepositoryError": EXIT_INPUT,
    "brats_serve.errors.ServerExitedError": EXIT_SERVER,
    "brats_serve.errors.BackendDiedError": EXIT_PARTIAL,
    "brats_serve.errors.StopRequested": EXIT_OK,  # SIGINT or SIGTERM to brats-serve
}


def exit_code(error: BaseException) -> int:
    """The code of ``error``: the first class of its MRO in :data:`ERRORS`; for argparse's ``SystemExit``
    :data:`EXIT_OK` (--help) or :data:`EXIT_USAGE`; :data:`EXIT_UNEXPECTED` for anything else."""
    if isinstance(error, SystemExit):
        return EXIT_OK if error.code in (0, None) else EXIT_USAGE
    for cls in type(error).__mro__:
        code = ERRORS.get(f"{cls.__module__}.{cls.__qualname__}")
        if code is not None:
            return code
    return EXIT_UNEXPECTED


def epilog() -> str:
    """The table as the commands' --help prints it."""
    rows = [
        textwrap.fill(f"{code:>3}  {meaning}" + (f" - {detail}" if detail else ""), width=100,
                      initial_indent="  ", subsequent_indent=" " * 7)
        for code, meaning, detail in TABLE
    ]
    return "exit codes (shared by brats-client, brats-export and brats-serve):\n" + "\n".join(rows)
