"""``anovae fit``, ``score``, ``evaluate`` and ``demo``: thin adapters over the library."""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import typer

from anovae._text import plural, quoted
from anovae.cli.app import (
    app,
    handle_errors,
    note,
    output_file,
    parse_set_options,
    refuse_overwriting_inputs,
    renamed_param,
    warn,
)
from anovae.exceptions import DataError
from anovae.io import is_pattern, is_within

_DETECTORS = ("vae", "ae")


def _detector_class(name: str, images: bool = False) -> type:
    from anovae.detectors import AEDetector, ImageAEDetector, ImageVAEDetector, VAEDetector

    if name not in _DETECTORS:
        raise typer.BadParameter(f"choose one of {list(_DETECTORS)}", param_hint="--detector")
    if images:  # a folder of PNG/JPEG, an IDX file, or a .npy/.npz of (N, H, W[, C]) images
        return ImageVAEDetector if name == "vae" else ImageAEDetector
    return VAEDetector if name == "vae" else AEDetector


def _refuse_table_options(data: Path, options: dict[str, Any]) -> None:
    """Table-only options given with image data: a clear error rather than silently ignoring
    them (an image's label is its sub-folder; images have no columns)."""
    given = [name for name, value in options.items()  # 0 is given (0 == False: test types)
             if not (value is None or value is False or (isinstance(value, (list, tuple))
                                                          and not value))]
    if given:
        one = len(given) == 1
        suffix = data.suffix.lower()
        labels = ("the 0/1 array 'y' (or 'labels') beside them" if suffix == ".npz"
                  else "none: a .npy holds images only; use an .npz with a 'y' array"
                  if suffix == ".npy" else "the sub-folder names" if data.is_dir()
                  else "none: an IDX file holds images only; use a folder of class "
                       "sub-folders or an .npz with a 'y' array")
        where = f" (their labels: {labels})" if "--label-column" in given else ""
        raise DataError(f"{', '.join(given)} {'applies' if one else 'apply'} to tables, but "
                        f"{str(data)!r} holds images{where}; leave {'it' if one else 'them'} "
                        "out")


def is_image_model(det: Any) -> bool:
    """Whether ``det`` was fitted on images (and so reads image sources, not tables)."""
    return hasattr(det, "anomaly_maps")


def read_model_images(det: Any | None, data: Path) -> Any:
    """The images of ``data`` (a folder of PNG/JPEG files, an IDX file, a .npy/.npz array) as
    every command reads them (:func:`anovae.images.read_images`): for an image model ``det``,
    its size checked from each file's header before decoding; ``None``: to fit a new model."""
    from anovae.images import ImageSchema, read_images

    schema = getattr(det, "schema_", None)
    return read_images(data, schema=schema if isinstance(schema, ImageSchema) else None)


def refuse_images_for_table_model(det: Any, model: Path, data: Path) -> None:
    """A table model given images: say so (its table reader would say the folder has no
    Parquet files, or that the array is not 2-D)."""
    from anovae.images import is_image_source

    if not is_image_model(det) and is_image_source(data):
        raise DataError(f"{str(model)!r} is a table model (fitted on {det.n_features_in_} "
                        f"columns), but {str(data)!r} holds images: give it a table, or fit a "
                        "model on images (anovae fit IMAGES)")


#: Class sub-folder names taken as the normal images (any case) when labels are needed.
NORMAL_CLASSES = ("normal", "good", "ok")


def image_labels(images: Any, data: Path) -> np.ndarray | None:
    """0/1 labels (1 = anomaly) from the labels of ``images`` (an
    :class:`anovae.images.ImageData`): 0/1 numbers (or texts) as they are, or class names
    (sub-folders) of which one is in :data:`NORMAL_CLASSES` (that class normal, the others
    anomalies); other labels are left out with a warning. ``None`` without labels."""
    labels = images.labels
    if labels is None:
        return None
    labels = np.asarray(labels).ravel()
    text = labels.astype(str)
    if labels.dtype.kind in "biuf" and set(np.unique(labels).tolist()) <= {0, 1}:
        return labels.astype(int)
    if labels.dtype.kind not in "biuf":
        if set(text.tolist()) <= {"0", "1"}:
            return (text == "1").astype(int)
        normal = sorted({t for t in text.tolist() if t.lower() in NORMAL_CLASSES})
        if len(normal) == 1:
            return (text != normal[0]).astype(int)
    values = sorted(set(text.tolist()))
    shown = ", ".join(values[:5]) + (", ..." if len(values) > 5 else "")
    warn(f"the labels of {str(data)!r} ({shown}) are neither 0/1 nor classes of which one is "
         f"named {' or '.join(repr(n) for n in NORMAL_CLASSES)} (the normal images; the other "
         "classes hold anomalies): they are not used")
    return None


def _split_columns(df: Any, label_column: str | None, exclude: list[str] | None,
                   id_column: str | None, path: str) -> tuple[Any, np.ndarray | None]:
    """Drop the label, id and excluded columns; return (features, labels or None)."""
    drop: list[str] = []
    for name, what in [(label_column, "label column"), (id_column, "id column")]:
        if name:
            if name not in df.columns:
                raise DataError(f"{what} {name!r} is not in {path!r}; "
                                + columns_hint(name, df.columns))
            drop.append(name)
    for name in exclude or []:
        if name not in df.columns:
            raise DataError(f"--exclude {name!r}: no such column in {path!r}")
        drop.append(name)
    y = None
    if label_column:
        raw = df[label_column]
        if not (pd.api.types.is_numeric_dtype(raw.dtype) or pd.api.types.is_bool_dtype(raw.dtype)):
            raw = pd.to_numeric(raw, errors="coerce").where(raw.notna())  # "0" / "1" as text
            bad = df[label_column][raw.isna() & df[label_column].notna()]
            if len(bad):
                raise DataError(f"label column {label_column!r} must hold 0 (normal) and 1 "
                                f"(anomaly) only; it holds text such as {quoted(bad.iloc[0])}")
        found = sorted({str(v) for v in raw.unique()[:50]})
        if raw.isna().any() or not raw.isin([0, 1]).all():
            raise DataError(f"label column {label_column!r} must hold 0 (normal) and 1 "
                            f"(anomaly) only, found {found[:10]}")
        y = raw.to_numpy().astype(int)
    return df.drop(columns=drop), y


#: Names (lower-case) of the columns that usually hold labels: one of them holding only 0 and 1,
#: with no --label-column, is probably the labels, fitted as a feature by mistake.
LABEL_LIKE_NAMES = frozenset({"y", "label", "labels", "target", "class", "anomaly", "is_anomaly",
                              "outlier", "is_outlier", "fraud", "is_fraud", "attack"})


def _warn_label_like(df: Any, data: Path, skip: list[str | None]) -> None:
    """Warn about each column of ``df`` (read from ``data``, without --label-column) that looks
    like forgotten labels: named as labels usually are (:data:`LABEL_LIKE_NAMES`) and holding
    only 0 and 1 (true/false, or the text "0"/"1"), or the ``y`` array of a ``.npz`` file
    (whatever it holds). ``skip``: the columns excluded, or the id column."""
    npz = str(data).lower().endswith(".npz")
    for name in df.columns:
        if str(name).lower() not in LABEL_LIKE_NAMES or name in skip:
            continue
        values = df[name].dropna()
        if pd.api.types.is_bool_dtype(values.dtype):
            binary = True
        elif pd.api.types.is_numeric_dtype(values.dtype):
            binary = bool(values.isin([0, 1]).all())
        else:
            binary = bool(values.astype(str).isin(["0", "1"]).all())
        if (npz and name == "y") or (binary and len(values)):
            held = "a 'y' array" if npz and name == "y" else f"a column {name!r} of 0/1 values"
            warn(f"{str(data)!r} holds {held}: it is fitted as a feature; pass --label-column "
                 f"{name} if it holds the labels (or --exclude {name})")


def _warn_label_like_parquet(data: Path, skip: list[str | None]) -> None:
    """:func:`_warn_label_like` for an out-of-core fit, which never holds the table: on the
    first row group of the first file, read for the label-like columns only. What it cannot
    read is left for the fit to report."""
    import pyarrow.parquet as pq

    from anovae.outofcore import parquet_files

    try:
        first = pq.ParquetFile(parquet_files(data)[0])
        names = [n for n in first.schema_arrow.names
                 if n.lower() in LABEL_LIKE_NAMES and n not in skip]
        if not names or not first.metadata.num_row_groups:
            return
        sample = first.read_row_group(0, columns=names).to_pandas()
    except Exception:  # noqa: BLE001 (the fit reads the files next, and names what is wrong)
        return
    _warn_label_like(sample, data, skip)


#: Column names an error lists, at most (then "... and N more").
SHOWN_COLUMNS = 20


def columns_hint(name: str, columns: Any) -> str:
    """``"did you mean 'Y'? its columns are: 'a', 'Y', ... and 12 more"``: the columns close to
    ``name`` (the same but for case first, then :func:`difflib.get_close_matches`), and the
    columns, the first :data:`SHOWN_COLUMNS` of them."""
    names = [str(c) for c in columns]
    close = [c for c in names if c.lower() == name.lower()]
    close += [c for c in difflib.get_close_matches(name, names, n=3) if c not in close]
    shown = ", ".join(repr(c) for c in names[:SHOWN_COLUMNS])
    if len(names) > SHOWN_COLUMNS:
        shown += f" ... and {len(names) - SHOWN_COLUMNS} more"
    mean = f"did you mean {' or '.join(repr(c) for c in close[:3])}? " if close else ""
    return f"{mean}its columns are: {shown}"


def refuse_non_parquet(data: Path, option: str, instead: str) -> None:
    """``option`` (``--engine dask``, ``--out-of-core``) given a file that is not Parquet: say
    that the option reads Parquet (the reader's message does not name the option)."""
    from anovae.io import pattern_files, pattern_kind

    text = str(data)
    if is_pattern(text):  # the pattern's tables are of one kind
        kind = pattern_kind(pattern_files(text), text)
        if kind != "parquet":
            raise DataError(f"{option} reads Parquet: the pattern {text!r} matches {kind} "
                            "files; give a pattern of Parquet files such as 'data/*.parquet' "
                            f"(convert other tables with pandas first), or {instead}")
    elif os.path.isfile(text) and not text.lower().endswith((".parquet", ".pq")):
        raise DataError(f"{option} reads Parquet: {text!r} is not a Parquet file; give a "
                        f"Parquet file, a folder of them or a glob pattern such as "
                        f"'data/*.parquet' (convert other tables with pandas first), or "
                        f"{instead}")


def _refuse_dropped_kinds(kinds: dict[str, list[str] | None], label_column: str | None,
                          id_column: str | None, exclude: list[str] | None) -> None:
    """A ``--categorical``/``--numeric`` column that is the label, the id or excluded: say so
    (the library, which never sees it, would call it "not in the data")."""
    dropped = {**dict.fromkeys(exclude or [], "excluded (--exclude)"),
               **({label_column: "the label column"} if label_column else {}),
               **({id_column: "the id column"} if id_column else {})}
    for option, names in kinds.items():
        for name in names or []:
            if name in dropped:
                raise DataError(f"{option} {name!r}: that column is {dropped[name]}, not a "
                                "feature; leave out one of the two options")


def _int_list(text: str, option: str) -> tuple[int, ...]:
    """``"64,32"`` -> ``(64, 32)``; a clear error naming ``option`` otherwise."""
    try:
        return tuple(int(h) for h in text.replace(" ", "").split(",") if h)
    except ValueError:
        raise typer.BadParameter(f"expected integers separated by commas, such as 64,32; got "
                                 f"{text!r}", param_hint=option) from None


def read_for_model(det: Any, data: Path, label_column: str | None, id_column: str | None
                   ) -> Any:
    """``data`` read as ``anovae score`` reads it for ``det`` (its categorical, boolean and id
    columns as text), refusing a label column the model was fitted on as a feature."""
    from anovae.io import read_table
    from anovae.scoring import read_dtypes

    names = getattr(getattr(det, "schema_", None), "names", None) or ()
    if label_column and label_column in names:
        raise DataError(f"the model was fitted with {label_column!r} as a feature, so it cannot "
                        f"be the label column; refit with --label-column {label_column}")
    return read_table(data, dtype=read_dtypes(det, id_column))


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinite floats as ``None`` (JSON has no such numbers)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@app.command()
@handle_errors
def fit(
    data: Path = typer.Argument(..., help="Training table: .csv, .csv.gz, .tsv, .parquet, .npy "
                                          "or .npz, a Parquet folder, or a quoted glob pattern "
                                          "such as 'logs/day-*.csv' (files of one kind with "
                                          "the same columns, read in name order). Or images: "
                                          "a folder of PNG/JPEG files, an IDX file, or a "
                                          ".npy/.npz array of (N, H, W[, C])."),
    output: str = typer.Option(..., "--output", "-o", metavar="<path>",
                               help="Where to write the model file."),
    detector: str = typer.Option("vae", help="vae (VAEDetector) or ae (plain autoencoder)."),
    preset: str | None = typer.Option(None, help="A named preset, e.g. tutorial-mlp."),
    label_column: str | None = typer.Option(
        None, help="0/1 label column (1 = anomaly): excluded from the features; only rows "
                   "labelled 0 train the model."),
    id_column: str | None = typer.Option(None, help="Row-id column, excluded from features."),
    exclude: list[str] | None = typer.Option(None, help="Column to leave out (repeatable)."),
    categorical: list[str] | None = typer.Option(
        None, help="Column to model as categorical, e.g. integer codes (repeatable; default: "
                   "text and category columns)."),
    numeric: list[str] | None = typer.Option(
        None, help="Column to model as numeric even if it holds only 0/1 (repeatable)."),
    score: str | None = typer.Option(None, help="elbo, reconstruction_probability, iwae or "
                                                "reconstruction (VAE only)."),
    likelihood: str | None = typer.Option(None, help="gaussian or bernoulli (VAE only)."),
    hidden_dims: str | None = typer.Option(None, "--hidden-dims",
                                           help="Encoder widths, e.g. 64,32 (default: auto)."),
    latent_dim: int | None = typer.Option(None, help="Latent size (default: auto)."),
    epochs: int | None = typer.Option(None, help="Maximum epochs (default: auto)."),
    batch_size: int | None = typer.Option(
        None, help="Rows per update (default: 256, up to 2,048 for large tables; 64 images)."),
    learning_rate: float | None = typer.Option(
        None, help="Adam learning rate (default: 1e-3, scaled up for batches over 256 rows; "
                   "2e-3 for images)."),
    beta: float | None = typer.Option(None, help="KL weight (VAE only)."),
    contamination: float | None = typer.Option(None, help="Expected share of anomalies; sets "
                                                          "the threshold."),
    scaler: str | None = typer.Option(None, help="robust, standard, minmax or none."),
    device: str | None = typer.Option(None, help="auto, cpu or cuda."),
    random_state: int | None = typer.Option(None, "--random-state", "--seed",
                                            help="Seed for reproducible training."),
    set_: list[str] | None = typer.Option(None, "--set", help="Any other estimator parameter "
                                                              "as KEY=VALUE (repeatable)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Progress bar and logs."),
    distributed: bool | None = typer.Option(
        None, "--distributed/--no-distributed",
        help="Train data-parallel (DDP) with the processes torchrun started (default: on when "
             "run by torchrun). Rank 0 writes the model."),
    out_of_core: bool = typer.Option(
        False, "--out-of-core", help="Stream DATA (Parquet file or folder) in shuffled chunks "
                                     "instead of loading it: for data larger than memory."),
    chunk_rows: int | None = typer.Option(
        None, min=1, show_default=False,
        help="Rows per chunk with --out-of-core (default 200,000)."),
    sample_rows: int | None = typer.Option(
        None, min=1, show_default=False,
        help="With --out-of-core: about how many rows the uniform sample holds that sets the "
             "scaling, the threshold and decision_scores_ (default 100,000; kept in memory)."),
) -> None:
    """Fit a detector on DATA and save it to OUTPUT (safetensors + JSON, no pickle)."""
    from anovae.distributed import (
        is_main_process,
        launched_by_torchrun,
        process_group,
        save_on_main,
    )
    from anovae.images import is_image_source
    from anovae.io import check_output_path, read_table

    out = output_file(output, "model.safetensors")
    check_output_path(out)  # a folder or an unwritable place: say so before training
    refuse_overwriting_inputs(out, {"the training data (DATA)": data})
    images = is_image_source(data)
    if images:
        _refuse_table_options(data, {"--label-column": label_column, "--id-column": id_column,
                                     "--exclude": exclude, "--categorical": categorical,
                                     "--numeric": numeric, "--out-of-core": out_of_core})
    if out_of_core:
        refuse_non_parquet(data, "--out-of-core", "fit without --out-of-core")
    else:
        given = [o for o, v in (("--chunk-rows", chunk_rows), ("--sample-rows", sample_rows))
                 if v is not None]
        if given:
            raise DataError(f"{' and '.join(given)} {'applies' if len(given) == 1 else 'apply'} "
                            "to --out-of-core fits only (an in-memory fit reads the whole "
                            "table): add --out-of-core, or leave "
                            f"{'it' if len(given) == 1 else 'them'} out")
    _refuse_dropped_kinds({"--categorical": categorical, "--numeric": numeric}, label_column,
                          id_column, exclude)
    note_pattern(data)
    cls = _detector_class(detector, images)
    params: dict[str, Any] = {
        "score_type": score, "likelihood": likelihood, "latent_dim": latent_dim, "epochs": epochs,
        "batch_size": batch_size, "learning_rate": learning_rate, "beta": beta,
        "contamination": contamination, "scaler": scaler, "device": device,
        "random_state": random_state,
        "hidden_dims": None if hidden_dims is None else _int_list(hidden_dims, "--hidden-dims"),
        "categorical": tuple(categorical) if categorical else None,
        "numeric": tuple(numeric) if numeric else None,
    }
    params = {k: v for k, v in params.items() if v is not None}
    if verbose:
        params["verbose"] = True
    extra = parse_set_options(set_)  # --set verbose=true counts too
    _refuse_set_twice(params, extra, set_)
    params.setdefault("verbose", False)
    params.update(extra)
    known = set(cls().get_params())
    unknown = sorted(set(params) - known)
    vae_only = [_PARAM_OPTIONS.get(k, "--" + k) for k in _VAE_ONLY
                if k in unknown and k not in extra]
    if vae_only:
        raise DataError(f"{', '.join(vae_only)} {'applies' if len(vae_only) == 1 else 'apply'} to "
                        "--detector vae only: the plain autoencoder (--detector ae) has one "
                        "score, the reconstruction error, and no likelihood or KL term; leave "
                        f"{'it' if len(vae_only) == 1 else 'them'} out")
    if unknown:
        raise DataError(f"{cls.__name__} has no parameter(s) {unknown}; known: {sorted(known)}")
    if preset and not hasattr(cls, "from_preset"):
        raise DataError(f"--preset is for VAE detectors; {cls.__name__} has no presets")
    by_option = {k: _PARAM_OPTIONS.get(k, "--" + k.replace("_", "-")) for k in params
                 if k not in extra}
    if distributed is None:
        distributed = launched_by_torchrun()
    with option_words(by_option), process_group() if distributed else contextlib.nullcontext():
        est = cls.from_preset(preset, **params) if preset else cls(**params)
        est._check_params()  # a bad option is refused before the data is read (fit checks again)
        t0 = time.perf_counter()
        rows_note = " rows"
        if out_of_core:
            from anovae.outofcore import fit_table

            if label_column is None:
                _warn_label_like_parquet(data, [*(exclude or []), id_column])
            sizes = {k: v for k, v in (("chunk_rows", chunk_rows), ("sample_rows", sample_rows))
                     if v is not None}  # otherwise fit_table's defaults
            fit_table(est, data, label_column=label_column, exclude=exclude,
                      id_column=id_column, **sizes)
            shape = (est.n_train_rows_, est.n_features_in_)
            rows_note = (" training rows (held-out and anomalous rows not counted)" if label_column
                         else " training rows (held-out rows not counted)")
        elif images:
            read = read_model_images(None, data)
            if read.labels is not None:
                _note_unused_labels(read, data)
            try:
                est.fit(read.images)
            except DataError as exc:
                if "needs labels" not in str(exc):
                    raise
                raise DataError(f"{str(exc).partition(':')[0]}: `anovae fit` trains on every "
                                "image as normal, without labels; fit with another threshold, "
                                "then set this one with `anovae threshold MODEL LABELLED_IMAGES "
                                "--method ...`") from None
            shape = (est.decision_scores_.shape[0], est.n_features_in_)
        else:
            # --categorical columns as text: codes such as "001" keep their leading zeros (and
            # match what `anovae score` reads)
            df = read_table(data, dtype=dict.fromkeys(categorical, str) if categorical else None)
            if label_column is None:
                _warn_label_like(df, data, [*(exclude or []), id_column])
            X, y = _split_columns(df, label_column, exclude, id_column, str(data))
            est.fit(X, y)
            shape = X.shape
            if y is not None and est.use_labels:
                normal = int((y == 0).sum())
                held = len(getattr(est, "calibration_scores_", ()))
                trains = normal - held  # the calibration rows are held out of training
                rows_note = (f" rows ({normal} labelled normal"
                             + (f", {held} of them held out to calibrate the threshold; "
                                f"{trains}" if held else "")
                             + f" {'trains' if trains == 1 else 'train'} the model)")
        seconds = time.perf_counter() - t0
        save_on_main(est, out)  # rank 0 writes; the other ranks wait for it
        main = is_main_process()
    if not main:
        return
    if images:
        what = f"{plural(shape[0], 'image')} of {est.schema_.describe()}"
    else:
        if shape[0] == 1:
            rows_note = rows_note.replace(" rows", " row", 1)
        what = f"{shape[0]}{rows_note} x {plural(shape[1], 'column')}"
    typer.echo(
        f"fitted {type(est).__name__} on {what} in "
        f"{seconds:.1f}s ({plural(est.n_epochs_, 'epoch')}, best {est.best_epoch_}); "
        f"threshold {est.threshold_:.6g}; model written to {out}"
    )
    from anovae.training import still_improving

    # (without validation rows the training loss is monitored, which nearly always falls)
    if getattr(est, "validation_fraction", 0) > 0 and still_improving(est.n_epochs_,
                                                                       est.best_epoch_):
        note(f"the validation loss was still falling at the last epoch: --epochs "
             f"{2 * est.n_epochs_} may fit the normal rows better, in about twice the time")


def _note_unused_labels(read: Any, data: Path) -> None:
    """Say that ``fit`` trains on every image of ``data`` whatever its class sub-folder (or the
    labels of an array file): they are not used as labels."""
    n = len(read.images)
    if Path(data).is_dir():
        classes = sorted({str(c) for c in read.labels.tolist()})
        shown = ", ".join(classes[:5]) + (", ..." if len(classes) > 5 else "")
        note(f"{len(classes)} class sub-folder{'s' if len(classes) != 1 else ''} ({shown}): "
             f"fitting on all {n} images as normal")
    else:
        note(f"{str(data)!r} holds labels: they are not used; fitting on all {n} images as "
             "normal")


#: The ``anovae fit`` option that sets each estimator parameter (others: --set only).
_PARAM_OPTIONS = {"random_state": "--seed", "verbose": "--verbose", "score_type": "--score"}
#: Parameters of the VAEs that the plain autoencoders lack (``anovae fit`` has an option each).
_VAE_ONLY = ("score_type", "likelihood", "beta")


@contextlib.contextmanager
def option_words(options: dict[str, str]) -> Iterator[None]:
    """Errors of the estimators' parameter checks (``"score_type must be one of ..."``) in the
    words of the command line: the option that gave the value (``--score must be ...``);
    ``options``: ``{parameter: option}`` for the parameters given by an option."""
    try:
        yield
    except ValueError as exc:
        name, sep, rest = str(exc).partition(" must be ")
        if not (sep and name in options):
            raise
        raise DataError(f"{options[name]} must be {rest}") from None


def _refuse_set_twice(params: dict[str, Any], extra: dict[str, Any],
                      items: list[str] | None) -> None:
    """A parameter given by its own option and by ``--set`` too: a clear error naming both
    (rather than one silently winning)."""
    for key in extra:
        if key in params:
            option = _PARAM_OPTIONS.get(key, "--" + key.replace("_", "-"))
            given = next((i for i in items or [] if renamed_param(
                i.split("=", 1)[0].strip().replace("-", "_")) == key), key)
            raise DataError(f"{key} is given twice, by {option} and by --set {given}: give it "
                            "once")


@app.command()
@handle_errors
def score(
    model: Path = typer.Argument(..., help="A model file written by `anovae fit`."),
    data: Path = typer.Argument(..., help="Table to score (.csv, .parquet, .npy, .npz..., or "
                                          "a quoted glob pattern such as 'logs/day-*.csv'); "
                                          "with --stream: JSON lines, '-' for standard input."),
    output: str | None = typer.Option(
        None, "--output", "-o", metavar="<path>",
        help="The output table: .csv, .parquet, .npy or .npz (required). With --stream: a "
             "JSON-lines file, by default standard output; with --engine dask: a folder of "
             "Parquet parts."),
    id_column: str | None = typer.Option(None, help="Column carried to the output as row id "
                                                    "(default: the row number)."),
    top_features: int | None = typer.Option(
        None, min=0, show_default=False,
        help="How many top features per row: name, contribution and excess over the feature's "
             "typical contribution (the ranking key). Default 3, or 0 for a .npy output (it "
             "holds numbers only: write .npz, .csv or .parquet for the top features); tables "
             "only."),
    explain: int | None = typer.Option(
        None, min=1, help="Explain the K top features of each row: name, contribution, excess, "
                          "observed value and the model's expected value (overrides "
                          "--top-features)."),
    chunk_rows: int = typer.Option(200_000, help="Rows per chunk (bounds memory)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Progress bar."),
    stream: bool = typer.Option(False, "--stream", help="Read JSON lines (one record each) and "
                                                        "write one scored JSON line per input "
                                                        "line as soon as it is scored."),
    fail_on_errors: bool = typer.Option(
        False, "--fail-on-errors", help="With --stream: exit with status 1 when any line got an "
                                        "error line (default 0: the summary counts them)."),
    maps: Path | None = typer.Option(None, "--maps", help="Image models: write one anomaly-map "
                                                          "PNG per image into this folder."),
    engine: str = typer.Option("local", help="local (stream in this process) or dask (DATA: "
                                             "Parquet files or a glob such as 'data/*.parquet'; "
                                             "OUTPUT: a folder of Parquet parts)."),
    scheduler: str | None = typer.Option(None, help="With --engine dask: the scheduler address "
                                                    "(tcp://host:8786); default: a LocalCluster."),
    workers: int | None = typer.Option(None, min=1, help="With --engine dask and no "
                                       "--scheduler: LocalCluster worker processes."),
) -> None:
    """Score DATA with MODEL; write row ids, anomaly_score, is_anomaly and top features.

    For an image model DATA is a folder of PNG/JPEG files (sub-folders = classes), an IDX file
    or a .npy/.npz array; the output holds image, label (if any), anomaly_score, is_anomaly."""
    from anovae.io import check_output_path
    from anovae.persistence import load
    from anovae.scoring import score_file

    top_k = explain if explain is not None else 3 if top_features is None else top_features
    if engine not in ("local", "dask"):
        raise typer.BadParameter(f"choose local or dask, got {engine!r}", param_hint="--engine")
    if stream and engine == "dask":
        raise DataError("--stream scores JSON lines in this process as they arrive; --engine "
                        "dask scores Parquet files: give one of the two")
    _refuse_cluster_options(engine, scheduler, workers)
    if stream and data.is_dir():
        raise DataError(f"--stream reads one JSON-lines file (or '-', standard input); "
                        f"{str(data)!r} is a folder: score its files without --stream")
    if stream and is_pattern(data):
        raise DataError(f"--stream reads one JSON-lines file (or '-', standard input), not a "
                        f"pattern such as {str(data)!r}: concatenate the files into the stream "
                        "(cat FILES | anovae score MODEL - --stream), or score tables without "
                        "--stream")
    if stream and maps is not None:
        raise DataError("--maps is not available with --stream (each output line holds a "
                        "record's score): score image files without --stream to write maps")
    if fail_on_errors and not stream:
        raise DataError("--fail-on-errors applies to --stream (where a bad line gets an error "
                        "line and the stream goes on); without it a bad row stops the command "
                        "with status 2")
    if stream:
        _score_stream(model, data, output, top_k, explain is not None, id_column,
                      fail_on_errors)
        return
    if output is None:
        raise typer.BadParameter("an output table is required (or use --stream)",
                                 param_hint="--output")
    if engine == "dask":
        from anovae.persistence import read_metadata

        if read_metadata(model).get("schema", {}).get("kind") == "image":  # header only
            raise DataError(f"Dask scoring (--engine dask) takes table models only; "
                            f"{str(model)!r} is an image model: use --engine local")
        folder = Path(output)
        check_output_path(folder, folder=True)  # before any scoring
        _refuse_dask_output(folder, output, model, data)
        for option, value in (("--explain", explain), ("--maps", maps)):
            if value is not None:
                raise DataError(f"{option} is not available with --engine dask (it writes ids, "
                                "scores, flags and --top-features); use --engine local")
        from anovae.dask import score_files

        summary = score_files(model, str(data), folder, scheduler=scheduler, n_workers=workers,
                              id_column=id_column, top_k=top_k, partition_rows=chunk_rows,
                              verbose=verbose)
        typer.echo(f"scored {plural(summary.rows, 'row')} ({flagged(summary.anomalies)}) in "
                   f"{summary.seconds:.2f}s with Dask; written to {summary.output}/")
        return
    out = output_file(output, "scores.csv")
    check_output_path(out)  # before any scoring
    refuse_overwriting_inputs(out, {"the model (MODEL)": model, "the data to score (DATA)": data})
    note_pattern(data)
    if maps is not None and data.is_dir() and is_within(maps, data):
        raise DataError(f"cannot write the anomaly maps into {str(maps)!r}: it is inside the "
                        f"images to score ({str(data)!r}), where they would be read as images "
                        "the next time; give --maps a folder outside it")
    if top_features is None and explain is None and out.suffix.lower() == ".npy":
        top_k = 0  # a .npy holds numbers only: the scores and flags (feature names are text)
    det = load(model)
    if is_image_model(det):
        from anovae.images import score_images

        _refuse_table_options(data, {"--id-column": id_column, "--explain": explain,
                                     "--top-features": top_features})
        if maps is not None:
            check_output_path(maps, folder=True)
        done = score_images(det, data, out, maps_dir=maps)
        typer.echo(f"scored {plural(done['rows'], 'image')} ({flagged(done['anomalies'])}) in "
                   f"{done['seconds']:.2f}s; written to {out}"
                   + (f"; {plural(done['maps'], 'anomaly map')} in {maps}" if maps else ""))
        return
    if maps is not None:
        raise DataError("--maps needs an image model (fitted on images)")
    refuse_images_for_table_model(det, model, data)
    summary = score_file(det, data, out, id_column=id_column, top_k=top_k,
                         explain=explain is not None, chunk_rows=chunk_rows, progress=verbose)
    typer.echo(f"scored {plural(summary.rows, 'row')} ({flagged(summary.anomalies)}) in "
               f"{summary.seconds:.2f}s; written to {summary.output}")


#: The exit status of a stream whose standard output its reader closed (``... | head -1``):
#: that of a process killed by SIGPIPE, as Unix tools end there.
BROKEN_PIPE_STATUS = 128 + 13


def _score_stream(model: Path, data: Path, output: str | None, top_k: int, explain: bool,
                  id_column: str | None, fail_on_errors: bool = False) -> None:
    """``anovae score MODEL DATA --stream`` (see :func:`anovae.streaming.score_stream` for the
    exit statuses): SIGINT and SIGTERM end the stream as the end of its input does (the lines
    scored are written, an output file committed, the summary printed), then the command exits
    with 128 + the signal (130, 143); a closed standard output ends it quietly with
    :data:`BROKEN_PIPE_STATUS`; with ``fail_on_errors``, a stream with error lines ends with
    status 1 (after the summary; an output file is committed with the lines scored)."""
    from anovae.cli.serve_export import score_stream_cli
    from anovae.streaming import stop_on_signals

    out = None if output is None or output == "-" else output_file(output, "scores.jsonl")
    try:
        with stop_on_signals() as stop:
            summary = score_stream_cli(model, data, out, top_k, explain, id_column)
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError, AttributeError):  # no real stdout: tests
            # Python flushes stdout at exit, into the closed pipe again: point it at nothing
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(BROKEN_PIPE_STATUS) from None
    if stop.signum is not None:
        raise typer.Exit(128 + stop.signum)
    if fail_on_errors and summary.errors:
        raise typer.Exit(1)


def note_pattern(data: Path) -> None:
    """For a glob pattern DATA: say how many tables it matches (read in name order)."""
    if is_pattern(data):
        from anovae.io import pattern_files

        n = len(pattern_files(data))
        note(f"{plural(n, 'table')} match {str(data)!r}: read in name order")


def _refuse_cluster_options(engine: str, scheduler: str | None, workers: int | None) -> None:
    """``--scheduler`` and ``--workers`` say where Dask runs: refuse them where they would be
    silently ignored (without ``--engine dask``; ``--workers`` with ``--scheduler``, whose
    cluster has its own workers)."""
    given = [o for o, v in (("--scheduler", scheduler), ("--workers", workers)) if v is not None]
    if given and engine != "dask":
        one = len(given) == 1
        raise DataError(f"{' and '.join(given)} {'applies' if one else 'apply'} to --engine dask "
                        f"only (the local engine scores in this process): add --engine dask, "
                        f"or leave {'it' if one else 'them'} out")
    if scheduler is not None and workers is not None:
        raise DataError("--workers sizes the local cluster that --engine dask starts without "
                        "--scheduler; the cluster at --scheduler has its own workers: give one "
                        "of the two")


def flagged(n: int) -> str:
    """``"1 flagged as an anomaly"``, ``"3 flagged as anomalies"``."""
    return f"{n} flagged as {'an anomaly' if n == 1 else 'anomalies'}"


def _refuse_dask_output(folder: Path, raw: str, model: Path, data: Path) -> None:
    """``--engine dask``'s output checks (:func:`anovae.dask._check_out_dir`, which
    :func:`anovae.dask.score_files` makes too), early and in the command line's words, and its
    data must be Parquet."""
    from anovae.dask import _check_out_dir

    _check_out_dir(folder, data, model, raw=raw,
                   names=("--engine dask", "use --engine local", "the model (MODEL)",
                          "the data to score (DATA)"))
    refuse_non_parquet(data, "--engine dask", "score it with --engine local")


@app.command()
@handle_errors
def evaluate(
    model: Path = typer.Argument(..., help="A model file written by `anovae fit`."),
    data: Path = typer.Argument(..., help="Labelled table to evaluate on. For an image "
                                          "model: a folder of PNG/JPEG files whose class "
                                          "sub-folder named normal, good or ok holds the "
                                          "normal images, or an .npz with a 0/1 'y'."),
    label_column: str | None = typer.Option(None, help="0/1 label column (1 = anomaly); "
                                                       "required for tables."),
    id_column: str | None = typer.Option(None, help="Row-id column to ignore."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """AUROC, AUPRC, precision, recall, F1 and the confusion matrix of MODEL on DATA.

    Precision, recall, F1 and the confusion matrix are those of the model's threshold."""
    from anovae.cli.thresholds_report import _load_rows
    from anovae.metrics import evaluate as evaluate_scores
    from anovae.persistence import read_metadata

    image_model = read_metadata(model).get("schema", {}).get("kind") == "image"  # header only
    if label_column is None and not image_model:
        raise typer.BadParameter("a table model is evaluated against a 0/1 label column: "
                                 "name it", param_hint="--label-column")
    det, rows, y, _ = _load_rows(model, data, label_column, id_column, None)
    if y is None:  # images without labels (a flat folder, an array without 'y')
        raise DataError(f"{str(data)!r} holds no labels: evaluate image models on a folder "
                        "with one sub-folder per class (the normal images in one named normal, "
                        "good or ok) or an .npz with a 0/1 'y' array")
    scores = det.decision_function(rows)
    metrics = warn_undefined(evaluate_scores(y, scores, (scores > det.threshold_).astype(int)))
    metrics["threshold"] = det.threshold_
    typer.echo(json.dumps(json_safe(metrics), indent=2, allow_nan=False) if as_json
               else format_metrics(metrics))


def warn_undefined(m: dict[str, Any]) -> dict[str, Any]:
    """:func:`anovae.metrics.evaluate`'s output, with a warning naming the metrics the labels
    leave undefined (NaN: JSON shows it as ``null``, :func:`format_metrics` as ``n/a``)."""
    out = dict(m)
    undefined = [k for k in ("auroc", "auprc", "precision", "recall", "f1")
                 if isinstance(out.get(k), float) and math.isnan(out[k])]
    if undefined:
        why = ("the labels hold no anomaly (1)" if not out["n_anomalies"] else
               "the labels hold no normal row (0)" if out["n_anomalies"] == out["n"] else
               "some metrics cannot be computed")
        names = ", ".join(undefined[:-1]) + (" and " if len(undefined) > 1 else "") \
            + undefined[-1]
        warn(f"{why}: {names} {'is' if len(undefined) == 1 else 'are'} undefined (n/a)")
    return out


def format_metrics(m: dict[str, Any]) -> str:
    """A small human-readable table of :func:`anovae.metrics.evaluate`'s output (``n/a`` for
    NaN: undefined, e.g. AUROC for one-class labels)."""
    lines = [f"rows {m['n']}  anomalies {m['n_anomalies']}"]
    for key in ("auroc", "auprc", "precision", "recall", "f1", "threshold"):
        if key in m:
            value = float(m[key])
            lines.append(f"{key:<10} {'n/a' if math.isnan(value) else f'{value:.4f}'}")
    if "confusion_matrix" in m:
        (tn, fp), (fn, tp) = m["confusion_matrix"]
        lines += ["confusion   predicted 0  predicted 1",
                  f"actual 0    {tn:>11}  {fp:>11}",
                  f"actual 1    {fn:>11}  {tp:>11}"]
    return "\n".join(lines)


@app.command()
@handle_errors
def demo(
    output_dir: Path = typer.Option(Path("anovae-demo"), "--output-dir", "-o",
                                    help="Folder for the model, scores and metrics."),
    random_state: int = typer.Option(0, "--seed", help="Seed of the split and the model."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Progress bar."),
) -> None:
    """Train a VAE on benign breast-cancer biopsies and flag the malignant ones.

    The biopsies ship with scikit-learn: no network and no extra files are needed."""
    from anovae.demo import run_demo
    from anovae.io import check_output_path

    check_output_path(output_dir, folder=True)
    typer.echo("anovae demo: breast-cancer data (scikit-learn), 30 features; training a VAE on "
               "70% of the benign rows...")
    m = run_demo(output_dir, random_state=random_state, verbose=verbose)
    typer.echo(f"trained on {m['n_train']} benign rows ({plural(m['epochs'], 'epoch')}); "
               f"evaluated on {m['n']} held-out rows, {m['n_anomalies']} malignant:")
    typer.echo(format_metrics(m))
    typer.echo(f"model: {m['paths']['model']}\nscores: {m['paths']['scores']}\n"
               f"metrics: {m['paths']['metrics']}")
