"""Detection-quality benchmark on ADBench-style tabular data sets (issue 3).

Each data set is one ``.npz`` file holding ``X`` ``(n, d)`` and ``y`` ``(n,)`` with 1 = anomaly
(the layout of ADBench's "Classical" folder). Two protocols, each repeated over seeds:

``novelty``
    stratified 50/50 split; fit on the *normal* rows of the first half; evaluate (AUROC, AUPRC)
    on the whole second half.
``unsupervised`` (ADBench's)
    stratified 70/30 split; fit on the whole first part, anomalies included (labels unused);
    evaluate on the second part.

Results are averaged over seeds per data set, then over data sets per detector; the average rank
(1 = best AUROC on a data set) is computed from the seed-averaged AUROC of each data set.

Input given to each detector (fairness): anovae's detectors get the raw rows (they scale
internally), IsolationForest the raw rows (it is invariant to per-feature scaling), PyOD's
detectors rows z-scored with a scaler fitted on the training part.

Example:
    >>> import numpy as np, tempfile, pathlib
    >>> from anovae.bench import run_tabular_benchmark
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(size=(200, 3)), rng.normal(6, 1, size=(10, 3))])
    >>> y = np.r_[np.zeros(200), np.ones(10)]
    >>> np.savez(d / "toy.npz", X=X, y=y)
    >>> res = run_tabular_benchmark(d, protocols=("novelty",), detectors=("iforest",),
    ...                             seeds=1, progress=False)
    >>> bool(res.summary()["auroc"].iloc[0] > 0.9)
    True
"""

from __future__ import annotations

import logging
import math
import os
import platform
import re
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

__all__ = [
    "BUILTIN_DETECTORS",
    "DEFAULT_DATA_DIR",
    "PROTOCOLS",
    "BenchResult",
    "Dataset",
    "DetectorSpec",
    "builtin_detector",
    "load_datasets",
    "resolve_data_dir",
    "run_tabular_benchmark",
    "split",
]

logger = logging.getLogger(__name__)

#: Default folder of the ``.npz`` files, relative to the current directory.
DEFAULT_DATA_DIR = Path("../shared/data/adbench")
#: Environment variable that overrides :data:`DEFAULT_DATA_DIR`.
DATA_DIR_ENV = "ANOVAE_ADBENCH"
#: Protocol name -> share of the rows used for fitting (the rest is evaluated).
PROTOCOLS: dict[str, float] = {"novelty": 0.5, "unsupervised": 0.7}
#: Detectors run when ``detectors=None``.
BUILTIN_DETECTORS = ("vae", "ae", "iforest", "pyod-vae", "pyod-ae")


# -- data ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    """One benchmark data set: ``X`` ``(n, d)`` float64 and ``y`` ``(n,)`` int (1 = anomaly)."""

    name: str
    X: np.ndarray
    y: np.ndarray


def data_folder(data_dir: str | Path | None, env: str, default: str | Path, what: str,
                hint: str) -> Path:
    """``data_dir``, else ``$env``, else ``default``; a clear FileNotFoundError (naming
    ``what`` and saying ``hint``) when the folder does not exist. Shared by the harnesses."""
    if data_dir is None:
        data_dir = os.environ.get(env) or default
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"{what} {str(path)!r} does not exist (resolved to {str(path.absolute())!r}); pass "
            f"--data-dir / data_dir=, or set ${env}, to {hint}")
    return path


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """The data folder: ``data_dir``, else ``$ANOVAE_ADBENCH``, else ``../shared/data/adbench``.

    Raises:
        FileNotFoundError: when the folder does not exist (the message says how to set it).
    """
    return data_folder(data_dir, DATA_DIR_ENV, DEFAULT_DATA_DIR, "ADBench data folder",
                       "a folder of .npz files holding X and y (1 = anomaly), e.g. ADBench's "
                       "'Classical' folder")


def _matches(stem: str, wanted: set[str]) -> bool:
    """``"11_donors"`` matches ``"11_donors"``, ``"donors"`` and ``"11"`` (case-insensitive)."""
    low = stem.lower()
    prefix, _, rest = low.partition("_")
    return low in wanted or (bool(rest) and (rest in wanted or prefix in wanted))


def _sort_key(path: Path) -> tuple[int, str]:
    prefix = path.stem.partition("_")[0]
    return (int(prefix) if prefix.isdigit() else 10**9, path.stem.lower())


def load_datasets(data_dir: str | Path | None = None, names: Iterable[str] | None = None
                  ) -> list[Dataset]:
    """Read every ``*.npz`` of the folder (sorted by ADBench's number), or those in ``names``.

    Files are read with ``allow_pickle=False``. ``names`` match the file stem, the stem without
    its number prefix, or the number (``"11_donors"``, ``"donors"``, ``"11"``).

    Raises:
        FileNotFoundError: the folder is missing, holds no ``.npz``, or a name matches no file.
        ValueError: a file lacks ``X``/``y``, or they are inconsistent.
    """
    folder = resolve_data_dir(data_dir)
    files = sorted(folder.glob("*.npz"), key=_sort_key)
    if not files:
        raise FileNotFoundError(f"no .npz files in {str(folder)!r}")
    if names is not None:
        wanted = {n.strip().lower() for n in names if n.strip()}
        every = files
        files = [f for f in files if _matches(f.stem, wanted)]
        found = {f.stem.lower() for f in files}
        missing = sorted(w for w in wanted if not any(_matches(s, {w}) for s in found))
        if missing:
            known = ", ".join(re.sub(r"^\d+_", "", f.stem) for f in every)
            raise FileNotFoundError(f"no data set named {', '.join(missing)} in {str(folder)!r}; "
                                    f"it holds {known}")
    out = []
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as z:
                if "X" not in z or "y" not in z:
                    raise ValueError(f"{f.name} must hold arrays 'X' and 'y', has "
                                     f"{list(z.keys())}")
                X = np.asarray(z["X"], dtype=np.float64)
                y = np.asarray(z["y"]).ravel().astype(int)
        except (OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
            if str(exc).startswith(f.name):
                raise
            raise ValueError(f"{f.name} is not a readable .npz of arrays X and y: {exc}"
                             ) from None
        if X.ndim != 2 or X.shape[0] != y.shape[0]:
            raise ValueError(f"{f.name}: X must be (n, d) with one label per row, got X "
                             f"{X.shape} and y {y.shape}")
        if not set(np.unique(y).tolist()) <= {0, 1}:
            raise ValueError(f"{f.name}: y must hold 0 (normal) and 1 (anomaly)")
        out.append(Dataset(f.stem, X, y))
    return out


def subsample(ds: Dataset, max_rows: int | None, seed: int) -> Dataset:
    """At most ``max_rows`` rows of ``ds``, drawn stratified by ``y`` with ``seed``."""
    if max_rows is None or ds.X.shape[0] <= max_rows:
        return ds
    idx, _ = train_test_split(np.arange(ds.X.shape[0]), train_size=int(max_rows),
                              stratify=ds.y, random_state=seed)
    idx = np.sort(idx)
    return Dataset(ds.name, ds.X[idx], ds.y[idx])


def split(X: np.ndarray, y: np.ndarray, protocol: str, seed: int
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows to fit on and the rows to evaluate, for ``protocol`` (see the module docstring).

    Returns:
        ``(X_fit, X_eval, y_eval)``.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {list(PROTOCOLS)}")
    X_a, X_b, y_a, y_b = train_test_split(X, y, train_size=PROTOCOLS[protocol], stratify=y,
                                          random_state=seed)
    if protocol == "novelty":
        X_a = X_a[y_a == 0]
    return X_a, X_b, y_b


# -- detectors -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DetectorSpec:
    """A detector of the benchmark.

    Attributes:
        name: the column name in the results.
        make: ``seed -> unfitted estimator`` with ``fit(X)`` and ``decision_function(X)``
            (higher = more anomalous), or ``score_samples`` when ``negate_score_samples``.
        standardize: z-score the input with a scaler fitted on the fitting rows.
        negate_score_samples: score with ``-score_samples(X)`` (scikit-learn's convention).
    """

    name: str
    make: Callable[[int], Any]
    standardize: bool = False
    negate_score_samples: bool = False


def _pyod() -> bool:
    try:
        import pyod  # noqa: F401
    except ImportError:
        return False
    return True


def builtin_detector(name: str) -> DetectorSpec:
    """The detector named ``vae``, ``ae``, ``iforest``, ``pyod-vae`` or ``pyod-ae``, each with
    its library's defaults (``random_state`` = the seed; anovae and PyOD on the CPU).

    Raises:
        ValueError: unknown name.
        ImportError: a PyOD detector while PyOD is not installed.
    """
    if name == "vae":
        from anovae import VAEDetector

        return DetectorSpec(name, lambda s: VAEDetector(random_state=s, device="cpu"))
    if name == "ae":
        from anovae import AEDetector

        return DetectorSpec(name, lambda s: AEDetector(random_state=s, device="cpu"))
    if name == "iforest":
        from sklearn.ensemble import IsolationForest

        return DetectorSpec(name, lambda s: IsolationForest(random_state=s),
                            negate_score_samples=True)
    if name in ("pyod-vae", "pyod-ae"):
        if not _pyod():
            raise ImportError(f"detector {name!r} needs PyOD: pip install 'anovae[bench]'")
        if name == "pyod-vae":
            from pyod.models.vae import VAE

            return DetectorSpec(name, lambda s: VAE(random_state=s, verbose=0, device="cpu"),
                                standardize=True)
        from pyod.models.auto_encoder import AutoEncoder

        return DetectorSpec(name, lambda s: AutoEncoder(random_state=s, verbose=0, device="cpu"),
                            standardize=True)
    raise ValueError(f"unknown detector {name!r}; choose from {list(BUILTIN_DETECTORS)}")


def _resolve_detectors(detectors: Sequence[str | DetectorSpec] | None) -> list[DetectorSpec]:
    names: Sequence[str | DetectorSpec] = BUILTIN_DETECTORS if detectors is None else detectors
    specs = []
    for d in names:
        if isinstance(d, DetectorSpec):
            specs.append(d)
            continue
        try:
            specs.append(builtin_detector(d))
        except ImportError as exc:
            logger.warning("skipping %s: %s", d, exc)
    if not specs:
        raise ValueError("no detector to run")
    return specs


def _fit_score(spec: DetectorSpec, seed: int, X_fit: np.ndarray, X_eval: np.ndarray
               ) -> tuple[np.ndarray, float, float]:
    """Fit one detector and score the evaluation rows: (scores, fit seconds, score seconds)."""
    if spec.standardize:
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(X_fit)
        X_fit, X_eval = scaler.transform(X_fit), scaler.transform(X_eval)
    est = spec.make(seed)
    t0 = time.perf_counter()
    est.fit(X_fit)
    t1 = time.perf_counter()
    s = -est.score_samples(X_eval) if spec.negate_score_samples else est.decision_function(X_eval)
    t2 = time.perf_counter()
    return np.asarray(s, dtype=np.float64).ravel(), t1 - t0, t2 - t1


# -- results -------------------------------------------------------------------------------------
def _md_table(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """A GitHub Markdown table of ``df`` (index as the first column), without ``tabulate``."""
    def cell(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if math.isnan(v) else format(float(v), floatfmt)
        return str(v)

    index_name = df.index.name or ""
    header = [index_name, *map(str, df.columns)]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * len(df.columns)) + "|"]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([str(idx), *(cell(v) for v in row)]) + " |")
    return "\n".join(lines)


@dataclass
class BenchResult:
    """Per-(protocol, data set, seed, detector) results and their summaries.

    ``results`` has the columns ``protocol, dataset, seed, detector, auroc, auprc, fit_s,
    score_s, n_fit, n_eval, d, error`` (AUROC/AUPRC in [0, 1]; NaN and the message in ``error``
    when the detector failed on that data set).
    """

    results: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def per_dataset(self, protocol: str, metric: str = "auroc") -> pd.DataFrame:
        """Seed-averaged ``metric`` per data set (rows) and detector (columns)."""
        r = self.results[self.results["protocol"] == protocol]
        order = list(dict.fromkeys(r["detector"]))
        table = r.pivot_table(index="dataset", columns="detector", values=metric,
                              aggfunc="mean", sort=False, dropna=False)
        return table.reindex(columns=order)

    def summary(self, protocol: str | None = None) -> pd.DataFrame:
        """One row per (protocol, detector): mean AUROC and AUPRC over data sets (of the
        seed means), average AUROC rank, total fit and score seconds, and failed runs."""
        rows = []
        for proto in ([protocol] if protocol else list(dict.fromkeys(self.results["protocol"]))):
            r = self.results[self.results["protocol"] == proto]
            auroc = self.per_dataset(proto, "auroc")
            auprc = self.per_dataset(proto, "auprc")
            ranks = auroc.rank(axis=1, ascending=False).mean()
            for det in auroc.columns:
                rd = r[r["detector"] == det]
                rows.append({
                    "protocol": proto, "detector": det,
                    "auroc": auroc[det].mean(), "auprc": auprc[det].mean(),
                    "rank": ranks[det],
                    "fit_s": rd["fit_s"].sum(), "score_s": rd["score_s"].sum(),
                    "failed": int(rd["error"].astype(bool).sum()),
                })
        return pd.DataFrame(rows)

    def to_markdown(self, per_dataset: bool = True) -> str:
        """Markdown: per protocol, the summary table and (optionally) the per-data-set AUROC
        and AUPRC tables; metrics in points (x 100)."""
        parts = []
        for proto in dict.fromkeys(self.results["protocol"]):
            s = self.summary(proto).drop(columns="protocol").set_index("detector")
            s[["auroc", "auprc"]] *= 100
            s = s.rename(columns={"auroc": "AUROC", "auprc": "AUPRC", "rank": "avg rank",
                                  "fit_s": "fit s (total)", "score_s": "score s (total)"})
            s["failed"] = s["failed"].astype(int)
            parts.append(f"#### {proto}: mean over data sets\n\n{_md_table(s)}")
            if per_dataset:
                for metric in ("auroc", "auprc"):
                    t = self.per_dataset(proto, metric) * 100
                    t.loc["mean"] = t.mean()
                    parts.append(f"#### {proto}: {metric.upper()} per data set\n\n"
                                 f"{_md_table(t, '.1f')}")
        return "\n\n".join(parts) + "\n"

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``results.csv`` (every run), ``summary.csv`` and ``results.md``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"results": out / "results.csv", "summary": out / "summary.csv",
                 "markdown": out / "results.md"}
        from anovae.io import atomic_output

        meta = "\n".join(f"- {k}: {v}" for k, v in self.meta.items())
        with atomic_output(paths["results"]) as tmp:
            self.results.to_csv(tmp, index=False)
        with atomic_output(paths["summary"]) as tmp:
            self.summary().to_csv(tmp, index=False)
        with atomic_output(paths["markdown"]) as tmp:
            Path(tmp).write_text(f"{meta}\n\n{self.to_markdown()}", encoding="utf-8")
        return paths


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        return list(range(int(seeds)))
    out = [int(s) for s in seeds]
    if not out:
        raise ValueError("seeds is empty")
    return out


def run_tabular_benchmark(
    data_dir: str | Path | None = None,
    *,
    protocols: Sequence[str] = ("novelty", "unsupervised"),
    detectors: Sequence[str | DetectorSpec] | None = None,
    datasets: Iterable[str] | None = None,
    seeds: int | Sequence[int] = 3,
    max_rows: int | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    torch_threads: int | None = 1,
) -> BenchResult:
    """Run every detector on every data set, protocol and seed; see the module docstring.

    Args:
        data_dir: folder of ``.npz`` files (see :func:`resolve_data_dir` for the default).
        protocols: any of ``"novelty"``, ``"unsupervised"``.
        detectors: names (:data:`BUILTIN_DETECTORS`; PyOD's are skipped with a warning when
            PyOD is missing) or :class:`DetectorSpec` objects; ``None``: all built-in ones.
        datasets: names to keep (see :func:`load_datasets`); ``None``: every file.
        seeds: a number of seeds (``0..seeds-1``) or the seeds themselves. The seed drives the
            subsample, the split and the detector's ``random_state``.
        max_rows: subsample larger data sets to this many rows (stratified, with the seed).
        out_dir: when given, write the results there (see :meth:`BenchResult.write`).
        progress: a progress bar per data set.
        torch_threads: torch's intra-op threads during the run (restored afterwards); 1 by
            default: the networks here are small, and on a busy machine several threads wait
            on each other (10x slower on two shared cores). ``None`` leaves torch's setting.

    Returns:
        A :class:`BenchResult`. A detector that fails on a data set gets NaN metrics and its
        error message; the run goes on.
    """
    for p in protocols:
        if p not in PROTOCOLS:
            raise ValueError(f"unknown protocol {p!r}; choose from {list(PROTOCOLS)}")
    if max_rows is not None and max_rows < 10:
        raise ValueError(f"max_rows must be >= 10, got {max_rows}")
    seed_list = _seed_list(seeds)
    data = load_datasets(data_dir, datasets)
    specs = _resolve_detectors(detectors)
    import torch

    threads_before = torch.get_num_threads()
    if torch_threads is not None:
        torch.set_num_threads(int(torch_threads))
    try:
        rows = _run(data, protocols, seed_list, specs, max_rows, progress)
    finally:
        torch.set_num_threads(threads_before)
    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()}",
        "python": platform.python_version(), "torch_threads": torch_threads,
        "seeds": seed_list, "max_rows": max_rows, "protocols": list(protocols),
    }
    result = BenchResult(pd.DataFrame(rows), meta)
    if out_dir is not None:
        result.write(out_dir)
    return result


def _run(data: list[Dataset], protocols: Sequence[str], seed_list: list[int],
         specs: list[DetectorSpec], max_rows: int | None, progress: bool
         ) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for ds in data:
        bar = tqdm(total=len(protocols) * len(seed_list) * len(specs), desc=ds.name,
                   unit="fit", disable=not progress, leave=True)
        for protocol in protocols:
            for seed in seed_list:
                sub = subsample(ds, max_rows, seed)
                X_fit, X_eval, y_eval = split(sub.X, sub.y, protocol, seed)
                for spec in specs:
                    bar.set_postfix_str(f"{protocol} seed {seed} {spec.name}")
                    row: dict[str, Any] = {
                        "protocol": protocol, "dataset": ds.name, "seed": seed,
                        "detector": spec.name, "auroc": math.nan, "auprc": math.nan,
                        "fit_s": math.nan, "score_s": math.nan, "n_fit": X_fit.shape[0],
                        "n_eval": X_eval.shape[0], "d": X_fit.shape[1], "error": "",
                    }
                    try:
                        scores, fit_s, score_s = _fit_score(spec, seed, X_fit, X_eval)
                        if not np.all(np.isfinite(scores)):
                            raise ValueError("non-finite anomaly scores")
                        row.update(auroc=roc_auc_score(y_eval, scores),
                                   auprc=average_precision_score(y_eval, scores),
                                   fit_s=fit_s, score_s=score_s)
                    except Exception as exc:  # noqa: BLE001  (recorded, the run goes on)
                        row["error"] = f"{type(exc).__name__}: {exc}"
                        logger.warning("%s failed on %s (%s, seed %d): %s", spec.name,
                                       ds.name, protocol, seed, row["error"])
                    rows.append(row)
                    bar.update()
        bar.close()
    return rows
