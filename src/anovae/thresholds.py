"""Decision thresholds on anomaly scores (pure functions; higher score = more anomalous).

A row is an anomaly when its score is strictly greater than the threshold.
"""

from __future__ import annotations

import numpy as np

__all__ = ["contamination_threshold"]


def contamination_threshold(scores: np.ndarray, contamination: float) -> float:
    """PyOD's rule: the ``(1 - contamination)`` quantile of the (training) scores.

    Args:
        scores: ``(n,)`` anomaly scores.
        contamination: expected fraction of anomalies, in (0, 0.5].

    >>> contamination_threshold(np.arange(100.0), 0.1)
    89.1
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not 0.0 < contamination <= 0.5:
        raise ValueError(f"contamination must be in (0, 0.5], got {contamination}")
    return float(np.percentile(scores, 100.0 * (1.0 - contamination)))
