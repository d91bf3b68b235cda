"""Reading and writing tables (CSV, Parquet, NumPy), chunked streaming, and atomic writes.

Every user mistake (missing file, unsupported extension, empty or corrupt file, missing
columns) raises :class:`anovae.DataError` naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import logging
import math
import os
import re
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anovae.exceptions import DataError, warn

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "TableWriter",
    "array_columns",
    "atomic_output",
    "check_output_path",
    "count_rows",
    "feature_labels",
    "iter_table_chunks",
    "read_table",
    "write_table",
]

logger = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet", ".pq", ".npy", ".npz")
#: The kind of table of each extension.
_KINDS = {".csv": "csv", ".csv.gz": "csv", ".tsv": "tsv", ".tsv.gz": "tsv", ".parquet": "parquet",
          ".pq": "parquet", ".npy": "npy", ".npz": "npz"}


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for ext in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return ext
    return "".join(path.suffixes[-2:]).lower() or "(none)"


def _kind(path: Path) -> str:
    """'csv', 'tsv', 'parquet', 'npy' or 'npz' for a path to read, with clear errors."""
    if not path.exists():
        raise DataError(f"file {str(path)!r} does not exist")
    if path.is_dir():
        if _has_parquet(path):
            return "parquet"
        raise DataError(_empty_folder_message(path))
    ext = _suffix(path)
    if ext not in _KINDS:
        raise DataError(f"unsupported file type {ext!r} for {str(path)!r}; supported: "
                        + ", ".join(SUPPORTED_EXTENSIONS) + " and Parquet folders")
    if path.stat().st_size == 0:
        raise NoRowsError(f"{str(path)!r} is empty: the file has no rows")
    if ext in (".csv", ".tsv"):
        with path.open("rb") as fh:
            gzipped = fh.read(2) == b"\x1f\x8b"
        if gzipped:  # pandas would read the compressed bytes as text: "not UTF-8"
            raise DataError(f"{str(path)!r} is gzip-compressed, but its name ends in {ext!r}: "
                            f"rename it to {path.name + '.gz'!r} (anovae reads .csv.gz and "
                            ".tsv.gz files as compressed)")
    return _KINDS[ext]


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """Whether ``path`` is ``folder`` or lies somewhere below it (links resolved)."""
    p, f = os.path.realpath(path), os.path.realpath(folder)
    return p == f or p.startswith(f.rstrip(os.sep) + os.sep)


class NoRowsError(DataError):
    """A table file without rows (an empty file, a CSV header alone, an empty Parquet file):
    an error for a file named alone; among a pattern's files, it is left out with a warning."""


def is_pattern(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a glob pattern (``'logs/day-*.csv'``): it holds ``*``, ``?`` or
    ``[`` and names nothing that exists (a file whose name holds those is a file)."""
    text = os.fspath(path)
    return any(c in text for c in "*?[") and not os.path.lexists(text)


def pattern_files(pattern: str | os.PathLike) -> list[Path]:
    """The tables a glob pattern matches (``**`` matches folders at any depth), sorted by name:
    the order their rows are read in. The matched files, and the matched folders that hold
    Parquet files and no other match (a Parquet dataset named by the pattern, read whole; any
    other matched folder is only a way to the files). The readers leave files without rows
    out, with a warning. A :class:`DataError` when no table matches, or when the tables are of
    several kinds (CSV and Parquet, say: :func:`pattern_kind`)."""
    text = os.fspath(pattern)
    matches = sorted(glob.glob(text, recursive=True))
    holding: set[str] = set()  # the folders that hold another match: ways to files
    for m in matches:
        up = os.path.dirname(m.rstrip(os.sep))
        while up and up not in holding:
            holding.add(up)
            up = os.path.dirname(up)
    found: list[Path] = []
    for m in matches:
        if os.path.isfile(m):
            found.append(Path(m))
        elif (os.path.isdir(m) and m.rstrip(os.sep) not in holding
              and _has_parquet(Path(m))):
            found.append(Path(m))
    if not found:
        raise DataError(f"{'no table files' if matches else 'no files'} match the pattern "
                        f"{text!r}")
    pattern_kind(found, text)
    return found


def pattern_kind(files: list[Path], pattern: str) -> str:
    """The kind of table (``'csv'``, ``'parquet'``...) of a pattern's ``files``, which must be
    one (empty files aside); :class:`NoRowsError` when every file is empty."""
    from anovae.images import IMAGE_EXTENSIONS

    first_of_kind: dict[str, Path] = {}
    for f in files:
        if f.is_file() and f.stat().st_size == 0:
            continue
        if f.suffix.lower() in IMAGE_EXTENSIONS:
            raise DataError(f"the pattern {pattern!r} matches images ({str(f)!r}): patterns "
                            "read tables; images are read from their folder (give the folder, "
                            "with one sub-folder per class if they have classes)")
        first_of_kind.setdefault(_kind(f), f)
    if not first_of_kind:
        raise NoRowsError(f"the files matched by {pattern!r} are empty")
    if len(first_of_kind) > 1:
        shown = ", ".join(f"{k} such as {str(f)!r}" for k, f in first_of_kind.items())
        raise DataError(f"the pattern {pattern!r} matches tables of several kinds ({shown}): "
                        "give a pattern that matches one kind, such as 'data/*.csv'")
    return next(iter(first_of_kind))


def pattern_matches(pattern: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Whether ``path``, which need not exist yet, is (or once written would be) matched by the
    glob ``pattern``: each component matched as :mod:`glob` does; a ``**`` pattern matched as a
    whole, ``*`` crossing folders."""
    pat = os.path.abspath(os.fspath(pattern))
    for target in {os.path.abspath(os.fspath(path)), os.path.realpath(path)}:
        if "**" in pat:
            if fnmatch.fnmatchcase(target, pat.replace("**", "*")):
                return True
            continue
        parts, want = Path(target).parts, Path(pat).parts
        if len(parts) == len(want) and all(fnmatch.fnmatchcase(t, w)
                                           for t, w in zip(parts, want, strict=True)):
            return True
    return False


def _has_parquet(folder: Path) -> bool:
    return any(folder.rglob("*.parquet")) or any(folder.rglob("*.pq"))


def _warn_left_out(paths: list[str], pattern: str) -> None:
    """Warn that the files ``paths`` matched by ``pattern`` hold no rows and are left out."""
    shown = ", ".join(repr(p) for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
    warn(f"{len(paths)} of the files matched by {pattern!r} "
         f"{'holds' if len(paths) == 1 else 'hold'} no rows and "
         f"{'is' if len(paths) == 1 else 'are'} left out: {shown}")


def _same_columns(df: pd.DataFrame, first: pd.DataFrame, path: Path, pattern: str
                  ) -> pd.DataFrame:
    """``df`` (read from ``path``, one of ``pattern``'s files) with the columns of ``first``, the
    first file's table, in its order; a :class:`DataError` naming the file when they differ."""
    names, want = [str(c) for c in df.columns], [str(c) for c in first.columns]
    if names == want:
        return df
    missing = [c for c in want if c not in names]
    extra = [c for c in names if c not in want]
    if missing or extra:
        raise DataError(
            f"{str(path)!r} (matched by {pattern!r}) has other columns than the first file "
            "matched: " + "; ".join(part for part in (
                f"missing {missing[:SHOWN_NAMES]}" if missing else "",
                f"extra {extra[:SHOWN_NAMES]}" if extra else "") if part)
            + ": the files of a pattern must hold the same columns")
    return df[list(first.columns)]  # the same columns in another order: by name


#: Column names an error about a pattern's files lists, at most.
SHOWN_NAMES = 10


def _empty_folder_message(path: Path) -> str:
    """Why a folder is neither a table (Parquet files) nor images (PNG/JPEG files, directly in
    it or in class sub-folders): say both, and where images lie too deep to be read."""
    from anovae.images import IMAGE_EXTENSIONS

    exts = "/".join(IMAGE_EXTENSIONS)
    text = f"{str(path)!r} holds no .parquet files and no {exts} images"
    deep = next((p for p in sorted(path.glob("*/*/**/*")) if p.suffix.lower() in IMAGE_EXTENSIONS
                 and not any(part.startswith(".") for part in p.relative_to(path).parts)), None)
    if deep is not None:
        text += (f" where they are read (in the folder itself, or one sub-folder per class); "
                 f"{str(deep.relative_to(path))!r} lies deeper: move the images up")
    return text


def array_columns(n: int) -> list[str]:
    """``["x0", "x1", ...]``: the ``n`` column names of a table read from a NumPy array."""
    return [f"x{i}" for i in range(n)]


def feature_labels(shape: tuple[int, ...]) -> list[str]:
    """The names of the features of one row of ``shape`` without names of their own:
    :func:`array_columns` for a table's ``(D,)``, ``"x[c,h,w]"`` for an image's pixels."""
    if len(shape) == 1:
        return array_columns(shape[0])
    return ["x[" + ",".join(map(str, ix)) + "]" for ix in np.ndindex(*shape)]


#: The first bytes of a ``.npy`` file and of a ``.npz`` (zip) archive.
_MAGIC = {"npy": b"\x93NUMPY", "npz": b"PK"}


def _objects(exc: ValueError) -> bool:
    """Whether NumPy's ``exc`` says that an array holds Python objects (needs unpickling)."""
    return any(w in str(exc) for w in ("pickle", "Object arrays", "Python objects"))


def _check_npy_size(fh: Any, data_bytes: int, what: str) -> tuple[int, ...]:
    """Read the ``.npy`` header at the start of ``fh`` and refuse an array whose declared shape
    needs more than the ``data_bytes`` that follow the header (a file cut short, or a corrupt
    header declaring a huge shape: NumPy would try to allocate it). ``data_bytes``: the size of
    the file (or archive member), header included; ``what``: how messages name the array.
    Returns the declared shape."""
    from numpy.lib import format as npy_format

    try:
        version = npy_format.read_magic(fh)
        read_header = (npy_format.read_array_header_1_0 if version == (1, 0)
                       else npy_format.read_array_header_2_0)
        shape, _, dtype = read_header(fh)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{what} is not a valid .npy array: its header cannot be read ({exc})"
                        ) from None
    if dtype.hasobject:  # np.load refuses it, by name below
        return tuple(shape)
    need = math.prod(shape) * dtype.itemsize
    held = data_bytes - fh.tell()
    if need > held:
        raise DataError(f"{what} is cut short or corrupt: its header declares an array of shape "
                        f"{tuple(shape)} ({dtype}, {need:,} bytes), but it holds {max(held, 0):,} "
                        "bytes of data")
    return tuple(shape)


def load_numpy(path: Path, kind: str, mmap_mode: str | None = None) -> Any:
    """``np.load`` of a ``.npy``/``.npz`` file (``kind``), never unpickling: a file that does not
    start as one is "not a valid .npy array" (NumPy would offer to unpickle it), one holding
    Python objects is refused by name, as is a ``.npy`` whose header declares more data than
    the file holds (nothing is allocated from it) and a ``.npz`` that is not a readable zip
    archive. Read the members of a ``.npz`` with :func:`npz_array`."""
    with path.open("rb") as fh:
        head = fh.read(len(_MAGIC[kind]))
        if head == _MAGIC[kind] and kind == "npy":
            fh.seek(0)
            _check_npy_size(fh, os.fstat(fh.fileno()).st_size, repr(str(path)))
    if head != _MAGIC[kind]:
        what = "a valid .npy array" if kind == "npy" else "a valid .npz archive"
        raise DataError(f"{str(path)!r} is not {what}: it lacks the NumPy header (corrupt, cut "
                        "short or another kind of file)")
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except ValueError as exc:
        if _objects(exc):
            raise DataError(f"{str(path)!r} holds Python objects (an object array), not "
                            "numbers; only numeric arrays are read") from exc
        raise DataError(f"{str(path)!r} is not a valid .{kind} file ({exc})") from exc
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DataError(f"{str(path)!r} is not a valid .npz archive: corrupt or cut short "
                        f"({exc})") from exc


def npz_shape(z: Any, key: str, path: Path) -> tuple[int, ...] | None:
    """The shape the ``.npy`` header of the member ``key`` of the ``.npz`` archive ``z``
    declares, read without loading the array (checked against the member's size, see
    :func:`npz_array`); ``None`` for a member that is no NumPy array."""
    name = key if key in z.zip.namelist() else f"{key}.npy"
    try:
        info = z.zip.getinfo(name)
        with z.zip.open(name) as fh:
            if fh.read(len(_MAGIC["npy"])) != _MAGIC["npy"]:
                return None
            fh.seek(0)
            return _check_npy_size(fh, info.file_size, f"array {key!r} of {str(path)!r}")
    except (KeyError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise DataError(f"{str(path)!r} is corrupt or cut short: cannot read its array {key!r} "
                        f"({exc})") from exc


def npz_array(z: Any, key: str, path: Path) -> np.ndarray:
    """The array ``key`` of the ``.npz`` archive ``z`` (opened by :func:`load_numpy`), never
    unpickled; a :class:`DataError` naming ``path`` and ``key`` for a member that is corrupt or
    cut short, declares more data than it holds, holds Python objects, or is no NumPy array
    (NumPy hands such a member over as raw bytes)."""
    what = f"array {key!r} of {str(path)!r}"
    npz_shape(z, key, path)  # before anything is allocated from its header
    try:
        arr = z[key]
    except ValueError as exc:
        if isinstance(exc, DataError):
            raise
        if _objects(exc):
            raise DataError(f"{what} holds Python objects (an object array), not numbers; only "
                            "numeric arrays are read") from exc
        raise DataError(f"{what} is not a valid .npy array ({exc})") from exc
    except (KeyError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise DataError(f"{str(path)!r} is corrupt or cut short: cannot read its array {key!r} "
                        f"({exc})") from exc
    if not isinstance(arr, np.ndarray):
        raise DataError(f"{what} is not a NumPy array: it lacks the .npy header (corrupt, or "
                        "another kind of file stored in the archive)")
    return arr


def _check_array(arr: np.ndarray, path: Path) -> None:
    """Refuse an array that is no table: objects, a structured array (named fields), an array
    of other than 1 or 2 axes (a 0-d scalar, say)."""
    if arr.dtype == object:
        raise DataError(f"{str(path)!r} holds an object array; only numeric arrays are read")
    if arr.dtype.names is not None:
        raise DataError(f"{str(path)!r} holds a structured array (fields "
                        f"{list(arr.dtype.names)}); only plain arrays of numbers are read: save "
                        "its fields as the columns of one 2-D array (e.g. numpy.lib.recfunctions"
                        ".structured_to_unstructured), or as a .npz of one 1-D array per column")
    if arr.ndim not in (1, 2):
        raise DataError(f"{str(path)!r} holds an array of shape {arr.shape}; table data must be "
                        "2-D (rows, columns)")


def _array_frame(arr: np.ndarray, path: Path, y: np.ndarray | None = None) -> pd.DataFrame:
    _check_array(arr, path)
    if arr.ndim == 1:
        arr = arr[:, None]
    df = pd.DataFrame(arr, columns=array_columns(arr.shape[1]), copy=False)
    if y is not None:
        df["y"] = y
    return df


def _load_npz(path: Path) -> pd.DataFrame:
    """An ``.npz`` as a table: the array ``X`` (plus a ``y`` column when a matching 1-D ``y`` is
    there: ADBench's layout), the file's only array, or equal-length 1-D arrays as columns (what
    :class:`TableWriter` writes)."""
    try:
        with load_numpy(path, "npz") as z:
            arrays = {k: npz_array(z, k, path) for k in z.keys()}
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc}") from exc
    if "X" in arrays or len(arrays) == 1:
        X = arrays["X"] if "X" in arrays else next(iter(arrays.values()))
        y = arrays.get("y") if "X" in arrays else None
        if y is not None:
            _check_array(X, path)
            if y.ndim != 1 or y.shape[0] != X.shape[0]:
                got = f"{y.shape[0]} labels" if y.ndim == 1 else f"shape {y.shape}"
                raise DataError(f"{str(path)!r}: its labels 'y' ({got}) do not match its "
                                f"{X.shape[0]} rows of 'X'; give one label per row, as a 1-D "
                                "array (or leave 'y' out)")
        return _array_frame(X, path, y)
    lengths = {a.shape[0] if a.ndim == 1 else -1 for a in arrays.values()}
    if len(lengths) == 1 and -1 not in lengths:
        return pd.DataFrame(arrays)
    raise DataError(f"{str(path)!r} holds arrays {list(arrays)}; name the table 'X' (or store "
                    "one 1-D array per column, all of the same length)")


def _select(df: pd.DataFrame, columns: Sequence[str] | None, path: Path) -> pd.DataFrame:
    if columns is None:
        return df
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{str(path)!r} has no column(s) {missing}")
    return df[list(columns)]


def _csv_options(kind: str, dtype: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments of ``pd.read_csv`` for a CSV or TSV file.

    ``index_col=False``: a delimiter ending every data row (``1.5,10.0,x,``) is an empty last
    field, not a sign that the first column is an index (pandas' guess, which shifted every
    column by one). ``dtype`` names the columns to read as given rather than guessed per chunk
    (codes such as ``"001"``); names that are not in the file are ignored.
    """
    return {"sep": "\t" if kind == "tsv" else ",", "index_col": False,
            "dtype": dict(dtype) if dtype else None}


#: Delimiters that, found in the only header field of a CSV/TSV file, mean it was written with
#: another delimiter than its extension says (pandas reads it as one text column).
_OTHER_DELIMITERS = {"csv": (";", "\t", "|"), "tsv": (",", ";", "|")}


#: A number written with a decimal comma (``1,5``), as European spreadsheets write CSV.
_DECIMAL_COMMA = re.compile(r"[-+]?\d*,\d+")


def _first_row(path: Path, sep: str) -> list[str] | None:
    """The fields of the first data row (below the header) split by ``sep``; ``None`` for a
    header alone (or a row the parser cannot split)."""
    try:
        return pd.read_csv(path, skiprows=1, header=None, nrows=1, dtype=str, na_filter=False,
                           sep=sep).iloc[0].tolist()
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None


def _check_header(path: Path, kind: str) -> str | None:
    """Refuse a CSV/TSV header that pandas would silently misread: a single field holding
    another delimiter (a semicolon-separated ``.csv`` reads as one column; with decimal commas,
    ``1,5;2``, its rows seem longer than the header), repeated names (pandas renames the
    second ``a`` to ``a.1``) or names that differ only in surrounding spaces (``a`` and
    ``a ``: two columns that look alike in every message).

    Returns the name pandas gives the empty last field of a header that ends with a delimiter
    (``a,b,``: ``"Unnamed: 2"``), else ``None`` (see :func:`_drop_unnamed_last`).
    """
    opts: dict[str, Any] = {"sep": _csv_options(kind, None)["sep"], "header": None,
                            "nrows": 1, "dtype": str, "na_filter": False}
    names = pd.read_csv(path, **opts).iloc[0].tolist()
    found = [d for d in _OTHER_DELIMITERS[kind] if len(names) == 1 and d in names[0]]
    rows = {d: _first_row(path, d) for d in found}
    # another delimiter splits the header and the first row alike ("a;b" over "1;2" or "1,5;2";
    # a one-column file whose name holds one, "price|usd" over "1", is fine)
    found = [d for d in found if rows[d] is None or len(rows[d]) == names[0].count(d) + 1]
    if found:
        d = found[0]
        decimals = d == ";" and any(_DECIMAL_COMMA.fullmatch(v.strip()) for v in rows[d] or [])
        if decimals:
            raise DataError(f"{str(path)!r} looks delimited by ';' with decimal commas (a "
                            f"European CSV: its header {names[0]!r} reads as one column); "
                            "anovae reads comma-separated files with decimal points: convert "
                            "it, e.g. pandas.read_csv(PATH, sep=';', decimal=',').to_csv("
                            "'fixed.csv', index=False)")
        fix = ("rename it to .csv" if kind == "tsv" and d == "," else
               "convert it: anovae reads comma-separated .csv and tab-separated .tsv files")
        raise DataError(f"{str(path)!r} looks delimited by {d!r} (its header {names[0]!r} "
                        f"reads as one column); {fix}")
    counts = pd.Series([n for n in names if n]).value_counts()
    dups = counts.index[counts > 1].tolist()
    if dups:
        raise DataError(f"{str(path)!r} has duplicate column names {dups}; give each column "
                        "its own name")
    alike: dict[str, list[str]] = {}
    for n in names:
        if n.strip():
            alike.setdefault(n.strip(), []).append(n)
    spaced = next((v for v in alike.values() if len(v) > 1), None)
    if spaced is not None:
        raise DataError(f"{str(path)!r} has column names that differ only in surrounding "
                        f"spaces: {spaced}; give each column its own name (or remove the "
                        "spaces)")
    return f"Unnamed: {len(names) - 1}" if len(names) > 1 and names[-1] == "" else None


def _drop_unnamed_last(df: pd.DataFrame, name: str | None, path: Path,
                       first_row: int = 0) -> pd.DataFrame:
    """``df`` without the empty column ``name`` that a delimiter ending the header adds
    (``a,b,``; a column of no name and no value, which a model would be fitted on, then ask
    for); a :class:`DataError` when it holds a value after all (a column without a name in
    the header). ``first_row``: the file's row number of ``df``'s first row (0-based)."""
    if name is None or name not in df.columns:
        return df
    filled = df[name].notna().to_numpy()
    if filled.any():
        at = int(np.flatnonzero(filled)[0])
        raise DataError(f"{str(path)!r}: its header ends with a delimiter (a last column with "
                        f"no name), but data row {first_row + at + 1} holds a value there "
                        f"({str(df[name].iloc[at])!r}); name that column in the header, or "
                        "remove the trailing delimiters")
    return df.drop(columns=[name])


def _warn_unnamed_last(name: str | None, path: Path) -> None:
    if name is not None:
        warn(f"{str(path)!r}: its header ends with a delimiter; the empty last column this adds "
             f"({name!r}, no name and no value) is left out")


def _read_error(exc: Exception, path: Path) -> DataError:
    """A :class:`DataError` naming ``path`` for what pandas (or NumPy, pyarrow) raised."""
    shown = repr(str(path))
    if isinstance(exc, UnicodeDecodeError):
        return DataError(f"{shown} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} is not "
                         "valid UTF-8); re-encode it as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
    if isinstance(exc, pd.errors.EmptyDataError):
        return NoRowsError(f"{shown} is empty: the file has no rows")
    fields = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
    if isinstance(exc, pd.errors.ParserError) and fields:
        want, line, got = fields.groups()
        return DataError(f"{shown}: line {line} has {got} fields but the header has {want}; fix "
                         "the file (quote fields that hold the delimiter)")
    text = str(exc).replace("Error tokenizing data. C error: ", "").strip()
    return DataError(f"cannot read {shown}: {text}")


@contextlib.contextmanager
def _parser_checks(path: Path) -> Iterator[None]:
    """Turn pandas' warning about rows longer than the header (their extra fields would be
    dropped silently) into a :class:`DataError`; other warnings pass through."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        yield
    for w in caught:
        if issubclass(w.category, pd.errors.ParserWarning) and "Length of header" in str(
                w.message):
            raise DataError(f"{str(path)!r} has rows with more fields than its header; fix the "
                            "file (or add names for the extra columns to the header)")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def read_table(path: str | os.PathLike, *, columns: Sequence[str] | None = None,
               dtype: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Read a whole table file into a DataFrame.

    ``.npy`` arrays get columns ``x0, x1, ...``; ``.npz`` files use the array ``X`` (or their only
    array) and add a ``y`` column when a matching 1-D ``y`` is present (ADBench's layout).
    ``dtype`` (CSV/TSV only: other formats store their types) reads the named columns as the
    given types, e.g. ``{"code": str}``. Never unpickles anything. ``.csv.gz`` and ``.tsv.gz``
    are read gzip-compressed. A CSV/TSV header that ends with a delimiter (``a,b,``) adds no
    column: the empty last column is left out with a warning (refused if it holds a value).
    """
    if is_pattern(path):
        frames: list[pd.DataFrame] = []
        empty: list[str] = []
        for f in pattern_files(path):
            try:
                df = read_table(f, columns=columns, dtype=dtype)
            except NoRowsError:
                empty.append(str(f))
                continue
            frames.append(_same_columns(df, frames[0], f, os.fspath(path)) if frames else df)
        if empty:
            _warn_left_out(empty, os.fspath(path))
        if not frames:
            raise NoRowsError(f"the files matched by {os.fspath(path)!r} have no rows")
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    path = Path(path)
    kind = _kind(path)
    unnamed = None
    try:
        if kind in ("csv", "tsv"):
            unnamed = _check_header(path, kind)
            with _parser_checks(path):
                df = pd.read_csv(path, **_csv_options(kind, dtype))
            df = _drop_unnamed_last(df, unnamed, path)
        elif kind == "parquet":
            df = pd.read_parquet(path, columns=list(columns) if columns else None)
        elif kind == "npy":
            df = _array_frame(load_numpy(path, "npy"), path)
        else:
            df = _load_npz(path)
    except DataError:
        raise
    except Exception as exc:
        raise _read_error(exc, path) from exc
    df = _select(df, columns, path)
    if len(df) == 0:
        raise NoRowsError(f"{str(path)!r} has no rows")
    _warn_unnamed_last(unnamed, path)
    return df


def iter_table_chunks(path: str | os.PathLike, *, chunk_rows: int = 100_000,
                      columns: Sequence[str] | None = None,
                      dtype: Mapping[str, Any] | None = None) -> Iterator[pd.DataFrame]:
    """Stream a table in chunks of at most ``chunk_rows`` rows, in bounded memory.

    Chunks carry a RangeIndex that continues across chunks (global row numbers). ``dtype``
    (CSV/TSV only) reads the named columns as the given types in every chunk, as in
    :func:`read_table`: without it each chunk's types are guessed from that chunk alone. A
    table without rows (a CSV header alone, an empty Parquet file or ``.npy``) raises
    :class:`DataError` as :func:`read_table` does, once the table is read to its end (chunks
    never hold 0 rows).
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if is_pattern(path):
        files = pattern_files(path)
        kind = pattern_kind(files, os.fspath(path))
        return _iter_pattern(files, os.fspath(path), kind, chunk_rows, columns, dtype)
    path = Path(path)
    kind = _kind(path)
    return _iter_chunks(path, kind, chunk_rows, columns, dtype)


def _iter_pattern(files: list[Path], pattern: str, kind: str, chunk_rows: int,
                  columns: Sequence[str] | None, dtype: Mapping[str, Any] | None
                  ) -> Iterator[pd.DataFrame]:
    """The chunks of each of a pattern's files in turn, their row numbers running on across
    files, each file's columns checked against the first file's."""
    start = 0
    first: pd.DataFrame | None = None
    empty: list[str] = []
    for f in files:
        try:
            for df in _iter_chunks(f, kind, chunk_rows, columns, dtype):
                if first is None:
                    first = df.iloc[:0]
                else:
                    df = _same_columns(df, first, f, pattern)
                df.index = pd.RangeIndex(start, start + len(df))
                start += len(df)
                yield df
        except NoRowsError:  # raised before any chunk of that file
            empty.append(str(f))
    if empty:
        _warn_left_out(empty, pattern)
    if start == 0:
        raise NoRowsError(f"the files matched by {pattern!r} have no rows")


def _iter_chunks(path: Path, kind: str, chunk_rows: int, columns: Sequence[str] | None,
                 dtype: Mapping[str, Any] | None = None) -> Iterator[pd.DataFrame]:
    start = 0

    def indexed(df: pd.DataFrame) -> pd.DataFrame:
        nonlocal start
        df.index = pd.RangeIndex(start, start + len(df))
        start += len(df)
        return df

    try:
        if kind in ("csv", "tsv"):
            unnamed = _check_header(path, kind)
            with _parser_checks(path):
                reader = pd.read_csv(path, chunksize=chunk_rows,
                                     usecols=list(columns) if columns else None,
                                     **_csv_options(kind, dtype))
            if columns is None:
                _warn_unnamed_last(unnamed, path)
            with reader:
                while True:
                    with _parser_checks(path):  # per chunk: a generator must not hold the filter
                        df = next(reader, None)
                    if df is None:
                        break
                    if len(df):  # a header alone gives one chunk of 0 rows
                        yield indexed(_drop_unnamed_last(df, unnamed, path, start))
        elif kind == "parquet":
            import pyarrow.dataset as ds

            # hive: a partitioned folder's key=value columns, as pandas.read_parquet (and so
            # read_table, which fitted the model) gives them
            dataset = ds.dataset(str(path), format="parquet", partitioning="hive")
            # Read-ahead bounded to one batch and one file: pyarrow's defaults (16 batches,
            # 4 files) decode several row groups ahead and tripled the peak memory of
            # `anovae score` on a 10M-row file; scoring is the bottleneck, not the reading.
            for batch in dataset.to_batches(columns=list(columns) if columns else None,
                                            batch_size=chunk_rows, batch_readahead=1,
                                            fragment_readahead=1):
                if batch.num_rows:
                    yield indexed(batch.to_pandas())
        elif kind == "npy":
            arr = load_numpy(path, "npy", mmap_mode="r")
            _check_array(arr, path)  # before slicing: a 0-d array has no rows to slice
            for i in range(0, arr.shape[0], chunk_rows):
                yield indexed(_select(_array_frame(np.asarray(arr[i:i + chunk_rows]), path),
                                      columns, path))
        else:  # compressed archives have no random access: read once, then slice
            df = _select(_load_npz(path), columns, path)
            for i in range(0, len(df), chunk_rows):
                yield indexed(df.iloc[i:i + chunk_rows].copy())
        if start == 0:
            raise NoRowsError(f"{str(path)!r} has no rows")
    except DataError:
        raise
    except (UnicodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise _read_error(exc, path) from exc
    except ValueError as exc:
        if "Usecols" in str(exc) or "columns" in str(exc):
            raise DataError(f"{str(path)!r}: {exc}") from exc
        raise _read_error(exc, path) from exc
    except Exception as exc:
        raise _read_error(exc, path) from exc


def count_rows(path: str | os.PathLike) -> int | None:
    """The number of rows when cheap to know (Parquet metadata, .npy header), else None."""
    if is_pattern(path):
        try:
            counts = [count_rows(f) for f in pattern_files(path)]
        except DataError:
            return None
        return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]
    path = Path(path)
    try:
        kind = _kind(path)
        if kind == "parquet":
            import pyarrow.dataset as ds

            return int(ds.dataset(str(path), format="parquet", partitioning="hive").count_rows())
        if kind == "npy":
            return int(load_numpy(path, "npy", mmap_mode="r").shape[0])
    except Exception:  # a count is a nicety for progress bars; reading reports real errors
        return None
    return None


def _new_file_mode() -> int:
    """The mode ``open()`` would give a new file: ``0o666`` less the process umask.

    Read from ``/proc/self/status`` where there is one (``os.umask`` can only be read by setting
    it, which races with other threads creating files); elsewhere by setting it to a strict
    value for an instant.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    umask = os.umask(0o077)  # elsewhere: read it by setting it (briefly), then restore it
    os.umask(umask)
    return 0o666 & ~umask


#: The longest file name, in bytes, that common file systems take (ext4, XFS, btrfs, APFS).
NAME_MAX = 255


def _cut_name(name: str, max_bytes: int) -> str:
    """``name`` cut to at most ``max_bytes`` bytes of its file-system encoding, at a character
    boundary."""
    while name and len(os.fsencode(name)) > max_bytes:
        name = name[:-1]
    return name


def _name_fits(path: Path) -> Path:
    """``path``, or :class:`DataError` when its name is longer than :data:`NAME_MAX` bytes
    (checked first: even ``is_symlink`` fails on such a name, with an ``OSError``)."""
    size = len(os.fsencode(path.name))
    if size > NAME_MAX:
        raise DataError(f"cannot write {str(path)!r}: its name is {size} bytes, more than the "
                        f"{NAME_MAX} a file name may have")
    return path


def check_output_path(path: str | os.PathLike, *, folder: bool = False,
                      probe: bool = True) -> Path:
    """Check that ``path`` can be written, before any long work: raise :class:`DataError`
    naming the problem when it is a folder (``folder=False``) or a file (``folder=True``), when
    one of its parent folders is a file, or when the nearest existing folder is not writable.
    Missing parent folders are fine (the writers create them). With ``probe``, a file is
    created in that folder and removed, which finds what permissions do not show (a read-only
    mount, an ACL, for root too). Returns ``path`` as a Path.
    """
    path = _name_fits(Path(path))
    shown = str(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise DataError(f"cannot write the folder {shown!r}: a file of that name exists")
        nearest = path
    else:
        if path.is_dir():
            raise DataError(f"cannot write {shown!r}: it is a folder; give the name of a file "
                            "to write")
        nearest = path.parent
    while not nearest.exists() and not nearest.is_symlink() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        raise DataError(f"cannot write {shown!r}: {str(nearest)!r} is not a folder")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise DataError(f"cannot write {shown!r}: no permission to write in {str(nearest)!r}")
    if probe:  # what access() cannot tell: a read-only mount or ACL for root, a root squash
        try:
            fd, name = tempfile.mkstemp(prefix=".anovae-write-check-", dir=nearest)
        except OSError as exc:
            raise DataError(f"cannot write {shown!r}: cannot create a file in {str(nearest)!r} "
                            f"({exc.strerror or exc})") from None
        try:
            os.close(fd)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); move it onto ``path`` on success.

    On an exception the temporary file is removed and an existing ``path`` is left untouched.
    The result gets the mode of the file it replaces, or a new file's usual mode (the private
    0600 of the temporary file would hide models and scores from the user's group). A ``path``
    that is a symbolic link is written through: the file it points to is replaced (the
    temporary file lies beside that one) and the link is kept.
    """
    path = _name_fits(Path(path))
    if path.is_symlink():  # replace what it points to, not the link
        path = Path(os.path.realpath(path))
    path = check_output_path(path, probe=False)  # its own temporary file is the probe
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    if len(os.fsencode(suffix)) > 16:  # "a.b.c..." names: the last suffix tells the format
        suffix = path.suffix or ".tmp"
    # the temporary name is ".STEM.XXXXXXXX.tmpSUFFIX": the stem is cut to keep it within
    # NAME_MAX bytes (a 240-byte name failed after a whole fit: "File name too long")
    room = NAME_MAX - len(os.fsencode(f"..XXXXXXXX.tmp{suffix}"))
    if room < 1:  # a long last suffix ("model.vvvv...v"): the temporary name keeps none
        suffix = ".tmp"
        room = NAME_MAX - len(os.fsencode(f"..XXXXXXXX.tmp{suffix}"))
    stem = _cut_name(path.stem, room) or "anovae"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}",
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            try:
                mode = path.stat().st_mode & 0o777
            except FileNotFoundError:
                mode = _new_file_mode()
            except OSError:  # unreadable target (permissions, a link loop): keep it private
                mode = 0o600
            with contextlib.suppress(OSError):  # some file systems (vfat, CIFS) refuse chmod
                os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


class TableWriter:
    """Write a table chunk by chunk, atomically (format from the suffix of ``path``).

    CSV/TSV and Parquet are appended as chunks arrive; ``.npy``/``.npz`` are collected and written
    at the end (``.npz``: one array per column; ``.npy``: the numeric columns as a 2-D array).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "out.csv"
    >>> with TableWriter(p) as w:
    ...     w.write(pd.DataFrame({"a": [1, 2]}))
    >>> p.read_text().splitlines()
    ['a', '1', '2']
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        ext = _suffix(self.path)
        if ext not in _KINDS:
            raise DataError(f"unsupported output type {ext!r} for {str(self.path)!r}; "
                            "supported: " + ", ".join(SUPPORTED_EXTENSIONS))
        self.kind = _KINDS[ext]
        self._ctx: contextlib.AbstractContextManager[Path] | None = None
        self._tmp: Path | None = None
        self._parts: list[pd.DataFrame] = []
        self._pq: Any = None
        self._header = True

    def __enter__(self) -> TableWriter:
        self._ctx = atomic_output(self.path)
        self._tmp = self._ctx.__enter__()
        return self

    def write(self, df: pd.DataFrame) -> None:
        """Append a chunk."""
        assert self._tmp is not None, "use TableWriter as a context manager"
        if self.kind in ("csv", "tsv"):
            df.to_csv(self._tmp, sep="\t" if self.kind == "tsv" else ",", index=False,
                      header=self._header, mode="w" if self._header else "a",
                      compression="gzip" if self.path.name.lower().endswith(".gz") else None)
            self._header = False
        elif self.kind == "parquet":
            import pyarrow.parquet as pq

            table = self._arrow_table(df)
            if self._pq is None:
                self._pq = pq.ParquetWriter(self._tmp, table.schema)
            self._pq.write_table(table)
        else:
            self._parts.append(df)

    def _arrow_table(self, df: pd.DataFrame) -> Any:
        """``df`` as an Arrow table of the file's schema (the first chunk's).

        Object columns mixing text with other values (numbers, booleans) are written as text;
        a column Arrow still cannot convert, or one whose type differs from the first chunk's,
        raises :class:`DataError` naming it.
        """
        import pyarrow as pa

        mixed = [c for c in df.columns if df[c].dtype == object and _mixes_text(df[c])]
        if mixed:
            df = df.copy()
            for c in mixed:
                df[c] = _stringified(df[c])
        schema = self._pq.schema if self._pq is not None else None
        try:
            table = pa.Table.from_pandas(df, preserve_index=False)
            return table if schema is None else table.cast(schema)
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise self._column_error(df, schema, exc) from exc

    def _column_error(self, df: pd.DataFrame, schema: Any, exc: Exception) -> DataError:
        """The :class:`DataError` for a chunk Arrow refused: which column, and why."""
        import pyarrow as pa

        where = str(self.path)
        for c in df.columns:
            name = str(c)
            try:
                arr = pa.Array.from_pandas(df[c])
            except (pa.ArrowException, ValueError, TypeError) as err:
                return DataError(f"cannot write column {name!r} to {where!r}: its values cannot "
                                 f"be stored in Parquet ({err})")
            if schema is not None and name in schema.names:
                want = schema.field(name).type
                try:
                    arr.cast(want)
                except (pa.ArrowException, ValueError, TypeError):
                    return DataError(f"cannot write column {name!r} to {where!r}: it holds "
                                     f"{arr.type} values in a later chunk where the first chunk "
                                     f"had {want}")
        if schema is not None and [str(c) for c in df.columns] != list(schema.names):
            return DataError(f"cannot write {where!r}: the columns changed from one chunk to the "
                             f"next ({list(schema.names)} then {[str(c) for c in df.columns]})")
        return DataError(f"cannot write {where!r}: {exc}")

    def _finish(self) -> None:
        assert self._tmp is not None
        if self.kind in ("csv", "tsv") and self._header:
            self._tmp.write_text("")
        elif self.kind == "parquet" and self._pq is not None:
            self._pq.close()
        elif self.kind in ("npy", "npz"):
            df = pd.concat(self._parts, ignore_index=True) if self._parts else pd.DataFrame()
            if self.kind == "npz":
                arrays = {}
                for c in df.columns:
                    col = df[c].to_numpy()
                    arrays[str(c)] = col.astype(str) if col.dtype == object else col
                with open(self._tmp, "wb") as f:
                    np.savez(f, **arrays)
            else:
                num = df.select_dtypes(include=["number", "bool"])
                if num.shape[1] != df.shape[1]:
                    bad = [c for c in df.columns if c not in num.columns]
                    raise DataError(f".npy output holds numbers only; non-numeric columns {bad}: "
                                    "write .npz, .csv or .parquet instead (or, for a numeric "
                                    "table, score with --top-features 0 and no --id-column "
                                    "of text)")
                with open(self._tmp, "wb") as f:
                    np.save(f, num.to_numpy(dtype=np.float64))

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._ctx is not None
        try:
            if exc_type is None:
                self._finish()
            elif self._pq is not None:
                with contextlib.suppress(Exception):
                    self._pq.close()
        except BaseException as err:
            self._ctx.__exit__(type(err), err, err.__traceback__)
            raise
        self._ctx.__exit__(exc_type, exc, tb)


def _is_missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))


def _mixes_text(s: pd.Series) -> bool:
    """Whether an object column holds text alongside other (non-missing) values."""
    kinds = {isinstance(v, str) for v in s if not _is_missing(v)}
    return len(kinds) == 2


def _stringified(s: pd.Series) -> pd.Series:
    """``s`` as text (pandas' ``string`` dtype), missing values kept missing."""
    return s.map(lambda v: None if _is_missing(v) else str(v)).astype("string")


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` to ``path`` (format from the suffix), atomically."""
    with TableWriter(path) as w:
        w.write(df)
