"""The Typer application object shared by every command module of the CLI, and its helpers."""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from anovae._version import __version__
from anovae.exceptions import AnovaeError

app = typer.Typer(
    name="anovae",
    help="Anomaly detection with variational autoencoders: fit, score, evaluate, demo.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])


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
    """Anomaly detection with variational autoencoders."""
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s")


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


def handle_errors(func: F) -> F:
    """Turn anovae's own errors (bad data, bad model file...) and the system's (a folder where
    a file belongs, no permission, disk full...) into one line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AnovaeError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except ModuleNotFoundError as exc:  # an optional dependency is not installed
            typer.echo(f"error: {missing_module_message(exc)}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:  # missing files, folders, permissions, full disks
            typer.echo(f"error: {os_error_message(exc)}", err=True)
            raise typer.Exit(2) from None
        except ValueError as exc:  # parameter validation of the estimators
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


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
        out[key.strip().replace("-", "_")] = tuple(value) if isinstance(value, list) else value
    return out
