"""Command-line interface (Typer). Thin: every command calls the public library API.

Each module below registers its commands on :data:`anovae.cli.app.app` when imported.
"""

from __future__ import annotations

from anovae.cli import (
    core,  # noqa: F401  (registers fit, score, evaluate, demo)
    thresholds_report,  # noqa: F401  (registers threshold, report)
)
from anovae.cli.app import app


def main() -> None:
    """Entry point of the ``anovae`` console script."""
    app()


__all__ = ["app", "main"]
