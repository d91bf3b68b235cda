"""``anovae threshold`` and ``anovae report``: thin adapters over
:meth:`anovae.detectors.base.BaseDetector.refit_threshold` and :func:`anovae.report.build_report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import typer

from anovae.cli.app import app, handle_errors
from anovae.cli.core import _split_columns, read_for_model

_METHOD_HELP = ("contamination, fpr, best_f1, recall, pot, or pythresh:NAME (e.g. pythresh:IQR, "
                "needs PyThresh); default: the model's own method.")
_PARAM_HELP = ("The method's number: the contamination (contamination), the target "
               "false-positive rate (fpr, default 0.05), the target recall (recall, default 0.9) "
               "or the risk q (pot, default 0.001).")


def _load_rows(model: Path, data: Path, label_column: str | None, id_column: str | None,
               exclude: list[str] | None) -> tuple[Any, Any, np.ndarray | None]:
    """(detector, feature rows indexed by the id column, labels or None)."""
    from anovae.persistence import load
    from anovae.scoring import model_features

    det = load(model)
    df = read_for_model(det, data, label_column, id_column)
    if id_column and id_column in df.columns:
        df = df.set_index(df[id_column].to_numpy())
    X, y = _split_columns(df, label_column, exclude, id_column, str(data))
    return det, model_features(det, X), y


@app.command()
@handle_errors
def threshold(
    model: Path = typer.Argument(..., help="A model file written by `anovae fit`."),
    data: Path = typer.Argument(..., help="Rows to calibrate on. For fpr and pot: normal rows "
                                          "the model was not trained on (with --label-column, "
                                          "the rows labelled 0)."),
    method: str | None = typer.Option(None, help=_METHOD_HELP),
    param: float | None = typer.Option(None, help=_PARAM_HELP),
    label_column: str | None = typer.Option(None, help="0/1 label column (1 = anomaly); needed "
                                                       "by best_f1 and recall."),
    id_column: str | None = typer.Option(None, help="Row-id column, excluded from features."),
    exclude: list[str] | None = typer.Option(None, help="Column to leave out (repeatable)."),
    output: Path | None = typer.Option(None, "--output", "-o",
                                       help="Where to write the updated model (default: "
                                            "replace MODEL, atomically)."),
) -> None:
    """Re-fit the decision threshold of MODEL on DATA without retraining, and save the model."""
    from anovae.io import check_output_path

    check_output_path(output or model)
    det, X, y = _load_rows(model, data, label_column, id_column, exclude)
    old = det.threshold_
    det.refit_threshold(X, y, method=method, param=param)
    flagged = int(det.predict(X).sum())
    path = det.save(output or model)
    used = len(X)  # fpr and pot calibrate on the rows labelled normal only
    if y is not None and det._threshold_spec(method, param).wants_normal_scores:
        used = int((y == 0).sum())
    typer.echo(f"threshold {old:.6g} -> {det.threshold_:.6g} ({det.threshold_method_}, "
               f"set on {used} rows); {flagged} of {len(X)} rows of DATA above it; "
               f"model written to {path}")


@app.command()
@handle_errors
def report(
    model: Path = typer.Argument(..., help="A model file written by `anovae fit`."),
    data: Path = typer.Argument(..., help="Table to report on (.csv, .parquet, .npy, .npz...)."),
    output: Path = typer.Option(Path("report.html"), "--output", "-o",
                                help="The HTML file; the figures are saved beside it as PNG."),
    label_column: str | None = typer.Option(None, help="0/1 label column (1 = anomaly): adds "
                                                       "ROC/PR curves and metrics."),
    id_column: str | None = typer.Option(None, help="Column naming the rows in the report."),
    exclude: list[str] | None = typer.Option(None, help="Column to leave out (repeatable)."),
    top_k: int = typer.Option(20, help="How many top-scoring rows to list."),
    explain_k: int = typer.Option(5, help="How many features explain each listed row."),
    title: str | None = typer.Option(None, help="Page title."),
) -> None:
    """Write a self-contained HTML report of MODEL on DATA (plots embedded; no network needed)."""
    from anovae.io import check_output_path
    from anovae.report import build_report

    check_output_path(output)
    det, X, y = _load_rows(model, data, label_column, id_column, exclude)
    path = build_report(det, X, y, out_path=output, top_k=top_k, explain_k=explain_k,
                        title=title, data_name=Path(data).name)
    typer.echo(f"report written to {path} (figures beside it as {path.stem}-*.png)")
