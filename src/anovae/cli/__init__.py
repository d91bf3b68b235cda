"""Command-line interface (Typer). Thin: every command calls the public library API.

Each module below registers its commands on :data:`anovae.cli.app.app` when imported.
"""

from __future__ import annotations

from anovae.bench.cli import bench_app
from anovae.cli import (
    core,  # noqa: F401  (registers fit, score, evaluate, demo)
    serve_export,  # noqa: F401  (registers serve, export)
    thresholds_report,  # noqa: F401  (registers threshold, report)
)
from anovae.cli.app import app

app.add_typer(bench_app, name="bench")  # anovae bench tabular ...


def main() -> None:
    """Entry point of the ``anovae`` console script."""
    app()


__all__ = ["app", "main"]
