"""Batch scoring with Dask: a fitted detector over a Dask DataFrame, partition by partition.

``pip install 'anovae[dask]'``. Two entry points, one code path:

- :func:`score` (Python): ``anovae.dask.score(model, ddf)`` returns a lazy Dask DataFrame with
  the row id, ``anomaly_score``, ``is_anomaly`` (and the top features with ``top_k``);
- :func:`score_files` (``anovae score MODEL 'data/*.parquet' -o OUT_DIR --engine dask
  [--scheduler tcp://host:8786]``): reads Parquet files as partitions with global row numbers,
  scores them on a cluster (a LocalCluster when no scheduler is given) and writes a partitioned
  Parquet dataset, atomically.

Errors name where they arise: every file's schema is checked against the first file's from the
Parquet metadata before a cluster starts (the columns the model reads, with the same kinds of
values), and an error while a partition is read or scored (a file damaged after its metadata
were read, data the model's checks refuse) is a :class:`~anovae.exceptions.DataError` that names
the file and the partition's rows: ``'data/b.parquet' (rows 0-119 of the file, global rows
120-239): X contains NaN in 'f0' ...``.

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anovae.exceptions import DataError, warn
from anovae.outofcore import RowGroup, parquet_row_groups
from anovae.scoring import ScoreSummary, score_frame, select_features

__all__ = ["model_bytes", "read_parquet", "score", "score_files"]

logger = logging.getLogger(__name__)

#: Worker-side cache: SHA-256 of a model file's bytes -> the detector rebuilt from them, the
#: most recently used last; at most :data:`MAX_CACHED_MODELS` are kept per process.
_MODELS: OrderedDict[str, Any] = OrderedDict()
_LOCK = threading.Lock()
MAX_CACHED_MODELS = 4
#: ``DataFrame.attrs`` key under which :func:`read_parquet`'s partitions carry where their rows
#: come from (the file and its rows), for the messages of errors raised while scoring them.
_SOURCE = "anovae.source"


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


def _where(df: pd.DataFrame, partition_info: dict[str, Any] | None) -> str:
    """Where ``df``'s rows come from, for an error message: the file and rows that
    :func:`read_parquet` recorded, else the partition's number and index range."""
    source = df.attrs.get(_SOURCE)
    if source:
        return str(source)
    where = "partition" if partition_info is None else f"partition {partition_info['number']}"
    return f"{where} (index {df.index[0]} to {df.index[-1]})" if len(df) else where


def _score_partition(df: pd.DataFrame, blob: bytes, digest: str, id_column: str | None,
                     top_k: int, precision: str = "fp32",
                     partition_info: dict[str, Any] | None = None) -> pd.DataFrame:
    """One partition's scores; a :class:`DataError` names the partition's file and rows (other
    errors keep their type and get a note naming them)."""
    try:
        return _score_rows(df, blob, digest, id_column, top_k, precision)
    except DataError as exc:
        raise DataError(f"{_where(df, partition_info)}: {exc}") from exc
    except Exception as exc:
        _add_note(exc, f"while scoring {_where(df, partition_info)}")
        raise


def _add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)`` where Python has it (3.11+); notes travel with a pickled error."""
    add = getattr(exc, "add_note", None)
    if add is not None:
        add(note)


def _score_rows(df: pd.DataFrame, blob: bytes, digest: str, id_column: str | None,
                top_k: int, precision: str) -> pd.DataFrame:
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
    scored = scored.reset_index(drop=True)
    scored.attrs.clear()  # where the rows came from stays with them
    return scored


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


def _check_scorable(detector: Any, meta: pd.DataFrame, id_column: str | None,
                    source: str | None = None) -> None:
    """Refuse, before any task runs, what would fail in every partition: an unfitted or image
    model, or an id column or feature columns the data (``meta``: their empty frame; ``source``:
    how messages name them, default "the data") lack."""
    detector._check_fitted()
    detector._check_threshold_score()
    if hasattr(detector, "anomaly_maps"):
        raise DataError("the Dask engine scores tables; this is an image model: score images "
                        "with `anovae score MODEL FOLDER` (--engine local) or decision_function")
    columns = list(meta.columns)
    if id_column and id_column not in columns:
        raise DataError(f"id column {id_column!r} is not in {source or 'the data'}; columns "
                        "are: " + ", ".join(repr(str(c)) for c in columns[:20]))
    try:
        select_features(detector, meta, [id_column] if id_column else [])
    except DataError as exc:
        if source is None:
            raise
        raise DataError(f"{source}: {exc}") from None


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

    A :class:`DataError` raised while a partition is scored names it: its file and rows for a
    frame of :func:`read_parquet`, else its number and index range.

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
    _check_scorable(detector, ddf._meta, id_column)
    if id_column is None and ddf.npartitions > 1 and not ddf.known_divisions:
        warn("the rows' ids are the frame's index, which has no known divisions: it may repeat "
             "across partitions (dask.dataframe.read_parquet numbers each file's rows from 0), "
             "and then the 'row' ids do not name the input rows; read the files with "
             "anovae.dask.read_parquet (global row numbers) or pass id_column")
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


@dataclass(frozen=True)
class _Part:
    """One partition: a run of whole row groups of one file, whose paths are absolute (a
    worker's working folder need not be this process's); ``name``: the file's path as the
    user gave it, for messages; ``start``: the partition's first row in the file
    (``RowGroup.offset`` counts from the first file's first row)."""

    groups: tuple[RowGroup, ...]
    name: str
    start: int

    def where(self) -> str:
        """The file and rows, as error messages name them."""
        first, n = self.groups[0], sum(g.rows for g in self.groups)
        rows = f"rows {self.start}-{self.start + n - 1}"
        if first.offset != self.start:
            rows += f" of the file, global rows {first.offset}-{first.offset + n - 1}"
        return f"{self.name!r} ({rows})"


def _read_part(part: _Part, columns: Sequence[str]) -> pd.DataFrame:
    """The rows of ``part`` indexed by global row number; a file that cannot be read (damaged,
    or changed since its metadata were read) is a :class:`DataError` naming it and the rows."""
    import pyarrow.parquet as pq

    path = part.groups[0].path
    try:
        pf = pq.ParquetFile(path)
        have = set(pf.schema_arrow.names)  # pyarrow leaves absent columns out without a word
        missing = [c for c in columns if c not in have]
        if missing:
            raise DataError(f"{part.where()}: the file lacks the columns {missing}, which it had "
                            "when scoring started: leave it unchanged while it is scored")
        df = pf.read_row_groups([g.index for g in part.groups], columns=list(columns)).to_pandas()
    except (DataError, MemoryError):
        raise
    except Exception as exc:
        reason = " ".join(str(exc).split())  # pyarrow's messages hold line breaks
        raise DataError(f"{part.where()}: cannot read them: {reason} (the file is damaged, or "
                        "changed since its metadata were read): rewrite the file, or leave it "
                        "out") from exc
    first = part.groups[0].offset
    df.index = pd.RangeIndex(first, first + len(df))
    df.attrs[_SOURCE] = part.where()
    return df


def _scan(pattern: str | os.PathLike, partition_rows: int) -> tuple[list[_Part], dict[str, Any]]:
    """The partitions (runs of whole row groups of one file, about ``partition_rows`` rows)
    and the Arrow schema of every file with rows, the first file's first (metadata only)."""
    import pyarrow.parquet as pq

    groups, _ = parquet_row_groups(pattern)
    parts: list[_Part] = []
    run: list[RowGroup] = []
    start = 0  # the run's first row in its file

    def part() -> _Part:
        return _Part(tuple(replace(r, path=os.path.abspath(r.path)) for r in run), run[0].path,
                     start)

    for g in groups:
        if run and (run[-1].path != g.path or sum(r.rows for r in run) >= partition_rows):
            parts.append(part())
            start = 0 if run[-1].path != g.path else start + sum(r.rows for r in run)
            run = []
        run.append(g)
    parts.append(part())
    schemas: dict[str, Any] = {}
    for path in dict.fromkeys(g.path for g in groups):
        try:
            schemas[path] = pq.read_schema(path)
        except Exception as exc:
            raise DataError(f"cannot read {path!r}: {exc}") from exc
    return parts, schemas


def _arrow_kind(dtype: Any) -> str:
    """The kind of values an Arrow type holds (``""``: only nulls, which fit any kind)."""
    import pyarrow as pa

    t = pa.types
    if t.is_dictionary(dtype):  # pandas' categories
        dtype = dtype.value_type
    checks = (("", t.is_null), ("booleans", t.is_boolean), ("numbers", t.is_integer),
              ("numbers", t.is_floating), ("numbers", t.is_decimal), ("text", t.is_string),
              ("text", t.is_large_string), ("text", getattr(t, "is_string_view", None)),
              ("bytes", t.is_binary), ("bytes", t.is_large_binary),
              ("bytes", t.is_fixed_size_binary), ("dates or times", t.is_temporal),
              ("lists", t.is_list), ("lists", t.is_large_list), ("structs", t.is_struct),
              ("maps", t.is_map))
    return next((kind for kind, check in checks if check is not None and check(dtype)),
                str(dtype))


def _check_schemas(schemas: dict[str, Any], columns: Sequence[str]) -> None:
    """Every file (``schemas``: path -> Arrow schema, the first file's first) holds ``columns``
    with the kinds of values the first file's hold (integers and floats are both numbers; a
    column of nulls fits any kind); other columns are not read, and may differ."""
    (first, ref), *others = schemas.items()
    ref_types = {f.name: f.type for f in ref}
    missing = [c for c in columns if c not in ref_types]
    if missing:
        raise DataError(f"{first!r} lacks the columns {missing}; its columns are: "
                        + ", ".join(repr(n) for n in list(ref_types)[:20]))
    kinds = {c: _arrow_kind(ref_types[c]) for c in columns}
    for path, schema in others:
        types = {f.name: f.type for f in schema}
        missing = [c for c in columns if c not in types]
        if missing:
            raise DataError(f"{path!r} lacks the columns {missing}, which the first file "
                            f"({first!r}) has: every file must have the same columns; add them "
                            "to it, or leave it out")
        for c in columns:
            kind = _arrow_kind(types[c])
            if kind and kinds[c] and kind != kinds[c]:
                raise DataError(f"{path!r}: column {c!r} holds {kind} ({types[c]}), but "
                                f"{kinds[c]} ({ref_types[c]}) in the first file ({first!r}): "
                                "every file must hold the same kinds of values in a column; "
                                "convert the column, or leave the file out")


def _empty(schema: Any) -> pd.DataFrame:
    """The empty pandas frame of an Arrow schema (an index pandas stored is not a column)."""
    empty = schema.empty_table().to_pandas()
    empty.index = pd.RangeIndex(0, 0)
    return empty


def _frame(parts: list[_Part], schema: Any, columns: Sequence[str]) -> Any:
    """The Dask DataFrame of ``parts`` (``schema``: the first file's, for the meta)."""
    import dask.dataframe as dd

    meta_df = _empty(schema)[list(columns)]
    # the index is the global row number, sorted across partitions: known divisions (the first
    # row of each partition, then the last row), as Dask's own sorted frames have
    firsts = [p.groups[0].offset for p in parts]
    rows = [sum(g.rows for g in p.groups) for p in parts]
    divisions = None
    if parts and all(n > 0 for n in rows):
        divisions = (*firsts, firsts[-1] + rows[-1] - 1)
    return dd.from_map(_read_part, parts, columns=list(columns), meta=meta_df,
                       divisions=divisions, enforce_metadata=False)


def read_parquet(pattern: str | os.PathLike, *, columns: Sequence[str] | None = None,
                 partition_rows: int = 1_000_000) -> Any:
    """Parquet files as a Dask DataFrame whose index is the global row number.

    Partitions are runs of whole row groups of one file, about ``partition_rows`` rows each;
    row numbers come from the files' metadata (files in sorted order), so numbering the rows
    reads no data.

    The ``columns`` read (default: the first file's) must be in every file, holding the kinds
    of values the first file's hold (numbers, text, booleans...): that is checked from the
    files' metadata here, and a file that differs is a :class:`DataError` naming it. An error
    while a partition is read names its file and rows.
    """
    parts, schemas = _scan(pattern, partition_rows)
    first = next(iter(schemas.values()))
    names = [str(c) for c in _empty(first).columns] if columns is None else list(columns)
    _check_schemas(schemas, names)
    return _frame(parts, first, names)


def _check_cluster_options(scheduler: str | None, n_workers: Any,
                           threads_per_worker: Any) -> None:
    """Refuse cluster options that would be silently ignored, or that no cluster can take:
    ``n_workers`` and ``threads_per_worker`` size the LocalCluster started without a
    ``scheduler`` (a scheduler's cluster has its own workers), and are whole numbers >= 1."""
    for name, value in (("n_workers", n_workers), ("threads_per_worker", threads_per_worker)):
        if value is None:
            continue
        if scheduler:
            raise ValueError(f"{name} applies to the LocalCluster started without a scheduler; "
                             f"the cluster at {scheduler!r} has its own workers: give "
                             f"scheduler or {name}, not both")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


class _QuietDataErrors(logging.Filter):
    """Leaves out a worker's "Compute Failed" record (its task, the exception's repr and the
    worker's traceback) for a task that raised :class:`DataError`: the client raises that
    error, whose message names the file and rows. And the warning that the tasks cancelled
    after that failure "ended with CancelledError" (a pipeline's log scraper read a WARNING
    beside a handled data error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.startswith("Async instruction for") and text.endswith("ended with CancelledError"):
            return False
        return not (text.startswith("Compute Failed")
                    and re.search(r"^Exception: +['\"]DataError\(", text, re.MULTILINE))


def _quiet_data_errors() -> None:
    """On a worker of the LocalCluster :func:`_client` starts: filter its log (once)."""
    for name in ("distributed.worker", "distributed.worker.state_machine"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _QuietDataErrors) for f in log.filters):
            log.addFilter(_QuietDataErrors())


@contextlib.contextmanager
def _client(scheduler: str | None, n_workers: int | None,
            threads_per_worker: int | None = None) -> Any:
    """A client of ``scheduler``, else of a LocalCluster of ``n_workers`` processes (default:
    Dask's choice) with ``threads_per_worker`` threads (default 1)."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    threads = 1 if threads_per_worker is None else threads_per_worker
    # Dask's own logging config sets its loggers to INFO, over the caller's level (the CLI's
    # --log-level): while the cluster runs, they take the root logger's level
    level = logging.getLogger().getEffectiveLevel()
    dask_log = logging.getLogger("distributed")
    before = dask_log.level
    dask_log.setLevel(level)
    try:
        with LocalCluster(n_workers=n_workers, threads_per_worker=threads,
                          processes=True, dashboard_address=None, silence_logs=level) as cluster, \
                Client(cluster) as client:
            client.run(_quiet_data_errors)
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


def _columns_read(detector: Any, names: Sequence[str], id_column: str | None) -> list[str]:
    """The columns of a file with columns ``names`` that scoring with ``detector`` reads: the
    id column and the model's (all of them for a model that knows no column names)."""
    fitted = getattr(detector.schema_, "names", None)
    if fitted is None:
        return list(names)
    wanted = {*map(str, fitted), id_column}
    return [n for n in names if n in wanted]


def score_files(
    model: Any,
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    scheduler: str | None = None,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    id_column: str | None = None,
    top_k: int = 3,
    partition_rows: int = 1_000_000,
    verbose: bool = False,
) -> ScoreSummary:
    """Score Parquet files with Dask and write a partitioned Parquet dataset to ``out_dir``.

    Args:
        model: a fitted detector or the path of a model file.
        data: a Parquet file, a folder of them, or a glob pattern (``'data/*.parquet'``).
        out_dir: the output folder (one ``part.N.parquet`` per partition); written beside it
            and moved into place when complete, so a failed run leaves no partial output.
        scheduler: a Dask scheduler address (``tcp://host:8786``); ``None``: a LocalCluster
            of ``n_workers`` processes (default: Dask's choice) with ``threads_per_worker``
            threads each (default 1). Those two size the LocalCluster only: giving one with
            ``scheduler`` (whose cluster has its own workers) is a ``ValueError``.
        id_column: input column carried as the row id; default: the global row number ``row``.
        top_k: top features per row (ranked by their excess over the typical contribution).
        partition_rows: about how many rows per partition (whole row groups).
        verbose: show Dask's progress bar of the tasks (``distributed.progress``), on standard
            output.

    Before a cluster starts, the first file must hold the model's columns (and ``id_column``),
    and every other file the same columns with the same kinds of values (numbers, text,
    booleans...), from the files' metadata; other columns are not read. An error while a
    partition is read or scored is a :class:`DataError` naming the file and its rows.
    """
    t0 = time.perf_counter()
    _check_cluster_options(scheduler, n_workers, threads_per_worker)
    out = Path(out_dir).resolve()  # "." names the folder it is (its name is not "")
    _check_out_dir(out, data, model if isinstance(model, (str, os.PathLike)) else None)
    if isinstance(model, (str, os.PathLike)):
        from anovae.persistence import load

        model = load(model)
    parts, schemas = _scan(data, partition_rows)  # before a cluster starts: metadata only
    first_path, first = next(iter(schemas.items()))
    meta = _empty(first)
    _check_scorable(model, meta, id_column, source=repr(first_path))
    columns = _columns_read(model, [str(c) for c in meta.columns], id_column)
    _check_schemas(schemas, columns)
    ddf = _frame(parts, first, columns)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        with _client(scheduler, n_workers, threads_per_worker) as client:
            scored = score(model, ddf, id_column=id_column, top_k=top_k, client=client)
            if verbose:  # Dask's own text bar (it writes to standard output)
                from distributed import progress

                job = client.compute(scored.to_parquet(str(tmp), write_index=False,
                                                       overwrite=True, compute=False))
                progress(job)
                job.result()
            else:
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
