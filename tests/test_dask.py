"""Batch scoring with Dask on a 2-worker LocalCluster: exactly the single-process scores.

Each partition is scored by the same code as ``decision_function`` in one process, so the scores
are bit-identical to ``decision_function`` on the same rows. Against one call on *all* rows at
once a float32 score can differ in its last bit (~1e-7 relative): the matmul kernels block a
59-row batch differently from a 360-row one (the same holds for ``anovae score``'s chunks).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import anovae.dask as adask  # noqa: E402
from anovae import DataError, load  # noqa: E402


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """One 2-process LocalCluster for the module (starting one costs seconds)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


def _models_per_worker(client: Any) -> list[int]:
    return sorted(client.run(lambda: len(__import__("anovae.dask").dask._MODELS)).values())


def test_dask_scores_equal_single_process(client: Any, fitted_vae_frame: Any, data: Any) -> None:
    X = data.frame(np.vstack([data.X_train, data.X_test]))
    X["customer"] = np.arange(len(X)) * 10
    ddf = dd.from_pandas(X, npartitions=6)
    out = adask.score(fitted_vae_frame, ddf, id_column="customer", top_k=2, client=client)
    res = out.compute()
    assert list(res.columns) == ["customer", "anomaly_score", "is_anomaly", "top_feature_1",
                                 "top_contribution_1", "top_excess_1", "top_feature_2",
                                 "top_contribution_2", "top_excess_2"]
    expected = np.concatenate([fitted_vae_frame.decision_function(
        p.compute().drop(columns="customer"))
                               for p in ddf.partitions])  # the rows of each partition
    np.testing.assert_array_equal(res["customer"].to_numpy(), X["customer"].to_numpy())
    np.testing.assert_array_equal(res["anomaly_score"].to_numpy(), expected)  # exactly
    np.testing.assert_array_equal(res["is_anomaly"].to_numpy(),
                                  fitted_vae_frame.predict(X.drop(columns="customer")))
    # 6 partitions, 2 workers: the model was sent to and rebuilt by each worker once
    assert _models_per_worker(client) == [1, 1]
    # bfloat16 autocast on the workers: other numbers, close to float32's
    low = adask.score(fitted_vae_frame, ddf, id_column="customer", precision="bf16",
                      client=client).compute()["anomaly_score"].to_numpy()
    assert not np.array_equal(low, expected)
    np.testing.assert_allclose(low, expected, rtol=0.05)


def test_cli_dask_engine_writes_a_partitioned_dataset(client: Any, fitted_vae_frame: Any,
                                                      data: Any, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from anovae.cli import app

    model = tmp_path / "model.safetensors"
    fitted_vae_frame.save(model)
    X = data.frame(np.vstack([data.X_train, data.X_test]))
    folder = tmp_path / "data"
    folder.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(X)), 3)):  # 3 files, 2 row groups each
        X.iloc[part].to_parquet(folder / f"f{i}.parquet", row_group_size=len(part) // 2 + 1)
    out = tmp_path / "scores"
    args = ["score", str(model), str(folder / "*.parquet"), "-o", str(out), "--engine", "dask",
            "--scheduler", client.scheduler.address, "--chunk-rows", "50", "--top-features", "1"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert f"scored {len(X)} rows" in res.output
    parts = sorted(p.name for p in out.iterdir())
    assert len(parts) == 6 and all(p.endswith(".parquet") for p in parts)
    got = pd.read_parquet(out).sort_values("row")
    np.testing.assert_array_equal(got["row"].to_numpy(), np.arange(len(X)))  # global row ids
    det = load(model)
    groups = [g for f in sorted(folder.iterdir()) for g in _row_groups(f)]
    np.testing.assert_array_equal(got["anomaly_score"].to_numpy(),
                                  np.concatenate([det.decision_function(g) for g in groups]))
    np.testing.assert_allclose(got["anomaly_score"].to_numpy(), det.decision_function(X),
                               rtol=1e-6)  # one call on all rows: last-bit differences only
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    # a second run replaces the dataset as a whole; -v shows Dask's progress bar (it was a
    # silent no-op with this engine), the same scores
    res = CliRunner().invoke(app, [*args, "-v"])
    assert res.exit_code == 0, res.output
    assert "100% Completed" in res.output
    assert len(list(out.iterdir())) == 6
    np.testing.assert_array_equal(pd.read_parquet(out).sort_values("row")["anomaly_score"],
                                  got["anomaly_score"])


def _row_groups(path: Path) -> list[pd.DataFrame]:
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    return [f.read_row_group(i).to_pandas() for i in range(f.num_row_groups)]


def test_dask_input_errors_are_clear(tmp_path: Path, fitted_vae: Any) -> None:
    with pytest.raises(DataError, match="no files match the pattern"):
        adask.read_parquet(tmp_path / "nothing-*.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read"):
        adask.read_parquet(bad)
    with pytest.raises(Exception, match="not fitted"):
        adask.score(type(fitted_vae)(), dd.from_pandas(pd.DataFrame({"a": [1.0]}), 1))


def test_what_fails_in_every_partition_fails_before_any_task(tmp_path: Path,
                                                             fitted_vae_frame: Any,
                                                             data: Any) -> None:
    from anovae import ImageAEDetector

    ddf = dd.from_pandas(data.frame(data.X_test), npartitions=2)
    with pytest.raises(DataError, match="id column 'nope' is not in the data"):
        adask.score(fitted_vae_frame, ddf, id_column="nope")
    images = ImageAEDetector(epochs=1, channels=(4,), latent_dim=2, random_state=0).fit(
        np.random.default_rng(0).random((16, 8, 8)))
    with pytest.raises(DataError, match="image model"):
        adask.score(images, dd.from_pandas(pd.DataFrame(np.zeros((4, 64))), npartitions=1))
    frame = data.frame(data.X_test)
    frame.to_parquet(tmp_path / "x.parquet")
    with pytest.raises(DataError, match="id column 'nope'"):  # no cluster was started for it
        adask.score_files(fitted_vae_frame, tmp_path / "x.parquet", tmp_path / "out",
                          id_column="nope")
    assert not (tmp_path / "out").exists()


def test_cli_dask_refuses_explain_and_maps(tmp_path: Path, fitted_vae_frame: Any,
                                           data: Any) -> None:
    from typer.testing import CliRunner

    from anovae.cli import app

    model = fitted_vae_frame.save(tmp_path / "m.safetensors")
    data.frame(data.X_test).to_parquet(tmp_path / "x.parquet")
    for extra in (["--explain", "2"], ["--maps", str(tmp_path / "maps")]):
        res = CliRunner().invoke(app, ["score", str(model), str(tmp_path / "x.parquet"), "-o",
                                       str(tmp_path / "out"), "--engine", "dask", *extra])
        assert res.exit_code == 2 and "not available with --engine dask" in res.output


def test_the_worker_model_cache_is_bounded(fitted_vae_frame: Any) -> None:
    import hashlib

    adask._MODELS.clear()
    digests = []
    for threshold in range(adask.MAX_CACHED_MODELS + 2):  # distinct model files
        det = copy.deepcopy(fitted_vae_frame)
        det.threshold_ = float(threshold)
        blob = adask.model_bytes(det)
        digests.append(hashlib.sha256(blob).hexdigest())
        assert adask._detector(blob, digests[-1]).threshold_ == float(threshold)
    assert list(adask._MODELS) == digests[-adask.MAX_CACHED_MODELS:]  # the oldest evicted


def test_local_cluster_keeps_dask_s_info_logs_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    # `anovae --log-level ERROR score ... --engine dask` printed 24 INFO lines of Dask's: its
    # logging config sets its loggers to INFO whatever the caller's level
    import contextlib
    import logging

    from anovae.dask import _client

    seen: dict[str, Any] = {}

    @contextlib.contextmanager
    def fake_cluster(**kw: Any) -> Any:
        seen.update(kw)
        yield "cluster"

    class FakeClient:
        def run(self, func: Any) -> None:
            seen["ran"] = func

    @contextlib.contextmanager
    def fake_client(cluster: Any) -> Any:
        yield FakeClient()

    monkeypatch.setattr(distributed, "LocalCluster", fake_cluster)
    monkeypatch.setattr(distributed, "Client", fake_client)
    dlog = logging.getLogger("distributed")
    monkeypatch.setattr(dlog, "level", logging.INFO)
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.ERROR)
    with _client(None, 1, 1) as c:
        assert isinstance(c, FakeClient) and dlog.level == logging.ERROR
    assert seen["ran"] is adask._quiet_data_errors  # the workers' "Compute Failed" records
    assert seen["silence_logs"] == logging.ERROR
    assert dlog.level == logging.INFO  # as it was, once the cluster is closed
    monkeypatch.setattr(root, "level", logging.DEBUG)  # --log-level DEBUG: Dask's records too
    with _client(None, 1, 1):
        assert dlog.level == logging.DEBUG
    assert seen["silence_logs"] == logging.DEBUG


def test_an_output_folder_with_other_files_is_refused_not_deleted(tmp_path) -> None:
    # the folder was replaced as a whole: a folder of notes given as -o was deleted
    from anovae import DataError
    from anovae.dask import _check_out_dir

    out = tmp_path / "scratch"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("precious")
    with pytest.raises(DataError, match=r"holds other files .* \(notes.txt, sub\)"):
        _check_out_dir(out)
    assert (out / "notes.txt").read_text() == "precious"
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "part.0.parquet").write_bytes(b"")
    _check_out_dir(earlier)  # an earlier run's output may be replaced
    _check_out_dir(tmp_path / "new")


def test_the_distributed_timeout_is_checked(monkeypatch) -> None:
    from anovae.distributed import _timeout_s

    for raw in ("inf", "1e20", "nan", "1e-9", "0", "abc"):
        monkeypatch.setenv("ANOVAE_DIST_TIMEOUT", raw)
        with pytest.raises(ValueError, match="ANOVAE_DIST_TIMEOUT must be a number of seconds"):
            _timeout_s()
    monkeypatch.setenv("ANOVAE_DIST_TIMEOUT", "30")
    assert _timeout_s() == 30.0


def _no_cluster(*args: Any) -> Any:
    raise AssertionError("a cluster was started")


def _files(folder: Path, frame: pd.DataFrame, second: pd.DataFrame) -> None:
    """``folder``/a.parquet holding ``frame``, b.parquet holding ``second`` (row groups of
    60 rows)."""
    folder.mkdir()
    frame.to_parquet(folder / "a.parquet", row_group_size=60)
    second.to_parquet(folder / "b.parquet", row_group_size=60)


def test_row_ids_that_may_repeat_are_warned_of(tmp_path: Path, fitted_vae_frame: Any,
                                               data: Any) -> None:
    """dask's read_parquet numbers each file's rows from 0: without id_column the 'row' ids
    repeated (75,000 of 100,000 in a user's four files) without a word. anovae's reader gives
    global row numbers with known divisions, and no warning."""
    import warnings

    X = data.frame(data.X_test)
    _files(tmp_path / "d", X, X)
    theirs = dd.read_parquet(str(tmp_path / "d" / "*.parquet"))
    with pytest.warns(UserWarning, match="may repeat across partitions .* anovae.dask."
                                         "read_parquet .* or pass id_column"):
        out = adask.score(fitted_vae_frame, theirs).compute()
    assert out["row"].duplicated().any()
    ours = adask.read_parquet(tmp_path / "d", partition_rows=60)
    assert ours.known_divisions and ours.divisions == (0, 60, 120, 180, 239)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = adask.score(fitted_vae_frame, ours).compute()
        adask.score(fitted_vae_frame, theirs, id_column="f0")  # ids of the user's own
    np.testing.assert_array_equal(out["row"].to_numpy(), np.arange(240))
    assert ours.loc[100:130].compute().index.tolist() == list(range(100, 131))


def test_the_cancelled_tasks_warning_is_left_out() -> None:
    import logging

    keep = logging.makeLogRecord({"msg": "Compute Failed\nException: RuntimeError('x')"})
    cancelled = logging.makeLogRecord(
        {"msg": "Async instruction for <Task cancelled name='execute(x)'> ended with "
                "CancelledError"})
    quiet = adask._QuietDataErrors()
    assert quiet.filter(keep) and not quiet.filter(cancelled)


def test_files_unlike_the_first_are_refused_by_name_before_a_cluster_starts(
        tmp_path: Path, fitted_vae_frame: Any, data: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # a file lacking a column, or holding text where the first file has numbers, failed on a
    # worker with a message that did not say which file
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(adask, "_client", _no_cluster)
    X = data.frame(data.X_test)
    _files(Path("gaps"), X, X.drop(columns="f1"))
    with pytest.raises(DataError, match=r"^'gaps/b\.parquet' lacks the columns \['f1'\], which "
                                        r"the first file \('gaps/a\.parquet'\) has"):
        adask.score_files(fitted_vae_frame, "gaps/*.parquet", "out")
    _files(Path("text"), X, X.astype({"f0": str}))
    with pytest.raises(DataError, match=r"^'text/b\.parquet': column 'f0' holds text .* but "
                                        r"numbers \(double\) in the first file"):
        adask.score_files(fitted_vae_frame, "text/*.parquet", "out")
    with pytest.raises(DataError, match=r"^'gaps/b\.parquet': the data lacks columns the model "
                                        r"was fitted on: 'f1'"):
        adask.score_files(fitted_vae_frame, "gaps/b.parquet", "out")  # b alone: the first file
    assert not Path("out").exists()
    # integers where the first file has floats are numbers too; extra columns are not read
    _files(Path("fine"), X, X.assign(f0=np.arange(len(X)), extra="text"))
    got = adask.read_parquet("fine/*.parquet", columns=["f0", "f1"]).compute(scheduler="sync")
    np.testing.assert_array_equal(got.index, np.arange(2 * len(X)))
    with pytest.raises(DataError, match=r"'fine/a\.parquet' lacks the columns \['nope'\]"):
        adask.read_parquet("fine/*.parquet", columns=["nope"])  # was a KeyError


def _damage_data_pages(path: Path) -> None:
    """Overwrite the start of ``path``'s data but keep its metadata (the footer) readable: the
    file fails when its rows are read, after the schemas were checked."""
    raw = bytearray(path.read_bytes())
    raw[8:len(raw) // 2] = b"\xab" * (len(raw) // 2 - 8)
    path.write_bytes(bytes(raw))


def test_a_partition_that_fails_on_a_worker_names_its_file_and_rows(
        client: Any, tmp_path: Path, fitted_vae_frame: Any, data: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # NaN in the second file's second row group, a file damaged after its metadata were read:
    # the DataError from the worker did not say which file (nor which rows)
    monkeypatch.chdir(tmp_path)
    X = data.frame(data.X_test)  # 120 rows: 2 row groups per file, 1 partition each
    nan = X.copy()
    nan.iloc[70, 0] = np.nan
    _files(Path("nan"), X, nan)
    with pytest.raises(DataError) as err:
        adask.score_files(fitted_vae_frame, "nan/*.parquet", "out", partition_rows=60,
                          scheduler=client.scheduler.address)
    assert type(err.value) is DataError  # rebuilt from its pickle on this side
    assert str(err.value).startswith("'nan/b.parquet' (rows 60-119 of the file, global rows "
                                     "180-239): X contains NaN in 'f0' (1 rows)")
    _files(Path("damaged"), X, X)
    _damage_data_pages(Path("damaged/b.parquet"))
    with pytest.raises(DataError, match=r"^'damaged/b\.parquet' \(rows 0-119 of the file, "
                                        r"global rows 120-239\): cannot read them: .* \(the file "
                                        r"is damaged, or changed since its metadata were read\)"):
        adask.score_files(fitted_vae_frame, "damaged/*.parquet", "out",
                          scheduler=client.scheduler.address)
    assert not Path("out").exists()


def test_the_local_cluster_s_data_errors_come_without_worker_tracebacks(
        tmp_path: Path, fitted_vae_frame: Any, data: Any,
        capfd: pytest.CaptureFixture[str]) -> None:
    # the worker logged "Compute Failed" with its task and traceback before the error was raised
    X = data.frame(data.X_test)
    nan = X.copy()
    nan.iloc[5, 2] = np.nan
    _files(tmp_path / "data", X, nan)
    with pytest.raises(DataError, match=r"^'.*b\.parquet' \(rows 0-119 of the file, global rows "
                                        r"120-239\): X contains NaN in 'f2'"):
        adask.score_files(fitted_vae_frame, tmp_path / "data", tmp_path / "out", n_workers=1)
    err = capfd.readouterr().err
    assert "Compute Failed" not in err and "Traceback" not in err


def test_a_dask_frame_s_failing_partition_is_named_by_number(fitted_vae_frame: Any, data: Any,
                                                             monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    import hashlib

    X = data.frame(data.X_test)
    X.iloc[100, 1] = np.nan
    ddf = dd.from_pandas(X, npartitions=2)
    with pytest.raises(DataError, match=r"^partition 1 \(index 60 to 119\): X contains NaN "
                                        r"in 'f1'"):
        adask.score(fitted_vae_frame, ddf).compute()

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(adask, "score_frame", boom)  # other errors keep their type, with a note
    blob = adask.model_bytes(fitted_vae_frame)
    with pytest.raises(RuntimeError, match="^boom") as err:
        adask._score_partition(X.iloc[:60], blob, hashlib.sha256(blob).hexdigest(), None, 0,
                               partition_info={"number": 0})
    assert err.value.__notes__ == ["while scoring partition 0 (index 0 to 59)"]


def test_cluster_options_that_would_be_ignored_are_refused(tmp_path: Path,
                                                           fitted_vae_frame: Any, data: Any,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    # n_workers and threads_per_worker size the LocalCluster: with a scheduler they were
    # silently ignored; 0 workers started a cluster that never scored
    monkeypatch.setattr(adask, "_client", _no_cluster)
    data.frame(data.X_test).to_parquet(tmp_path / "x.parquet")

    def run(**options: Any) -> None:
        adask.score_files(fitted_vae_frame, tmp_path / "x.parquet", tmp_path / "out", **options)

    for name, value in (("n_workers", 2), ("threads_per_worker", 1)):
        with pytest.raises(ValueError, match=fr"^{name} applies to the LocalCluster started "
                                             r"without a scheduler; the cluster at "
                                             r"'tcp://127.0.0.1:1' has its own workers"):
            run(scheduler="tcp://127.0.0.1:1", **{name: value})
        for bad in (0, -1, 1.5, True):
            with pytest.raises(ValueError, match=fr"^{name} must be a whole number >= 1, "
                                                 fr"got {bad!r}"):
                run(**{name: bad})
    assert not (tmp_path / "out").exists()
