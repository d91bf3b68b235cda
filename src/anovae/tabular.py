"""Tabular input: validation, column schema and scaling (fitted in ``fit``, saved with models)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Number
from typing import Any

import numpy as np
import pandas as pd
from scipy.sparse import issparse

from anovae._text import quoted
from anovae.exceptions import DataError, warn
from anovae.io import array_columns

__all__ = ["SCALED_MAX", "SCALERS", "ColumnSchema", "Scaler", "ScalerStats", "check_tabular",
           "holds_numbers", "looks_like_row_id", "match_columns", "warn_if_row_id"]

SCALERS = ("robust", "standard", "minmax", "none")


def _list(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(repr(str(n)) for n in names[:limit])
    return shown + (f" ... ({len(names)} in all)" if len(names) > limit else "")


@dataclass(frozen=True)
class ColumnSchema:
    """The columns a model was fitted on. ``names`` is None when it was fitted on an array."""

    n_features: int
    names: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"n_features": self.n_features,
                "names": None if self.names is None else list(self.names)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColumnSchema:
        names = d.get("names")
        return cls(int(d["n_features"]), None if names is None else tuple(names))


def looks_like_row_id(s: pd.Series) -> str | None:
    """Why an integer column of 20 rows or more looks like a row number or id left among the
    features (which carries no pattern, and whose new values at scoring all look anomalous), or
    None: it counts up by one row by row (0, 1, 2, ...), or its values are all distinct and
    fill their range densely (a shuffled 100000..101999). Distinct integers spread over a wide
    range (byte counts, amounts in cents) are not taken for ids."""
    n = len(s)
    if not pd.api.types.is_integer_dtype(s.dtype) or n < 20 or s.isna().any():
        return None
    if s.nunique() != n:
        return None
    if bool((s.diff().dropna() == 1).all()):
        return "counts up by one row by row"
    if float(s.max()) - float(s.min()) + 1 <= 2 * n:
        return "holds a distinct integer in every row, densely numbered"
    return None


def warn_if_row_id(s: pd.Series, name: Any) -> None:
    """The warning for a column that :func:`looks_like_row_id` (numeric and mixed tables)."""
    why = looks_like_row_id(s)
    if why:
        warn(f"column {str(name)!r} {why}: it looks like an id; exclude it (CLI: --exclude "
             f"{name})")


def named_for_unnamed(what: str = "X") -> str:
    """The warning for a table with column names given to a model fitted on an array without
    names (scikit-learn warns so too): one text for numeric and mixed models."""
    return (f"{what} has column names, but the model was fitted on an array without names: "
            "its columns are taken by position, unchecked; refit on a DataFrame to have them "
            "matched by name")


def check_tabular(
    X: Any,
    schema: ColumnSchema | None = None,
    *,
    min_rows: int = 1,
    what: str = "X",
) -> tuple[np.ndarray, ColumnSchema]:
    """Validate a table and return it as a float64 ``(n, d)`` array with its schema.

    Accepts a pandas DataFrame (numeric and boolean columns) or anything ``np.asarray`` turns into a
    2-D numeric array. With ``schema`` (the fitted one), DataFrame columns are matched by name
    (reordered if needed) and arrays by width. Every problem raises :class:`DataError` naming it.
    """
    series = isinstance(X, pd.Series)
    if series:
        X = series_as_frame(X, None if schema is None else schema.names, what)
    if isinstance(X, pd.DataFrame):
        arr, names = _frame_to_array(X, schema, what)
        if schema is None:  # fitting: ids left among the features (as mixed tables warn)
            for name, col in X.items():
                warn_if_row_id(col, name)
    else:
        arr, names = _array(X, what), None
    check_size(what, arr.shape, min_rows)
    if schema is not None and arr.shape[1] != schema.n_features:
        hint = ("" if not series or arr.shape[0] != schema.n_features else
                " (a pandas Series is one column; pass one row as a one-row table: "
                "series.to_frame().T)")
        raise DataError(
            f"{what} has {arr.shape[1]} columns but the model was fitted on "
            f"{schema.n_features}{hint}")
    # A sum is finite exactly when every value is (barring overflow, re-checked below): one cheap
    # pass on the hot scoring path instead of a full boolean mask.
    with np.errstate(over="ignore", invalid="ignore"):
        total = np.add.reduce(arr, axis=None) if arr.size else 0.0
    bad = None if np.isfinite(total) else ~np.isfinite(arr)
    if bad is not None and bad.any():
        cols = np.flatnonzero(bad.any(axis=0))
        every = names if names is not None else array_columns(arr.shape[1])  # (x0, x1, ... as
        col_names = [every[i] for i in cols]                                  # numeric= names them)
        kinds = "NaN" if np.isnan(arr[bad]).all() else "NaN or infinite values"
        hint = ("" if not np.isnan(arr[bad]).any() else
                " (or let the model take gaps: a VAEDetector given the column kinds, e.g. "
                f"numeric=[{col_names[0]!r}] (CLI: --numeric {col_names[0]}), models missing "
                "values)")
        raise DataError(
            f"{what} contains {kinds} in {_list(col_names)} ({int(bad.any(axis=1).sum())} rows); "
            f"fill or drop them first{hint}"
        )
    if schema is None:
        schema = ColumnSchema(arr.shape[1], None if names is None else tuple(names))
    return arr, schema


def check_size(what: str, shape: tuple[int, ...], min_rows: int, unit: str = "row") -> None:
    """Refuse ``what`` of ``shape`` (rows first) without rows, with fewer than ``min_rows``, or
    (a table) without columns, in the words of scikit-learn's messages ("n_samples=1", "0
    feature(s) ... is required") that users search for. ``unit``: what a row is ("image")."""
    n = shape[0]
    if n == 0:
        raise DataError(f"{what} has no {unit}s")
    if n < min_rows:
        raise DataError(f"{what} has {n} {unit}(s) (n_samples={n}); at least {min_rows} are "
                        "needed to fit")
    if len(shape) == 2 and shape[1] == 0:
        raise DataError(f"{what} has no columns: 0 feature(s) (shape={shape}) while a minimum "
                        "of 1 is required.")


def _array(X: Any, what: str) -> np.ndarray:
    if issparse(X):  # np.asarray would make a 0-d object array of it
        raise DataError(f"{what} is a sparse matrix; anovae takes dense tables: use X.toarray()")
    if isinstance(X, np.ma.MaskedArray):  # np.asarray would drop the mask: masked = missing
        X = np.ma.filled(X.astype(np.float64), np.nan) if np.ma.is_masked(X) else X.data
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise DataError(f"{what} cannot be read as a 2-D numeric table: {exc}") from exc
    if arr.ndim == 1:
        raise DataError(
            f"{what} is 1-D with shape {arr.shape}; a table must be 2-D (rows, features). "
            "Reshape your data: X.reshape(-1, 1) for one feature or X.reshape(1, -1) for one "
            "row"
        )
    if arr.ndim != 2:
        raise DataError(f"{what} must be 2-D (rows, features), got shape {arr.shape}")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.float64)
    if arr.dtype.kind == "c":  # a cast to float64 would silently drop the imaginary parts
        raise DataError(f"{what} holds complex numbers (dtype {arr.dtype}). Complex data not "
                        "supported: anovae takes real numeric features")
    if arr.dtype.kind not in "iuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"{what} holds non-numeric values (dtype {arr.dtype}); arrays must be numeric: "
                "pass a pandas DataFrame to model text or categorical columns (VAEDetector)"
            ) from exc
    return np.asarray(arr, dtype=np.float64)


def match_columns(X: pd.DataFrame, expected: list[str], what: str = "X") -> pd.DataFrame:
    """``X`` with its columns in the order of ``expected`` (the fitted names); missing or
    unexpected columns raise :class:`DataError` naming them."""
    names = [str(c) for c in X.columns]
    missing = [n for n in expected if n not in names]
    extra = [n for n in names if n not in set(expected)]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing columns {_list(missing)}")
        if extra:
            parts.append(f"unexpected columns {_list(extra)}")
        raise DataError(
            f"{what} does not match the columns the model was fitted on: " + "; ".join(parts)
        )
    if names != expected:
        X = X.set_axis(names, axis=1)[expected]
    return X


def holds_numbers(s: pd.Series) -> bool:
    """Whether ``s`` has a numeric or boolean dtype, or is an object column whose observed
    values are all numbers (``Decimal`` from a Parquet decimal column, Python floats...)."""
    dt = s.dtype
    if pd.api.types.is_numeric_dtype(dt) or pd.api.types.is_bool_dtype(dt):
        return True
    if not pd.api.types.is_object_dtype(dt):
        return False
    obs = s.dropna()
    return bool(obs.size) and all(isinstance(v, Number) and not isinstance(v, (bool, np.bool_))
                                  for v in obs)


def _first_non_number(s: pd.Series) -> str:
    """``'oops' in row 450``: the first observed value of ``s`` that is not a number (or, when
    every value is a number written as text, the first one, saying so)."""
    obs = s.dropna()
    if not obs.size:
        return f"dtype {s.dtype}"
    try:
        num = pd.to_numeric(obs, errors="coerce")
    except (TypeError, ValueError):  # e.g. lists
        num = pd.Series(np.nan, index=obs.index)
    bad = obs[num.isna()]
    if not bad.size:
        return f"{quoted(obs.iloc[0])} in row {obs.index[0]!r}: numbers written as text"
    return f"{quoted(bad.iloc[0])} in row {bad.index[0]!r}"


def series_as_frame(X: pd.Series, names: Sequence[str] | None, what: str) -> pd.DataFrame:
    """A Series as the one-column table it is, unless it looks like one *row* of a model
    fitted on the columns ``names`` (its index holds them): then a :class:`DataError` saying
    how to pass a row (a Series is ambiguous: ``df.iloc[0]`` is a row, ``df["a"]`` a column)."""
    if names is not None and len(names) > 1 and set(names) <= {str(i) for i in X.index}:
        raise DataError(f"{what} is a pandas Series indexed by the model's columns, i.e. one "
                        "row: pass it as a one-row table (df.iloc[[i]], or series.to_frame().T)")
    return X.to_frame()


def refuse_unmodelled(s: pd.Series, name: str, what: str) -> None:
    """:class:`DataError` for a column of a kind anovae does not model: dates and times (as
    numbers they would silently become nanosecond counts) and complex numbers (a cast to float
    would silently drop the imaginary parts)."""
    dt = s.dtype
    if (pd.api.types.is_datetime64_any_dtype(dt) or pd.api.types.is_timedelta64_dtype(dt)
            or isinstance(dt, pd.PeriodDtype)):
        raise DataError(f"column {name!r} of {what} holds dates or times, which anovae does not "
                        "model; derive numeric features from it or exclude it (CLI: --exclude "
                        f"{name})")
    if isinstance(dt, pd.IntervalDtype):
        raise DataError(f"column {name!r} of {what} holds intervals, which anovae does not "
                        f"model; give it numbers or text, or exclude it (CLI: --exclude {name})")
    if pd.api.types.is_complex_dtype(dt):
        raise DataError(f"column {name!r} of {what} holds complex numbers (dtype {dt}); anovae "
                        "takes real numeric features")


def _frame_to_array(X: pd.DataFrame, schema: ColumnSchema | None, what: str
                    ) -> tuple[np.ndarray, list[str]]:
    names = [str(c) for c in X.columns]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise DataError(f"{what} has duplicate column names: {_list(dup)}")
    if schema is not None and schema.names is not None:
        X = match_columns(X, list(schema.names), what)
        names = list(schema.names)
    elif schema is not None and all(isinstance(c, str) for c in X.columns):
        # as scikit-learn warns (for text names only: 0, 1... are positions anyway)
        warn(named_for_unnamed(what))
    non_numeric = []
    for n, (_, col) in zip(names, X.items(), strict=False):
        refuse_unmodelled(col, n, what)
        if not holds_numbers(col):
            non_numeric.append(n)
    if non_numeric:
        first = non_numeric[0]
        example = _first_non_number(X[first] if schema is None or schema.names is not None
                                    else X.iloc[:, names.index(first)])
        if schema is not None:  # the model needs these columns: they hold text now
            raise DataError(
                f"{what} holds text in numeric column{'s' if len(non_numeric) > 1 else ''} "
                f"{_list(non_numeric)} (e.g. {example}); the model was fitted with "
                f"{'them' if len(non_numeric) > 1 else 'it'} as numbers: fix the data")
        raise DataError(
            f"{what} has non-numeric columns {_list(non_numeric)} (e.g. {example}); this model "
            "takes numeric and boolean columns only (a VAEDetector fitted on a table with text "
            "or categorical columns models them): encode or exclude them (CLI: --exclude "
            "COLUMN)"
        )
    try:
        arr = X.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} cannot be converted to numbers: {exc}") from exc
    return arr, names


#: Scaled values are clipped to +-SCALED_MAX (and inf to it): a value a trillion spreads from the
#: median is as anomalous as any further one, and beyond about 1e19 its square overflows float32
#: in the likelihood (then inf - inf = NaN, and a NaN score is never flagged). No real training
#: value comes near it; NaN (a missing cell of a mixed table) stays NaN.
SCALED_MAX = 1e12


#: Values per block of :meth:`Scaler.transform` (its float64 temporary: 8 MB).
_TRANSFORM_BLOCK = 1 << 20


def _std(X: np.ndarray) -> np.ndarray:
    """Per-column standard deviation of ``X`` ``(n, d)`` without overflow: the columns are
    divided by their largest magnitude first (``X.std()`` squares 1e200 to inf)."""
    top = np.max(np.abs(X), axis=0) if X.shape[0] else np.zeros(X.shape[1])
    top = np.where(np.isfinite(top) & (top > 0), top, 1.0)
    return (X / top).std(axis=0) * top


def _negligible(scale: np.ndarray, center: np.ndarray) -> np.ndarray:
    """``(d,)`` bool: a spread too small to scale by - zero, not finite, subnormal (its
    inverse would overflow) or within 64 float64 steps (ulps) of the column's centre: rounding
    noise (1e-17 around 0.3), not a spread (nanosecond timestamps near 1.7e18 that differ by a
    millisecond are 4,000 steps apart)."""
    scale = np.asarray(scale, dtype=np.float64)
    return (~np.isfinite(scale) | (scale < np.finfo(np.float64).tiny)
            | (scale <= 64.0 * np.spacing(np.abs(np.asarray(center, dtype=np.float64)))))


@dataclass
class Scaler:
    """Per-feature affine scaling ``(x - center) / scale``, fitted on training rows.

    ``robust`` (default): median and IQR / 1.349 (the standard deviation for Gaussian data), which
    a few extreme rows cannot stretch; falls back to the standard deviation, then 1, for features
    whose IQR is zero. ``standard``: mean and standard deviation. ``minmax``: to [0, 1] on the
    training range (for Bernoulli likelihoods). ``none``: identity.
    """

    method: str = "robust"
    center: np.ndarray | None = None
    scale: np.ndarray | None = None

    def fit(self, X: np.ndarray) -> Scaler:
        """Fit on ``X`` (n, d) float64."""
        if self.method not in SCALERS:
            raise ValueError(f"unknown scaler {self.method!r}; choose one of {list(SCALERS)}")
        d = X.shape[1]
        std = None
        if self.method == "robust":
            q25, q50, q75 = np.percentile(X, [25, 50, 75], axis=0)
            center, scale = q50, (q75 - q25) / 1.349
            std = _std(X)
        elif self.method == "standard":
            center, scale = X.mean(axis=0), _std(X)
        elif self.method == "minmax":
            lo, hi = X.min(axis=0), X.max(axis=0)
            center, scale = lo, hi - lo
        else:
            center, scale = np.zeros(d), np.ones(d)
        return self._set(center, scale, std)

    def fit_stats(self, stats: ScalerStats) -> Scaler:
        """Fit from statistics gathered in one streaming pass (:class:`ScalerStats`).

        ``standard`` and ``minmax`` are exact (up to floating-point summation order); ``robust``
        takes its quartiles from the stats' uniform row sample (exact when every row was kept).
        """
        if self.method not in SCALERS:
            raise ValueError(f"unknown scaler {self.method!r}; choose one of {list(SCALERS)}")
        if stats.n == 0 or stats.mean is None:
            raise DataError("no rows were seen: cannot fit the scaler")
        with np.errstate(over="ignore", invalid="ignore"):
            std = np.sqrt(stats.m2 / stats.n)
        if self.method in ("robust", "standard") and not np.isfinite(std).all():
            # the streaming sums square the deviations: beyond about 1e154 they overflow, where
            # Scaler.fit rescales first; a clipped scale would make another model than fit's
            bad = np.flatnonzero(~np.isfinite(std)).tolist()
            raise DataError(f"columns {bad[:10]} (by position) spread beyond 1e150, too wide for "
                            "the streaming scaler: rescale them, or fit in memory")
        if self.method == "robust":
            sample = stats.sample_rows()
            if sample.shape[0] == 0:
                raise DataError("the row sample for the robust scaler is empty")
            q25, q50, q75 = np.percentile(sample, [25, 50, 75], axis=0)
            return self._set(q50, (q75 - q25) / 1.349, std)
        if self.method == "standard":
            return self._set(stats.mean, std)
        if self.method == "minmax":
            return self._set(stats.lo, stats.hi - stats.lo)
        d = stats.mean.shape[0]
        return self._set(np.zeros(d), np.ones(d))

    def _set(self, center: np.ndarray, scale: np.ndarray, std: np.ndarray | None = None
             ) -> Scaler:
        """Store ``center`` and ``scale``; with ``std`` (robust) an IQR of about zero falls back
        to the standard deviation; a scale still about zero or not finite becomes 1.

        "About zero" is relative to the column's size (:func:`_negligible`): a column measured
        in tiny units (values near 1e-13, spread 1e-13) keeps its spread; a constant column,
        or one whose spread is rounding noise of its values (1e-17 around 0.3), does not."""
        if std is not None:
            scale = np.where(_negligible(scale, center), std, scale)
        scale = np.where(_negligible(scale, center), 1.0, scale)
        self.center = np.ascontiguousarray(center, dtype=np.float64)
        self.scale = np.ascontiguousarray(scale, dtype=np.float64)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``(n, d)`` -> scaled float32 ``(n, d)``, clipped to :data:`SCALED_MAX`.

        The centring runs in float64, written straight into the float32 output, and the scaling
        in float32, in place (no float64 temporary of the data's size). Where the centre or
        the spread is beyond float32's comfortable range (above 1e30, or a spread below 1e-30:
        data in units of 1e39 or 1e-40) both run in float64, a block of rows at a time, and the
        result is cast once.
        """
        assert self.center is not None and self.scale is not None, "Scaler is not fitted"
        X = np.asarray(X)
        out = np.empty(X.shape, dtype=np.float32)
        with np.errstate(over="ignore"):  # beyond float32: inf, clipped below
            if self._float32_safe():
                np.subtract(X, self.center, out=out, casting="same_kind")
                out *= (1.0 / self.scale).astype(np.float32)
            else:
                inv = 1.0 / self.scale
                step = max(1, _TRANSFORM_BLOCK // max(1, int(np.prod(X.shape[1:]))))
                for i in range(0, X.shape[0], step):
                    out[i:i + step] = (X[i:i + step] - self.center) * inv
        np.clip(out, -SCALED_MAX, SCALED_MAX, out=out)
        return out

    def _float32_safe(self) -> bool:
        """Whether centre and spread let :meth:`transform` scale in float32, as anovae < 0.6
        always did (the same scores, bit for bit)."""
        scale, center = np.asarray(self.scale), np.asarray(self.center)
        return bool(np.all((scale > 1e-30) & (scale < 1e30)) and np.all(np.abs(center) < 1e30))

    def inverse_transform(self, Xt: np.ndarray) -> np.ndarray:
        """Scaled ``(n, d)`` -> original units, float64."""
        assert self.center is not None and self.scale is not None, "Scaler is not fitted"
        return np.asarray(Xt, dtype=np.float64) * self.scale + self.center


@dataclass
class ScalerStats:
    """Per-feature statistics of rows seen chunk by chunk, to fit a :class:`Scaler` in one
    streaming pass; mergeable across chunks and processes.

    Count, mean and sum of squared deviations are merged with Chan et al.'s parallel update
    (exact up to rounding), min and max exactly. Quartiles cannot be merged exactly in bounded
    memory: the robust scaler takes them from a uniform sample of rows, which the caller
    selects with the ``keep`` mask (e.g. each row independently with probability ``S / N``, as
    :mod:`anovae.outofcore` does with a seeded hash of the row number, so the sample does not
    depend on chunking or on the number of processes). With ``S`` sampled rows a quartile's
    standard error is ``sqrt(p (1 - p) / S) / f(q_p)``: about 0.004 standard deviations of a
    Gaussian feature for ``S = 100000``.

    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(1000, 3))
    >>> stats = ScalerStats().update(X[:400]).merge(ScalerStats().update(X[400:]))
    >>> bool(np.allclose(Scaler("standard").fit_stats(stats).scale, X.std(axis=0)))
    True
    """

    n: int = 0
    mean: np.ndarray | None = None  # (d,)
    m2: np.ndarray | None = None  # (d,) sum of squared deviations from the mean
    lo: np.ndarray | None = None  # (d,)
    hi: np.ndarray | None = None  # (d,)
    sample: list[np.ndarray] = field(default_factory=list)  # row blocks (k_i, d)

    def update(self, X: np.ndarray, keep: np.ndarray | None = None) -> ScalerStats:
        """Add the rows of ``X`` ``(n, d)``; rows where ``keep`` ``(n,)`` is True (all when
        None) join the sample."""
        X = np.asarray(X, dtype=np.float64)
        if X.shape[0] == 0:
            return self
        part = ScalerStats(X.shape[0], X.mean(axis=0), None, X.min(axis=0), X.max(axis=0),
                           [X if keep is None else X[keep]])
        with np.errstate(over="ignore"):  # inf beyond about 1e154: fit_stats says so
            part.m2 = ((X - part.mean) ** 2).sum(axis=0)
        return self.merge(part)

    def merge(self, other: ScalerStats) -> ScalerStats:
        """Fold ``other`` into these statistics (in place); returns self."""
        if other.n == 0:
            return self
        if self.n == 0:
            self.n, self.mean, self.m2 = other.n, other.mean, other.m2
            self.lo, self.hi, self.sample = other.lo, other.hi, list(other.sample)
            return self
        assert self.mean is not None and other.mean is not None
        if other.mean.shape != self.mean.shape:
            raise DataError(f"chunks with {self.mean.shape[0]} and {other.mean.shape[0]} "
                            "columns cannot be merged")
        n = self.n + other.n
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.n / n)
        self.m2 = self.m2 + other.m2 + delta**2 * (self.n * other.n / n)
        self.lo, self.hi = np.minimum(self.lo, other.lo), np.maximum(self.hi, other.hi)
        self.n = n
        self.sample.extend(other.sample)
        return self

    def sample_rows(self) -> np.ndarray:
        """The sampled rows ``(S, d)``."""
        d = 0 if self.mean is None else self.mean.shape[0]
        blocks = [b for b in self.sample if b.shape[0]]
        return np.concatenate(blocks) if blocks else np.empty((0, d))
