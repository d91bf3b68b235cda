"""Scoring records (JSON-like rows) as they arrive: one line in, one scored line out.

:class:`RecordScorer` turns records into rows for a fitted detector and its scores into plain
JSON-ready dicts; :func:`score_stream` reads JSON lines and writes one scored JSON line per input
line, flushed as soon as it is scored (``anovae score MODEL - --stream``). The HTTP service
(:mod:`anovae.service`) uses the same :class:`RecordScorer`, so a record scores the same way on
every path: with the detector's own ``score_with_feature_scores`` (higher = more anomalous).

A record is one of:

- a JSON object keyed by column name (``{"f0": 1.2, "f1": -0.3}``); keys the model does not
  know are ignored, missing ones are an error;
- a JSON array of the values in the model's column order (``[1.2, -0.3]``), nested for
  image models (``(H, W)``, ``(H, W, C)`` or ``(C, H, W)``).

JSON has no integer type apart from its numbers (JavaScript writes ``1.0`` as ``1``), so the
pixels of an image sent as integers are read by their range, image by image: integers all
within [0, 1] (a binarised image) are values in [0, 1] already, as the same image sent as
``0.0``/``1.0`` is; other integers are 8-bit pixels 0-255 (divided by 255). Typed arrays (image
files, ``.npy``, base64 PNG/JPEG) are read by their dtype (:func:`anovae.images.check_images`).

For a mixed-table model, values may be text (categories), true/false and null (a missing cell);
its numeric columns read numbers written as text (``"1e3"``) as numbers, as a CSV file is read.
Each result of a mixed-table model names the columns holding a category never seen in training
(``unseen_category``).

Example:
    >>> import io, json
    >>> import numpy as np
    >>> from anovae import VAEDetector
    >>> X = np.random.default_rng(0).normal(size=(200, 3))
    >>> det = VAEDetector(epochs=2, random_state=0).fit(X)
    >>> out = io.StringIO()
    >>> summary = score_stream(det, io.StringIO('[0, 0, 0]\\n{"x0": 9}\\n'), out)
    >>> [sorted(json.loads(line)) for line in out.getvalue().splitlines()]
    [['anomaly_score', 'is_anomaly', 'line', 'top_features'], ['error', 'line']]
    >>> (summary.scored, summary.errors)
    (1, 1)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from anovae.exceptions import DataError
from anovae.io import feature_labels
from anovae.thresholds import conformal_pvalues

__all__ = ["MAX_LINE_CHARS", "RecordScorer", "SignalStop", "StreamSummary", "feature_names",
           "score_stream", "stop_on_signals"]

logger = logging.getLogger(__name__)

_ONLY_RECORD = re.compile(r"^(record|instance) 0\b")
#: The detector's own validation names its input ``X`` ("X contains...", "column 'a' of X
#: holds..."): in a stream, that is the line.
_BATCH_X = re.compile(r"^X(?= (?:has|holds|contains|is|does|declares|cannot|must)\b)"
                      r"|(?<=\bof )X\b(?!\.)")
#: "(1 rows)": the count of bad rows in a batch of one, which says nothing about a line.
_ONE_ROW = re.compile(r" \(1 (?:rows?|images?)\)")


def feature_names(detector: Any) -> list[str]:
    """The names of the detector's input features, flattened in row-major order.

    The fitted column names when the model knows them, else ``x0, x1, ...`` for tables and
    ``x[c,h,w]`` for image-shaped inputs (the names :meth:`explain` uses).
    """
    names = getattr(detector.schema_, "names", None)
    if names is not None:
        return [str(n) for n in names]
    return feature_labels(input_shape(detector))


def input_shape(detector: Any) -> tuple[int, ...]:
    """The shape of one input row: ``(d,)`` for tables, e.g. ``(C, H, W)`` for images."""
    shape = getattr(detector.schema_, "shape", None)
    if shape is not None:
        return tuple(int(s) for s in shape)
    return (int(detector.schema_.n_features),)


def _describe(value: Any) -> str:
    if value is None:
        return "null (missing values are not allowed)"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} (NaN and infinite values are not allowed)"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{str(value)[:20]}... (out of the range of a float)"
    return f"{json.dumps(value)[:40]} (not a number)"


def _plain(value: Any) -> Any:
    """A cell of a mixed table as a JSON value: numpy scalars to Python ones, missing (None,
    NaN, pandas.NA) to None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, (str, bool, int, float)) else None


def _leaves(value: Any) -> list[Any]:
    """The values of a nested array (lists, tuples or numpy arrays) in row-major order, as they
    came: not converted to one dtype as ``np.asarray`` does (a string among numbers makes every
    number a string)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def _unit_or_8bit(arr: np.ndarray) -> np.ndarray:
    """Integer images ``(n, ...)`` made of JSON numbers, read by their range image by image:
    float32 with the images whose values all lie in [0, 1] as they are and the others divided
    by 255 (as :func:`anovae.images.check_images` divides 8-bit pixels, so bit for bit the
    same); ``arr`` itself when no image lies in [0, 1], or when some value lies outside
    [0, 255] (the detector's validation names the range)."""
    flat = arr.reshape(arr.shape[0], -1)
    if not flat.size:
        return arr
    least, most = flat.min(axis=1), flat.max(axis=1)  # (n,) each
    unit = (least >= 0) & (most <= 1)
    if not unit.any() or least.min() < 0 or most.max() > 255:
        return arr
    scale = np.where(unit, 1.0, 255.0).astype(np.float32).reshape(-1, *[1] * (arr.ndim - 1))
    return np.divide(arr, scale, dtype=np.float32)


def _bad_value(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        try:
            return not math.isfinite(value)
        except OverflowError:  # an integer too large for a float
            return True
    return True


class RecordScorer:
    """Records in, scored dicts out, for one fitted detector (built once, used per request).

    Args:
        detector: a fitted anovae detector.
        top_k: how many top features (by excess) each result lists (0: none).

    Each result holds ``anomaly_score`` (higher = more anomalous), ``is_anomaly``
    (``anomaly_score > threshold_``), ``p_value`` and ``anomaly_probability`` when the model has
    calibration scores of held-out normal rows (conformal; see
    :func:`anovae.thresholds.conformal_pvalues`), and ``top_features``: the ``top_k`` features
    with the largest ``excess`` over their typical contribution (``contribution``: the
    :meth:`feature_scores` entry, over all features a row's contributions sum to its score;
    ``excess``: minus the feature's median over training rows, see
    :func:`anovae.scores.rank_features`), with the observed ``value`` and the model's
    ``expected`` value when ``explain`` is asked for. Results of a mixed-table model also hold
    ``unseen_category``: the names of the columns whose value in the record is a category never
    seen in training, or a number other than 0/1 in a boolean column (empty when none; see
    :meth:`anovae.detectors.vae.VAEDetector.unseen_categories`).

    Numeric tables are checked here (finite numbers only, the first bad value named) and scored
    as float64 arrays. Image models and mixed-table models (text categories, booleans, null for
    a missing cell) hand their rows to the detector's own validation, which names what is wrong.
    """

    def __init__(self, detector: Any, top_k: int = 3) -> None:
        detector._check_threshold_score()  # is_anomaly and p-values compare with its scores
        self.detector = detector
        self.top_k = int(top_k)
        self.names = feature_names(detector)
        self.shape = input_shape(detector)
        self.threshold = float(detector.threshold_)
        cal = getattr(detector, "calibration_scores_", None)
        self.calibration = None if cal is None else np.sort(np.asarray(cal, dtype=np.float64))
        self._names_arr = np.asarray(self.names, dtype=object)
        #: Column kinds of a mixed-table model (numeric, boolean, categorical), else None.
        self.kinds: tuple[str, ...] | None = getattr(detector.schema_, "kinds", None)
        #: The categorical columns whose training labels were all text (``{index: labels}``):
        #: a JSON number or true/false there is refused record by record (see _mixed_frame).
        self._text_columns: dict[int, list[str]] = {}
        if self.kinds is not None:
            from anovae.mixed import _text_labels

            schema = detector.schema_
            members = schema.other_members or (None,) * len(self.kinds)
            for j, (kind, vocab) in enumerate(zip(self.kinds, schema.vocabularies, strict=True)):
                labels = _text_labels(vocab, members[j]) if kind == "categorical" else None
                if labels is not None:
                    self._text_columns[j] = labels

    # -- records -> rows ---------------------------------------------------------------------
    def rows_from_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """``(n, d)`` float64 rows from records keyed by column name (extra keys ignored)."""
        if len(self.shape) != 1:
            raise DataError(f"this model takes inputs of shape {list(self.shape)}: send them as "
                            "nested arrays ('instances'), not as records keyed by name")
        if not records:
            raise DataError("no records to score")
        names = self.names
        try:
            values = [[r[n] for n in names] for r in records]
        except (KeyError, TypeError):
            for i, r in enumerate(records):
                if not isinstance(r, Mapping):
                    raise DataError(f"record {i} is not a JSON object keyed by column name"
                                    ) from None
                missing = [n for n in names if n not in r]
                if missing:
                    shown = ", ".join(repr(m) for m in missing[:10])
                    more = f" ... ({len(missing)} in all)" if len(missing) > 10 else ""
                    raise DataError(f"record {i} lacks columns the model was fitted on: "
                                    f"{shown}{more}") from None
            raise
        if self.kinds is not None:
            return self._mixed_frame(values, lambda i, j: (f"record {i}", names[j]))
        return self._finite(values, lambda i, j: (f"record {i}", names[j]))

    def rows_from_columns(self, columns: Mapping[str, Sequence[Any]]) -> np.ndarray:
        """``(n, d)`` float64 rows from the columnar form ``{name: [values...]}``."""
        if len(self.shape) != 1:
            raise DataError(f"this model takes inputs of shape {list(self.shape)}: send them as "
                            "nested arrays ('instances'), not as columns")
        missing = [n for n in self.names if n not in columns]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:10])
            more = f" ... ({len(missing)} in all)" if len(missing) > 10 else ""
            raise DataError(f"the columns lack some the model was fitted on: {shown}{more}")
        cols = [columns[n] for n in self.names]
        lengths = {len(c) for c in cols}
        if len(lengths) != 1:
            raise DataError(f"the columns have different lengths: {sorted(lengths)}")
        if lengths == {0}:
            raise DataError("no records to score")
        if self.kinds is not None:
            return self._mixed_frame([list(r) for r in zip(*cols, strict=True)],
                                     lambda i, j: (f"record {i}", self.names[j]))
        return self._finite(cols, lambda j, i: (f"record {i}", self.names[j])).T.copy()

    def rows_from_instances(self, instances: Sequence[Any]) -> np.ndarray:
        """``(n, *shape)`` rows from arrays of values in the model's feature order.

        Tables: float64 rows of the model's width. Image models: nested arrays in any layout
        the detector's own validation takes (``(H, W)``, ``(H, W, C)`` or ``(C, H, W)``; floats
        in [0, 1], or integers read by their range, image by image: all within [0, 1] as they
        are, else 8-bit pixels 0-255, see the module docstring), validated and normalised by
        it. A NumPy array is read by its dtype, as :func:`anovae.images.check_images` reads it.
        """
        if not len(instances):
            raise DataError("no records to score")
        try:
            arr = np.asarray(instances)
        except ValueError as exc:  # ragged nesting
            raise DataError(f"the instances are not arrays of one shape {list(self.shape)}: "
                            f"{exc}") from None
        if len(self.shape) > 1 and arr.ndim > 1:
            if arr.dtype.kind == "i" and not isinstance(instances, np.ndarray):
                arr = _unit_or_8bit(arr)  # JSON integers: by their range, image by image
            return self._images(arr, instances)
        if self.kinds is not None and arr.ndim == 2 and arr.shape[1] == self.shape[0]:
            return self._mixed_frame([list(r) for r in instances],
                                     lambda i, j: (f"instance {i}", self.names[j]))
        if arr.ndim >= 1 and tuple(arr.shape[1:]) != self.shape:
            raise DataError(f"each instance must have shape {list(self.shape)} (the model's "
                            f"input), got {list(arr.shape[1:])}")
        # not numeric: numpy turned every value into text (or objects), so look for the first
        # bad value in the instances as they came
        flat = arr.reshape(arr.shape[0], -1) if arr.dtype.kind in "iufb" else [
            _leaves(r) for r in instances]
        return self._finite(flat, lambda i, j: (f"instance {i}", self.names[j])
                            ).reshape(arr.shape)

    def rows_from_images(self, images: Sequence[Any]) -> np.ndarray:
        """``(n, C, H, W)`` rows from base64-encoded PNG or JPEG images (``data:`` URLs too),
        decoded as ``anovae score`` reads image files (:func:`anovae.images.pixels`: grey or
        colour by the image, not converted to the model's channel count) and validated by the
        detector (a colour image for a grey model is refused, as on the command line)."""
        if len(self.shape) != 3:
            raise DataError("'images' are for image models; this model takes records of "
                            f"{len(self.names)} values")
        if not len(images):
            raise DataError("no images to score")
        import base64
        import binascii
        import io

        from PIL import Image, UnidentifiedImageError

        from anovae.images import declared_size, oriented_size, pixels, upright

        channels, height, width = self.shape
        arrays = []
        for i, text in enumerate(images):
            if not isinstance(text, str):
                raise DataError(f"image {i} is not a string of base64-encoded PNG or JPEG")
            if text.startswith("data:"):
                text = text.partition(",")[2]
            try:
                raw = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise DataError(f"image {i} is not valid base64: {exc}") from None
            try:
                with Image.open(io.BytesIO(raw), formats=["PNG", "JPEG"]) as im:
                    shown = oriented_size(im)  # as anovae score reads files: EXIF applied
                    if shown != (width, height):  # before decoding: no decompression bombs
                        raise DataError(f"image {i} is {shown[0]}x{shown[1]} pixels (width x "
                                        f"height); the model takes {width}x{height}")
                    im.load()
                    arrays.append(pixels(upright(im)))
            except Image.DecompressionBombError:  # too many pixels for Pillow even to open
                size = declared_size(io.BytesIO(raw))
                declared = "too many pixels" if size is None else f"{size[0]}x{size[1]} pixels"
                raise DataError(f"image {i} declares {declared} (width x height); the model "
                                f"takes {width}x{height}") from None
            except UnidentifiedImageError:  # Pillow's message names the BytesIO's address
                raise DataError(f"image {i} is not a PNG or JPEG image") from None
            except (OSError, SyntaxError, ValueError) as exc:
                if isinstance(exc, DataError):
                    raise
                raise DataError(f"image {i} is not a readable PNG or JPEG image ({exc})"
                                ) from None
        kinds = {a.ndim for a in arrays}
        if len(kinds) > 1:  # (np.stack's message would be about array shapes)
            grey = next(i for i, a in enumerate(arrays) if a.ndim == 2)
            colour = next(i for i, a in enumerate(arrays) if a.ndim == 3)
            raise DataError(f"the images mix grey and colour (image {grey} is grey, image "
                            f"{colour} colour); the model takes {channels} channel"
                            f"{'s' if channels > 1 else ''}: convert them first")
        return self._images(np.stack(arrays))  # (n, H, W) uint8 or (n, H, W, 3)

    def _mixed_frame(self, values: list[list[Any]], where: Any) -> Any:
        """A mixed-table model's rows: a DataFrame of numbers, text, booleans and nulls (missing
        cells), which the detector's own validation reads column by column (text in a numeric
        column, a non-boolean in a boolean one... raise DataError naming the column)."""
        import pandas as pd

        for i, row in enumerate(values):
            for j, v in enumerate(row):
                if not (v is None or isinstance(v, (str, bool, int, float))):
                    rec, col = where(i, j)
                    raise DataError(f"{rec}, column {col!r}: {json.dumps(v)[:40]} (a number, "
                                    "text, true/false or null is expected)")
                if isinstance(v, int) and not isinstance(v, bool) and _bad_value(v):
                    rec, col = where(i, j)
                    raise DataError(f"{rec}, column {col!r}: {_describe(v)}")
                if j in self._text_columns and isinstance(v, (bool, int, float)):
                    # a JSON number in a column of text categories: refused in every record,
                    # whatever its neighbours (the detector's check of a batch looks for a
                    # column of numbers only, which a text neighbour would hide)
                    from anovae.mixed import _kind_changed

                    rec, col = where(i, j)
                    raise _kind_changed(col, rec, "booleans" if isinstance(v, bool)
                                        else "numbers", v, self._text_columns[j])
        return pd.DataFrame(values, columns=list(self.names), dtype=object)

    def _images(self, arr: np.ndarray, instances: Sequence[Any] | None = None) -> np.ndarray:
        """Image rows through the detector's own validation (layouts, pixel range, size);
        ``instances``: the nested lists ``arr`` was made of, where a bad value is looked for."""
        if arr.dtype.kind not in "iufb":  # a null or a string somewhere: name the first one
            flat = ([_leaves(r) for r in instances] if instances is not None
                    else arr.reshape(arr.shape[0], -1).tolist())
            self._finite(flat, lambda i, j: (f"instance {i}", f"value {j}"))
        return self.detector._validate(arr, self.detector.schema_)[0]

    def _finite(self, values: Any, where: Any) -> np.ndarray:
        """``values`` (nested lists, 2-D) as a finite float64 array, else a DataError naming the
        first bad value; ``where(i, j)`` names the record and column of ``values[i][j]``."""
        try:
            arr: np.ndarray | None = np.asarray(values)
        except ValueError:  # ragged: some record holds a list where a number belongs
            arr = None
        if arr is not None and arr.dtype.kind in "iufb" and arr.ndim == 2:
            arr = arr.astype(np.float64, copy=False)
            with np.errstate(over="ignore", invalid="ignore"):
                if np.isfinite(np.add.reduce(arr, axis=None)):
                    return arr
            bad = np.argwhere(~np.isfinite(arr))
            if bad.size == 0:  # the sum overflowed; every value is finite
                return arr
            i, j = (int(v) for v in bad[0])
            rec, col = where(i, j)
            raise DataError(f"{rec}, column {col!r}: {_describe(float(arr[i, j]))}")
        for i, row in enumerate(values):
            for j, v in enumerate(row):
                if _bad_value(v):
                    rec, col = where(i, j)
                    raise DataError(f"{rec}, column {col!r}: {_describe(v)}")
        # Every value is a finite number, but numpy made an object array of them: integers
        # beyond int64 (still within a float's range) do that.
        return np.array(values, dtype=np.float64)

    # -- rows -> results ---------------------------------------------------------------------
    def score(self, rows: Any, *, explain: bool = False, top_k: int | None = None
              ) -> list[dict[str, Any]]:
        """Score ``(n, *shape)`` rows (a DataFrame for a mixed-table model), as the
        ``rows_from_*`` methods give them; one JSON-ready dict per row (see the class docstring).

        ``top_k`` overrides the scorer's number of top features for this call. Rows whose score
        is not finite (values so large that the network overflows) raise :class:`DataError`.
        """
        det = self.detector
        unseen = None
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: caught just below
            if self.kinds is not None:  # a mixed table: validate once for scores and flags
                codes = det._checked(rows)  # (n, D)
                scores, feats = det._score_rows(codes, per_feature=True)
                unseen = det._mixed().unseen(codes)  # (n, D): the cells of unseen categories
            else:
                scores, feats = det.score_with_feature_scores(rows)  # (n,), (n, *shape)
        n = scores.shape[0]
        if not np.isfinite(scores).all():
            bad = np.flatnonzero(~np.isfinite(scores))
            raise DataError(f"record(s) {bad[:10].tolist()} cannot be scored: their values are "
                            "too large for the model (the score overflows)")
        flags = (scores > self.threshold).tolist()
        pvals = None if self.calibration is None else conformal_pvalues(self.calibration, scores)
        k = min(max(self.top_k if top_k is None else int(top_k), 0), len(self.names))
        top_lists: list[list[dict[str, Any]]]
        if not k:
            top_lists = [[] for _ in range(n)]
        else:
            flat = feats.reshape(n, -1)  # (n, D)
            gaps = rows.isna().to_numpy() if hasattr(rows, "isna") else None  # a mixed frame
            top, excess = det._top_features(flat, k, gaps)  # (n, k): a mixed table's gaps last
            # one flat pass over the (n * k) entries, then cut per row (fewer Python frames)
            names = self._names_arr[top].ravel().tolist()
            contrib = np.take_along_axis(flat, top, 1).ravel().tolist()
            extra = [None if x != x else x  # NaN (no baseline) -> JSON null
                     for x in np.take_along_axis(excess, top, 1).ravel().tolist()]
            if explain and self.kinds is not None:  # a mixed table: values of any kind
                values = [_plain(v) for v in np.take_along_axis(
                    rows.to_numpy(dtype=object), top, 1).ravel()]
                expected = [_plain(v) for v in np.take_along_axis(
                    det.reconstruct(rows).to_numpy(dtype=object), top, 1).ravel()]
            elif explain:
                values = np.take_along_axis(rows.reshape(n, -1), top, 1).ravel().tolist()
                expected = np.take_along_axis(det.reconstruct(rows).reshape(n, -1), top,
                                              1).ravel().tolist()
            if explain:
                entries = [{"feature": f, "contribution": c, "excess": x, "value": v,
                            "expected": e}
                           for f, c, x, v, e in zip(names, contrib, extra, values, expected,
                                                    strict=True)]
            else:
                entries = [{"feature": f, "contribution": c, "excess": x}
                           for f, c, x in zip(names, contrib, extra, strict=True)]
            top_lists = [entries[i:i + k] for i in range(0, n * k, k)]
        out = [{"anomaly_score": s, "is_anomaly": a, "top_features": t}
               for s, a, t in zip(scores.tolist(), flags, top_lists, strict=True)]
        if unseen is not None:  # a mixed table: the columns holding an unseen category
            for rec, row in zip(out, unseen, strict=True):
                rec["unseen_category"] = self._names_arr[row].tolist()
        if pvals is not None:
            for rec, p in zip(out, pvals.tolist(), strict=True):
                rec["p_value"] = p
                rec["anomaly_probability"] = 1.0 - p
        return out

    def score_records(self, records: Sequence[Any], *, explain: bool = False
                      ) -> list[dict[str, Any]]:
        """Score records that are all objects keyed by name, or all arrays (see the module)."""
        if records and isinstance(records[0], Mapping):
            return self.score(self.rows_from_records(records), explain=explain)
        return self.score(self.rows_from_instances(records), explain=explain)


@dataclass
class StreamSummary:
    """What :func:`score_stream` did: lines scored, lines answered with an error, time taken,
    and the signal that ended the stream (``signal.SIGINT``...; ``None``: the input ended)."""

    scored: int
    anomalies: int
    errors: int
    seconds: float
    signal: int | None = None


class _Stopped(BaseException):
    """Raised by :func:`stop_on_signals`' handler into a stream waiting for its next line."""


class SignalStop:
    """What :func:`stop_on_signals` yields: ``signum``, the first signal received (``None``
    while none has come)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.started = False  # a stream has started: from then on signals stop it
        self.waiting = False  # the stream waits for its next line: stop it now


#: The :class:`SignalStop` of the :func:`stop_on_signals` block the program is in, if any.
_signal_stop: SignalStop | None = None


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)
                    ) -> Iterator[SignalStop]:
    """Let ``signals`` (SIGINT: Ctrl-C, and SIGTERM) end a :func:`score_stream` run inside the
    block as the end of its input does: the line being scored is finished and written, no
    other line is read, and :func:`score_stream` returns its summary (``signal`` names the
    signal), so the caller can commit what was written. A signal while the stream waits for
    input stops it at once.

    Before a stream starts, the signals act as they did (SIGINT raises KeyboardInterrupt;
    another signal raises ``SystemExit(128 + signum)``, which removes the temporary files of
    :func:`anovae.io.atomic_output`); once one has started, until the block ends, they are
    only recorded (committing the output and printing the summary are not cut short). Yields
    a :class:`SignalStop`: its ``signum`` is the first signal received, for the exit status
    (``128 + signum``: 130 for SIGINT, 143 for SIGTERM). Signals can be handled in the main
    thread only: elsewhere the block changes nothing; an ignored signal (SIGINT of a job that
    ``nohup`` or a non-interactive shell starts in the background) stays ignored.
    """
    global _signal_stop
    state = SignalStop()
    if threading.current_thread() is not threading.main_thread() or _signal_stop is not None:
        yield state
        return

    def handler(signum: int, frame: Any) -> None:
        if not state.started:  # not streaming yet: stop now, as without the block
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        if state.signum is None:
            state.signum = signum
        if state.waiting:
            state.waiting = False
            raise _Stopped

    previous = {s: signal.signal(s, handler) for s in signals
                if signal.getsignal(s) is not signal.SIG_IGN}
    _signal_stop = state
    try:
        yield state
    finally:
        _signal_stop = None
        for s, h in previous.items():
            signal.signal(s, h)


#: Characters per input line of :func:`score_stream`, at most (a longer line gets an error line
#: and is skipped in pieces, so memory stays bounded whatever comes down the pipe).
MAX_LINE_CHARS = 16 * 2**20


#: A character that stands for an undecodable byte (``errors="surrogateescape"``).
_UNDECODABLE = re.compile("[\udc80-\udcff]")


def _escape_undecodable(in_stream: Any) -> bool:
    """Let a text stream that decodes strictly (a file, stdin) pass undecodable bytes as lone
    surrogates (``errors="surrogateescape"``), so a bad byte spoils its line only, not the
    rest of the stream (a strict decoder raises, and drops the chunk it was decoding). Possible
    only before anything is read from the stream. Returns whether undecodable bytes now come
    through as lone surrogates.
    """
    errors = getattr(in_stream, "errors", None)
    if errors == "strict" and hasattr(in_stream, "reconfigure"):
        try:
            in_stream.reconfigure(errors="surrogateescape")
        except (OSError, ValueError):  # io.UnsupportedOperation: already read from
            return False
        return True
    return errors == "surrogateescape"


def _read_lines(in_stream: TextIO | Iterable[str], max_chars: int
                ) -> Iterator[str | DataError]:
    """The lines of ``in_stream`` one at a time (nothing read ahead of the line being scored);
    a :class:`DataError` in place of a line that cannot be read: one longer than
    ``max_chars`` (read and dropped in pieces), or with bytes that are not text in the stream's
    encoding."""
    if not hasattr(in_stream, "readline"):
        for line in in_stream:
            yield (DataError(f"the line is longer than {max_chars} characters")
                   if len(line.rstrip("\n")) > max_chars else line)
        return
    escaped = _escape_undecodable(in_stream)
    encoding = getattr(in_stream, "encoding", None) or "UTF-8"
    while True:
        line = in_stream.readline(max_chars + 1)
        if not line:
            return
        if len(line) > max_chars and not line.endswith("\n"):
            while line and not line.endswith("\n"):  # the rest of the long line
                line = in_stream.readline(max_chars + 1)
            yield DataError(f"the line is longer than {max_chars} characters")
            continue
        bad = _UNDECODABLE.search(line) if escaped else None
        if bad is not None:
            yield DataError(f"the line is not valid {encoding} text: byte "
                            f"0x{ord(bad.group()) - 0xDC00:02x} at character {bad.start() + 1} "
                            "cannot be decoded")
        else:
            yield line


def score_stream(detector: Any, in_stream: TextIO | Iterable[str], out_stream: TextIO, *,
                 top_k: int = 3, explain: bool = False, id_field: str | None = None,
                 max_line_chars: int = MAX_LINE_CHARS,
                 wording: Callable[[str], str] | None = None) -> StreamSummary:
    """Score JSON lines from ``in_stream``; write one JSON line per input line to ``out_stream``.

    Each output line is written and flushed as soon as its input line is scored, so the stream
    can be piped between processes in real time. Blank lines are skipped, and a UTF-8 byte-order
    mark before the first line. A line that cannot be scored (malformed JSON, missing columns,
    NaN, a wrong shape, invalid UTF-8) gets an error line, ``{"line": N, "error": "..."}``, and
    the stream goes on: errors are counted in the summary, never raised. A text stream that
    decodes strictly (a file opened as text, stdin) is switched to
    ``errors="surrogateescape"`` before the first line is read, so that an undecodable byte
    spoils its own line only. Inside :func:`stop_on_signals`, SIGINT and SIGTERM end the stream
    as the end of the input does (the line being scored is written first).

    ``anovae score MODEL DATA --stream`` exits with status 0 when the input ends, even when
    every line was an error line (the summary on standard error counts them: ``streamed 3
    lines: 1 scored (0 anomalies), 2 errors``), unless ``--fail-on-errors`` is given: then 1
    when any line was an error line; 130 (SIGINT, Ctrl-C) or 143 (SIGTERM) when
    stopped by a signal, after writing the lines scored and the summary (an output file is
    committed with them); 141 (as a process killed by SIGPIPE), with no message, when its
    standard output is closed by its reader (``... | head -1``); 2 with ``error: ...`` when the
    stream cannot start (a missing model or input file).

    Args:
        detector: a fitted detector.
        in_stream: text lines, each a JSON object keyed by column name or a JSON array of values
            (see the module docstring).
        out_stream: where the JSON lines go (flushed after each line).
        top_k: top contributing features per line.
        explain: add the observed and expected (reconstructed) value of each top feature.
        id_field: a key of the input objects to copy to the output as ``"id"``.
        max_line_chars: longer lines get an error line (and are not kept in memory).
        wording: rewrites each error message (the CLI names its options instead of the
            library's parameters, :func:`anovae.cli.app.cli_message`).

    Returns:
        A :class:`StreamSummary`. Output lines hold ``line`` (1-based input line number),
        ``anomaly_score`` (higher = more anomalous), ``is_anomaly``, ``top_features`` and, when
        the model has calibration scores, ``p_value`` and ``anomaly_probability``; for a
        mixed-table model ``unseen_category`` (the columns of the line holding a category never
        seen in training, see :class:`RecordScorer`).
    """
    scorer = RecordScorer(detector, top_k=top_k)
    t0 = time.perf_counter()
    scored = anomalies = errors = 0
    stop = _signal_stop
    if stop is not None:
        stop.started = True
    lines = _read_lines(in_stream, max_line_chars)
    number = 0
    while stop is None or stop.signum is None:
        try:
            try:
                if stop is not None:
                    stop.waiting = True  # a signal from now on stops the wait for a line
                line = next(lines, None)
            finally:
                if stop is not None:
                    stop.waiting = False
        except _Stopped:
            break
        if line is None:
            break
        number += 1
        if number == 1 and isinstance(line, str):
            line = line.removeprefix("\ufeff")  # a byte-order mark (Windows editors write one)
        if isinstance(line, str) and not line.strip():
            continue
        result: dict[str, Any] = {"line": number}
        try:
            if isinstance(line, DataError):  # too long, or not text
                raise line
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise DataError(f"malformed JSON: {exc}") from None
            except ValueError as exc:  # an integer of more digits than Python converts
                limit = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
                raise DataError("malformed JSON: " + (
                    f"an integer of more than {limit} digits (too long to read as a number)"
                    if "digits" in str(exc) else str(exc))) from None
            if id_field is not None and isinstance(record, dict) and id_field in record:
                # NaN / Infinity (which the input may hold) become null: the output stays JSON
                result["id"] = json.loads(json.dumps(record[id_field]),
                                          parse_constant=lambda _: None)
            if not isinstance(record, (dict, list)):
                raise DataError("a line must be a JSON object keyed by column name or a JSON "
                                "array of values")
            result.update(scorer.score_records([record], explain=explain)[0])
            scored += 1
            anomalies += bool(result["is_anomaly"])
        except (ValueError, TypeError, OverflowError) as exc:  # DataError too
            result = {k: v for k, v in result.items() if k in ("line", "id")}
            # the scorer names "record 0" (of a batch of one), the detector "X": here it is
            # this line
            message = _ONLY_RECORD.sub("this line", str(exc), count=1)
            message = _ONE_ROW.sub("", _BATCH_X.sub("this line", message))
            result["error"] = wording(message) if wording is not None else message
            errors += 1
        out_stream.write(json.dumps(result) + "\n")
        out_stream.flush()
    seconds = time.perf_counter() - t0
    logger.info("streamed %d lines (%d errors, %d anomalies) in %.2fs", scored + errors, errors,
                anomalies, seconds)
    return StreamSummary(scored, anomalies, errors, seconds,
                         None if stop is None else stop.signum)
