"""``anovae serve`` and ``anovae export``, and the ``--stream`` mode of ``anovae score``: thin
adapters over :mod:`anovae.service`, :mod:`anovae.export` and :mod:`anovae.streaming`."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import typer

from anovae._text import plural
from anovae.cli.app import (
    app,
    cli_message,
    handle_errors,
    output_file,
    refuse_overwriting_inputs,
)
from anovae.exceptions import DataError

if TYPE_CHECKING:
    from anovae.streaming import StreamSummary


def _model_specs(models: list[str]) -> dict[str, str]:
    """``["a.safetensors", "fraud=b.safetensors"]`` -> ``{"a": "a.safetensors", "fraud": ...}``,
    each file loaded once here, so a file the service could not load is a one-line error before
    any worker starts (a worker failing in its startup prints a traceback, and with several
    workers uvicorn then exits 0)."""
    from anovae.persistence import load
    from anovae.service import check_model_name

    out: dict[str, str] = {}
    for spec in models:
        name, sep, path = spec.partition("=")
        if not sep or Path(spec).exists():
            name, path = Path(spec).stem, spec
        try:
            check_model_name(name)
        except ValueError as exc:
            raise DataError(f"{exc} (from {spec!r}: name it with NAME=PATH)") from None
        if name in out:
            raise DataError(f"two models are named {name!r}: name them, e.g. {name}2={path}")
        load(path, device="cpu")._check_fitted()
        out[name] = str(Path(path).resolve())
    return out


def _check_host(host: str) -> None:
    """An address that names no interface of a host (``999.1.1.1``, a name that does not
    resolve): a one-line error before the service starts (uvicorn would fail after the
    banner)."""
    import socket

    try:
        socket.getaddrinfo(host, None)
    except (OSError, UnicodeError) as exc:
        raise DataError(f"--host {host!r} is not an address of this machine or a name that "
                        f"resolves ({exc}); give an IP address such as 127.0.0.1 or 0.0.0.0"
                        ) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
@handle_errors
def serve(
    models: list[str] = typer.Argument(..., help="Model file(s) written by `anovae fit`; "
                                                 "NAME=PATH to name one (default: the file "
                                                 "stem). The first is served at /v1/score, each "
                                                 "at /v1/models/NAME/score."),
    host: str = typer.Option("127.0.0.1", help="Address to bind. The default answers this "
                                               "machine only; 0.0.0.0 exposes the service."),
    port: int = typer.Option(8000, min=1, max=65535, help="Port to bind."),
    workers: int = typer.Option(1, min=1, help="Worker processes (each loads the models)."),
    api_key: str | None = typer.Option(None, envvar="ANOVAE_API_KEY",
                                       help="Require this key on every /v1 request (X-API-Key "
                                            "header or Authorization: Bearer). Prefer the "
                                            "ANOVAE_API_KEY variable to the flag."),
    max_records: int = typer.Option(10_000, min=1, help="Records per request, at most."),
    max_body_bytes: int = typer.Option(16 * 2**20, min=1, help="Request body bytes, at most."),
    top_k: int = typer.Option(3, min=0, help="Top contributing features per record."),
    threads: int | None = typer.Option(None, min=1,
                                       help="torch threads per worker (default: torch's; 1 "
                                            "suits small models with one worker per core)."),
    access_log: bool = typer.Option(False, "--access-log/--no-access-log",
                                    help="Log every request (off: /metrics counts them)."),
) -> None:
    """Serve MODELS over HTTP: POST /v1/score, GET /v1/model, /healthz, /readyz, /metrics.

    OpenAPI docs at /docs. Safe by default: binds to 127.0.0.1; with an API key every /v1
    request must carry it; bodies and batches are size-limited."""
    import uvicorn

    from anovae.service import API_KEY_ENV, CONFIG_ENV

    specs = _model_specs(models)
    _check_host(host)
    if not _is_loopback(host) and not api_key:
        typer.echo(f"warning: serving on {host} without an API key: anyone who can reach this "
                   f"port can score (set {API_KEY_ENV} or --api-key)", err=True)
    os.environ[CONFIG_ENV] = json.dumps({"models": specs, "max_records": max_records,
                                         "max_body_bytes": max_body_bytes, "top_k": top_k,
                                         "torch_threads": threads, "freeze_gc": True})
    if api_key:
        os.environ[API_KEY_ENV] = api_key
    typer.echo(f"serving {', '.join(specs)} on http://{host}:{port} (docs: /docs)", err=True)
    uvicorn.run("anovae.service:app_from_env", factory=True, host=host, port=port,
                workers=workers, access_log=access_log,
                log_level=uvicorn_log_level(access_log))


def uvicorn_log_level(access_log: bool) -> str:
    """uvicorn's log level: that of ``--log-level`` (WARNING by default: errors, a worker that
    died), and at least INFO with ``--access-log``, whose lines uvicorn logs at INFO."""
    level = logging.getLogger().getEffectiveLevel()
    if access_log:
        level = min(level, logging.INFO)
    return logging.getLevelName(level).lower()


@app.command()
@handle_errors
def export(
    model: Path = typer.Argument(..., help="A model file written by `anovae fit`."),
    output: str = typer.Option(..., "--output", "-o", metavar="<path>",
                               help="The file to write (model.onnx)."),
    format_: str = typer.Option("onnx", "--format", help="Export format: onnx."),
) -> None:
    """Export MODEL's scoring graph to ONNX (scaling, encoder, decoder and score).

    Input 'x': float32 raw rows in the model's column order; outputs 'anomaly_score' (higher =
    more anomalous) and 'is_anomaly'."""
    from anovae.export import export_onnx
    from anovae.io import check_output_path
    from anovae.persistence import load

    if format_ != "onnx":
        raise typer.BadParameter(f"unknown format {format_!r}; choose onnx", param_hint="--format")
    out = output_file(output, "model.onnx")
    check_output_path(out)
    refuse_overwriting_inputs(out, {"the model (MODEL)": model})
    det = load(model, device="cpu")
    try:
        path = export_onnx(det, out)
    except ImportError as exc:
        raise DataError(f"ONNX export needs the onnx package ({exc}): "
                        "pip install 'anovae[serve]'") from None
    typer.echo(f"exported {type(det).__name__} ({det.score_name} score, "
               f"{det.schema_.n_features} inputs) to {path}")


def score_stream_cli(model: Path, data: Path, output: Path | None, top_k: int,
                     explain: bool, id_column: str | None = None) -> StreamSummary:
    """``anovae score MODEL DATA --stream``: JSON lines from DATA (``-``: standard input) to
    OUTPUT (default or ``-``: standard output); the summary goes to standard error. With
    ``id_column``, that key of each input object is copied to its output line as ``id``.

    Standard output gets each line as soon as it is scored; a file OUTPUT is written atomically
    (it appears, or replaces the old one, when the input ends, or with the lines scored when
    SIGINT or SIGTERM stops the stream: exit 130 / 143; a failed run leaves it as it was).
    """
    from anovae.io import atomic_output, check_output_path
    from anovae.persistence import load
    from anovae.streaming import score_stream

    out_file = None if output is None or str(output) == "-" else output
    if out_file is not None:
        check_output_path(out_file)  # before loading and scoring
        refuse_overwriting_inputs(out_file, {"the model (MODEL)": model,
                                             "the JSON lines to score (DATA)": data})
    det = load(model)
    with contextlib.ExitStack() as stack:
        src: TextIO = sys.stdin if str(data) == "-" else stack.enter_context(
            open(data, encoding="utf-8"))
        dst: TextIO = sys.stdout
        if out_file is not None:  # closed (last in, first out) before the move into place
            tmp = stack.enter_context(atomic_output(out_file))
            dst = stack.enter_context(open(tmp, "w", encoding="utf-8"))
        summary = score_stream(det, src, dst, top_k=top_k, explain=explain,
                               id_field=id_column, wording=cli_message)
    typer.echo(f"streamed {plural(summary.scored + summary.errors, 'line')}: {summary.scored} "
               f"scored ({plural(summary.anomalies, 'anomaly', 'anomalies')}), "
               f"{plural(summary.errors, 'error')} in {summary.seconds:.2f}s", err=True)
    return summary
