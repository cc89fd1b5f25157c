"""The network models a served pipeline calls, as the running server loaded them: read at load time from the
repository the pipeline lies in, not frozen at export (a ``--fixed-size`` re-export or another variant changes
tiles, batch size and companions, and the pipeline follows).

Inside Triton's python backend a model cannot ask the server for another model's config, so the pipeline reads
the file the server read: ``<repository>/<model>/configs/<name>.pbtxt`` when the server runs with
``--model-config-name=<name>`` and that file exists (Triton's rule), else ``<repository>/<model>/config.pbtxt``.
The server's command line is its parent process's (the stub is a child of ``tritonserver``). The text is parsed
here (protobuf text format, the subset config.pbtxt files use): the python backend may lack protobuf.
Standard library only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import ServerError
from .model_info import ModelInfo

CONFIG_NAME_FLAG = "--model-config-name"
_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[{}<>\[\]:,;]|[^\s{}<>\[\]:,;"\'#]+')


def parse_text_config(text: str) -> dict[str, list[Any]]:
    """A protobuf text-format message as ``{field: [values]}`` (every field a list: repeated or not); nested
    messages are such dicts, strings unquoted, numbers and enum names left as their text."""
    tokens = [t for t in _TOKEN.findall(text) if t.strip() and not t.startswith("#")]
    if "".join(_TOKEN.findall(text)) != text:
        raise ValueError("not protobuf text format: characters outside any token")
    return _message(tokens, 0, None)[0]


def _message(tokens: list[str], i: int, close: str | None) -> tuple[dict[str, list[Any]], int]:
    fields: dict[str, list[Any]] = {}
    while i < len(tokens) and tokens[i] != close:
        name = tokens[i]
        i += 1
        if i < len(tokens) and tokens[i] == ":":
            i += 1
        if i >= len(tokens):
            raise ValueError(f"field {name!r} has no value")
        if tokens[i] == "[":
            i += 1
            while tokens[i] != "]":
                value, i = _value(tokens, i)
                fields.setdefault(name, []).append(value)
                if tokens[i] == ",":
                    i += 1
            i += 1
        else:
            value, i = _value(tokens, i)
            fields.setdefault(name, []).append(value)
        if i < len(tokens) and tokens[i] in (",", ";"):
            i += 1
    if close is not None and i >= len(tokens):
        raise ValueError(f"message not closed with {close!r}")
    return fields, i + (close is not None)


def _value(tokens: list[str], i: int) -> tuple[Any, int]:
    token = tokens[i]
    if token in ("{", "<"):
        return _message(tokens, i + 1, "}" if token == "{" else ">")
    if token[0] in "\"'":
        return token[1:-1].encode().decode("unicode_escape"), i + 1
    return token, i + 1


def info_from_config(config: dict[str, list[Any]], name: str) -> ModelInfo:
    """The :class:`ModelInfo` a pipeline needs of a network model's parsed config: tensor names, batch size,
    a fixed tile shape (``--fixed-size`` exports), and its parameters (companions, server flips)."""
    first = {k: v[0] for k, v in config.items() if v}
    inputs, outputs = config.get("input", []), config.get("output", [])
    if not inputs or not outputs:
        raise ServerError(f"model {name!r}: its config has no input or no output")
    dims = tuple(int(d) for d in inputs[0].get("dims", []))
    spatial = dims[-3:]
    parameters = {
        p["key"][0]: p["value"][0].get("string_value", [""])[0]
        for p in config.get("parameters", [])
        if p.get("key") and p.get("value")
    }
    return ModelInfo(
        name, "", inputs[0]["name"][0], outputs[0]["name"][0], int(first.get("max_batch_size", 0)),
        str(first.get("platform") or first.get("backend") or ""),
        fixed_spatial=spatial if len(spatial) == 3 and -1 not in spatial else None, parameters=parameters,
    )


def server_config_name(pid: int | None = None) -> str | None:
    """The ``--model-config-name`` of the server process ``pid`` (default: this process's parent), or None."""
    pid = os.getppid() if pid is None else pid
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    for i, arg in enumerate(args):
        if arg.startswith(f"{CONFIG_NAME_FLAG}="):
            return arg.split("=", 1)[1]
        if arg == CONFIG_NAME_FLAG and i + 1 < len(args):
            return args[i + 1]
    return None


def config_path(model_dir: Path, config_name: str | None) -> Path:
    """The config file Triton loads for ``model_dir`` with ``--model-config-name=config_name``."""
    if config_name:
        variant = model_dir / "configs" / f"{config_name}.pbtxt"
        if variant.is_file():
            return variant
    return model_dir / "config.pbtxt"


def live_networks(repository: Path, names: Iterable[str], config_name: str | None) -> tuple[
        dict[str, ModelInfo], dict[str, str]]:
    """The networks ``names`` of ``repository`` as the server loaded them, and why the others cannot be
    called (no config there, unreadable): ``({name: ModelInfo}, {name: reason})``."""
    table: dict[str, ModelInfo] = {}
    problems: dict[str, str] = {}
    for name in names:
        path = config_path(Path(repository) / name, config_name)
        try:
            table[name] = info_from_config(parse_text_config(path.read_text(encoding="utf-8")), name)
        except (OSError, ValueError, KeyError, IndexError, ServerError) as e:
            problems[name] = f"cannot read its config {path}: {e}"
    return table, problems
