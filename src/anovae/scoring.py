"""Scoring tables with a fitted detector: in memory or streamed from files in bounded memory.

This is the library side of ``anovae score`` and ``anovae evaluate``; the CLI only parses
arguments and prints.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from anovae.exceptions import DataError
from anovae.io import TableWriter, _stringified, array_columns, count_rows, iter_table_chunks
from anovae.mixed import MixedSchema, TextKindCheck, refuse_numbers_read_as_text
from anovae.thresholds import conformal_pvalues

__all__ = ["ScoreSummary", "model_features", "read_dtypes", "score_file", "score_frame",
           "select_features"]

logger = logging.getLogger(__name__)


def select_features(detector: Any, df: pd.DataFrame, drop: Sequence[str] = ()) -> pd.DataFrame:
    """The columns of ``df`` the detector was fitted on (by name), or all but ``drop``.

    Extra columns (ids, labels, anything else) are ignored when the model knows its column names;
    missing ones raise :class:`DataError` naming them.
    """
    by_name = {str(c): c for c in df.columns}  # the fitted names are strings, as in match_columns
    names = getattr(detector.schema_, "names", None)
    if names is not None:
        missing = [n for n in names if n not in by_name]
        if missing and isinstance(detector.schema_, MixedSchema) and all(
                re.fullmatch(r"Unnamed: \d+", n) for n in missing):
            # a model fitted (before anovae 0.6) on a CSV whose header ends with a delimiter
            # holds its empty last column, which the readers now leave out: give it back empty
            df = df.assign(**{n: np.nan for n in missing})
            by_name.update({n: n for n in missing})
            missing = []
        if missing:
            shown = ", ".join(repr(m) for m in missing[:10])
            hint = ""
            arrays = [c for c in df.columns if c not in ("y", *drop)]  # an .npz's labels: y
            if arrays and [str(c) for c in arrays] == array_columns(len(arrays)):
                hint = ("; if the data is a NumPy array (.npy/.npz): arrays carry no column "
                        "names (anovae calls them x0, x1, ...), so score a CSV or Parquet file "
                        "whose columns have the model's names")
            raise DataError(f"the data lacks columns the model was fitted on: {shown}"
                            + (f" ... ({len(missing)} in all)" if len(missing) > 10 else "")
                            + hint)
        return df[[by_name[n] for n in names]]
    absent = [c for c in drop if str(c) not in by_name]
    if absent:
        raise DataError(f"columns {absent} are not in the data")
    return df.drop(columns=[by_name[str(c)] for c in drop])


def read_dtypes(detector: Any, id_column: str | None = None) -> dict[str, type]:
    """The columns to read as text from a CSV file to score with ``detector``: the categorical
    and boolean columns of a model fitted on a mixed table, and ``id_column``.

    Read as text in every chunk, a code such as ``"001"`` stays ``"001"`` whatever else its
    chunk holds (pandas' guess reads it as the number 1 in a chunk of numeric codes only), so
    the results do not depend on the chunk size.
    """
    schema = getattr(detector, "schema_", None)
    out: dict[str, type] = {}
    if isinstance(schema, MixedSchema) and schema.names is not None:
        out = {n: str for n, k in zip(schema.names, schema.kinds, strict=True) if k != "numeric"}
    names = getattr(schema, "names", None) or ()
    if id_column and id_column not in names:  # a feature keeps the type the model reads
        out[id_column] = str
    return out


def model_features(detector: Any, df: pd.DataFrame, drop: Sequence[str] = (), *,
                   check_kinds: bool = True) -> pd.DataFrame:
    """The columns of ``df`` that ``detector`` scores (:func:`select_features`): what every
    command that scores a file hands the detector. (Columns that :func:`read_dtypes` read as
    text need nothing more: :mod:`anovae.mixed` matches text that reads as a number to the
    number's category, and reads 0/1 and true/false words in a boolean column; a text-category
    column that holds only numbers is refused, :class:`anovae.mixed.TextKindCheck`: here with
    ``check_kinds``, for a whole table; :func:`score_file` checks over its chunks.)"""
    features = select_features(detector, df, drop)
    schema = getattr(detector, "schema_", None)
    if check_kinds and isinstance(schema, MixedSchema):
        refuse_numbers_read_as_text(features, schema, "the data")
    return features


def score_frame(detector: Any, features: pd.DataFrame, *, top_k: int = 3,
                explain: bool = False) -> pd.DataFrame:
    """Scores, 0/1 labels and the ``top_k`` top features of each row (ranked by their excess
    over the feature's typical contribution, :func:`anovae.scores.rank_features`).

    Returns a DataFrame with ``anomaly_score``, ``is_anomaly``, for a model with calibration
    scores (held-out normal rows) the conformal ``p_value`` and ``anomaly_probability`` (as the
    service and ``--stream`` give them), and, for ``i = 1..top_k``,
    ``top_feature_i`` (name), ``top_contribution_i`` (its share of the score) and
    ``top_excess_i`` (the contribution beyond the feature's typical one; NaN for a model without
    typical contributions, whose features rank by contribution); with
    ``explain`` also ``top_value_i`` (observed) and ``top_expected_i`` (the reconstruction), as
    in :meth:`anovae.detectors.base.BaseDetector.explain`.
    """
    detector._check_threshold_score()  # is_anomaly compares with threshold_
    fitted = getattr(detector, "feature_names_in_", None)
    by_name = {str(c): c for c in features.columns}  # the fitted names are text (0 -> "0")
    if fitted is not None and {str(n) for n in fitted} <= set(by_name):
        # the model's columns in its order (its scores, gaps and values are in that order);
        # others are left out, as the detector itself does (a missing one: its error)
        features = features[[by_name[str(n)] for n in fitted]]
    names = np.asarray([str(c) for c in features.columns], dtype=object)
    scores, contributions = detector.score_with_feature_scores(features)
    out = pd.DataFrame({"anomaly_score": scores,
                        "is_anomaly": (scores > detector.threshold_).astype(np.int8)},
                       index=features.index)
    calibration = getattr(detector, "calibration_scores_", None)
    if calibration is not None and len(calibration):  # as the service and --stream give them
        out["p_value"] = conformal_pvalues(calibration, scores)
        out["anomaly_probability"] = 1.0 - out["p_value"]
    mixed = getattr(detector, "_mixed", None)
    gaps = None
    if mixed is not None and mixed() is not None:
        gaps = features.isna().to_numpy()  # (n, D): blank cells rank last among the top features
        # mixed tables: the columns holding a category never seen in training, comma-separated
        unseen = detector.unseen_categories(features)
        cols = np.asarray(unseen.columns, dtype=object)
        out["unseen_category"] = [",".join(cols[r]) for r in unseen.to_numpy()]
    if explain:
        rows = detector._checked(features)
        values, expected, _ = detector._explain_columns(features, rows)  # (n, D) each
    k = int(min(max(top_k, 0), contributions.shape[1]))
    if k:
        flat = contributions.reshape(len(contributions), -1)
        top, excess = detector._top_features(flat, k, gaps)  # (n, k), (n, D)
        for i in range(k):
            col = top[:, i:i + 1]
            out[f"top_feature_{i + 1}"] = names[top[:, i]]
            out[f"top_contribution_{i + 1}"] = np.take_along_axis(flat, col, 1)[:, 0]
            out[f"top_excess_{i + 1}"] = np.take_along_axis(excess, col, 1)[:, 0]
            if explain:
                out[f"top_value_{i + 1}"] = np.take_along_axis(values, col, 1)[:, 0]
                out[f"top_expected_{i + 1}"] = np.take_along_axis(expected, col, 1)[:, 0]
    return out


@dataclass
class ScoreSummary:
    """What :func:`score_file` did."""

    rows: int
    anomalies: int
    seconds: float
    output: str

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


def score_file(
    detector: Any,
    data: str | os.PathLike,
    out: str | os.PathLike,
    *,
    id_column: str | None = None,
    top_k: int = 3,
    explain: bool = False,
    chunk_rows: int = 200_000,
    progress: bool = False,
) -> ScoreSummary:
    """Score a table file chunk by chunk and write the results atomically.

    Memory stays bounded by ``chunk_rows`` whatever the file size (CSV and Parquet are streamed;
    .npy is memory-mapped). The output holds the row id (``id_column`` of the input, else the row
    number as ``row``), ``anomaly_score``, ``is_anomaly`` and the top features (see
    :func:`score_frame`).

    The results do not depend on ``chunk_rows``: from CSV the id column and a mixed-table model's
    categorical and boolean columns are read as text in every chunk (:func:`read_dtypes`).
    Parquet output stores a mixed-table model's explained values as text. An input without rows
    raises :class:`DataError` and leaves an existing ``out`` as it was.
    """
    t0 = time.perf_counter()
    total = count_rows(data)
    rows = anomalies = 0
    drop = [id_column] if id_column else []
    dtypes = read_dtypes(detector, id_column)
    warned: set[str] = set()
    schema = getattr(detector, "schema_", None)
    kinds = TextKindCheck(schema) if isinstance(schema, MixedSchema) else None
    with TableWriter(out) as writer, tqdm(total=total, unit="row", disable=not progress,
                                          desc="scoring") as bar:
        for chunk in iter_table_chunks(data, chunk_rows=chunk_rows, dtype=dtypes):
            if len(chunk) == 0:  # a CSV of only a header: one empty chunk of untyped columns
                continue
            if id_column and id_column not in chunk.columns:
                raise DataError(f"id column {id_column!r} is not in {os.fspath(data)!r}")
            with warnings.catch_warnings(record=True) as caught:  # each once per file, not
                warnings.simplefilter("always")                    # once per chunk
                feats = model_features(detector, chunk, drop, check_kinds=False)
                if kinds is not None:
                    kinds.update(feats)
                scored = score_frame(detector, feats, top_k=top_k, explain=explain)
            for w in caught:  # again through the caller's filters (module="anovae" too)
                if str(w.message) not in warned:
                    warned.add(str(w.message))
                    warnings.warn(w.message, stacklevel=1)
            if writer.kind == "parquet":  # observed/expected values mixing text and numbers
                for c in scored.columns:
                    if (c.startswith(("top_value_", "top_expected_"))
                            and not pd.api.types.is_numeric_dtype(scored[c].dtype)):
                        scored[c] = _stringified(scored[c])
            ids = chunk[id_column].to_numpy() if id_column else chunk.index.to_numpy()
            if writer.kind == "npy":  # numbers only: row ids, scores, flags (README)
                scored = scored.drop(columns=["unseen_category"], errors="ignore")
                if id_column:  # ids are read as text (an id of 007 stays 007): as numbers here
                    as_num = pd.to_numeric(pd.Series(ids), errors="coerce")
                    if as_num.notna().all():
                        ids = as_num.to_numpy()
            scored.insert(0, id_column or "row", ids)
            writer.write(scored.reset_index(drop=True))
            rows += len(scored)
            anomalies += int(scored["is_anomaly"].sum())
            bar.update(len(scored))
        if rows == 0:  # raised inside the writer: an existing output is left as it was
            raise DataError(f"{os.fspath(data)!r} has no rows")
        if kinds is not None:  # decided over the whole file, whatever its chunks
            kinds.finish(repr(os.fspath(data)))
    seconds = time.perf_counter() - t0
    logger.info("scored %d rows in %.2fs (%d anomalies)", rows, seconds, anomalies)
    return ScoreSummary(rows, anomalies, seconds, os.fspath(out))
