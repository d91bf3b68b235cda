"""The Typer application object shared by every command module of the CLI, and its helpers."""

from __future__ import annotations

import ast
import contextlib
import functools
import json
import logging
import math
import os
import re
import shlex
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import typer

from anovae._version import __version__
from anovae.exceptions import AnovaeError, DataError

app = typer.Typer(
    name="anovae",
    help="Anomaly detection with variational autoencoders, for tables and images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help: Typer's Rich panels give every flag a "<bool>" value (--help <bool>) and keep
    # the line breaks of the docstrings
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},  # click's 80 columns cut the command list
)

F = TypeVar("F", bound=Callable[..., Any])

#: The levels ``--log-level`` takes (any case).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"anovae {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Show the version and exit."),
    log_level: str = typer.Option("WARNING", "--log-level",
                                  help="Logging level: DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Anomaly detection with variational autoencoders, for tables and images."""
    if log_level.upper() not in LOG_LEVELS:
        raise typer.BadParameter(f"choose one of {', '.join(LOG_LEVELS)} (any case), got "
                                 f"{log_level!r}", param_hint="--log-level")
    logging.basicConfig(level=getattr(logging, log_level.upper()),
                        format="%(levelname)s %(name)s: %(message)s")


def output_file(raw: str, example: str, option: str = "--output") -> Path:
    """The file an output option names, as typed: a name ending with a slash names a folder
    (``Path`` would drop the slash, and a file of that name would be written), so it is refused,
    suggesting ``example`` inside it."""
    if raw.endswith(("/", os.sep)):
        raise DataError(f"cannot write {raw!r}: {option} ends with '/', so it names a folder; "
                        f"give the name of a file to write, such as {raw + example!r}")
    return Path(raw)


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` are one file or folder (through links, ``..`` or hard links)."""
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:  # one of them does not exist (yet)
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def refuse_overwriting_inputs(output: str | os.PathLike, inputs: dict[str, Any]) -> None:
    """An output that is one of the command's inputs (``{"the model (MODEL)": path, ...}``;
    ``None`` and ``-`` are skipped): a one-line error, before any work, rather than replacing
    the model or the data with what the command writes."""
    from anovae.io import is_pattern, pattern_matches

    for what, path in inputs.items():
        if path is None or str(path) == "-":
            continue
        if is_pattern(path):
            if pattern_matches(path, output):
                raise DataError(f"cannot write {str(output)!r}: it matches the pattern of "
                                f"{what}, {os.fspath(path)!r} (it would be replaced, or read "
                                "as data the next time); give another output name")
        elif same_path(output, path):
            raise DataError(f"cannot write {str(output)!r}: it is {what}, which would be "
                            "replaced; give another output name")


def os_error_message(exc: OSError) -> str:
    """``IsADirectoryError(21, "Is a directory", "out")`` -> ``"'out': Is a directory"``: the
    path(s) first, then what the system said (not the ``[Errno 21]`` prefix)."""
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    what = exc.strerror or str(exc) or type(exc).__name__
    if not paths:
        return what
    shown = " -> ".join(repr(os.fsdecode(p)) if isinstance(p, (str, bytes, os.PathLike))
                        else repr(p) for p in paths)
    return f"{shown}: {what}"


#: Optional dependencies -> the extra that installs them (pyproject.toml).
_EXTRAS = {"fastapi": "serve", "uvicorn": "serve", "pydantic": "serve", "httptools": "serve",
           "uvloop": "serve", "onnx": "serve", "onnxruntime": "serve", "dask": "dask",
           "distributed": "dask", "pyod": "bench"}


def missing_module_message(exc: ModuleNotFoundError) -> str:
    """``"... needs the X package: pip install 'anovae[extra]'"`` for an optional dependency."""
    top = (exc.name or "").split(".")[0]
    extra = _EXTRAS.get(top)
    hint = f"pip install 'anovae[{extra}]'" if extra else f"pip install {top}"
    return f"this command needs the {top!r} package, which is not installed: {hint}"


_COLUMN_KINDS = re.compile(r"(?<![\w-])(categorical|numeric)=(\[[^\]]*\]|(?=[/\s,.;)]|$))")


def _as_options(match: re.Match[str]) -> str:
    """``categorical=['a', 'b']`` -> ``--categorical a --categorical b``; ``numeric=`` ->
    ``--numeric``."""
    option = f"--{match[1]}"
    if not match[2]:
        return option
    try:
        names = ast.literal_eval(match[2])
    except (ValueError, SyntaxError):
        return match[0]
    return " ".join(f"{option} {shlex.quote(str(n))}" for n in names) or option


def _quoted(match: re.Match[str]) -> str:
    """``--exclude Unnamed: 0`` -> ``--exclude 'Unnamed: 0'``: a hint the shell takes as is."""
    return f"{match[1]} {shlex.quote(match[2])}" if match[2] else match[1]


def cli_message(text: str) -> str:
    """A library message in the CLI's words: ``categorical=['a']`` -> ``--categorical a``
    (``numeric=`` alike), and ``X (CLI: Y)`` hints -> ``Y``, its value quoted for the shell."""
    hint = r"\(CLI: (--[\w-]+)(?: ((?:[^()]|\([^()]*\))+))?\)"  # a name may hold "(USD)"
    text = re.sub(r"\b(?:categorical|numeric)=\[[^\]]*\] " + hint, _quoted, text)
    text = re.sub(hint, lambda m: f"({_quoted(m)})", text)
    text = _PYTHON_X.sub("the data", text)  # the library calls its input X
    return _COLUMN_KINDS.sub(_as_options, text)


#: ``X`` as the library's messages name the input: "X has 3 columns", "column 'a' of X holds".
_PYTHON_X = re.compile(r"^X(?= (?:has|holds|contains|is|does|declares|cannot|must)\b)"
                       r"|(?<=\bof )X\b(?!\.)")


def warn(message: str) -> None:
    """Print ``warning: <message>`` (in the CLI's words, :func:`cli_message`) on standard
    error: something the user should check."""
    typer.echo(f"warning: {cli_message(message)}", err=True)


def note(message: str) -> None:
    """Print ``note: <message>`` on standard error: what the command did that the user may not
    expect (nothing is wrong)."""
    typer.echo(f"note: {message}", err=True)


@contextlib.contextmanager
def cli_warnings() -> Iterator[None]:
    """Show warnings as one line ``warning: <message>`` on standard error (not the library's
    file, line and source line; see :func:`warn`)."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        warn(str(message))

    saved = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = saved


#: What torch, NumPy and Python say when memory runs out (CPU and CUDA allocators alike).
_OUT_OF_MEMORY = re.compile(r"out of memory|can't allocate memory|unable to allocate|"
                            r"DefaultCPUAllocator", re.IGNORECASE)
_ALLOCATION = re.compile(r"allocate (\d+) bytes|allocate ([\d.]+) ?([KMGTP])i?B", re.IGNORECASE)
_UNITS = "KMGTP"


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out: Python's ``MemoryError`` (NumPy's too),
    ``torch.OutOfMemoryError`` or torch's allocator ``RuntimeError``."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError)
        and (type(exc).__name__ == "OutOfMemoryError" or bool(_OUT_OF_MEMORY.search(str(exc)))))


def out_of_memory_message(exc: BaseException) -> str:
    """One line for an out-of-memory error: how much was asked for (when said) and what to
    change."""
    found = _ALLOCATION.search(str(exc))
    size = ""
    if found:  # bytes, or a number and a unit (NumPy writes "256. TiB", torch "256.00 TiB")
        n = (float(found[1]) if found[1] else
             float(found[2]) * 1024.0 ** (_UNITS.index(found[3].upper()) + 1))
        k = min(max(int(math.log(max(n, 1.0), 1024)), 1), len(_UNITS))  # KiB at least
        v = n / 1024.0 ** k
        size = f" (could not allocate {v:.3g} {_UNITS[k - 1]}iB)" if v < 100 else \
            f" (could not allocate {v:.0f} {_UNITS[k - 1]}iB)"
    return (f"out of memory{size}: the images or the batches are too large for this machine; "
            "fit with a smaller --batch-size, resize the images (fewer pixels), or score a "
            "table with a smaller --chunk-rows")


def handle_errors(func: F) -> F:
    """Turn anovae's own errors (bad data, bad model file...), the system's (a folder where
    a file belongs, no permission, disk full...) and running out of memory into one line and
    exit code 2; show warnings as one line each (see :func:`cli_warnings`)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with cli_warnings():
                return func(*args, **kwargs)
        except AnovaeError as exc:
            typer.echo(f"error: {cli_message(str(exc))}", err=True)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as exc:  # an optional dependency is not installed
            typer.echo(f"error: {missing_module_message(exc)}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:  # missing files, folders, permissions, full disks
            typer.echo(f"error: {os_error_message(exc)}", err=True)
            raise typer.Exit(2) from None
        except ValueError as exc:  # parameter validation of the estimators
            typer.echo(f"error: {cli_message(str(exc))}", err=True)
            raise typer.Exit(2) from None
        except (MemoryError, RuntimeError) as exc:  # large images or batches; others: as they are
            if not is_out_of_memory(exc):
                raise
            typer.echo(f"error: {out_of_memory_message(exc)}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:  # Ctrl-C: the temporary output is gone by now
            typer.echo(f"interrupted (SIGINT): {INTERRUPTED}", err=True)
            raise typer.Exit(130) from None
        except SystemExit as exc:  # SIGTERM, from anovae.cli.main's handler
            if exc.code == 143:
                typer.echo(f"stopped (SIGTERM): {INTERRUPTED}", err=True)
            raise

    return wrapper  # type: ignore[return-value]


#: What an interrupted command says it left (operators asked whether the output is whole): the
#: outputs are written atomically, so there is none or the one from before.
INTERRUPTED = ("no partial output was left, and an output the command was to replace is as it "
               "was")


def parse_set_options(items: list[str] | None) -> dict[str, Any]:
    """``["beta=0.5", "hidden_dims=[64,32]"]`` -> ``{"beta": 0.5, "hidden_dims": [64, 32]}``.

    Values are read as JSON when they parse (numbers, lists, true/false/null; Python's
    True/False/None too), else as strings.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        key, raw = item.split("=", 1)
        raw = {"True": "true", "False": "false", "None": "null"}.get(raw.strip(), raw)
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        key = renamed_param(key.strip().replace("-", "_"))
        if key in out:
            raise typer.BadParameter(f"{key} is set twice ({item!r} and an earlier --set): "
                                     "give it once", param_hint="--set")
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


def renamed_param(key: str) -> str:
    """A ``--set`` key under the parameter's current name (``--set OLD=...`` still works for
    the parameters of :data:`anovae.persistence.RENAMED_PARAMS`)."""
    from anovae.persistence import RENAMED_PARAMS

    return RENAMED_PARAMS.get(key, key)
