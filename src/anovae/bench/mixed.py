"""Mixed-table benchmark (issue 6): native categorical handling against one-hot encoding.

One-class protocol on a table with a train file and a test file (NSL-KDD by default): fit on the
*normal* rows of the train file, score every row of the test file, report AUROC and AUPRC.
Side by side, each with its library's defaults:

``anovae-native``
    :class:`~anovae.VAEDetector` on the raw table: per-column likelihoods (Gaussian, Bernoulli,
    categorical), missing cells masked (:mod:`anovae.mixed`).
``anovae-onehot``, ``iforest``, ``pyod-vae``
    the table one-hot encoded (categories of the fitting rows; a category absent from them is
    all zeros), numbers as they are; PyOD's input z-scored (as in :mod:`anovae.bench.tabular`).

With ``missing > 0`` the same runs again after blanking that share of the feature cells at random
(independently in train and test, with the seed). The native model takes the gaps as they are;
the one-hot baselines get them imputed (median of the fitting rows for numbers, no category for
categories), since they cannot take missing values.

Example:
    >>> import numpy as np, pandas as pd
    >>> from anovae.bench.mixed import run_mixed_benchmark
    >>> rng = np.random.default_rng(0)
    >>> def table(n, attack):
    ...     c = rng.choice(["a", "b"], n)
    ...     x = np.where(c == "a", 0.0, 3.0) + rng.normal(size=n) + 6.0 * attack
    ...     return pd.DataFrame({"x": x, "c": c, "label": attack.astype(int)})
    >>> train = table(300, np.zeros(300, bool))
    >>> test = table(100, np.arange(100) < 20)
    >>> res = run_mixed_benchmark(train, test, detectors=("iforest",), seeds=1, missing=0.0)
    >>> bool(res.table()["auroc"].iloc[0] > 0.9)
    True
"""

from __future__ import annotations

import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from anovae.bench.tabular import DetectorSpec, _fit_score, _md_table, builtin_detector
from anovae.exceptions import DataError

__all__ = [
    "MIXED_DETECTORS",
    "MixedResult",
    "blank_cells",
    "load_nslkdd",
    "one_hot",
    "run_mixed_benchmark",
]

logger = logging.getLogger(__name__)

MIXED_DETECTORS = ("anovae-native", "anovae-onehot", "iforest", "pyod-vae")
DEFAULT_NSLKDD_DIR = Path("..") / "shared" / "data" / "nsl-kdd"
NSLKDD_DIR_ENV = "ANOVAE_NSLKDD"


def load_nslkdd(data_dir: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """NSL-KDD's ``KDDTrain+.csv.gz`` and ``KDDTest+.csv.gz`` with a 0/1 ``label`` column
    (1 = attack) and without ``difficulty`` (not a feature).

    ``data_dir``: the folder; default ``$ANOVAE_NSLKDD``, else ``../shared/data/nsl-kdd``.
    """
    folder = Path(data_dir or os.environ.get(NSLKDD_DIR_ENV) or DEFAULT_NSLKDD_DIR).expanduser()
    files = [folder / "KDDTrain+.csv.gz", folder / "KDDTest+.csv.gz"]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise FileNotFoundError(f"NSL-KDD files not found: {absent}; pass --data-dir or set "
                                f"${NSLKDD_DIR_ENV}")
    out = []
    for f in files:
        try:
            df = pd.read_csv(f)
        except (OSError, ValueError, pd.errors.ParserError) as exc:  # not gzip, not CSV...
            raise DataError(f"cannot read {str(f)!r}: {exc}") from exc
        if "label" not in df.columns:
            raise DataError(f"{str(f)!r} has no 'label' column (NSL-KDD's attack name or "
                            "'normal'); see ../shared/data/MANIFEST.md for the layout")
        df["label"] = (df["label"] != "normal").astype(int)
        out.append(df.drop(columns=["difficulty"], errors="ignore"))
    return out[0], out[1]


def blank_cells(X: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """A copy of ``X`` with ``share`` of its cells set missing, uniformly at random."""
    if share <= 0:
        return X
    rng = np.random.default_rng(seed)
    mask = rng.random(X.shape) < share
    return X.mask(mask)


def one_hot(X_fit: pd.DataFrame, X_eval: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """One-hot encode the non-numeric columns on the categories of ``X_fit`` (a category absent
    from them: all zeros; missing: all zeros); missing numbers get the median of ``X_fit``."""
    cat = [c for c in X_fit.columns if not pd.api.types.is_numeric_dtype(X_fit[c].dtype)]
    num = [c for c in X_fit.columns if c not in cat]
    med = X_fit[num].median()

    def enc(df: pd.DataFrame) -> pd.DataFrame:
        return pd.get_dummies(df[num].fillna(med).fillna(0.0).join(df[cat].astype("object")),
                              columns=cat, dtype=np.float64)

    a = enc(X_fit)
    b = enc(X_eval).reindex(columns=a.columns, fill_value=0.0)
    return a.to_numpy(np.float64), b.to_numpy(np.float64)


def _anovae(seed: int, params: dict[str, Any]) -> Any:
    from anovae import VAEDetector

    return VAEDetector(**{"random_state": seed, "device": "cpu", **params})


@dataclass
class MixedResult:
    """One line per (data variant, seed, detector): AUROC, AUPRC and times."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def table(self) -> pd.DataFrame:
        """Mean over seeds per (variant, detector)."""
        df = self.frame()
        g = df.groupby(["variant", "detector"], sort=False)
        out = g[["auroc", "auprc", "fit_s", "score_s"]].mean()
        out["auroc_std"] = g["auroc"].std().fillna(0.0)
        out["seeds"] = g.size()
        return out.reset_index()

    def to_markdown(self) -> str:
        t = self.table()
        t = t.assign(auroc=(100 * t["auroc"]).round(2), auroc_std=(100 * t["auroc_std"]).round(2),
                     auprc=(100 * t["auprc"]).round(2), fit_s=t["fit_s"].round(1),
                     score_s=t["score_s"].round(2))
        t = t.rename(columns={"auroc": "AUROC %", "auroc_std": "AUROC sd", "auprc": "AUPRC %",
                              "fit_s": "fit s", "score_s": "score s"})
        return _md_table(t.set_index("variant"), floatfmt=".2f")


def run_mixed_benchmark(train: pd.DataFrame, test: pd.DataFrame, *, label: str = "label",
                        detectors: Sequence[str] | None = None, seeds: int = 1,
                        missing: float = 0.1, max_train_rows: int | None = None,
                        params: dict[str, Any] | None = None,
                        out_dir: str | Path | None = None) -> MixedResult:
    """Fit every detector on the normal rows of ``train`` and score ``test`` (see the module
    docstring). ``label``: 0/1 column (1 = anomaly) of both frames. ``max_train_rows``: subsample
    the normal training rows (for quick runs). ``params``: VAEDetector parameters for both anovae
    runs (default: the library's defaults). Writes ``results.csv`` and ``results.md`` to
    ``out_dir`` when given."""
    names = list(detectors) if detectors is not None else list(MIXED_DETECTORS)
    unknown = [d for d in names if d not in MIXED_DETECTORS]
    if unknown:
        raise ValueError(f"unknown detector(s) {unknown}; choose from {list(MIXED_DETECTORS)}")
    fit_all = train[train[label] == 0].drop(columns=[label])
    X_test_all, y_test = test.drop(columns=[label]), test[label].to_numpy().astype(int)
    res = MixedResult(meta={
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "missing": missing,
        "n_fit": len(fit_all), "n_test": len(X_test_all), "seeds": seeds,
    })
    variants = [("complete", 0.0)] + ([(f"{round(100 * missing)}% cells missing", missing)]
                                      if missing > 0 else [])
    for seed in range(seeds):
        X_fit0 = fit_all
        if max_train_rows is not None and len(fit_all) > max_train_rows:
            X_fit0 = fit_all.sample(n=max_train_rows, random_state=seed)
        for variant, share in variants:
            X_fit = blank_cells(X_fit0, share, seed)
            X_test = blank_cells(X_test_all, share, seed + 10_000)
            enc: tuple[np.ndarray, np.ndarray] | None = None
            for name in names:
                if name == "anovae-native":
                    est = _anovae(seed, params or {})
                    t0 = time.perf_counter()
                    est.fit(X_fit)
                    t1 = time.perf_counter()
                    s = est.decision_function(X_test)
                    fit_s, score_s = t1 - t0, time.perf_counter() - t1
                else:
                    if enc is None:
                        enc = one_hot(X_fit, X_test)
                    spec = (DetectorSpec(name, lambda s: _anovae(s, params or {}))
                            if name == "anovae-onehot" else builtin_detector(name))
                    s, fit_s, score_s = _fit_score(spec, seed, enc[0], enc[1])
                ok = np.isfinite(s)
                auroc = roc_auc_score(y_test[ok], s[ok]) if ok.all() else float("nan")
                auprc = average_precision_score(y_test[ok], s[ok]) if ok.all() else float("nan")
                res.rows.append({"variant": variant, "seed": seed, "detector": name,
                                 "auroc": auroc, "auprc": auprc, "fit_s": fit_s,
                                 "score_s": score_s, "n_fit": len(X_fit),
                                 "width": X_fit.shape[1] if enc is None else enc[0].shape[1]})
                logger.info("%s seed %d %s: AUROC %.4f (fit %.1fs)", variant, seed, name, auroc,
                            fit_s)
    if out_dir is not None:
        from anovae.io import atomic_output

        out = Path(out_dir)
        with atomic_output(out / "results.csv") as tmp:
            res.frame().to_csv(tmp, index=False)
        with atomic_output(out / "results.md") as tmp:
            tmp.write_text(res.to_markdown() + "\n")
    return res
