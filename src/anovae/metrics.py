"""Evaluation of anomaly scores against labels (1 = anomaly)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from anovae.exceptions import DataError

__all__ = ["evaluate"]


def evaluate(y_true: Any, scores: Any, labels: Any | None = None) -> dict[str, Any]:
    """AUROC, AUPRC (average precision) and, given 0/1 ``labels``, precision/recall/F1 and the
    confusion matrix ``[[tn, fp], [fn, tp]]``. What the labels cannot define is NaN: AUROC and
    AUPRC without both classes, recall and F1 without an anomaly.

    >>> evaluate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.3], [0, 0, 1, 0])["auroc"]
    1.0
    """
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise DataError(f"labels {y.shape} and scores {s.shape} must be 1-D of the same length")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise DataError(f"labels must be 0 (normal) and 1 (anomaly), found {sorted(values)}")
    out: dict[str, Any] = {"n": int(y.size), "n_anomalies": int(y.sum())}
    if len(values) == 2:
        out["auroc"] = float(roc_auc_score(y, s))
        out["auprc"] = float(average_precision_score(y, s))
    else:
        out["auroc"] = out["auprc"] = float("nan")
    if labels is not None:
        pred = np.asarray(labels).astype(int)
        p, r, f, _ = precision_recall_fscore_support(
            y, pred, average="binary", pos_label=1, zero_division=0
        )
        out.update(precision=float(p), recall=float(r), f1=float(f))
        if not out["n_anomalies"]:  # 0 / 0: undefined, as AUROC and AUPRC are (not 0.0)
            out.update(recall=float("nan"), f1=float("nan"))
        out["confusion_matrix"] = confusion_matrix(y, pred, labels=[0, 1]).tolist()
    return out
