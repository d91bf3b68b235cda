"""Training on data larger than memory: Parquet row groups streamed in shuffled chunks.

:func:`fit_table` fits a tabular detector (``VAEDetector``, ``AEDetector``) on a Parquet file,
a folder of them or a glob pattern without loading it (``anovae fit DATA --out-of-core``):

1. **One streaming pass** reads every row group once and gathers the preprocessing statistics
   (:class:`anovae.tabular.ScalerStats`: exact count, mean, variance, min, max; quartiles from a
   uniform sample of about ``sample_rows`` rows), the validation rows and the sample.
2. **Training** streams the row groups again every epoch, in a new random order, through a
   shuffle buffer of ``chunk_rows`` rows (:class:`ParquetBatches`, a
   :class:`anovae.training.BatchSource` for the one training loop). Memory is bounded,
   whatever the data size, but not by the buffer alone: the buffer and one row group, plus the
   rows kept whole - the sample (about ``sample_rows``, 100,000 by default, scored at the end
   for ``decision_scores_`` and the threshold), the validation rows and the calibration rows
   (each at most ``MAX_HOLDOUT_ROWS``) - so about ``3 x 100,000 x d x 8`` bytes at most, plus
   the scoring of the sample. Below some 100,000 rows it is no smaller than an in-memory fit;
   ``sample_rows`` lowers it (Python API).

Each row's role is a pure function of its global row number (files in sorted order, rows in file
order) and the seed: a seeded hash ``u(row)`` in [0, 1) puts it in the calibration rows
(``u < f_cal``), the validation rows (next ``f_val``) or the training rows; a second hash draws
the uniform sample (probability ``sample_rows / N``). So the split does not depend on chunk
sizes nor on the number of processes. ``f_val`` is ``validation_fraction`` capped at
``max_holdout_rows / N`` (a held-out set must fit in memory; 100,000 rows estimate a mean loss
well), and likewise ``f_cal``.

``decision_scores_`` holds the scores of the uniform sample (not of all ``N`` rows, which would
not fit), and ``threshold_`` is set from them: the contamination quantile of a uniform sample is
an unbiased estimate of the full data's.

Under torchrun (:mod:`anovae.distributed`) every rank reads its own share of the row groups in
both passes; statistics, sample and calibration rows are gathered, the validation loss is
all-reduced, and every rank runs the same number of equal-size steps per epoch.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anovae.accel import to_device
from anovae.exceptions import DataError, warn
from anovae.io import is_pattern, pattern_files
from anovae.metrics import binary_labels
from anovae.thresholds import fpr_calibration_problem

__all__ = ["ParquetBatches", "RowGroup", "fit_table", "parquet_files", "parquet_row_groups",
           "row_uniform"]

logger = logging.getLogger(__name__)

#: Cap on the rows held out for validation and for calibration (each), kept in memory.
MAX_HOLDOUT_ROWS = 100_000


def parquet_files(pattern: str | os.PathLike) -> list[str]:
    """The Parquet files of a file path, a folder (searched recursively) or a glob, sorted."""
    text = os.fspath(pattern)
    if os.path.isdir(text):
        files = _folder_files(text)
    elif is_pattern(text):  # the tables it matches (io.pattern_files), folders opened
        tables = pattern_files(text)
        if not str(tables[0]).lower().endswith((".parquet", ".pq")) and not tables[0].is_dir():
            raise DataError(f"{str(tables[0])!r}, matched by {text!r}, is not Parquet: "
                            "out-of-core reading and Dask take Parquet files (convert CSV "
                            "with pandas first)")
        files = [f for t in tables for f in (_folder_files(str(t)) if t.is_dir() else [str(t)])]
    else:
        if not os.path.exists(text):
            raise DataError(f"file {text!r} does not exist")
        if not text.lower().endswith((".parquet", ".pq")):
            raise DataError(f"{text!r} is not Parquet: out-of-core reading takes a Parquet file, "
                            "a folder of them or a glob pattern (convert CSV with pandas first)")
        files = [text]
    if not files:
        raise DataError(f"no Parquet files match {text!r}")
    return files


def _folder_files(folder: str) -> list[str]:
    """The Parquet files of a folder, searched recursively, sorted."""
    return sorted(str(p) for p in Path(folder).rglob("*") if p.suffix in (".parquet", ".pq"))


@dataclass(frozen=True)
class RowGroup:
    """One Parquet row group: the unit of streaming. ``offset`` is its first global row."""

    path: str
    index: int
    offset: int
    rows: int

    def read(self, columns: Sequence[str] | None = None) -> Any:
        """The row group as a pandas DataFrame indexed by global row number."""
        import pandas as pd
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.path)
            if columns is not None:  # pyarrow leaves absent columns out without a word
                have = set(pf.schema_arrow.names)
                missing = [c for c in columns if c not in have]
                if missing:
                    raise DataError(f"{self.path!r} lacks the columns {missing} (the first file "
                                    "has them): every file must have the same columns")
            df = pf.read_row_group(
                self.index, columns=None if columns is None else list(columns)).to_pandas()
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"cannot read {self.path!r} (row group {self.index}): {exc}") from exc
        df.index = pd.RangeIndex(self.offset, self.offset + len(df))
        return df


def parquet_row_groups(pattern: str | os.PathLike) -> tuple[list[RowGroup], Any]:
    """Every row group of the matching files with its global row offset (from the files'
    metadata only), and the Arrow schema of the first file."""
    import pyarrow.parquet as pq

    groups: list[RowGroup] = []
    offset, schema = 0, None
    for path in parquet_files(pattern):
        try:
            meta = pq.ParquetFile(path).metadata
        except Exception as exc:
            raise DataError(f"cannot read {path!r}: {exc}") from exc
        schema = schema if schema is not None else meta.schema.to_arrow_schema()
        for i in range(meta.num_row_groups):
            n = meta.row_group(i).num_rows
            if n:
                groups.append(RowGroup(path, i, offset, n))
                offset += n
    if not groups:
        raise DataError(f"{os.fspath(pattern)!r} has no rows")
    return groups, schema


def row_uniform(seed: int, rows: np.ndarray) -> np.ndarray:
    """A uniform number in [0, 1) for each global row number: SplitMix64 of ``rows`` mixed with
    ``seed``. The same row always gets the same number, however the data are chunked."""
    with np.errstate(over="ignore"):
        z = rows.astype(np.uint64) + np.uint64(seed % 2**63) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


@dataclass
class _Roles:
    """Which rows are calibration, validation, training and sample rows (by row number)."""

    seed: int
    f_cal: float
    f_val: float
    p_sample: float

    def split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Boolean masks ``(n,)``: calibration, validation, training, sample."""
        u = row_uniform(self.seed, rows)
        cal = u < self.f_cal
        val = ~cal & (u < self.f_cal + self.f_val)
        sample = row_uniform(self.seed ^ 0x5BD1E995, rows) < self.p_sample
        return cal, val, ~(cal | val), sample


def share_row_groups(train_rows: Sequence[int], world: int, balance: float = 0.9
                     ) -> list[int] | None:
    """Which rank reads each row group (``(n_groups,)`` ranks), or ``None`` for striping.

    Row groups go whole to ranks, largest first to the least loaded one, when that gives every
    rank at least ``balance`` times the largest share of training rows. Otherwise (one row group,
    say, or one much larger than the rest) ``None``: every rank reads every row group and keeps
    every ``world``-th of its training rows. Each epoch trains on what the smallest share fills,
    so whole groups alone could leave most rows unused.

    >>> share_row_groups([100, 100, 100, 100], 2)
    [0, 1, 0, 1]
    >>> share_row_groups([1000, 40], 2) is None
    True
    """
    if world == 1:
        return [0] * len(train_rows)
    load = [0] * world
    owner = [0] * len(train_rows)
    for g in sorted(range(len(train_rows)), key=lambda g: (-train_rows[g], g)):
        r = min(range(world), key=lambda r: (load[r], r))
        owner[g] = r
        load[r] += train_rows[g]
    return owner if min(load) >= balance * max(load) > 0 else None


class ParquetBatches:
    """Shuffled mini-batches of one rank's share of the training rows, streamed every epoch.

    Each epoch draws one order of the row groups from the shared generator (the same on every
    rank); a rank reads its own row groups in that order (``owner``, see
    :func:`share_row_groups`; ``None``: every row group, keeping every ``world``-th training
    row) and passes their training rows through a shuffle buffer of ``chunk_rows`` rows; batches
    are drawn from the shuffled buffer and the remainder is carried on. Every rank yields the
    same number of batches of ``batch_size // world`` rows (the fewest any rank can fill), so
    DDP's steps line up.
    """

    def __init__(self, groups: list[RowGroup], train_rows: list[int], read: Any,
                 chunk_rows: int, device: torch.device, rank: int = 0, world: int = 1,
                 owner: list[int] | None = None) -> None:
        self.groups, self.train_rows, self.read = groups, train_rows, read
        self.chunk_rows, self.device, self.rank, self.world = chunk_rows, device, rank, world
        self.owner = [0] * len(groups) if owner is None and world == 1 else owner
        self.peak_buffer_rows = 0  # the most rows held at once (for tests and logs)

    def _rows_of(self, r: int) -> int:
        """Training rows rank ``r`` reads per epoch."""
        if self.owner is None:  # striped: rows r, r + world, ... of every group
            return sum(len(range(r, n, self.world)) for n in self.train_rows)
        return sum(n for n, o in zip(self.train_rows, self.owner, strict=True) if o == r)

    def steps(self, order: Sequence[int], batch_size: int) -> int:
        """Batches per rank per epoch: the fewest that every rank can fill."""
        b = max(1, batch_size // self.world)
        return min(self._rows_of(r) // b for r in range(self.world))

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        order = torch.randperm(len(self.groups), generator=generator).tolist()
        epoch_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        rng = np.random.default_rng([epoch_seed, self.rank])  # shuffles inside this rank
        b = max(1, batch_size // self.world)
        steps = self.steps(order, batch_size)
        if steps == 0:
            raise DataError(f"too few training rows for a batch of {b} rows on each of "
                            f"{self.world} process(es)")
        done = 0
        buffer = np.empty((0, 0), dtype=np.float32)
        mine = (order if self.owner is None
                else [g for g in order if self.owner[g] == self.rank])
        for g in mine:
            rows = self.read(self.groups[g])  # (n_g, d) scaled training rows
            if self.owner is None:
                rows = rows[self.rank::self.world]
            buffer = rows if buffer.size == 0 else np.concatenate([buffer, rows])
            self.peak_buffer_rows = max(self.peak_buffer_rows, buffer.shape[0])
            if buffer.shape[0] < self.chunk_rows:
                continue
            buffer = buffer[rng.permutation(buffer.shape[0])]
            n_full = (buffer.shape[0] // b) * b
            for start in range(0, n_full, b):
                yield to_device(buffer[start:start + b], self.device)
                done += 1
                if done == steps:
                    return
            buffer = buffer[n_full:]
        if buffer.size:
            buffer = buffer[rng.permutation(buffer.shape[0])]
            for start in range(0, (buffer.shape[0] // b) * b, b):
                yield to_device(buffer[start:start + b], self.device)
                done += 1
                if done == steps:
                    return


def _gather(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]``; ``[obj]`` outside a process group."""
    from anovae.distributed import collective_errors, current

    ctx = current()
    if ctx is None:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * ctx.world_size
    with collective_errors("gathering the preprocessing statistics"):
        dist.all_gather_object(out, obj)
    return out


def _feature_columns(schema: Any, label_column: str | None, id_column: str | None,
                     exclude: Sequence[str] | None, path: str) -> list[str]:
    names = [str(n) for n in schema.names]
    for name, what in [(label_column, "label column"), (id_column, "id column")]:
        if name and name not in names:
            raise DataError(f"{what} {name!r} is not in {path!r}")
    for name in exclude or []:
        if name not in names:
            raise DataError(f"--exclude {name!r}: no such column in {path!r}")
    drop = {label_column, id_column, *(exclude or [])}
    cols = [n for n in names if n not in drop]
    if not cols:
        raise DataError(f"{path!r} has no feature columns left")
    import pyarrow as pa

    text = [n for n in cols if not (pa.types.is_integer(t := schema.field(n).type)
                                    or pa.types.is_floating(t) or pa.types.is_boolean(t)
                                    or pa.types.is_decimal(t))]
    if text:
        raise DataError(f"out-of-core training takes numeric and boolean columns only; "
                        f"{text[:10]} of {path!r} are not: exclude them (--exclude), or fit in "
                        "memory (without --out-of-core) to model categories")
    return cols


def fit_table(detector: Any, data: str | os.PathLike, *, label_column: str | None = None,
              exclude: Sequence[str] | None = None, id_column: str | None = None,
              chunk_rows: int = 200_000, sample_rows: int = 100_000) -> Any:
    """Fit ``detector`` on Parquet data without loading it into memory.

    Args:
        detector: an unfitted or fitted tabular detector (``VAEDetector``, ``AEDetector``); its
            parameters apply as in ``fit``.
        data: a Parquet file, a folder of them, or a glob pattern.
        label_column: optional 0/1 column (1 = anomaly): anomalies are left out of the
            statistics and of training, as in ``fit(X, y)`` (with ``use_labels=False``, only
            threshold methods that need labels read it).
        exclude, id_column: columns that are not features.
        chunk_rows: rows of the shuffle buffer (memory: about this many rows plus a row group).
        sample_rows: about how many rows the uniform sample holds (robust scaler quartiles,
            ``decision_scores_`` and the threshold).

    Returns:
        The fitted detector, with ``n_train_rows_`` (training rows streamed per epoch).

    Raises:
        DataError: unreadable or non-Parquet data, missing or non-numeric columns, NaN/inf.
    """
    from anovae.detectors import AEDetector, VAEDetector
    from anovae.detectors.base import resolve_device
    from anovae.distributed import current
    from anovae.tabular import ColumnSchema, Scaler, ScalerStats, check_tabular

    if type(detector) not in (VAEDetector, AEDetector):
        raise ValueError(f"out-of-core training takes a VAEDetector or AEDetector on numeric "
                         f"columns; got {type(detector).__name__}")
    kinds = [k for k in ("categorical", "numeric") if getattr(detector, k, None) is not None]
    if kinds:
        raise ValueError(f"out-of-core training takes numeric columns only (no mixed tables): "
                         f"leave {' and '.join(kinds)} unset")
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError(f"data must be the path of a Parquet file, folder or glob, got "
                        f"{type(data).__name__} (use fit for data in memory)")
    if isinstance(exclude, str):  # one column, not its letters
        exclude = [exclude]
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if sample_rows < 1:
        raise ValueError(f"sample_rows must be >= 1, got {sample_rows}")
    detector._check_params()
    detector._warn_unused_contamination()
    spec = detector._threshold_spec()
    groups, schema = parquet_row_groups(data)
    total = groups[-1].offset + groups[-1].rows
    columns = _feature_columns(schema, label_column, id_column, exclude, os.fspath(data))
    seed = detector._fit_seed()
    rng = np.random.default_rng(seed)
    cal_frac = getattr(detector, "calibration_fraction", None)
    if cal_frac is None:
        cal_frac = 0.2 if spec.method == "fpr" else 0.0
    roles = _Roles(seed, min(cal_frac, MAX_HOLDOUT_ROWS / total),
                   min(detector.validation_fraction, MAX_HOLDOUT_ROWS / total),
                   min(1.0, sample_rows / total))
    ctx = current()
    rank, world = (0, 1) if ctx is None else (ctx.rank, ctx.world_size)
    read_cols = columns + ([label_column] if label_column else [])
    path = os.fspath(data)
    warned: set[str] = set()

    def features(df: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows (n, d) float64, anomaly mask (n,), training mask (n,): the rows that may
        train, all of them unless labels are used) of a row group, validated."""
        with warnings.catch_warnings(record=True) as caught:  # once per fit, not per row group
            warnings.simplefilter("always")
            X = check_tabular(df[columns], what=f"{path!r} rows {df.index[0]}..{df.index[-1]}")[0]
        for w in caught:
            if str(w.message) not in warned:
                warned.add(str(w.message))
                warn(str(w.message), w.category)
        if not label_column:
            return X, np.zeros(len(df), dtype=bool), np.ones(len(df), dtype=bool)
        anomaly = binary_labels(df[label_column], len(df), f"label column {label_column!r}",
                                "the row group has {n} rows") == 1
        return X, anomaly, ~anomaly if detector.use_labels else np.ones(len(df), dtype=bool)

    # -- pass 1: statistics, held-out rows and the sample, each rank over its row groups ----
    stats = ScalerStats()
    counts: dict[int, int] = {}
    val_parts, cal_parts, sample_parts, sample_y = [], [], [], []
    for gi in range(rank, len(groups), world):
        df = groups[gi].read(read_cols)
        X, anomaly, normal = features(df)
        cal, val, train, sample = roles.split(df.index.to_numpy())
        fitted = normal & ~cal  # the scaler sees training and validation rows, as in fit
        stats.update(X[fitted], keep=sample[fitted])
        counts[gi] = int((normal & train).sum())
        val_parts.append(X[normal & val])
        cal_parts.append(X[normal & cal])
        sample_parts.append(X[sample])
        sample_y.append(anomaly[sample].astype(int))
    d = len(columns)
    merged = ScalerStats()
    gathered = _gather((stats, counts, np.concatenate(cal_parts) if cal_parts else
                        np.empty((0, d)), np.concatenate(sample_parts) if sample_parts else
                        np.empty((0, d)), np.concatenate(sample_y) if sample_y else
                        np.empty(0, dtype=int)))
    train_rows = [0] * len(groups)
    for part_stats, part_counts, *_ in gathered:
        merged.merge(part_stats)
        for gi, c in part_counts.items():
            train_rows[gi] = c
    cal_rows = np.concatenate([g[2] for g in gathered])
    sample_X = np.concatenate([g[3] for g in gathered])
    sample_yy = np.concatenate([g[4] for g in gathered])
    n_train = sum(train_rows)
    if n_train < 2:
        raise DataError(f"{path!r} has {n_train} training row(s); at least 2 are needed")
    if spec.method == "fpr" and (problem := fpr_calibration_problem(
            float(spec.param), cal_rows.shape[0], cal_frac)):
        raise DataError(problem)

    # -- the same steps as BaseDetector.fit, on streamed rows ------------------------------
    detector.schema_ = ColumnSchema(d, tuple(columns))
    detector.n_features_in_ = d
    detector.feature_names_in_ = np.asarray(columns, dtype=object)
    detector.scaler_ = Scaler(detector.scaler).fit_stats(merged)
    detector.net_config_ = detector._net_config(d)
    scaler = detector.scaler_

    def read_train(group: RowGroup) -> np.ndarray:
        df = group.read(read_cols)
        X, _, normal = features(df)
        _, _, train, _ = roles.split(df.index.to_numpy())
        return scaler.transform(X[normal & train])

    device = resolve_device(detector.device)
    owner = share_row_groups(train_rows, world)
    if owner is None:
        logger.info("row groups too uneven to share whole among %d processes: each reads every "
                    "row group and trains on every %d-th row", world, world)
    source = ParquetBatches(groups, train_rows, read_train, chunk_rows, device, rank, world,
                            owner)
    val_local = np.concatenate(val_parts) if val_parts else np.empty((0, d))
    # every rank evaluates its own share (maybe none) whenever any rank holds validation rows
    x_val = scaler.transform(val_local) if sum(_gather(val_local.shape[0])) > 0 else None
    net = detector.net_ = detector._train_net(source, x_val, n_train, rng)
    normal_sample = (sample_X[sample_yy == 0] if detector.use_labels and (sample_yy == 0).any()
                     else sample_X)
    if not detector.net_config_.variational:
        codes = detector.transform(normal_sample)
        detector.code_mean_ = codes.mean(0).astype(np.float32)
        detector.code_std_ = codes.std(0).astype(np.float32)
    del net
    detector.n_train_rows_ = n_train
    detector._fit_score_offsets(normal_sample, rng)  # as BaseDetector.fit does (tables: nothing)
    detector.decision_scores_ = detector._score_rows(sample_X)[0]
    detector._fit_feature_baselines(normal_sample)  # as BaseDetector.fit, on the sample
    y_fit = sample_yy if label_column else None
    if missing := spec.missing_labels(y_fit):
        raise DataError(f"threshold={spec.method!r} needs {missing} in the sample: " + (
            "a larger sample_rows" if label_column else "give label_column"))
    if cal_rows.shape[0]:
        detector.calibration_scores_ = detector._score_rows(cal_rows)[0]
    elif hasattr(detector, "calibration_scores_"):
        del detector.calibration_scores_
    detector._fit_threshold(spec, detector.decision_scores_, y_fit)
    logger.info("out-of-core fit: %d rows in %d row groups, %d training rows per epoch, "
                "%d sampled, peak buffer %d rows", total, len(groups), n_train,
                sample_X.shape[0], source.peak_buffer_rows)
    return detector
