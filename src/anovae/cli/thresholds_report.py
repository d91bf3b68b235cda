"""``anovae threshold`` and ``anovae report``: thin adapters over
:meth:`anovae.detectors.base.BaseDetector.refit_threshold` and :func:`anovae.report.build_report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import typer

from anovae._text import plural
from anovae.cli.app import (
    app,
    handle_errors,
    output_file,
    refuse_overwriting_inputs,
)
from anovae.cli.core import (
    NORMAL_CLASSES,
    _refuse_table_options,
    _split_columns,
    image_labels,
    is_image_model,
    read_for_model,
    read_model_images,
    refuse_images_for_table_model,
)
from anovae.exceptions import DataError
from anovae.io import is_within

_METHOD_HELP = ("contamination, fpr, best_f1, recall, pot, or pythresh:NAME (e.g. pythresh:IQR, "
                "needs PyThresh); default: the method the model's threshold was last set with "
                "(by fit or an earlier `anovae threshold`), with its number.")
_PARAM_HELP = ("The method's number: the contamination (contamination), the target "
               "false-positive rate (fpr, default 0.05), the target recall (recall, default 0.9) "
               "or the risk q (pot, default 0.001). Without --method: a new number for the "
               "model's own method.")
_IMAGES_HELP = (" For an image model: a folder of PNG/JPEG files (class sub-folders give labels: "
                "the one named normal, good or ok holds the normal images), an IDX file or a "
                ".npy/.npz array (labels: its 0/1 'y').")


def _load_rows(model: Path, data: Path, label_column: str | None, id_column: str | None,
               exclude: list[str] | None) -> tuple[Any, Any, np.ndarray | None, list[str] | None]:
    """(detector, rows to score, labels or None, row names or None): feature rows indexed by
    the id column, or the images of an image model (named by their files)."""
    from anovae.persistence import load
    from anovae.scoring import model_features

    det = load(model)
    if is_image_model(det):
        _refuse_table_options(data, {"--label-column": label_column, "--id-column": id_column,
                                     "--exclude": exclude})
        images = read_model_images(det, data)
        return det, images.images, image_labels(images, data), images.names
    refuse_images_for_table_model(det, model, data)
    df = read_for_model(det, data, label_column, id_column)
    if id_column and id_column in df.columns:
        df = df.set_index(df[id_column].to_numpy())
    X, y = _split_columns(df, label_column, exclude, id_column, str(data))
    return det, model_features(det, X), y, None


@app.command()
@handle_errors
def threshold(
    model: Path = typer.Argument(..., help="A model file written by `anovae fit`."),
    data: Path = typer.Argument(..., help="Rows to calibrate on. For fpr and pot: normal rows "
                                          "the model was not trained on (with --label-column, "
                                          "the rows labelled 0)." + _IMAGES_HELP),
    method: str | None = typer.Option(None, help=_METHOD_HELP),
    param: float | None = typer.Option(None, help=_PARAM_HELP),
    label_column: str | None = typer.Option(None, help="0/1 label column (1 = anomaly); needed "
                                                       "by best_f1 and recall."),
    id_column: str | None = typer.Option(None, help="Row-id column, excluded from features."),
    exclude: list[str] | None = typer.Option(None, help="Column to leave out (repeatable)."),
    output: str | None = typer.Option(None, "--output", "-o", metavar="<path>",
                                      help="Where to write the updated model (default: "
                                           "replace MODEL, atomically)."),
) -> None:
    """Re-fit MODEL's decision threshold on DATA, without retraining; save the model."""
    from anovae.io import check_output_path

    out = model if output is None else output_file(output, "model.safetensors")
    check_output_path(out)
    refuse_overwriting_inputs(out, {"the calibration data (DATA)": data})  # MODEL: the default
    det, X, y, _ = _load_rows(model, data, label_column, id_column, exclude)
    old = det.threshold_
    try:
        det.refit_threshold(X, y, method=method, param=param)  # None: the model's own method
    except DataError as exc:
        if is_image_model(det) and "needs labels" in str(exc):
            raise DataError(f"{str(exc).partition(':')[0]}: {_IMAGE_LABELS}") from None
        raise
    flagged = int(det.predict(X).sum())
    path = det.save(out)
    used = len(X)  # fpr and pot calibrate on the rows labelled normal only
    if y is not None and det._threshold_spec(det.threshold_method_).wants_normal_scores:
        used = int((y == 0).sum())
    rows = "image" if is_image_model(det) else "row"
    typer.echo(f"threshold {old:.6g} -> {det.threshold_:.6g} ({det.threshold_method_}, "
               f"set on {plural(used, rows)}); {flagged} of {plural(len(X), rows)} of DATA "
               f"above it; model written to {path}")


#: How images get labels, for the methods that need them (see :func:`image_labels`).
_IMAGE_LABELS = (
    "images get labels from class sub-folders of DATA, one named "
    f"{', '.join(NORMAL_CLASSES[:-1])} or {NORMAL_CLASSES[-1]} (any case) holding the normal "
    "images and the others anomalies (or sub-folders named 0 and 1), or from the 0/1 array 'y' "
    "(or 'labels') of a .npz file beside its images 'X' (1 = anomaly)")


@app.command()
@handle_errors
def report(
    model: Path = typer.Argument(..., help="A model file written by `anovae fit`."),
    data: Path = typer.Argument(..., help="Table to report on (.csv, .parquet, .npy, .npz...)."
                                          + _IMAGES_HELP),
    output: str = typer.Option("report.html", "--output", "-o", metavar="<path>",
                               help="The HTML file (.html or .htm); the figures are saved "
                                    "beside it as PNG."),
    label_column: str | None = typer.Option(None, help="0/1 label column (1 = anomaly): adds "
                                                       "ROC/PR curves and metrics."),
    id_column: str | None = typer.Option(None, help="Column naming the rows in the report."),
    exclude: list[str] | None = typer.Option(None, help="Column to leave out (repeatable)."),
    top_k: int = typer.Option(20, min=0, help="How many top-scoring rows to list."),
    explain_k: int = typer.Option(5, min=1, help="How many features explain each listed row."),
    title: str | None = typer.Option(None, help="Page title."),
) -> None:
    """Write a self-contained HTML report of MODEL on DATA (no network needed to view it)."""
    from anovae.images import is_image_source
    from anovae.io import check_output_path
    from anovae.report import build_report

    out = output_file(output, "report.html")
    check_output_path(out)
    refuse_overwriting_inputs(out, {"the model (MODEL)": model, "the data (DATA)": data})
    if out.suffix.lower() not in (".html", ".htm"):
        raise DataError(f"cannot write {output!r}: a report is an HTML page; give a name ending "
                        f"in .html, such as {str(out.with_suffix('.html'))!r}")
    if data.is_dir() and is_within(out.parent, data) and is_image_source(data):
        raise DataError(f"cannot write {output!r}: it is inside the folder DATA "
                        f"({str(data)!r}), where the report's PNG figures would be read as "
                        "images the next time; write the report outside it")
    det, X, y, names = _load_rows(model, data, label_column, id_column, exclude)
    path = build_report(det, X, y, out_path=out, top_k=top_k, explain_k=explain_k,
                        title=title, data_name=Path(data).name, row_names=names)
    typer.echo(f"report written to {path} (figures beside it as {path.stem}-*.png)")
