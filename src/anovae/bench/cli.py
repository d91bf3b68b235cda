"""``anovae bench``: the benchmark commands (a Typer sub-app; thin, the logic is in the library).

The main CLI mounts it with ``app.add_typer(bench_app, name="bench")``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer

from anovae.bench.tabular import BUILTIN_DETECTORS, PROTOCOLS, run_tabular_benchmark
from anovae.io import check_output_path

__all__ = ["bench_app"]

F = TypeVar("F", bound=Callable[..., Any])

bench_app = typer.Typer(
    help="Benchmarks of detection quality (anovae vs IsolationForest and PyOD).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def handle_errors(func: F) -> F:
    """:func:`anovae.cli.app.handle_errors`, looked up when the command runs (``anovae.cli``
    imports this module, so it cannot be imported here)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from anovae.cli.app import handle_errors as handle

        return handle(func)(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _split_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


@bench_app.callback()
def _bench() -> None:
    """Benchmarks of detection quality."""


@bench_app.command("tabular")
@handle_errors
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
             "when PyOD is not installed: pip install -e '.[bench]')."),
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
    check_output_path(out, folder=True)  # before the run, not after it
    result = run_tabular_benchmark(
        data_dir, protocols=tuple(protocol) if protocol else tuple(PROTOCOLS),
        detectors=_split_list(detectors), datasets=_split_list(datasets), seeds=seeds,
        max_rows=max_rows, out_dir=out, progress=progress)
    typer.echo(result.to_markdown(per_dataset=False))
    typer.echo(f"results written to {out}/ (results.csv, summary.csv, results.md)")


@bench_app.command("images")
@handle_errors
def images(
    data_dir: Path | None = typer.Option(
        None, "--data-dir",
        help="Folder with one sub-folder per data set holding the four MNIST-layout IDX files. "
             "Default: $ANOVAE_IMAGE_DATA, else ../shared/data."),
    datasets: str = typer.Option("mnist,fashion-mnist", "--datasets", help="Comma list."),
    protocol: list[str] | None = typer.Option(
        None, "--protocol", help="one-class or multi-class, repeatable (default one-class)."),
    detectors: str = typer.Option("vae,ae", "--detectors",
                                  help="Comma list from vae, ae, tutorial-conv."),
    classes: str | None = typer.Option(None, "--classes", help="Comma list (default all)."),
    seed: int = typer.Option(0, "--seed", help="random_state of every detector."),
    set_: list[str] | None = typer.Option(None, "--set", help="Detector parameter KEY=VALUE "
                                                              "(repeatable), e.g. epochs=5."),
    max_train: int | None = typer.Option(None, "--max-train", min=2,
                                         help="Subsample training images (quick runs)."),
    max_test: int | None = typer.Option(None, "--max-test", min=2,
                                        help="Subsample the test set (quick runs)."),
    extra_scores: str | None = typer.Option(
        None, "--extra-scores", help="Comma list of more scores to compute from each fitted "
                                     "VAE (e.g. reconstruction), reported as vae:<score>."),
    out: Path = typer.Option(Path("bench-images"), "--out",
                             help="Output folder: results.csv, summary.csv, results.md."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="A progress bar."),
) -> None:
    """One-class / multi-class anomaly detection on MNIST-style image sets, class by class."""
    from anovae.bench.images import run_image_benchmark
    from anovae.cli.app import parse_set_options

    check_output_path(out, folder=True)
    result = run_image_benchmark(
        data_dir, datasets=_split_list(datasets) or [], protocols=tuple(protocol or
                                                                         ["one-class"]),
        detectors=_split_list(detectors) or [], seed=seed,
        classes=None if classes is None else [int(c) for c in _split_list(classes) or []],
        params=parse_set_options(set_), max_train=max_train, max_test=max_test,
        extra_scores=_split_list(extra_scores) or (), out_dir=out, progress=progress)
    typer.echo(result.to_markdown())
    typer.echo(f"results written to {out}/ (results.csv, summary.csv, results.md)")


@bench_app.command("nslkdd")
@handle_errors
def nslkdd(
    data_dir: Path | None = typer.Option(
        None, "--data-dir", help="Folder with KDDTrain+.csv.gz and KDDTest+.csv.gz. Default: "
                                 "$ANOVAE_NSLKDD, else ../shared/data/nsl-kdd."),
    detectors: str | None = typer.Option(
        None, "--detectors", help="Comma list from anovae-native, anovae-onehot, iforest, "
                                  "pyod-vae (default all)."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Number of seeds (0..N-1)."),
    missing: float = typer.Option(0.1, "--missing", min=0.0, max=0.9,
                                  help="Also run with this share of cells blanked (0: no)."),
    max_train_rows: int | None = typer.Option(
        None, "--max-train-rows", min=10, help="Subsample the normal training rows."),
    out: Path = typer.Option(Path("bench-nslkdd"), "--out",
                             help="Output folder: results.csv, results.md."),
) -> None:
    """Mixed table: fit on the normal rows of NSL-KDD's train file, score its test
    file; native categorical handling vs one-hot anovae, IsolationForest and PyOD's VAE."""
    from anovae.bench.mixed import load_nslkdd, run_mixed_benchmark

    check_output_path(out, folder=True)
    train, test = load_nslkdd(data_dir)
    result = run_mixed_benchmark(train, test, detectors=_split_list(detectors),
                                 seeds=seeds, missing=missing,
                                 max_train_rows=max_train_rows, out_dir=out)
    typer.echo(result.to_markdown())
    typer.echo(f"results written to {out}/ (results.csv, results.md)")
