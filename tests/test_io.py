"""Table IO: every format round-trips, chunks stream with global row numbers, writes are atomic,
and every user mistake is a DataError naming the file."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anovae.exceptions import DataError
from anovae.io import (
    TableWriter,
    atomic_output,
    check_output_path,
    count_rows,
    iter_table_chunks,
    read_table,
    write_table,
)

FORMATS = [".csv", ".csv.gz", ".tsv", ".parquet", ".npz"]


def _frame(n: int = 23) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 9, n).astype(float),
                         "c": np.linspace(-1, 1, n)})


@pytest.mark.parametrize("ext", FORMATS)
def test_write_read_round_trip(tmp_path: Path, ext: str) -> None:
    df = _frame()
    path = tmp_path / f"t{ext}"
    write_table(df, path)
    back = read_table(path)
    assert list(back.columns) == ["a", "b", "c"]
    np.testing.assert_allclose(back.to_numpy(dtype=float), df.to_numpy(), rtol=1e-12)
    if ext == ".csv.gz":
        with gzip.open(path, "rt") as f:  # really compressed, not a plain file named .gz
            assert f.readline().strip() == "a,b,c"


def test_npy_round_trip_names_columns(tmp_path: Path) -> None:
    df = _frame()
    write_table(df, tmp_path / "t.npy")
    back = read_table(tmp_path / "t.npy")
    assert list(back.columns) == ["x0", "x1", "x2"]
    np.testing.assert_array_equal(back.to_numpy(), df.to_numpy())


def test_npz_with_labels_adds_a_y_column(tmp_path: Path) -> None:
    X = np.arange(12.0).reshape(6, 2)
    y = np.array([0, 0, 1, 0, 1, 0])
    np.savez(tmp_path / "adb.npz", X=X, y=y)
    df = read_table(tmp_path / "adb.npz")
    assert list(df.columns) == ["x0", "x1", "y"]
    np.testing.assert_array_equal(df["y"], y)
    assert list(read_table(tmp_path / "adb.npz", columns=["x1"]).columns) == ["x1"]


@pytest.mark.parametrize("ext", [*FORMATS, ".npy"])
def test_chunks_cover_every_row_once_with_global_row_numbers(tmp_path: Path, ext: str) -> None:
    df = _frame(23)
    path = tmp_path / f"t{ext}"
    write_table(df, path)
    chunks = list(iter_table_chunks(path, chunk_rows=5))
    assert [len(c) for c in chunks] == [5, 5, 5, 5, 3]
    whole = pd.concat(chunks)
    assert list(whole.index) == list(range(23))
    np.testing.assert_allclose(whole.to_numpy(dtype=float), df.to_numpy(), rtol=1e-12)


def test_parquet_folder_is_read_as_one_table(tmp_path: Path) -> None:
    df = _frame(30)
    folder = tmp_path / "ds"
    folder.mkdir()
    for i in range(3):
        df.iloc[i * 10:(i + 1) * 10].to_parquet(folder / f"part-{i}.parquet", index=False)
    assert count_rows(folder) == 30
    assert len(read_table(folder)) == 30
    chunks = list(iter_table_chunks(folder, chunk_rows=4, columns=["b"]))
    assert sum(len(c) for c in chunks) == 30
    assert all(list(c.columns) == ["b"] for c in chunks)
    assert pd.concat(chunks).index.is_monotonic_increasing


def test_count_rows_is_cheap_or_none(tmp_path: Path) -> None:
    df = _frame(11)
    write_table(df, tmp_path / "t.parquet")
    write_table(df, tmp_path / "t.npy")
    write_table(df, tmp_path / "t.csv")
    assert count_rows(tmp_path / "t.parquet") == 11
    assert count_rows(tmp_path / "t.npy") == 11
    assert count_rows(tmp_path / "t.csv") is None  # would need a full scan
    assert count_rows(tmp_path / "missing.parquet") is None


def test_atomic_output_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "model.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.txt"]  # no temporary left behind
    with atomic_output(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


@pytest.mark.parametrize("name", ["b" * 240 + ".safetensors", "é" * 120 + ".csv",
                                  "a.b.c.d.e.f.g.h.i.j." + "x" * 200 + ".parquet",
                                  "model." + "v" * 240])
def test_atomic_output_to_a_long_file_name(tmp_path: Path, name: str) -> None:
    # the temporary ".NAME.XXXXXXXX.tmp.SUFFIX" outgrew the 255-byte limit of a valid name:
    # "File name too long", after a whole fit
    with atomic_output(tmp_path / name) as tmp:
        tmp.write_text("x")
        assert len(os.fsencode(tmp.name)) <= 255 and tmp.name.startswith(".")
    assert [p.name for p in tmp_path.iterdir()] == [name]
    too_long = tmp_path / ("c" * 250 + ".safetensors")
    for call in (lambda: check_output_path(too_long), lambda: atomic_output(too_long).__enter__()):
        with pytest.raises(DataError, match="its name is 262 bytes, more than the 255"):
            call()


def test_atomic_output_gives_new_files_the_usual_mode_and_keeps_a_replaced_file_s(
        tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        with atomic_output(tmp_path / "new.csv") as tmp:
            tmp.write_text("a")
        with atomic_output(tmp_path / "model.safetensors") as tmp:  # through save too
            tmp.write_text("b")
    finally:
        os.umask(old)
    assert (tmp_path / "new.csv").stat().st_mode & 0o777 == 0o640  # not mkstemp's 0600
    kept = tmp_path / "kept.txt"
    kept.write_text("x")
    kept.chmod(0o604)
    with atomic_output(kept) as tmp:
        tmp.write_text("y")
    assert kept.stat().st_mode & 0o777 == 0o604


def test_table_writer_failure_leaves_no_partial_output(tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    with pytest.raises(ValueError), TableWriter(out) as w:
        w.write(_frame(5))
        raise ValueError("scoring failed half-way")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_npy_output_refuses_text_columns(tmp_path: Path) -> None:
    df = pd.DataFrame({"id": ["a", "b"], "score": [1.0, 2.0]})
    with pytest.raises(DataError, match=r"\.npy output holds numbers only.*'id'"):
        write_table(df, tmp_path / "o.npy")
    assert not (tmp_path / "o.npy").exists()
    write_table(df, tmp_path / "o.npz")  # .npz keeps text columns as strings
    with np.load(tmp_path / "o.npz", allow_pickle=False) as z:
        assert list(z["id"]) == ["a", "b"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.csv", None, "does not exist"),
        ("data.xlsx", b"x", "unsupported file type '.xlsx'"),
        ("empty.csv", b"", "is empty"),
        ("header_only.csv", b"a,b\n", "has no rows"),
        ("bad.parquet", b"not a parquet file", "cannot read"),
        ("bad.npz", b"garbage", "is not a valid .npz archive"),
        ("bad.npy", b"garbage", "is not a valid .npy array"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path: Path, name: str, content: bytes | None,
                                      message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        read_table(path)
    assert name in str(err.value)
    assert "pickle" not in str(err.value)  # NumPy's advice for a file without its header


def test_array_files_must_be_numeric_tables(tmp_path: Path) -> None:
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4)))
    with pytest.raises(DataError, match=r"shape \(2, 3, 4\).*2-D"):
        read_table(tmp_path / "cube.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="holds Python objects") as err:  # never unpickled
        read_table(tmp_path / "obj.npy")
    assert "pickle" not in str(err.value)
    with pytest.raises(DataError, match="holds Python objects"):  # streamed (memory-mapped)
        list(iter_table_chunks(tmp_path / "obj.npy"))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cube.npy").read_bytes()[:-8])
    with pytest.raises(DataError, match="cut.npy' is cut short or corrupt: its header declares"):
        read_table(tmp_path / "cut.npy")
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 2)), b=np.zeros((3, 2)))
    with pytest.raises(DataError, match="name the table 'X'"):
        read_table(tmp_path / "two.npz")


def test_folder_without_parquet_and_missing_columns(tmp_path: Path) -> None:
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match="holds no .parquet files and no .png/.jpg/.jpeg images$"):
        read_table(tmp_path / "empty_dir")
    deep = tmp_path / "deep" / "cls" / "sub"  # images two levels down are not read: say where
    deep.mkdir(parents=True)
    (deep / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"no .png/.jpg/.jpeg images where they are read .*"
                                        r"'cls/sub/x.png' lies deeper"):
        read_table(tmp_path / "deep")
    write_table(_frame(), tmp_path / "t.csv")
    with pytest.raises(DataError, match=r"no column\(s\) \['zz'\]"):
        read_table(tmp_path / "t.csv", columns=["a", "zz"])
    with pytest.raises(DataError, match="zz"):
        list(iter_table_chunks(tmp_path / "t.csv", columns=["zz"]))
    with pytest.raises(ValueError, match="chunk_rows"):
        iter_table_chunks(tmp_path / "t.csv", chunk_rows=0)


def test_trailing_delimiter_does_not_shift_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,c\n1.5,10.0,x,\n2.5,11.0,y,\n")  # one empty field too many per row
    for df in (read_table(path), next(iter_table_chunks(path, chunk_rows=1))):
        assert list(df.columns) == ["a", "b", "c"]
        assert df["a"].iloc[0] == 1.5 and df["b"].iloc[0] == 10.0 and df["c"].iloc[0] == "x"
    whole = pd.concat(iter_table_chunks(path, chunk_rows=1))
    assert whole["c"].tolist() == ["x", "y"] and list(whole.index) == [0, 1]


def test_rows_longer_than_the_header_are_an_error_not_lost_data(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n1,2,3\n4,5\n")
    with pytest.raises(DataError, match="ragged.csv.*more fields than its header"):
        read_table(path)
    with pytest.raises(DataError, match="more fields than its header"):
        list(iter_table_chunks(path, chunk_rows=1))


def test_dtype_reads_columns_as_text_in_every_chunk(tmp_path: Path) -> None:
    path = tmp_path / "codes.csv"
    pd.DataFrame({"code": ["001", "002", "003", "A07"], "v": [1.0, 2.0, 3.0, 4.0]}).to_csv(
        path, index=False)
    assert pd.concat(iter_table_chunks(path, chunk_rows=1))["code"].tolist()[:3] == [1, 2, 3]
    for chunks in (list(iter_table_chunks(path, chunk_rows=1, dtype={"code": str, "zz": str})),
                   [read_table(path, dtype={"code": str})]):
        assert pd.concat(chunks)["code"].tolist() == ["001", "002", "003", "A07"]
        assert pd.concat(chunks)["v"].dtype == np.float64  # the other columns keep their types


def test_check_output_path_refuses_folders_and_files_in_the_way(tmp_path: Path) -> None:
    from anovae.io import check_output_path

    (tmp_path / "outdir").mkdir()
    (tmp_path / "f.csv").write_text("a\n1\n")
    with pytest.raises(DataError, match="'.*outdir': it is a folder"):
        check_output_path(tmp_path / "outdir")
    with pytest.raises(DataError, match=r"f\.csv/m\.safetensors'.*f\.csv' is not a folder"):
        check_output_path(tmp_path / "f.csv" / "m.safetensors")
    with pytest.raises(DataError, match="f.csv' is not a folder"):
        check_output_path(tmp_path / "f.csv" / "deeper" / "m.safetensors")
    with pytest.raises(DataError, match="a file of that name exists"):
        check_output_path(tmp_path / "f.csv", folder=True)
    assert check_output_path(tmp_path / "new" / "sub" / "m.csv") == tmp_path / "new/sub/m.csv"
    assert check_output_path(tmp_path / "outdir", folder=True) == tmp_path / "outdir"
    assert check_output_path(tmp_path / "f.csv") == tmp_path / "f.csv"  # replaced: fine
    assert not (tmp_path / "new").exists()  # a check creates nothing


def test_check_output_path_refuses_a_read_only_folder(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from anovae.io import check_output_path

    seen: list[str] = []

    def no_access(path: object, mode: int) -> bool:  # as a non-root user in a 0555 folder
        seen.append(str(path))
        return False

    monkeypatch.setattr(os, "access", no_access)
    with pytest.raises(DataError, match="no permission to write in") as err:
        check_output_path(tmp_path / "ro" / "sub" / "m.csv")
    assert repr(str(tmp_path)) in str(err.value)
    assert seen == [str(tmp_path)]  # the nearest folder that exists


def test_check_output_path_tries_a_write_where_access_cannot_tell(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As root, ``os.access`` says yes on a read-only mount: a file created (and removed) in
    the nearest folder finds it before any long work, not when the output is written."""
    import errno
    import tempfile

    from anovae.io import check_output_path

    check_output_path(tmp_path / "m.csv")
    check_output_path(tmp_path / "sub" / "out", folder=True)
    assert list(tmp_path.iterdir()) == []  # the probe files are gone

    def read_only(*args: object, **kwargs: object) -> tuple[int, str]:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(DataError, match="cannot create a file in") as err:
        check_output_path(tmp_path / "m.csv")
    assert repr(str(tmp_path)) in str(err.value) and "Read-only file system" in str(err.value)


def test_atomic_output_onto_a_folder_is_a_data_error_and_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outdir" / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="it is a folder"), atomic_output(tmp_path / "outdir"):
        pass
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["keep.txt", "outdir"]


def test_parquet_writer_stringifies_mixed_text_and_numbers(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    with TableWriter(out) as w:
        w.write(pd.DataFrame({"v": pd.Series([1.5, "x", None], dtype=object), "n": [1, 2, 3]}))
        w.write(pd.DataFrame({"v": pd.Series(["y", 2.0, True], dtype=object), "n": [4, 5, 6]}))
    back = pd.read_parquet(out)
    assert back["v"].tolist()[:2] == ["1.5", "x"] and back["v"].isna().tolist()[2]
    assert back["v"].tolist()[3:] == ["y", "2.0", "True"]
    assert back["n"].tolist() == [1, 2, 3, 4, 5, 6]


def test_parquet_type_clash_between_chunks_is_a_data_error_naming_the_column(
        tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    (tmp_path / "o.parquet").write_bytes(b"old")
    with pytest.raises(DataError, match="column 'id'.*first chunk had int64"), \
            TableWriter(out) as w:
        w.write(pd.DataFrame({"id": [1, 2], "s": [0.1, 0.2]}))
        w.write(pd.DataFrame({"id": ["X3", "4"], "s": [0.3, 0.4]}))
    assert out.read_bytes() == b"old"  # the old file is left as it was
    assert [p.name for p in tmp_path.iterdir()] == ["o.parquet"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("semi.csv", "amount;city;n\n51.89;Lyon;2\n44.77;Paris;4\n", r"delimited by ';'"),
        # a comma inside a field made pandas fail with "Error tokenizing data"
        ("semi_comma.csv", "a;city\n1;Lyon\n2;Saint-Denis, 93\n", r"delimited by ';'"),
        ("tabs.csv", "a\tb\n1\t2\n", r"delimited by '\\t'"),
        ("pipes.csv", "a|b\n1|2\n", r"delimited by '\|'"),
        ("commas.tsv", "a,b\n1,2\n", r"delimited by ','"),
        ("ragged.csv", "a,b\n1,2\n3,4\n5,6,7\n", r"line 4 has 3 fields but the header has 2"),
        ("dup.csv", "a,a,b,b,c\n1,2,3,4,5\n", r"duplicate column names \['a', 'b'\]"),
    ],
)
def test_misread_csv_files_are_refused_by_name(tmp_path: Path, name: str, text: str,
                                                message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        read_table(path)
    assert name in str(err.value) and "tokenizing" not in str(err.value)
    with pytest.raises(DataError, match=message):
        list(iter_table_chunks(path, chunk_rows=1))


def test_semicolon_csv_gz_and_one_column_csv(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("amount;city\n1.5;Lyon\n")
    with pytest.raises(DataError, match=r"semi\.csv\.gz' looks delimited by ';'.*convert it: "
                                        r"anovae reads comma-separated \.csv and tab-separated "
                                        r"\.tsv files"):
        read_table(path)
    (tmp_path / "one.csv").write_text("amount\n1.5\n2.5\n")  # one column: nothing to refuse
    assert read_table(tmp_path / "one.csv")["amount"].tolist() == [1.5, 2.5]
    # one column whose name holds a delimiter, quoted or not: its rows do not split alike
    (tmp_path / "q.csv").write_text('"a;b"\n1\n2\n')
    (tmp_path / "p.csv").write_text("price|usd\n1\n2\n")
    (tmp_path / "n.tsv").write_text("Last, First\nx\n")
    assert read_table(tmp_path / "q.csv").columns.tolist() == ["a;b"]
    assert read_table(tmp_path / "p.csv")["price|usd"].tolist() == [1, 2]
    assert read_table(tmp_path / "n.tsv").columns.tolist() == ["Last, First"]
    (tmp_path / "c.tsv").write_text("a,b\n1,2\n")  # a comma-separated file named .tsv
    with pytest.raises(DataError, match=r"delimited by ','.*rename it to \.csv"):
        read_table(tmp_path / "c.tsv")


def test_non_utf8_csv_is_named_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"city,n\n" + "Orléans,1\n".encode("latin-1") * 3)
    message = r"'.*latin1\.csv' is not UTF-8 text \(byte 0xe9 .*re-encode it as UTF-8"
    with pytest.raises(DataError, match=message):
        read_table(path)
    late = tmp_path / "late.csv"  # the bad byte in a later chunk of a chunked read
    late.write_bytes(b"city,n\n" + b"Paris,1\n" * 5000 + "Orléans,1\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"late\.csv' is not UTF-8 text") as err:
        list(iter_table_chunks(late, chunk_rows=100))
    assert "codec" not in str(err.value)


# -- odd files: European CSV, gzip, NumPy headers, names, empty tables, links ------------------
def test_semicolons_with_decimal_commas_get_the_semicolon_hint(tmp_path: Path) -> None:
    path = tmp_path / "euro.csv"
    path.write_text("a;b\n1,5;2\n3,25;4\n")  # was "has rows with more fields than its header"
    for read in (read_table, lambda p: list(iter_table_chunks(p))):
        with pytest.raises(DataError, match=r"euro.csv' looks delimited by ';' with decimal "
                                            r"commas .*sep=';', decimal=','"):
            read(path)
    (tmp_path / "price.csv").write_text("price;usd\n1,5\n")  # ";" in a name, not between
    with pytest.raises(DataError, match="more fields than its header"):  # fields: no hint
        read_table(tmp_path / "price.csv")
    (tmp_path / "price.csv").write_text("price;usd\n1.5\n")
    assert list(read_table(tmp_path / "price.csv").columns) == ["price;usd"]


def test_gzip_named_csv_is_named_and_tsv_gz_is_read(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "t.csv", "wt") as f:
        f.write("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"/t.csv' is gzip-compressed, but its name ends in "
                                        r"'.csv': rename it to 't.csv.gz'"):
        read_table(tmp_path / "t.csv")
    with pytest.raises(DataError, match="gzip-compressed"):
        list(iter_table_chunks(tmp_path / "t.csv"))
    df = _frame()
    write_table(df, tmp_path / "t.tsv.gz")
    with gzip.open(tmp_path / "t.tsv.gz", "rt") as f:
        assert f.readline() == "a\tb\tc\n"
    back = read_table(tmp_path / "t.tsv.gz")
    np.testing.assert_allclose(back.to_numpy(dtype=float), df.to_numpy(), rtol=1e-12)
    assert sum(len(c) for c in iter_table_chunks(tmp_path / "t.tsv.gz", chunk_rows=5)) == 23


def _huge_header_npy(path: Path) -> None:
    """A .npy whose header declares 800 TB (a corrupt header), followed by 64 bytes."""
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000, 1000), }"
    header += b" " * (117 - len(header)) + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
                     + b"\0" * 64)


def test_odd_npy_files_get_one_line_errors(tmp_path: Path) -> None:
    np.save(tmp_path / "fields.npy", np.zeros(3, dtype=[("a", "f8"), ("b", "i4")]))
    np.save(tmp_path / "scalar.npy", np.float64(3))
    _huge_header_npy(tmp_path / "huge.npy")
    cases = {"fields.npy": r"holds a structured array \(fields \['a', 'b'\]\)",  # "no field x0"
             "scalar.npy": r"holds an array of shape \(\); table data must be 2-D",
             "huge.npy": r"huge.npy' is cut short or corrupt: its header declares an array of "
                         r"shape \(100000000000, 1000\) \(float64, 800,000,000,000,000 bytes\), "
                         r"but it holds 64 bytes of data"}  # "Unable to allocate 728. TiB"
    for name, message in cases.items():
        with pytest.raises(DataError, match=message):
            read_table(tmp_path / name)
        with pytest.raises(DataError, match=message):  # "tuple index out of range" for 0-d
            list(iter_table_chunks(tmp_path / name))
    assert count_rows(tmp_path / "huge.npy") is None


def test_npz_labels_of_the_wrong_length_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "xy.npz", X=np.zeros((3, 2)), y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"its labels 'y' \(2 labels\) do not match its 3 rows"):
        read_table(tmp_path / "xy.npz")  # y was dropped silently
    np.savez(tmp_path / "y2d.npz", X=np.zeros((3, 2)), y=np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"labels 'y' \(shape \(3, 2\)\)"):
        read_table(tmp_path / "y2d.npz")
    np.savez(tmp_path / "ok.npz", X=np.zeros((3, 2)), y=np.array([0, 1, 0]))
    assert list(read_table(tmp_path / "ok.npz").columns) == ["x0", "x1", "y"]


def test_corrupt_npz_archives_and_members_are_data_errors(tmp_path: Path) -> None:
    import io
    import zipfile

    np.savez_compressed(tmp_path / "good.npz", X=np.arange(4000.0).reshape(1000, 4))
    raw = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[:3000])  # `head -c 3000`: BadZipFile
    with zipfile.ZipFile(tmp_path / "raw.npz", "w") as zf:  # a member that is no .npy
        zf.writestr("X.npy", b"\x80\x04not an array")
    buf = io.BytesIO()  # a member whose header declares more than it holds
    _huge_header_npy(tmp_path / "huge.npy")
    buf.write((tmp_path / "huge.npy").read_bytes())
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as zf:
        zf.writestr("X.npy", buf.getvalue())
    cases = {"cut.npz": r"cut.npz' is not a valid .npz archive: corrupt or cut short",
             "raw.npz": r"array 'X' of '.*raw.npz' is not a NumPy array: it lacks the .npy "
                        r"header",
             "huge.npz": r"array 'X' of '.*huge.npz' is cut short or corrupt: its header "
                         r"declares an array of shape \(100000000000, 1000\)"}
    for name, message in cases.items():
        with pytest.raises(DataError, match=message):
            read_table(tmp_path / name)
        with pytest.raises(DataError, match=message):
            list(iter_table_chunks(tmp_path / name))


def test_names_that_differ_only_in_spaces_are_refused(tmp_path: Path) -> None:
    (tmp_path / "ws.csv").write_text("a,a \n1,2\n")
    with pytest.raises(DataError, match=r"column names that differ only in surrounding spaces: "
                                        r"\['a', 'a '\]"):
        read_table(tmp_path / "ws.csv")
    with pytest.raises(DataError, match="surrounding spaces"):
        list(iter_table_chunks(tmp_path / "ws.csv"))


def test_the_empty_column_of_a_trailing_delimiter_is_left_out(tmp_path: Path) -> None:
    path = tmp_path / "trail.csv"
    path.write_text("a,b,\n1,2,\n3,4,\n5,6,\n")
    with pytest.warns(UserWarning, match=r"header ends with a delimiter; the empty last column "
                                         r"this adds \('Unnamed: 2'"):
        df = read_table(path)
    assert list(df.columns) == ["a", "b"]  # an all-NaN column the model was fitted on
    with pytest.warns(UserWarning, match="ends with a delimiter"):
        chunks = list(iter_table_chunks(path, chunk_rows=2))
    assert [list(c.columns) for c in chunks] == [["a", "b"]] * 2
    # a value under the unnamed column: a column without a name, not a trailing delimiter
    path.write_text("a,b,\n1,2,\n3,4,\n5,6,7\n")
    with pytest.raises(DataError, match=r"header ends with a delimiter \(a last column with no "
                                        r"name\), but data row 3 holds a value there \('7.0'\)"):
        read_table(path)
    with pytest.raises(DataError, match="data row 3 holds a value"), pytest.warns(UserWarning):
        list(iter_table_chunks(path, chunk_rows=2))  # found in the second chunk
    (tmp_path / "rows.csv").write_text("a,b\n1,2,\n3,4,\n")  # rows only: no column added
    assert list(read_table(tmp_path / "rows.csv").columns) == ["a", "b"]


def test_tables_without_rows_are_refused_in_chunks_too(tmp_path: Path) -> None:
    (tmp_path / "head.csv").write_text("a,b\n")
    pd.DataFrame({"a": pd.Series([], dtype=float)}).to_parquet(tmp_path / "none.parquet")
    np.save(tmp_path / "none.npy", np.zeros((0, 3)))
    for name in ("head.csv", "none.parquet", "none.npy"):
        with pytest.raises(DataError, match=f"/{name}' has no rows$"):
            read_table(tmp_path / name)
        with pytest.raises(DataError, match=f"/{name}' has no rows$"):  # were 0-row chunks or none
            list(iter_table_chunks(tmp_path / name))


def test_atomic_output_writes_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "data" / "scores.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "latest.csv"
    link.symlink_to(target)
    write_table(pd.DataFrame({"a": [1]}), link)
    assert link.is_symlink() and os.readlink(link) == str(target)  # was a regular file
    assert target.read_text() == "a\n1\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["scores.csv"]
    dangling = tmp_path / "next.csv"
    dangling.symlink_to(tmp_path / "data" / "new.csv")
    with atomic_output(dangling) as tmp:
        assert tmp.parent == target.parent
        tmp.write_text("x\n")
    assert dangling.is_symlink() and (tmp_path / "data" / "new.csv").read_text() == "x\n"


@pytest.mark.parametrize("ext", [".csv", ".parquet", ".npy"])
def test_a_glob_pattern_reads_its_files_in_name_order(tmp_path: Path, ext: str) -> None:
    rng = np.random.default_rng(0)
    parts = [pd.DataFrame(rng.normal(size=(n, 3)), columns=["x0", "x1", "x2"]) for n in (7, 5, 9)]
    for i, part in enumerate(parts):
        write_table(part, tmp_path / f"day-{i}{ext}")
    whole = pd.concat(parts, ignore_index=True)
    pattern = str(tmp_path / f"day-*{ext}")
    pd.testing.assert_frame_equal(read_table(pattern), whole, check_exact=False, rtol=1e-6)
    chunks = list(iter_table_chunks(pattern, chunk_rows=4))
    assert [len(c) for c in chunks] == [4, 3, 4, 1, 4, 4, 1]  # within each file, then the next
    joined = pd.concat(chunks)
    assert joined.index.tolist() == list(range(21))  # row numbers run on across the files
    np.testing.assert_allclose(joined.to_numpy(), whole.to_numpy(), rtol=1e-6)
    assert count_rows(pattern) == (None if ext == ".csv" else 21)


def test_a_glob_pattern_s_files_must_agree(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    write_table(df, tmp_path / "p-0.csv")
    write_table(df[["b", "a"]], tmp_path / "p-1.csv")  # the same columns in another order
    got = read_table(str(tmp_path / "p-*.csv"))
    assert got.columns.tolist() == ["a", "b"] and got["b"].tolist() == [3.0, 4.0, 3.0, 4.0]
    write_table(df[["a"]], tmp_path / "p-2.csv")
    for read in (read_table, lambda p: list(iter_table_chunks(p))):
        with pytest.raises(DataError, match=r"p-2.csv' \(matched by .*\) has other columns than "
                                            r"the first file matched: missing \['b'\]"):
            read(str(tmp_path / "p-*.csv"))
    np.save(tmp_path / "p-3.npy", np.zeros((2, 2)))
    with pytest.raises(DataError, match="matches tables of several kinds .csv such as .*npy "
                                        "such as"):
        read_table(str(tmp_path / "p-*"))
    with pytest.raises(DataError, match="no files match the pattern"):
        read_table(str(tmp_path / "q-*.csv"))
    odd = tmp_path / "odd[1].csv"  # a file whose name holds glob characters is that file
    write_table(df, odd)
    pd.testing.assert_frame_equal(read_table(odd), df)


def test_the_cli_fits_and_scores_a_glob_pattern(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from anovae.cli import app

    rng = np.random.default_rng(1)
    for i in range(3):
        pd.DataFrame(rng.normal(size=(40, 3)), columns=list("abc")).to_csv(
            tmp_path / f"day-{i}.csv", index=False)
    pattern, model = str(tmp_path / "day-*.csv"), str(tmp_path / "m.safetensors")
    runner = CliRunner()
    res = runner.invoke(app, ["fit", pattern, "-o", model, "--epochs", "1", "--seed", "0"])
    assert res.exit_code == 0 and "on 120 rows x 3 columns" in res.output, res.output
    res = runner.invoke(app, ["score", model, pattern, "-o", str(tmp_path / "s.csv")])
    assert res.exit_code == 0, res.output
    assert pd.read_csv(tmp_path / "s.csv")["row"].tolist() == list(range(120))
    res = runner.invoke(app, ["score", model, pattern, "-o", str(tmp_path / "day-1.csv")])
    assert res.exit_code == 2 and "it matches the pattern of the data to score" in res.output


def test_a_double_star_pattern_reads_each_parquet_file_once(tmp_path: Path) -> None:
    from anovae.io import pattern_matches
    from anovae.outofcore import parquet_files

    df = pd.DataFrame({"a": np.arange(5.0)})
    (tmp_path / "pq" / "sub").mkdir(parents=True)
    write_table(df, tmp_path / "pq" / "part-1.parquet")
    write_table(df, tmp_path / "pq" / "sub" / "part-0.parquet")
    (tmp_path / "pq" / "notes").mkdir()  # a folder of no tables: a way to files, not one
    for pattern in ("pq/**", "pq/**/*.parquet", "p*"):
        text = str(tmp_path / pattern)
        assert len(read_table(text)) == 10, pattern  # not 20: the folder and its files
        assert sum(len(c) for c in iter_table_chunks(text)) == 10
        assert len(parquet_files(text)) == 2
    assert pattern_matches(tmp_path / "pq" / "*.parquet", tmp_path / "pq" / "new.parquet")
    assert not pattern_matches(tmp_path / "pq" / "*.parquet", tmp_path / "new.parquet")
    assert pattern_matches(tmp_path / "**" / "*.csv", tmp_path / "a" / "b" / "s.csv")


def test_a_pattern_leaves_empty_files_out_with_a_warning(tmp_path: Path) -> None:
    from anovae.io import NoRowsError

    write_table(pd.DataFrame({"a": [1.0, 2.0]}), tmp_path / "d-1.csv")
    (tmp_path / "d-0.csv").write_bytes(b"")  # first in name order: the kind comes from d-1
    (tmp_path / "d-2.csv").write_text("a\n")
    pattern = str(tmp_path / "d-*.csv")
    for read in (read_table, lambda p: pd.concat(iter_table_chunks(p))):
        with pytest.warns(UserWarning, match=r"2 of the files matched by .* hold no rows and are "
                                             r"left out: .*d-0.csv.*d-2.csv"):
            assert read(pattern)["a"].tolist() == [1.0, 2.0]
    with pytest.warns(UserWarning), pytest.raises(NoRowsError, match="have no rows"):
        read_table(str(tmp_path / "d-[02].csv"))
    with pytest.raises(NoRowsError, match="are empty"):
        read_table(str(tmp_path / "d-0*.csv"))
