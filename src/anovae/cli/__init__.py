"""Command-line interface (Typer). Thin: every command calls the public library API.

Each module below registers its commands on :data:`anovae.cli.app.app` when imported.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from anovae.bench.cli import bench_app
from anovae.cli import (
    core,  # noqa: F401  (registers fit, score, evaluate, demo)
    serve_export,  # noqa: F401  (registers serve, export)
    thresholds_report,  # noqa: F401  (registers threshold, report)
)
from anovae.cli.app import app
from anovae.distributed import launched_by_torchrun

app.add_typer(bench_app, name="bench")  # anovae bench tabular ...


def main() -> None:
    """Entry point of the ``anovae`` console script. SIGTERM (``kill``, a container or job
    stop) ends a command as Ctrl-C does: the file being written is removed, one it was to
    replace is left as it was, and the exit status is 143. (SIGTERM's default ended the process
    at once and left the temporary file behind.)"""
    with _exit_on_sigterm():
        app()


@contextlib.contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit(143)`` while the block runs, where its default would end
    the process at once (no ``finally`` blocks run, no temporary file is removed). A handler
    of the caller's own, or a command's (``--stream``, ``serve``), is left alone, and so is a
    process of torchrun's: a rank blocked in a collective would not run Python to raise the
    exit, and torchrun's SIGTERM is how it ends the ranks of a failed job."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL or launched_by_torchrun():
        yield
        return
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: signals cannot be handled here
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


__all__ = ["app", "main"]
