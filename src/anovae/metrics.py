"""Evaluation of anomaly scores against labels (1 = anomaly)."""

from __future__ import annotations

import reprlib
from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from anovae.exceptions import DataError

__all__ = ["binary_labels", "evaluate"]


def binary_labels(y: Any, n: int, what: str = "y", rows: str = "X has {n} rows") -> np.ndarray:
    """``y`` as ``(n,)`` int 0/1 labels (1 = anomaly), checked: ``n`` of them (a column
    ``(n, 1)`` is flattened), each 0 or 1 (``True``/``False`` and ``0.0``/``1.0`` too; ``None``,
    NaN, text, ``-1`` or 0.7 are refused with the values found, never a NumPy ``TypeError``)."""
    arr = np.asarray(y, dtype=object if isinstance(y, (list, tuple)) else None)
    if arr.ndim > 2 or (arr.ndim == 2 and arr.shape[1] != 1):
        raise DataError(f"{what} must be one 0/1 label per row, a 1-D array (or one column); "
                        f"got shape {arr.shape}")
    arr = arr.ravel()
    if arr.shape[0] != n:
        raise DataError(f"{arr.shape[0]} labels in {what}, but {rows.format(n=n)}")
    values = set(arr.tolist())  # (np.unique sorts, and fails on None or mixed types)
    if not values <= {0, 1}:
        bad = sorted({repr(v) for v in values if not (isinstance(v, (int, float, np.number))
                                                       and v in (0, 1))})
        raise DataError(f"{what} must be 0 (normal) or 1 (anomaly), found "
                        f"{reprlib.repr(bad)[1:-1]}")
    return arr.astype(int)


def evaluate(y_true: Any, scores: Any, labels: Any | None = None) -> dict[str, Any]:
    """AUROC, AUPRC (average precision) and, given 0/1 ``labels``, precision/recall/F1 and the
    confusion matrix ``[[tn, fp], [fn, tp]]``. What the labels cannot define is NaN: AUROC and
    AUPRC without both classes, recall and F1 without an anomaly.

    >>> evaluate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.3], [0, 0, 1, 0])["auroc"]
    1.0
    """
    s = np.asarray(scores, dtype=np.float64)
    y_shape = np.shape(y_true)
    if y_shape != s.shape or s.ndim != 1:
        raise DataError(f"labels {y_shape} and scores {s.shape} must be 1-D of the same length")
    y = binary_labels(y_true, s.size, "the labels", "there are {n} scores")
    out: dict[str, Any] = {"n": int(y.size), "n_anomalies": int(y.sum())}
    if 0 < out["n_anomalies"] < y.size:
        out["auroc"] = float(roc_auc_score(y, s))
        out["auprc"] = float(average_precision_score(y, s))
    else:
        out["auroc"] = out["auprc"] = float("nan")
    if labels is not None:
        pred = binary_labels(labels, s.size, "the predicted labels", "there are {n} scores")
        p, r, f, _ = precision_recall_fscore_support(
            y, pred, average="binary", pos_label=1, zero_division=0
        )
        out.update(precision=float(p), recall=float(r), f1=float(f))
        if not out["n_anomalies"]:  # 0 / 0: undefined, as AUROC and AUPRC are (not 0.0)
            out.update(recall=float("nan"), f1=float("nan"))
        out["confusion_matrix"] = confusion_matrix(y, pred, labels=[0, 1]).tolist()
    return out
