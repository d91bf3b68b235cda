"""Mixed-type tables: column kinds, category vocabularies, missing values and unseen categories.

A mixed table (numeric, boolean and categorical columns, with gaps allowed anywhere) is turned
into one float64 array of *codes* ``(n, C)``, one column per original column, so that every
score, ``feature_scores`` entry and explanation stays per original column:

- numeric columns: the value itself (scaled later by the detector's
  :class:`~anovae.tabular.Scaler`);
- boolean columns: 0.0 or 1.0, or :data:`UNSEEN` for any other value (a column of 0/1 in
  training holding 2 at scoring, or one of true/false holding ``"maybe"``), as for a category
  never seen;
- categorical columns: the index of the category in the column's vocabulary, or
  :data:`UNSEEN` (-1) for a category the model never saw;
- a missing cell, in any column: NaN. Missing are the cells pandas takes as missing (``None``,
  NaN, ``pd.NA``, ``NaT``) and, in a column of text, empty and whitespace-only strings (``""``,
  ``"  "``): a CSV reader reads an empty field as missing, and a DataFrame, a service record or
  a streamed line holding ``""`` is read the same way, at fit and at scoring (not as a category).

The network (:mod:`anovae.nets.mixed`) reads the codes, gives each column its own likelihood and
masks the missing cells. :class:`MixedSchema` records the kinds and vocabularies and is saved
with the model.

Column kinds are inferred (:func:`infer_schema`): bool columns and numeric columns holding only
0 and 1 are boolean; other numeric columns are numeric; strings, pandas categories and other
objects are categorical. ``categorical=[...]`` / ``numeric=[...]`` override the inference.
Text columns whose values are dates or times (``"2024-01-05"``, ``"2024-01-05 13:02:11"``, ISO
8601 with ``T`` and a zone...) are refused, as datetime columns are (each new period's dates
would be categories never seen in training): exclude them, derive numeric features from them,
or declare them ``categorical=[...]`` if the dates are labels.
Columns with more than ``max_categories`` categories keep the most frequent ones plus
:data:`OTHER`, which collects the rest of the training categories (at fit and at scoring); the
schema remembers which labels those were (up to :data:`MAX_OTHER_MEMBERS` per column), so a
label the model never saw is still :data:`UNSEEN` in a capped column.
"""

from __future__ import annotations

import datetime
import math
import re
import reprlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Number
from typing import Any

import numpy as np
import pandas as pd

try:
    from pandas.tseries.api import guess_datetime_format
except ImportError:  # pandas < 2.2: not yet public
    from pandas._libs.tslibs.parsing import guess_datetime_format

from anovae._text import quoted
from anovae.exceptions import DataError, warn
from anovae.io import array_columns
from anovae.tabular import (
    Scaler,
    _list,
    check_size,
    holds_numbers,
    match_columns,
    refuse_unmodelled,
    series_as_frame,
    warn_if_row_id,
)

__all__ = [
    "KINDS",
    "OTHER",
    "UNSEEN",
    "MixedSchema",
    "check_mixed",
    "fit_mixed_scaler",
    "infer_schema",
    "needs_mixed",
    "TextKindCheck",
    "refuse_numbers_read_as_text",
]

KINDS = ("numeric", "boolean", "categorical")
#: The bucket of the rarer categories of a column with more than ``max_categories`` categories.
OTHER = "<other>"
#: Code of a category never seen in training; the network scores it as maximally surprising for
#: its column.
UNSEEN = -1.0
#: Training labels remembered per :data:`OTHER` bucket. A column with more distinct labels than
#: this (an id in all but name) stores none, and sends every label outside its vocabulary to
#: :data:`OTHER`, unseen or not.
MAX_OTHER_MEMBERS = 100_000

#: How a boolean cell may be written as text (any case, spaces around it ignored).
TRUE_WORDS = {"true", "1", "1.0", "yes", "t", "y"}
FALSE_WORDS = {"false", "0", "0.0", "no", "f", "n"}


@dataclass(frozen=True)
class MixedSchema:
    """Columns, kinds and category vocabularies of a model fitted on a mixed table.

    ``names`` is None when the model was fitted on an array (columns then go by position and are
    called ``x0, x1, ...``). ``vocabularies[j]`` lists column ``j``'s categories (its code is the
    position; :data:`OTHER` last when the column was capped), ``None`` for other kinds.
    ``n_observed[j]`` counts the training cells of column ``j`` that were not missing.
    ``other_members[j]``: the sorted training labels in column ``j``'s :data:`OTHER` bucket
    (``None`` for uncapped columns, and for capped ones with more than
    :data:`MAX_OTHER_MEMBERS`); ``None`` altogether for models saved before anovae 0.3.1.
    ``boolean_forms[j]``: how boolean column ``j`` held its values in training, ``"bool"``
    (True/False) or ``"number"`` (0/1), so that explanations show them in that form
    (:meth:`as_written`); ``None`` for other kinds, and altogether when every boolean column
    held True/False (and for models saved by anovae 0.6.0 and before).
    """

    columns: tuple[str, ...]
    kinds: tuple[str, ...]
    vocabularies: tuple[tuple[str, ...] | None, ...]
    n_observed: tuple[int, ...]
    from_frame: bool = True
    other_members: tuple[tuple[str, ...] | None, ...] | None = None
    boolean_forms: tuple[str | None, ...] | None = None

    @property
    def n_features(self) -> int:
        return len(self.columns)

    @property
    def names(self) -> tuple[str, ...] | None:
        return self.columns if self.from_frame else None

    @property
    def cardinalities(self) -> tuple[int, ...]:
        """Categories per column (0 for numeric and boolean columns)."""
        return tuple(len(v) if v is not None else 0 for v in self.vocabularies)

    @property
    def encoded_width(self) -> int:
        """Width of the same table one-hot encoded (one slot per numeric/boolean column)."""
        return sum(max(1, k) for k in self.cardinalities)

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": "mixed", "n_features": self.n_features, "columns": list(self.columns),
             "names": None if self.names is None else list(self.names),
             "kinds": list(self.kinds), "n_observed": list(self.n_observed),
             "vocabularies": [None if v is None else list(v) for v in self.vocabularies],
             "from_frame": self.from_frame}
        if self.other_members is not None and any(m is not None for m in self.other_members):
            # only then: the document of a table without a capped column stays as it was
            d["other_members"] = [None if m is None else list(m) for m in self.other_members]
        if self.boolean_forms is not None and "number" in self.boolean_forms:  # as for members
            d["boolean_forms"] = list(self.boolean_forms)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MixedSchema:
        members, forms = d.get("other_members"), d.get("boolean_forms")
        if forms is not None and (not isinstance(forms, list) or len(forms) != len(d["kinds"])
                                  or not all(f in (None, "bool", "number") for f in forms)):
            forms = None  # only how explanations write booleans: not worth refusing the file
        return cls(tuple(d["columns"]), tuple(d["kinds"]),
                   tuple(None if v is None else tuple(str(c) for c in v)
                         for v in d["vocabularies"]),
                   tuple(int(n) for n in d["n_observed"]), bool(d["from_frame"]),
                   None if members is None else tuple(
                       None if m is None else tuple(str(c) for c in m) for m in members),
                   None if forms is None else tuple(forms))

    def as_written(self, j: int, truth: Any) -> Any:
        """``truth`` (a boolean, or None for a missing cell) as boolean column ``j`` held its
        values in training: ``0``/``1`` for a column of 0/1 numbers, else ``False``/``True``."""
        if truth is None or truth is pd.NA or (isinstance(truth, float) and math.isnan(truth)):
            return None
        number = self.boolean_forms is not None and self.boolean_forms[j] == "number"
        return int(bool(truth)) if number else bool(truth)

    # -- codes <-> values --------------------------------------------------------------------
    def encode(self, df: pd.DataFrame, what: str = "X") -> np.ndarray:
        """``df`` (columns in schema order) -> float64 codes ``(n, C)`` (see the module doc)."""
        out = np.empty((len(df), self.n_features), dtype=np.float64)
        for j, (name, kind, vocab) in enumerate(zip(self.columns, self.kinds, self.vocabularies,
                                                    strict=True)):
            s = _blank_as_missing(df.iloc[:, j])
            refuse_unmodelled(s, name, what)
            if kind == "numeric":
                out[:, j] = _numeric(s, name, what)
            elif kind == "boolean":
                out[:, j] = _boolean(s, name, what)
            else:
                assert vocab is not None
                labels, missing = _labels(s)
                codes = _match_labels(labels, missing, vocab)
                members = None if self.other_members is None else self.other_members[j]
                _check_category_kind(s, codes, missing, vocab, members, name, what)
                if vocab and vocab[-1] == OTHER:
                    rest = codes < 0
                    if members is not None and rest.any():  # the bucket's training labels
                        at = np.flatnonzero(rest)
                        rest[at] = _match_labels(labels[at], missing[at], members) >= 0
                    codes[rest] = len(vocab) - 1
                codes[missing] = np.nan
                out[:, j] = codes
        return out

    def decode(self, codes: np.ndarray, index: Any = None) -> pd.DataFrame:
        """Codes ``(n, C)`` (e.g. a reconstruction) -> a DataFrame of values: numbers, booleans
        and category labels (None where missing; ``"<unseen>"`` for unseen categories)."""
        cols: dict[str, Any] = {}
        for j, (name, kind, vocab) in enumerate(zip(self.columns, self.kinds, self.vocabularies,
                                                    strict=True)):
            c = codes[:, j]
            if kind == "numeric":
                cols[name] = c.astype(np.float64)
            elif kind == "boolean":
                cols[name] = pd.array(np.where(np.isnan(c), None, c >= 0.5), dtype="boolean")
            else:
                assert vocab is not None
                if not vocab:  # no category observed in training: nothing to predict
                    cols[name] = np.full(len(c), None, dtype=object)
                    continue
                lab = np.asarray(list(vocab) + ["<unseen>", None], dtype=object)
                idx = np.where(np.isnan(c), len(vocab) + 1,
                               np.where(c < 0, len(vocab), np.nan_to_num(c))).astype(np.intp)
                cols[name] = lab[np.clip(idx, 0, len(vocab) + 1)]
        return pd.DataFrame(cols, index=index)

    def unseen(self, codes: np.ndarray) -> np.ndarray:
        """``(n, C)`` bool: the cells holding a category (or, in a boolean column, a value
        other than true/false, 0 and 1) the model never saw."""
        cat = np.asarray([k != "numeric" for k in self.kinds])
        return (codes == UNSEEN) & cat[None, :]


# -- per-kind conversion -----------------------------------------------------------------------
#: Text that a numeric cell holds for "missing" (what pandas' CSV reader reads as missing, in
#: any case): in a DataFrame, a service record or a streamed line too. Only in numeric
#: columns: in a categorical one "NA" may be a value (Namibia).
MISSING_WORDS = frozenset({"nan", "na", "n/a", "null", "none", "-nan", "#n/a", "<na>"})


def _numeric(s: pd.Series, name: str, what: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
        v = s.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        words = s.map(lambda x: isinstance(x, str) and x.strip().lower() in MISSING_WORDS)
        if words.any():
            s = s.mask(words.astype(bool))
        try:
            v = pd.to_numeric(s, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):
            bad = s[pd.to_numeric(s, errors="coerce").isna() & s.notna()]
            raise DataError(
                f"column {name!r} of {what} holds text (e.g. {quoted(bad.iloc[0])}) but the "
                "model was fitted with it as a numeric column; fix the data, or refit with "
                f"categorical=[{name!r}]") from None
    inf = np.isinf(v)
    if inf.any():
        raise DataError(f"{what} contains infinite values in {name!r} ({int(inf.sum())} rows); "
                        "replace them with missing values (NaN or None; null in JSON)")
    return v


def _check_category_kind(s: pd.Series, codes: np.ndarray, missing: np.ndarray,
                         vocab: Sequence[str], members: Sequence[str] | None, name: str,
                         what: str) -> None:
    """Refuse numbers or booleans in a column whose categories were all text: a column that
    changed kind (every row would be an unseen category, every row flagged). Numbers are fine
    where the categories are numbers (codes; a new code is an unseen category)."""
    typed = pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype)
    if not (typed or pd.api.types.is_object_dtype(s.dtype)):
        return
    seen = codes[~missing]
    if not seen.size or (seen >= 0).any():
        return
    if not typed and not all(isinstance(v, (Number, np.number, np.bool_)) for v in s[~missing]):
        return  # objects (a JSON record): only numbers or booleans change the column's kind
    labels = _text_labels(vocab, members)
    if labels is None:
        return
    kind = ("booleans" if pd.api.types.is_bool_dtype(s.dtype) or all(
        isinstance(v, (bool, np.bool_)) for v in s[~missing]) else "numbers")
    raise _kind_changed(name, what, kind, s[~missing].iloc[0], labels)


def _text_labels(vocab: Sequence[str], members: Sequence[str] | None = None
                 ) -> list[str] | None:
    """The training labels of a column whose categories (``vocab`` and the ``<other>``
    bucket's ``members``) were all text, not one reading as a number or a true/false word;
    else None (codes or yes/no: a number or such a word there is a category, or an unseen
    one)."""
    labels = [v for v in vocab if v != OTHER]
    every = pd.Series(labels + list(members or ()), dtype=object)
    if every.size and (pd.to_numeric(every, errors="coerce").notna().any()
                       or every.str.strip().str.lower().isin(TRUE_WORDS | FALSE_WORDS).any()):
        return None
    return labels


def _kind_changed(name: str, what: str, kind: str, example: Any, labels: list[str]
                  ) -> DataError:
    return DataError(f"column {name!r} of {what} holds {kind} (e.g. {quoted(example)}), but the "
                     f"model was fitted with it as a text category (e.g. "
                     f"{labels[0] if labels else OTHER!r}); fix the data, or refit")


#: Observed cells a file needs before numbers in a text-category column are taken for a change
#: of kind (fewer: each is an unseen category, flagged, as a single new value would be).
KIND_CHANGE_MIN_CELLS = 20


class TextKindCheck:
    """The check of :func:`_check_category_kind` for a file read as text, over all its chunks
    (the CLI reads a CSV's category columns as text, to keep codes such as ``"007"``).

    A column whose training categories were all text (:func:`_text_labels`) and whose cells in
    the whole file all read as numbers or true/false words, none a training category (its
    ``<other>`` bucket included), with at least :data:`KIND_CHANGE_MIN_CELLS` of them, held
    numbers or booleans: :meth:`finish` raises the error a frame of numbers gets (every row
    would be an unseen category). Feed each chunk to :meth:`update`; the decision does not
    depend on how the file is chunked.
    """

    def __init__(self, schema: MixedSchema) -> None:
        self._cols: dict[str, dict[str, Any]] = {}
        for j, (name, kind, vocab) in enumerate(zip(schema.columns, schema.kinds,
                                                    schema.vocabularies, strict=True)):
            if kind != "categorical" or not vocab:
                continue
            members = None if schema.other_members is None else schema.other_members[j]
            labels = _text_labels(vocab, members)
            if labels is not None:
                self._cols[name] = {"labels": labels, "known": set(vocab) | set(members or ()),
                                    "n": 0, "settled": False, "words": True, "example": None}

    def update(self, df: pd.DataFrame) -> None:
        """Take one chunk (the model's columns; others are ignored)."""
        by_name = {str(c): c for c in df.columns}  # the schema's names are text (0 -> "0")
        for name, st in self._cols.items():
            if st["settled"] or name not in by_name:
                continue
            obs = _blank_as_missing(df[by_name[name]]).dropna()
            if obs.empty or not (pd.api.types.is_object_dtype(obs.dtype)
                                 or pd.api.types.is_string_dtype(obs.dtype)):
                continue  # typed cells: the detector's own check (_check_category_kind)
            if obs.isin(st["known"]).any():  # the usual case, decided in one pass
                st["settled"] = True
                continue
            text = obs.astype(str).str.strip()
            words = text.str.lower().isin(TRUE_WORDS | FALSE_WORDS)
            if text.isin(st["known"]).any() or not (
                    words | pd.to_numeric(text, errors="coerce").notna()).all():
                st["settled"] = True  # a known category, or text: new categories at most
                continue
            st["n"] += len(text)
            st["words"] = st["words"] and bool(words.all())
            st["example"] = text.iloc[0] if st["example"] is None else st["example"]

    def finish(self, what: str) -> None:
        """Raise :class:`DataError` for the first column whose kind changed (see the class)."""
        for name, st in self._cols.items():
            if not st["settled"] and st["n"] >= KIND_CHANGE_MIN_CELLS:
                raise _kind_changed(name, what, "booleans" if st["words"] else "numbers",
                                    st["example"], st["labels"])


def refuse_numbers_read_as_text(df: pd.DataFrame, schema: MixedSchema, what: str) -> None:
    """:class:`TextKindCheck` of one table read as text, whole."""
    check = TextKindCheck(schema)
    check.update(df)
    check.finish(what)


def _boolean(s: pd.Series, name: str, what: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
        v = s.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        low = s.map(lambda x: x if x is None or (isinstance(x, float) and math.isnan(x))
                    else str(x).strip().lower())
        v = np.where(low.isin(TRUE_WORDS), 1.0, np.where(low.isin(FALSE_WORDS), 0.0, np.nan))
        # a number written as text (a CSV read as text): "1.00" is 1, "2" unseen, as the number
        num = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        text = np.isnan(v) & ~np.isnan(num)
        v[text] = np.where(np.isin(num[text], (0.0, 1.0)), num[text], UNSEEN)
        other = s.notna().to_numpy() & np.isnan(v)
        if other.any():
            # another word ("maybe"): a value never seen in training, as 2 is, and as "maybe" is
            # in a yes/no column of text; only Python objects that are no value (a list, a
            # date) are an error
            wrong = s[other][~s[other].map(lambda x: isinstance(x, str))]
            if len(wrong):
                x = wrong.iloc[0]
                raise DataError(f"column {name!r} of {what} is boolean in the model but holds "
                                f"{type(x).__name__} values (e.g. {reprlib.repr(x)}); give it "
                                "true/false, 0/1 or yes/no")
            v[other] = UNSEEN
        return v
    # another number: a value never seen in training (scored as maximally surprising)
    return np.where(np.isnan(v) | (v == 0.0) | (v == 1.0), v, UNSEEN)


def _match_labels(labels: np.ndarray, missing: np.ndarray, vocab: Sequence[str]) -> np.ndarray:
    """Float codes ``(n,)``: each label's index in ``vocab``, else -1. A label matches its
    exact text first, then as a number (see :func:`_known_numbers`)."""
    codes = _vocab_index(vocab).get_indexer(labels).astype(np.float64)
    return _known_numbers(codes, labels, missing, vocab)


def _known_numbers(codes: np.ndarray, labels: np.ndarray, missing: np.ndarray,
                   vocab: Sequence[str]) -> np.ndarray:
    """``codes`` ``(n,)`` (-1: not a category) with the labels that are no category but read
    as the number of one matched to it: ``"001"`` or ``"1.0"`` for a model that saw the code as
    the number 1 (a CSV read as text), and the number 3 for a model that saw the text ``"3.0"``
    (fitted on a CSV read as text, scored from JSON or a frame of numbers). The number's own
    label (``"1"``) is tried first; otherwise a training label of the same value matches if it
    is the only one (of ``"1.0"`` and ``"01"``, both text, neither)."""
    todo = np.flatnonzero((codes < 0) & ~missing)
    if not todo.size:
        return codes
    num = pd.to_numeric(pd.Series(labels[todo], dtype=object), errors="coerce").to_numpy()
    ok = ~np.isnan(num)
    if not ok.any():
        return codes
    alt = _vocab_index(vocab).get_indexer([_label(v) for v in num[ok]])
    if (alt < 0).any():  # the training labels were numbers written as text ("3.0", "007")
        miss = alt < 0
        alt[miss] = _by_value(vocab).reindex(num[ok][miss]).fillna(-1).to_numpy(dtype=np.intp)
    found = alt >= 0
    codes = codes.copy()
    codes[todo[ok][found]] = alt[found]
    return codes


class _PerVocabulary:
    """What ``build(vocab)`` gives, kept per vocabulary *object* (the schema's tuples live as
    long as the model): an ``<other>`` bucket may hold 100,000 labels, and building its index
    on every call cost 25-80 ms per scored record; keying by the tuple's value would still hash
    100,000 strings per call. The tuple is held with its entry, so its id is not reused."""

    def __init__(self, build: Any, size: int = 64) -> None:
        self.build, self.size = build, size
        self.entries: dict[int, tuple[Sequence[str], Any]] = {}

    def __call__(self, vocab: Sequence[str]) -> Any:
        hit = self.entries.get(id(vocab))
        if hit is not None and hit[0] is vocab:
            return hit[1]
        value = self.build(vocab)
        if len(self.entries) >= self.size:
            self.entries.pop(next(iter(self.entries)))
        self.entries[id(vocab)] = (vocab, value)
        return value


def _numbers_of(vocab: Sequence[str]) -> pd.Series:
    values = pd.to_numeric(pd.Series(list(vocab), dtype=object), errors="coerce")
    once = values[values.notna() & ~values.duplicated(keep=False)]
    return pd.Series(once.index.to_numpy(), index=once.to_numpy())


#: ``vocab`` -> its ``pd.Index`` (label -> position).
_vocab_index = _PerVocabulary(pd.Index)
#: ``vocab`` -> positions by the number each label reads as, for the labels whose number no
#: other label shares.
_by_value = _PerVocabulary(_numbers_of)


def _label(v: Any) -> str:
    if isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v).is_integer():
        return str(int(v))
    return str(v)  # a float32 as float32 ("0.1"), not as the float64 it widens to


def _is_text(dt: Any) -> bool:
    """Whether ``dt`` is a dtype of text cells: object, pandas' string dtypes, or an Arrow
    string type (``pd.ArrowDtype(pa.string())``)."""
    return (pd.api.types.is_object_dtype(dt) or isinstance(dt, pd.StringDtype)
            or (isinstance(dt, pd.ArrowDtype) and pd.api.types.is_string_dtype(dt)))


def _blank_as_missing(s: pd.Series) -> pd.Series:
    """``s`` with its empty and whitespace-only strings missing (NaN), as a CSV reader reads an
    empty field: ``""`` in a DataFrame, a service record or a streamed line is the same missing
    cell, not a category of its own (which would be unseen at scoring wherever it was not in
    training). ``s`` itself when it holds none (no copy)."""
    dt = s.dtype
    if isinstance(dt, pd.CategoricalDtype):
        cats = s.cat.categories
        if not _is_text(cats.dtype):
            return s
        blank = [c for c in cats if isinstance(c, str) and (not c or c.isspace())]
        return s.cat.remove_categories(blank) if blank else s
    if not _is_text(dt):
        return s
    blank = np.fromiter((isinstance(v, str) and (not v or v.isspace()) for v in s.to_numpy(
        dtype=object)), dtype=bool, count=len(s))
    return s.mask(blank) if blank.any() else s


def _labels(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Category labels as strings ``(n,)`` object, and the missing mask ``(n,)``.

    Numbers are written without a spurious ``.0`` (``1.0`` and ``1`` are the same category), so
    a column read as integers in one file and as floats or text in another still matches.
    """
    missing = s.isna().to_numpy()
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = np.asarray([_label(c) for c in s.cat.categories] + [""], dtype=object)
        return cats[s.cat.codes.to_numpy()], missing
    if pd.api.types.is_integer_dtype(s.dtype) and not missing.any():
        return s.to_numpy().astype(str).astype(object), missing
    vals = (list(s.to_numpy()) if pd.api.types.is_float_dtype(s.dtype) and s.dtype.itemsize < 8
            else s.to_numpy(dtype=object))  # float32: keep numpy scalars (see _label)
    out = np.empty(len(vals), dtype=object)
    out[:] = [_label(v) for v in vals]
    out[missing] = ""
    return out, missing


# -- inference ---------------------------------------------------------------------------------
def needs_mixed(X: Any, categorical: Sequence[str] | None = None,
                numeric: Sequence[str] | None = None) -> bool:
    """Whether ``X`` takes the mixed-type path: column kinds given explicitly, or a DataFrame
    with non-numeric columns or missing values. (Arrays and complete numeric frames keep the
    plain numeric path; an array with NaN is an error there.)"""
    if categorical is not None or numeric is not None:
        return True
    if isinstance(X, pd.Series):
        X = X.to_frame()
    if not isinstance(X, pd.DataFrame):
        return False
    if not all(holds_numbers(s) for _, s in X.items()):
        return True
    return bool(X.isna().to_numpy().any())


def _frame(X: Any, what: str, names: Sequence[str] | None = None
           ) -> tuple[pd.DataFrame, bool]:
    if isinstance(X, pd.Series):
        X = series_as_frame(X, names, what)
    if isinstance(X, pd.DataFrame):
        return X, True
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise DataError(f"{what} must be 2-D (rows, features), got shape {arr.shape}")
    return pd.DataFrame(arr, columns=array_columns(arr.shape[1])), False


def _infer_kind(s: pd.Series, name: str) -> str:
    refuse_unmodelled(s, name, "X")
    dt = s.dtype
    if pd.api.types.is_bool_dtype(dt):
        return "boolean"
    if pd.api.types.is_numeric_dtype(dt):
        v = s.to_numpy(dtype=np.float64, na_value=np.nan)
        obs = v[~np.isnan(v)]
        if obs.size and np.isin(obs, (0.0, 1.0)).all() and np.unique(obs).size == 2:
            return "boolean"
        return "numeric"
    obs = s.dropna()
    if obs.size and obs.map(lambda x: isinstance(x, (bool, np.bool_))).all():
        return "boolean"
    if holds_numbers(s):  # numbers stored as objects: Decimal from Parquet, Python floats
        return _infer_kind(pd.to_numeric(s), name)
    _refuse_objects(obs, name)
    _refuse_dates_as_text(obs, name)
    return "categorical"


#: Python objects in a text column that would silently become categories by their ``str``.
_DATES = (datetime.date, datetime.time, datetime.timedelta, pd.Period)
_CONTAINERS = (list, tuple, dict, set, frozenset, bytes, bytearray, pd.Interval)


def _refuse_objects(obs: pd.Series, name: str) -> None:
    """:class:`DataError` for an object column holding dates, times, periods or intervals (as
    Python objects: a datetime64 column is refused by :func:`refuse_unmodelled`) or containers
    and bytes, which would become one category per distinct ``str``."""
    if (not pd.api.types.is_object_dtype(obs.dtype)
            or pd.api.types.infer_dtype(obs, skipna=True) == "string"):  # text: the fast answer
        return
    for v in obs:
        if isinstance(v, _DATES):
            raise DataError(f"column {name!r} holds dates or times ({type(v).__name__} objects, "
                            f"e.g. {reprlib.repr(v)}), which anovae does not model; derive "
                            f"numeric features from it or exclude it (CLI: --exclude {name})")
        if isinstance(v, _CONTAINERS):
            raise DataError(f"column {name!r} holds {type(v).__name__} values (e.g. "
                            f"{reprlib.repr(v)}), which anovae does not model; give it text, "
                            f"numbers or booleans, or exclude it (CLI: --exclude {name})")


#: Cells of a text column read to tell whether it holds dates (evenly spread over the column).
DATE_SAMPLE = 500
#: Share of those cells that must read as dates, in one format, for the column to be dates:
#: essentially all (one stray "unknown" among a hundred dates or more: still dates).
DATE_SHARE = 0.99
#: Two runs of digits apart: what any date or time written as text has, and what codes ("001",
#: "A1"), years ("2024"), words ("May") and country codes lack.
_TWO_NUMBERS = re.compile(r"\d+\D+\d+")
#: A time of day with seconds ("13:02:11", "07:45:00.250"); without seconds ("08:00") it may
#: as well be a label (a shift, an opening hour) and stays a category.
_TIME_OF_DAY = re.compile(r"\d{1,2}:\d{2}:\d{2}(\.\d+)?")
_TIME_FORMATS = ("%H:%M:%S", "%H:%M:%S.%f")


def _dates_as_text(obs: pd.Series) -> str | None:
    """The first sampled value when ``obs``, the observed cells of a text column, holds dates
    or times written as text (at least :data:`DATE_SHARE` of :data:`DATE_SAMPLE` cells read as
    dates in one format: ISO 8601, with or without a time, ``T`` and zone; one format pandas
    guesses, such as ``%d/%m/%Y`` or ``%b %d, %Y``; or a time of day with seconds); else None.

    Numbers written as text never count ("2024", "20240105": a year, a code), nor does text
    without two runs of digits ("May", "A1", "DE"), nor formats without a year (``%m/%d``)."""
    if not len(obs):
        return None
    at = np.unique(np.linspace(0, len(obs) - 1, min(len(obs), DATE_SAMPLE)).astype(np.intp))
    sample = obs.iloc[at].to_numpy(dtype=object)
    if not all(isinstance(v, str) for v in sample):
        return None
    text = pd.Series([v.strip() for v in sample], dtype=object)
    need = math.ceil(DATE_SHARE * len(text))
    shaped = text[text.str.contains(_TWO_NUMBERS) & pd.to_numeric(text, errors="coerce").isna()]
    if len(shaped) < need:
        return None
    formats = ["ISO8601"]
    with warnings.catch_warnings():  # pandas warns when dayfirst does not match the text
        warnings.simplefilter("ignore")
        for v in shaped.iloc[:10]:
            for dayfirst in (False, True):
                fmt = guess_datetime_format(v, dayfirst=dayfirst)
                if fmt and ("%Y" in fmt or "%y" in fmt) and fmt not in formats:
                    formats.append(fmt)
    if shaped.str.fullmatch(_TIME_OF_DAY).sum() >= need:
        formats.extend(_TIME_FORMATS)
    for fmt in formats:
        try:
            parsed = pd.to_datetime(shaped, format=fmt, errors="coerce", utc=True)
        except (ValueError, TypeError, OverflowError):
            continue
        if parsed.notna().sum() >= need:
            return str(shaped.iloc[0])
    return None


def _refuse_dates_as_text(obs: pd.Series, name: str) -> None:
    """:class:`DataError` for an inferred text column holding dates or times
    (:func:`_dates_as_text`): as categories, the dates of the next period would all be unseen,
    every row flagged. A column declared ``categorical=[...]`` is not looked at."""
    if not _is_text(obs.dtype):
        return
    example = _dates_as_text(obs)
    if example is not None:
        raise DataError(
            f"column {name!r} holds dates or times written as text (e.g. {quoted(example)}), which "
            "anovae does not model: as categories, the dates of a new period would all be "
            "unseen, and every row flagged; exclude it (CLI: --exclude "
            f"{name}), derive numeric features from it (the hour, the day of the week...), or, "
            f"if its dates are labels, declare it categorical (categorical=[{name!r}], CLI: "
            f"--categorical {name})")


#: A number written with thousands separators: "1,234" or "-12,345,678.5".
_THOUSANDS = r"-?\d{1,3}(,\d{3})+(\.\d+)?"


def _warn_numbers_as_text(s: pd.Series, name: str) -> None:
    """Warn when an inferred categorical column is mostly numbers: a placeholder such as "?"
    for missing values, or thousands separators, made pandas read it as text."""
    obs = s.dropna()
    if obs.size < 20 or not (pd.api.types.is_object_dtype(obs.dtype)
                             or pd.api.types.is_string_dtype(obs.dtype)):
        return
    num = pd.to_numeric(obs, errors="coerce")
    text = obs[num.isna()].astype(str)
    if num.notna().all():  # a frame read as text (dtype=str): numbers, or codes?
        warn(f"column {name!r} holds only numbers written as text (e.g. {quoted(obs.iloc[0])}): "
             f"it is modelled as categorical; to model it as a number pass numeric=[{name!r}] "
             "(or convert it: pandas.to_numeric), to keep it categorical without this warning "
             f"pass categorical=[{name!r}]")
    elif num.notna().mean() >= 0.9 and text.nunique() <= 3:
        warn(f"column {name!r} holds numbers except {_list(sorted(text.unique()))}: it is "
             "modelled as categorical; if that text marks missing values, read it as missing "
             f"(pandas: na_values) or pass numeric=[{name!r}] once it is clean")
    elif num.isna().all() and obs.astype(str).str.fullmatch(_THOUSANDS).mean() > 0.5:
        warn(f"column {name!r} holds numbers written with thousands separators (e.g. "
             f"{quoted(obs.iloc[0])}): it is modelled as categorical; read it with pandas' "
             "thousands=',' to model it as a number")


#: Good-Turing estimate of the share of new rows holding a value never seen in training above
#: which :func:`infer_schema` warns. Each such row costs at least ``log(n_observed + 1)`` in
#: that column, more than a threshold set on training rows lets a normal row cost, so it is
#: flagged nearly every time: at 5 % this one column alone flags 5 % of normal rows, what
#: ``threshold="fpr"`` allows for the whole model by default and half of the default
#: ``contamination`` (0.1). A column of 70 services with a few rare ones (NSL-KDD) is far
#: below it (a value seen once in 25,000 rows: 0.004 %).
NEW_VALUE_SHARE = 0.05
#: Observed cells a column needs before the estimate is trusted (as for the id warning), and
#: values seen once: with a handful of singletons the estimate is noise (40 rows of a country
#: code with two seen once are no sign of a long tail).
NEW_VALUE_MIN_CELLS = 20
NEW_VALUE_MIN_SINGLETONS = 10


def _warn_if_new_values_common(counts: pd.Series, name: str) -> None:
    """Warn when a categorical column's training values suggest that values never seen in
    training will be common at scoring: the Good-Turing estimate of the probability that the
    next cell holds a new value is the share of the observed cells whose value occurs exactly
    once (``n1 / n_observed``); see :data:`NEW_VALUE_SHARE`. ``counts``: cells per value."""
    observed = int(counts.sum())
    if observed < NEW_VALUE_MIN_CELLS:
        return
    once = int((counts == 1).sum())
    share = once / observed
    if share >= NEW_VALUE_SHARE and once >= NEW_VALUE_MIN_SINGLETONS:
        warn(f"column {name!r} has many values seen only once in training ({once:,} of its "
             f"{observed:,} observed cells): about {share:.0%} of new rows will hold a value "
             "not seen in training (the Good-Turing estimate), each scored as maximally "
             f"surprising and likely flagged; exclude it (CLI: --exclude {name}), group its "
             "values into fewer categories, or train on more rows")


def infer_schema(X: pd.DataFrame, *, categorical: Sequence[str] | None = None,
                 numeric: Sequence[str] | None = None, max_categories: int = 100,
                 from_frame: bool = True) -> MixedSchema:
    """The kinds and vocabularies of ``X``'s columns (see the module docstring).

    Warns (``UserWarning``) about columns that look like row ids (every value distinct),
    categorical columns where values never seen in training will be common at scoring (many
    values seen once: :func:`_warn_if_new_values_common`) and columns with no observed value.
    Raises :class:`DataError` for an inferred text column of dates or times.
    """
    names = [str(c) for c in X.columns]
    cat, num = [str(c) for c in categorical or ()], [str(c) for c in numeric or ()]
    unknown = [c for c in cat + num if c not in names]
    if unknown:
        raise DataError(f"categorical=/numeric= name columns that are not in the data: "
                        f"{_list(unknown)}")
    both = sorted(set(cat) & set(num))
    if both:
        raise DataError(("column" if len(both) == 1 else "columns") + f" {_list(both)} "
                        + ("is" if len(both) == 1 else "are")
                        + " listed as both categorical and numeric")
    kinds, vocabs, n_obs = [], [], []
    members: list[tuple[str, ...] | None] = []
    forms: list[str | None] = []
    n = len(X)
    for j, name in enumerate(names):
        s = _blank_as_missing(X.iloc[:, j])  # "" and "  ": missing, as a CSV reader reads them
        kind = ("categorical" if name in cat else "numeric" if name in num
                else _infer_kind(s, name))
        vocab: tuple[str, ...] | None = None
        bucket: tuple[str, ...] | None = None
        if kind == "numeric":
            try:
                _numeric(s, name, "X")  # text in a column forced numeric: a clear error now
            except DataError:
                if name not in num:
                    raise
                bad = s[pd.to_numeric(s, errors="coerce").isna() & s.notna()]
                raise DataError(f"column {name!r} is listed in numeric= but holds text (e.g. "
                                f"{quoted(bad.iloc[0])})") from None
        if kind == "categorical":
            labels, missing = _labels(s)
            counts = pd.Series(labels[~missing]).value_counts(sort=False)
            # most frequent first, ties by label: the vocabulary does not depend on row order
            order = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
            if len(order) > max_categories:
                vocab = tuple(str(k) for k, _ in order[:max_categories - 1]) + (OTHER,)
                rest = order[max_categories - 1:]
                if len(rest) <= MAX_OTHER_MEMBERS:
                    bucket = tuple(sorted(str(k) for k, _ in rest))
            else:
                vocab = tuple(str(k) for k, _ in order)
            if name not in cat:
                _warn_numbers_as_text(s, name)
            if n >= 20 and len(order) == n:
                warn(f"column {name!r} has a distinct value in every row: it looks like an id "
                     f"and carries no pattern; exclude it (CLI: --exclude {name})")
            elif len(order) <= max_categories or bucket is not None:  # else none is unseen:
                # without the bucket's labels, every label outside the vocabulary is <other>
                _warn_if_new_values_common(counts, name)
        elif kind == "numeric":
            warn_if_row_id(s, name)
        observed = int(s.notna().sum())
        if observed == 0:
            warn(f"column {name!r} has no observed value: it carries no information")
        kinds.append(kind)
        vocabs.append(vocab)
        members.append(bucket)
        n_obs.append(observed)
        forms.append(None if kind != "boolean" else "bool" if (
            pd.api.types.is_bool_dtype(s.dtype) or (observed and s.dropna().map(
                lambda x: isinstance(x, (bool, np.bool_))).all())) else "number")
    return MixedSchema(tuple(names), tuple(kinds), tuple(vocabs), tuple(n_obs), from_frame,
                       tuple(members) if any(m is not None for m in members) else None,
                       tuple(forms) if "number" in forms else None)


def check_mixed(X: Any, schema: MixedSchema | None = None, *, min_rows: int = 1,
                categorical: Sequence[str] | None = None, numeric: Sequence[str] | None = None,
                max_categories: int = 100, what: str = "X") -> tuple[np.ndarray, MixedSchema]:
    """Validate a mixed table and return its codes ``(n, C)`` float64 and its schema.

    Without ``schema`` the schema is inferred (:func:`infer_schema`); with it, DataFrame columns
    are matched by name (reordered if needed) and arrays by width, and each column is read as
    the kind it had in training: text in a numeric column raises :class:`DataError`.
    """
    df, from_frame = _frame(X, what, None if schema is None else schema.names)
    check_size(what, df.shape, min_rows)
    names = [str(c) for c in df.columns]
    if len(set(names)) != len(names):
        dup = sorted({c for c in names if names.count(c) > 1})
        raise DataError(f"{what} has duplicate column names: {_list(dup)}")
    if schema is None:
        schema = infer_schema(df, categorical=categorical, numeric=numeric,
                              max_categories=max_categories, from_frame=from_frame)
    elif from_frame and schema.names is not None:
        df = match_columns(df, list(schema.names), what)
    elif df.shape[1] != schema.n_features:
        raise DataError(f"{what} has {df.shape[1]} columns but the model was fitted on "
                        f"{schema.n_features}")
    return schema.encode(df, what), schema


def fit_mixed_scaler(method: str, codes: np.ndarray, schema: MixedSchema) -> Scaler:
    """A :class:`Scaler` for codes ``(n, C)``: fitted on the observed values of each numeric
    column; the identity (center 0, scale 1) for boolean and categorical codes."""
    center = np.zeros(schema.n_features)
    scale = np.ones(schema.n_features)
    for j, kind in enumerate(schema.kinds):
        if kind != "numeric":
            continue
        col = codes[:, j]
        obs = col[~np.isnan(col)]
        if obs.size:
            one = Scaler(method).fit(obs[:, None])
            assert one.center is not None and one.scale is not None
            center[j], scale[j] = one.center[0], one.scale[0]
    return Scaler(method, np.ascontiguousarray(center), np.ascontiguousarray(scale))
