"""Batch scoring with Dask: a fitted detector over a Dask DataFrame, partition by partition.

``pip install 'anovae[dask]'``. Two entry points, one code path:

- :func:`score` (Python): ``anovae.dask.score(model, ddf)`` returns a lazy Dask DataFrame with
  the row id, ``anomaly_score``, ``is_anomaly`` (and the top features with ``top_k``);
- :func:`score_files` (``anovae score MODEL 'data/*.parquet' -o OUT_DIR --engine dask
  [--scheduler tcp://host:8786]``): reads Parquet files as partitions with global row numbers,
  scores them on a cluster (a LocalCluster when no scheduler is given) and writes a partitioned
  Parquet dataset, atomically.

The model travels to each worker once, not once per partition: as the bytes of its safetensors
file (no pickled torch objects), scattered to every worker with ``broadcast=True`` when a
distributed client is active; each worker process rebuilds the detector once and keeps it in a
cache keyed by the bytes' SHA-256. Every partition is scored by the detector's own
:func:`anovae.scoring.score_frame`, so its scores are exactly the ones
``detector.decision_function`` gives the same rows in a single process.

This module is ``anovae.dask``; ``import dask`` inside it is the real Dask (imports are absolute).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anovae.exceptions import DataError
from anovae.outofcore import RowGroup, parquet_row_groups
from anovae.scoring import ScoreSummary, score_frame, select_features

__all__ = ["model_bytes", "read_parquet", "score", "score_files"]

logger = logging.getLogger(__name__)

#: Worker-side cache: SHA-256 of a model file's bytes -> the detector rebuilt from them, the
#: most recently used last; at most :data:`MAX_CACHED_MODELS` are kept per process.
_MODELS: OrderedDict[str, Any] = OrderedDict()
_LOCK = threading.Lock()
MAX_CACHED_MODELS = 4


def model_bytes(detector: Any) -> bytes:
    """The bytes of ``detector``'s model file (safetensors + JSON, as :meth:`save` writes)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        detector.save(path)
        return path.read_bytes()


def _detector(blob: bytes, digest: str) -> Any:
    """The detector for ``blob``, built once per process (thread-safe)."""
    with _LOCK:
        if digest not in _MODELS:
            from anovae.persistence import load

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.safetensors"
                path.write_bytes(blob)
                _MODELS[digest] = load(path)
            while len(_MODELS) > MAX_CACHED_MODELS:
                _MODELS.popitem(last=False)  # the least recently used
        _MODELS.move_to_end(digest)
        return _MODELS[digest]


def _worker_threads() -> int | None:
    """The thread count of the Dask worker running this task (None outside a worker)."""
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return None


def _score_partition(df: pd.DataFrame, blob: bytes, digest: str, id_column: str | None,
                     top_k: int, precision: str = "fp32") -> pd.DataFrame:
    from anovae.accel import autocast
    from anovae.training import cpu_threads

    det = _detector(blob, digest)
    drop = [id_column] if id_column else []
    if id_column and id_column not in df.columns:
        raise DataError(f"id column {id_column!r} is not in the data")
    if len(df) == 0:
        return _meta(det, id_column, top_k, df)
    with cpu_threads(_worker_threads()), autocast(det, precision):
        scored = score_frame(det, select_features(det, df, drop), top_k=top_k)
    ids = df[id_column].to_numpy() if id_column else df.index.to_numpy()
    scored.insert(0, id_column or "row", ids)
    text = [c for c in scored.columns if c.startswith("top_feature_") or c == "unseen_category"]
    for c in text:
        scored[c] = scored[c].astype(pd.StringDtype())  # one dtype for every partition
    return scored.reset_index(drop=True)


def _meta(det: Any, id_column: str | None, top_k: int, like: pd.DataFrame) -> pd.DataFrame:
    """The empty frame with the output's columns and dtypes."""
    id_dtype = like[id_column].dtype if id_column else like.index.dtype
    cols: dict[str, Any] = {id_column or "row": pd.Series([], dtype=id_dtype),
                            "anomaly_score": pd.Series([], dtype=np.float64),
                            "is_anomaly": pd.Series([], dtype=np.int8)}
    calibration = getattr(det, "calibration_scores_", None)
    if calibration is not None and len(calibration):  # as score_frame gives them
        cols["p_value"] = pd.Series([], dtype=np.float64)
        cols["anomaly_probability"] = pd.Series([], dtype=np.float64)
    mixed = getattr(det, "_mixed", None)
    if mixed is not None and mixed() is not None:  # mixed tables flag unseen categories
        cols["unseen_category"] = pd.Series([], dtype=pd.StringDtype())
    k = int(min(max(top_k, 0), det.n_features_in_))
    for i in range(1, k + 1):
        cols[f"top_feature_{i}"] = pd.Series([], dtype=pd.StringDtype())
        cols[f"top_contribution_{i}"] = pd.Series([], dtype=np.float64)
        cols[f"top_excess_{i}"] = pd.Series([], dtype=np.float64)
    return pd.DataFrame(cols)


def _active_client() -> Any:
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def _check_scorable(detector: Any, columns: Sequence[Any], id_column: str | None) -> None:
    """Refuse, before any task runs, what would fail in every partition: an unfitted or image
    model, or an id column the data lacks."""
    detector._check_fitted()
    detector._check_threshold_score()
    if hasattr(detector, "anomaly_maps"):
        raise DataError("the Dask engine scores tables; this is an image model: score images "
                        "with `anovae score MODEL FOLDER` (--engine local) or decision_function")
    if id_column and id_column not in columns:
        raise DataError(f"id column {id_column!r} is not in the data; columns are: "
                        + ", ".join(repr(str(c)) for c in list(columns)[:20]))


def score(detector: Any, ddf: Any, *, id_column: str | None = None, top_k: int = 0,
          client: Any = None, precision: str = "fp32") -> Any:
    """Score a Dask DataFrame with a fitted detector; lazy, one task per partition.

    Args:
        detector: a fitted detector (or the path of a model file).
        ddf: a ``dask.dataframe.DataFrame`` holding the model's feature columns (others are
            ignored when the model knows its column names).
        id_column: a column carried to the output as the row id; default: the index, as
            ``row``.
        top_k: how many top features per row, ranked by their excess over the typical
            contribution (0: none, the fastest).
        client: a ``distributed.Client``; default: the active one, if any. With a client the
            model is scattered once to every worker.
        precision: ``"fp32"``, ``"bf16"``/``"fp16"`` (autocast on the workers' device, see
            :mod:`anovae.accel`), or ``"auto"``: the cheapest precision whose scores of the
            first rows stay within 1e-3 relative of float32's (measured here, on this
            process's device; float32 on a CPU).

    Returns:
        A Dask DataFrame with the row id, ``anomaly_score`` (higher = more anomalous),
        ``is_anomaly`` (0/1) and the top features. Each partition's scores are exactly
        ``decision_function``'s on that partition (against one call on all rows at once, the
        last float32 bits may differ: matmul kernels block batch sizes differently).

    >>> import numpy as np, pandas as pd, dask.dataframe as dd
    >>> from anovae import VAEDetector
    >>> X = pd.DataFrame(np.random.default_rng(0).normal(size=(200, 3)), columns=list("abc"))
    >>> det = VAEDetector(epochs=2, random_state=0).fit(X)
    >>> out = score(det, dd.from_pandas(X, npartitions=2)).compute()
    >>> bool(np.allclose(out["anomaly_score"], det.decision_function(X), rtol=1e-6))
    True
    """
    if not hasattr(ddf, "map_partitions"):
        raise TypeError(f"ddf must be a dask DataFrame, got {type(ddf).__name__} (use "
                        "dask.dataframe.from_pandas, or decision_function for a pandas one)")
    if isinstance(detector, (str, os.PathLike)):
        from anovae.persistence import load

        detector = load(detector)
    _check_scorable(detector, list(ddf.columns), id_column)
    blob = model_bytes(detector)
    digest = hashlib.sha256(blob).hexdigest()
    meta = _meta(detector, id_column, top_k, ddf._meta)
    if precision == "auto":
        from anovae.accel import pick_precision

        head = ddf.head(2048, npartitions=-1)
        precision = pick_precision(detector, select_features(
            detector, head, [id_column] if id_column else []))
        logger.info("scoring in %s", precision)
    client = client if client is not None else _active_client()
    # One copy per worker: the tasks read the scattered bytes where they run.
    model: Any = client.scatter(blob, broadcast=True, hash=False) if client is not None else blob
    return ddf.map_partitions(_score_partition, model, digest, id_column, int(top_k),
                              precision, meta=meta, enforce_metadata=False,
                              align_dataframes=False)


def _read_part(groups: tuple[RowGroup, ...], columns: Sequence[str] | None) -> pd.DataFrame:
    parts = [g.read(columns) for g in groups]
    return parts[0] if len(parts) == 1 else pd.concat(parts)


def read_parquet(pattern: str | os.PathLike, *, columns: Sequence[str] | None = None,
                 partition_rows: int = 1_000_000) -> Any:
    """Parquet files as a Dask DataFrame whose index is the global row number.

    Partitions are runs of whole row groups of one file, about ``partition_rows`` rows each;
    row numbers come from the files' metadata (files in sorted order), so numbering the rows
    reads no data.
    """
    import dask.dataframe as dd

    groups, schema = parquet_row_groups(pattern)
    parts: list[tuple[RowGroup, ...]] = []
    run: list[RowGroup] = []
    for g in groups:
        if run and (run[-1].path != g.path or sum(r.rows for r in run) >= partition_rows):
            parts.append(tuple(run))
            run = []
        run.append(g)
    parts.append(tuple(run))
    empty = schema.empty_table().to_pandas()
    meta_df = empty if columns is None else empty[list(columns)]
    meta_df.index = pd.RangeIndex(0, 0)
    return dd.from_map(_read_part, parts, columns=None if columns is None else list(columns),
                       meta=meta_df, divisions=None, enforce_metadata=False)


@contextlib.contextmanager
def _client(scheduler: str | None, n_workers: int | None, threads_per_worker: int) -> Any:
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    # Dask's own logging config sets its loggers to INFO, over the caller's level (the CLI's
    # --log-level): while the cluster runs, they take the root logger's level
    level = logging.getLogger().getEffectiveLevel()
    dask_log = logging.getLogger("distributed")
    before = dask_log.level
    dask_log.setLevel(level)
    try:
        with LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                          processes=True, dashboard_address=None, silence_logs=level) as cluster, \
                Client(cluster) as client:
            yield client
    finally:
        dask_log.setLevel(before)


_PART = re.compile(r"part\.\d+\.parquet")
#: Output names that name a file, not the folder :func:`score_files` writes.
_FILE_SUFFIXES = (".csv", ".gz", ".tsv", ".parquet", ".pq", ".npy", ".npz", ".json", ".jsonl")


def _check_out_dir(out: Path, data: str | os.PathLike | None = None,
                   model: str | os.PathLike | None = None, *, raw: str | None = None,
                   names: tuple[str, str, str, str] = ("Dask scoring", "score locally",
                                                       "the model", "the data to score")
                   ) -> None:
    """``out`` may be written (the folder is replaced as a whole), checked before any work: a
    folder name, not a file's (a .csv would become a folder of Parquet parts); not the folder
    of the ``model`` file or of the ``data``, nor one inside the data's folder (its parts would
    be read as data the next time); and either new, empty, or holding only the
    ``part.N.parquet`` files of an earlier run (a folder of notes given as the output was
    deleted). ``raw``: the output as the user wrote it; ``names``: how messages name Dask
    scoring, the local alternative, the model and the data (the CLI's options)."""
    from anovae.io import is_within

    engine, local, model_name, data_name = names
    shown = repr(raw if raw is not None else str(out))
    suffix = out.suffix.lower()
    if suffix in _FILE_SUFFIXES:
        raise DataError(f"cannot write {shown}: {engine} writes a folder of Parquet parts "
                        f"(part.0.parquet, ...), not a {suffix} file; give a folder name such as "
                        f"{str(out.with_suffix(''))!r}, or {local} for one file")
    text = "" if data is None else os.fspath(data)
    inputs = {model_name: [] if model is None else [os.fspath(model)],
              data_name: glob.glob(text, recursive=True)
              if any(c in text for c in "*?[") else [text] if text else []}
    for what, paths in inputs.items():
        if any(is_within(p, out) for p in paths):
            raise DataError(f"cannot write the folder {shown}: it holds {what}, and {engine} "
                            "replaces the whole folder; give another output folder")
    if text and os.path.isdir(text) and is_within(out, text):
        raise DataError(f"cannot write the folder {shown}: it is inside {data_name} "
                        f"({text!r}), whose Parquet files would then include the scores; give "
                        "an output folder outside it")
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"{str(out)!r} exists and is not a folder")
    other = sorted(p.name for p in out.iterdir() if not _PART.fullmatch(p.name))
    if other:
        raise DataError(f"the output folder {str(out)!r} holds other files than an earlier "
                        f"run's part.N.parquet ({', '.join(other[:5])}"
                        f"{', ...' if len(other) > 5 else ''}), which replacing it would delete: "
                        "give a new or empty folder")


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` onto ``out`` (an existing ``out``, see
    :func:`_check_out_dir`, is replaced)."""
    old = None
    if out.exists():
        _check_out_dir(out)
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def score_files(
    model: Any,
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    scheduler: str | None = None,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
    id_column: str | None = None,
    top_k: int = 3,
    partition_rows: int = 1_000_000,
) -> ScoreSummary:
    """Score Parquet files with Dask and write a partitioned Parquet dataset to ``out_dir``.

    Args:
        model: a fitted detector or the path of a model file.
        data: a Parquet file, a folder of them, or a glob pattern (``'data/*.parquet'``).
        out_dir: the output folder (one ``part.N.parquet`` per partition); written beside it
            and moved into place when complete, so a failed run leaves no partial output.
        scheduler: a Dask scheduler address (``tcp://host:8786``); ``None``: a LocalCluster
            of ``n_workers`` processes (default: Dask's choice) with ``threads_per_worker``.
        id_column: input column carried as the row id; default: the global row number ``row``.
        top_k: top features per row (ranked by their excess over the typical contribution).
        partition_rows: about how many rows per partition (whole row groups).
    """
    t0 = time.perf_counter()
    out = Path(out_dir).resolve()  # "." names the folder it is (its name is not "")
    _check_out_dir(out, data, model if isinstance(model, (str, os.PathLike)) else None)
    if isinstance(model, (str, os.PathLike)):
        from anovae.persistence import load

        model = load(model)
    ddf = read_parquet(data, partition_rows=partition_rows)
    _check_scorable(model, list(ddf.columns), id_column)  # before a cluster starts
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        with _client(scheduler, n_workers, threads_per_worker) as client:
            scored = score(model, ddf, id_column=id_column, top_k=top_k, client=client)
            scored.to_parquet(str(tmp), write_index=False, overwrite=True)
        import pyarrow.dataset as ds

        dataset = ds.dataset(str(tmp), format="parquet")
        flags = dataset.to_table(columns=["is_anomaly"]).column("is_anomaly")
        rows, anomalies = len(flags), int(np.asarray(flags).sum())
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    logger.info("scored %d rows with Dask in %.2fs (%d anomalies)", rows, seconds, anomalies)
    return ScoreSummary(rows, anomalies, seconds, os.fspath(out))
