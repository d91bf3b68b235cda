"""Scoring tables with a fitted detector: in memory or streamed from files in bounded memory.

This is the library side of ``anovae score`` and ``anovae evaluate``; the CLI only parses
arguments and prints.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from anovae.exceptions import DataError
from anovae.io import TableWriter, count_rows, iter_table_chunks

__all__ = ["ScoreSummary", "score_file", "score_frame", "select_features"]

logger = logging.getLogger(__name__)


def select_features(detector: Any, df: pd.DataFrame, drop: Sequence[str] = ()) -> pd.DataFrame:
    """The columns of ``df`` the detector was fitted on (by name), or all but ``drop``.

    Extra columns (ids, labels, anything else) are ignored when the model knows its column names;
    missing ones raise :class:`DataError` naming them.
    """
    names = getattr(detector.schema_, "names", None)
    if names is not None:
        missing = [n for n in names if n not in df.columns]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:10])
            raise DataError(f"the data lacks columns the model was fitted on: {shown}"
                            + (f" ... ({len(missing)} in all)" if len(missing) > 10 else ""))
        return df[list(names)]
    absent = [c for c in drop if c not in df.columns]
    if absent:
        raise DataError(f"columns {absent} are not in the data")
    return df.drop(columns=list(drop))


def score_frame(detector: Any, features: pd.DataFrame, *, top_k: int = 3,
                explain: bool = False) -> pd.DataFrame:
    """Scores, 0/1 labels and the ``top_k`` contributing features of each row.

    Returns a DataFrame with ``anomaly_score``, ``is_anomaly`` and, for ``i = 1..top_k``,
    ``top_feature_i`` (name) and ``top_contribution_i`` (its share of the score); with
    ``explain`` also ``top_value_i`` (observed) and ``top_expected_i`` (the reconstruction), as
    in :meth:`anovae.detectors.base.BaseDetector.explain`.
    """
    scores, contributions = detector.score_with_feature_scores(features)
    out = pd.DataFrame({"anomaly_score": scores,
                        "is_anomaly": (scores > detector.threshold_).astype(np.int8)},
                       index=features.index)
    mixed = getattr(detector, "_mixed", None)
    if mixed is not None and mixed() is not None:
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
        names = np.asarray([str(c) for c in features.columns], dtype=object)
        top = np.argsort(-flat, axis=1, kind="stable")[:, :k]
        for i in range(k):
            col = top[:, i:i + 1]
            out[f"top_feature_{i + 1}"] = names[top[:, i]]
            out[f"top_contribution_{i + 1}"] = np.take_along_axis(flat, col, 1)[:, 0]
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
    number as ``row``), ``anomaly_score``, ``is_anomaly`` and the top contributing features.
    """
    t0 = time.perf_counter()
    total = count_rows(data)
    rows = anomalies = 0
    drop = [id_column] if id_column else []
    with TableWriter(out) as writer, tqdm(total=total, unit="row", disable=not progress,
                                          desc="scoring") as bar:
        for chunk in iter_table_chunks(data, chunk_rows=chunk_rows):
            if id_column and id_column not in chunk.columns:
                raise DataError(f"id column {id_column!r} is not in {os.fspath(data)!r}")
            feats = select_features(detector, chunk, drop)
            scored = score_frame(detector, feats, top_k=top_k, explain=explain)
            ids = chunk[id_column].to_numpy() if id_column else chunk.index.to_numpy()
            scored.insert(0, id_column or "row", ids)
            writer.write(scored.reset_index(drop=True))
            rows += len(scored)
            anomalies += int(scored["is_anomaly"].sum())
            bar.update(len(scored))
    if rows == 0:
        raise DataError(f"{os.fspath(data)!r} has no rows")
    seconds = time.perf_counter() - t0
    logger.info("scored %d rows in %.2fs (%d anomalies)", rows, seconds, anomalies)
    return ScoreSummary(rows, anomalies, seconds, os.fspath(out))
