"""``anovae demo``: train on benign breast-cancer biopsies, flag malignant ones.

Uses scikit-learn's bundled Wisconsin diagnostic breast-cancer data (569 rows, 30 numeric
features; 212 malignant), so it needs no network and no extra files. The VAE is trained on 70% of
the benign rows only (one-class setting) and evaluated on the held-out benign rows plus all
malignant ones (anomalies).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anovae.detectors import VAEDetector
from anovae.io import atomic_output, write_table
from anovae.metrics import evaluate

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)


def load_demo_data() -> tuple[pd.DataFrame, np.ndarray]:
    """The breast-cancer table and labels (1 = malignant = anomaly)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    X = data.frame.drop(columns=["target"])
    y = (data.target.to_numpy() == 0).astype(int)  # sklearn: 0 = malignant
    return X, y


def run_demo(out_dir: str | Path = "anovae-demo", *, random_state: int = 0,
             verbose: bool = False) -> dict[str, Any]:
    """Fit, evaluate and save; returns the metrics and the paths written.

    Writes ``model.safetensors``, ``scores.csv`` (row, label, anomaly_score, is_anomaly) and
    ``metrics.json`` into ``out_dir``.
    """
    X, y = load_demo_data()
    rng = np.random.default_rng(random_state)
    benign = rng.permutation(np.flatnonzero(y == 0))
    n_train = int(0.7 * len(benign))
    train_idx = np.sort(benign[:n_train])
    test_idx = np.setdiff1d(np.arange(len(y)), train_idx)
    det = VAEDetector(contamination=0.05, random_state=random_state, verbose=verbose)
    det.fit(X.iloc[train_idx])
    scores = det.decision_function(X.iloc[test_idx])
    labels = (scores > det.threshold_).astype(int)
    metrics = evaluate(y[test_idx], scores, labels)
    metrics.update(n_train=int(n_train), n_features=int(X.shape[1]), epochs=int(det.n_epochs_))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = det.save(out / "model.safetensors")
    write_table(pd.DataFrame({"row": test_idx, "label": y[test_idx], "anomaly_score": scores,
                              "is_anomaly": labels}), out / "scores.csv")
    with atomic_output(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    metrics["paths"] = {"model": str(model_path), "scores": str(out / "scores.csv"),
                        "metrics": str(out / "metrics.json")}
    return metrics
