"""``anovae bench``: the benchmark commands (a Typer sub-app; thin, the logic is in the library).

The main CLI mounts it with ``app.add_typer(bench_app, name="bench")``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from anovae.bench.tabular import BUILTIN_DETECTORS, PROTOCOLS, run_tabular_benchmark

__all__ = ["bench_app"]

bench_app = typer.Typer(
    help="Benchmarks of detection quality (anovae vs IsolationForest and PyOD).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _split_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


@bench_app.callback()
def _bench() -> None:
    """Benchmarks of detection quality."""


@bench_app.command("tabular")
def tabular(
    data_dir: Path | None = typer.Option(
        None, "--data-dir",
        help="Folder of ADBench-style .npz files (X, y with 1 = anomaly). Default: "
             "$ANOVAE_ADBENCH, else ../shared/data/adbench."),
    protocol: list[str] | None = typer.Option(
        None, "--protocol", help=f"Protocol, repeatable: {', '.join(PROTOCOLS)} (default both)."),
    detectors: str | None = typer.Option(
        None, "--detectors",
        help=f"Comma list from {', '.join(BUILTIN_DETECTORS)} (default all; PyOD's are skipped "
             "when PyOD is not installed: pip install 'anovae[bench]')."),
    datasets: str | None = typer.Option(
        None, "--datasets", help="Comma list of data sets (file stem, name or number)."),
    seeds: int = typer.Option(3, "--seeds", min=1, help="Number of seeds (0..N-1)."),
    max_rows: int | None = typer.Option(
        None, "--max-rows", min=10,
        help="Subsample larger data sets to this many rows (stratified, with the seed)."),
    out: Path = typer.Option(Path("bench-results"), "--out",
                             help="Output folder: results.csv, summary.csv, results.md."),
    progress: bool = typer.Option(True, "--progress/--no-progress",
                                  help="A progress bar per data set."),
) -> None:
    """Run the detectors side by side on every data set; print the Markdown summary."""
    try:
        result = run_tabular_benchmark(
            data_dir, protocols=tuple(protocol) if protocol else tuple(PROTOCOLS),
            detectors=_split_list(detectors), datasets=_split_list(datasets), seeds=seeds,
            max_rows=max_rows, out_dir=out, progress=progress)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(result.to_markdown(per_dataset=False))
    typer.echo(f"results written to {out}/ (results.csv, summary.csv, results.md)")
