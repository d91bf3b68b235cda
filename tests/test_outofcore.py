"""Out-of-core training: a Parquet folder larger than the chunk size streams correctly."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from anovae import AEDetector, DataError, VAEDetector, load
from anovae.outofcore import ParquetBatches, fit_table, parquet_row_groups, row_uniform
from anovae.tabular import Scaler, ScalerStats
from conftest import make_data


def _write_folder(X: pd.DataFrame, folder: Path, files: int = 3, row_group: int = 50) -> Path:
    folder.mkdir()
    for i, idx in enumerate(np.array_split(np.arange(len(X)), files)):
        X.iloc[idx].to_parquet(folder / f"part-{i}.parquet", row_group_size=row_group)
    return folder


@pytest.mark.parametrize("method", ["standard", "minmax", "robust", "none"])
def test_streaming_scaler_matches_in_memory(method: str) -> None:
    X = np.random.default_rng(1).standard_t(3, size=(1000, 4)) * [1, 10, 0.1, 5] + [0, 3, -2, 9]
    stats = ScalerStats()
    for chunk in np.array_split(X, 7):  # every row sampled: robust is exact too
        stats.merge(ScalerStats().update(chunk))
    a, b = Scaler(method).fit(X), Scaler(method).fit_stats(stats)
    np.testing.assert_allclose(b.center, a.center, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b.scale, a.scale, rtol=1e-12)


def test_robust_quartiles_from_a_uniform_sample_are_close() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(3.0, 2.0, size=(200_000, 2))
    keep = row_uniform(7, np.arange(len(X))) < 0.1  # a 10% sample, ~20,000 rows
    stats = ScalerStats()
    for i in range(0, len(X), 30_000):
        stats.update(X[i:i + 30_000], keep=keep[i:i + 30_000])
    assert abs(stats.sample_rows().shape[0] - 20_000) < 600
    a, b = Scaler("robust").fit(X), Scaler("robust").fit_stats(stats)
    # standard error of a quartile from 20,000 rows: ~0.011 sd; allow 4 of them
    np.testing.assert_allclose(b.center, a.center, atol=0.045 * 2.0)
    np.testing.assert_allclose(b.scale, a.scale, rtol=0.03)


def test_row_uniform_is_uniform_and_independent_of_chunking() -> None:
    rows = np.arange(100_000)
    u = row_uniform(3, rows)
    assert 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005 and abs((u < 0.1).mean() - 0.1) < 0.005
    np.testing.assert_array_equal(np.concatenate([row_uniform(3, rows[:777]),
                                                  row_uniform(3, rows[777:])]), u)
    assert not np.array_equal(row_uniform(4, rows), u)


def test_batches_cover_every_training_row_once_with_a_bounded_buffer() -> None:
    # 9 row groups of 40 rows; a buffer of 100 rows; batches of 16 rows
    data = [np.arange(g * 40, (g + 1) * 40, dtype=np.float32)[:, None] for g in range(9)]
    groups = [type("G", (), {"i": g})() for g in range(9)]
    src = ParquetBatches(groups, [40] * 9, lambda grp: data[grp.i], chunk_rows=100,
                         device=torch.device("cpu"))
    seen = torch.cat(list(src.batches(16, torch.Generator().manual_seed(0))))[:, 0].numpy()
    assert len(seen) == (360 // 16) * 16  # only the last partial batch is dropped
    assert len(np.unique(seen)) == len(seen)  # no row twice
    assert src.peak_buffer_rows < 100 + 40  # the buffer plus one row group, at most
    assert not np.array_equal(seen, np.sort(seen))  # shuffled
    again = torch.cat(list(src.batches(16, torch.Generator().manual_seed(1))))[:, 0].numpy()
    assert not np.array_equal(seen, again)  # a new order every epoch
    # two ranks: disjoint row groups, the same number of batches, half the batch size each
    ranks = [ParquetBatches(groups, [40] * 9, lambda grp: data[grp.i], 100,
                            torch.device("cpu"), rank=r, world=2) for r in range(2)]
    per_rank = [list(s.batches(16, torch.Generator().manual_seed(0))) for s in ranks]
    assert len(per_rank[0]) == len(per_rank[1]) > 0
    assert all(b.shape[0] == 8 for batches in per_rank for b in batches)
    rows = [set(torch.cat(b)[:, 0].tolist()) for b in per_rank]
    assert not rows[0] & rows[1]


def test_fit_table_streams_a_folder_larger_than_the_chunk(tmp_path: Path) -> None:
    data = make_data(n_train=1200, n_test=200, n_anomalies=20, d=5)
    train = data.frame(data.X_train)
    train["id"] = np.arange(len(train))
    folder = _write_folder(train, tmp_path / "train")
    groups, _ = parquet_row_groups(folder)
    assert len(groups) == 3 * 8 and groups[-1].offset + groups[-1].rows == 1200
    det = VAEDetector(hidden_dims=(16, 8), latent_dim=2, epochs=8, batch_size=64,
                      device="cpu", random_state=0, n_samples=4)
    fit_table(det, folder, id_column="id", chunk_rows=150, sample_rows=400)
    assert det.feature_names_in_.tolist() == list(data.columns)
    assert 1000 < det.n_train_rows_ < 1200  # ~10% held out for validation
    assert 300 < det.decision_scores_.shape[0] < 500  # the uniform sample's scores
    assert len(det.history_["val_loss"]) == det.n_epochs_
    # explanations rank against each column's median contribution over the sampled rows
    from anovae.scores import feature_baseline

    assert sorted(det.feature_baselines_) == ["elbo", "iwae", "reconstruction",
                                              "reconstruction_probability"]
    everyone = feature_baseline(det.feature_scores(train[list(data.columns)]))  # all 1,200 rows
    np.testing.assert_allclose(det.feature_baselines_["elbo"], everyone, atol=0.1)
    X_test = data.frame(data.X_test)
    auc = roc_auc_score(data.y_test, det.decision_function(X_test))
    assert auc > 0.9
    # same seed, same data: the same model, whatever the chunk size
    det2 = fit_table(VAEDetector(**det.get_params()), folder, id_column="id", chunk_rows=150,
                     sample_rows=400)
    np.testing.assert_array_equal(det2.decision_function(X_test), det.decision_function(X_test))
    path = det.save(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(load(path).decision_function(X_test),
                                  det.decision_function(X_test))


def test_fit_table_cli_and_labels(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from anovae.cli import app

    data = make_data(n_train=400, n_test=200, n_anomalies=20, d=4)
    X = data.frame(np.vstack([data.X_train, data.X_test]))
    X["y"] = np.r_[np.zeros(400, dtype=int), data.y_test]
    folder = _write_folder(X, tmp_path / "d", files=2, row_group=64)
    out = tmp_path / "ae.safetensors"
    res = CliRunner().invoke(app, ["fit", str(folder), "-o", str(out), "--detector", "ae",
                                   "--out-of-core", "--chunk-rows", "100", "--label-column", "y",
                                   "--epochs", "3", "--seed", "0", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "fitted AEDetector on" in res.output
    det = load(out)
    assert isinstance(det, AEDetector) and det.feature_names_in_.tolist() == list(data.columns)
    # the 200 test rows hold 20 anomalies (y = 1): left out of training with ~10% for validation
    n_train = int(re.search(r"on (\d+) training rows", res.output).group(1))
    assert 480 < n_train < 580 - 20
    assert roc_auc_score(data.y_test, det.decision_function(data.frame(data.X_test))) > 0.8


def test_fit_table_bad_input_is_clear(tmp_path: Path) -> None:
    det = VAEDetector(epochs=1, device="cpu", random_state=0)
    csv = tmp_path / "x.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not Parquet"):
        fit_table(det, csv)
    frame = pd.DataFrame({"a": [1.0, np.nan] * 50, "b": np.arange(100.0)})
    folder = _write_folder(frame, tmp_path / "nan", files=1, row_group=40)
    with pytest.raises(DataError, match="NaN"):
        fit_table(det, folder)
    with pytest.raises(DataError, match="no such column"):
        fit_table(det, folder, exclude=["zzz"])
    with pytest.raises(ValueError, match="numeric columns"):
        fit_table(VAEDetector(categorical=("b",)), folder)
    clean = _write_folder(frame.fillna(0.0), tmp_path / "clean", files=1, row_group=40)
    with pytest.raises(DataError, match=r"threshold='fpr' at 0.01 needs at least 99 held-out "
                       r"normal rows, but calibration_fraction=0.2 of the rows holds out "
                       r"\d+: give more rows"):  # (was an inf threshold)
        fit_table(VAEDetector(epochs=1, threshold="fpr", threshold_param=0.01), clean)


def test_fit_table_on_fewer_rows_than_the_batch(tmp_path: Path) -> None:
    # the in-memory fit caps the batch at the training rows; the streamed one used to ask for
    # 256-row batches of a 200-row table and fail
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(200, 3)), columns=list("abc"))
    X.to_parquet(tmp_path / "t.parquet")
    det = fit_table(VAEDetector(epochs=2, batch_size=256, random_state=0), tmp_path / "t.parquet")
    assert det.batch_size_ < 256 and det.n_epochs_ == 2
    assert np.isfinite(det.decision_function(X)).all()


def test_uneven_row_groups_still_train_on_every_row_under_two_ranks() -> None:
    # one large and one small row group (a folder of two files, or one pandas-written file and
    # a little one): dealing whole groups left one rank 40 rows, and both stopped there
    from anovae.outofcore import share_row_groups

    sizes = [2000, 40]
    data = [np.arange(sum(sizes[:g]), sum(sizes[:g + 1]), dtype=np.float32)[:, None]
            for g in range(2)]
    groups = [type("G", (), {"i": g})() for g in range(2)]
    owner = share_row_groups(sizes, 2)
    assert owner is None  # too uneven to share whole: striped
    ranks = [ParquetBatches(groups, sizes, lambda grp: data[grp.i], 100, torch.device("cpu"),
                            rank=r, world=2, owner=owner) for r in range(2)]
    per_rank = [torch.cat(list(s.batches(16, torch.Generator().manual_seed(0))))[:, 0]
                for s in ranks]
    assert len(per_rank[0]) == len(per_rank[1])
    rows = [set(p.tolist()) for p in per_rank]
    assert not rows[0] & rows[1]
    assert len(rows[0] | rows[1]) >= sum(sizes) - 2 * 16  # every row but a partial batch each
    # balanced groups go whole
    assert share_row_groups([100, 100, 90, 110], 2) is not None
    assert share_row_groups([500], 1) == [0]


def test_files_with_different_columns_are_a_clear_error(tmp_path: Path) -> None:
    A = pd.DataFrame(np.random.default_rng(0).normal(size=(500, 3)), columns=list("abc"))
    (tmp_path / "s").mkdir()
    A.to_parquet(tmp_path / "s" / "a.parquet")
    A[["a", "b"]].to_parquet(tmp_path / "s" / "b.parquet")
    with pytest.raises(DataError, match=r"b\.parquet' lacks the columns \['c'\]"):
        fit_table(VAEDetector(epochs=2, device="cpu"), tmp_path / "s")


def test_fit_table_without_using_labels_trains_on_every_row(tmp_path: Path) -> None:
    data = make_data(n_train=400, n_test=200, n_anomalies=20, d=4)
    X = data.frame(np.vstack([data.X_train, data.X_test]))
    X["y"] = np.r_[np.zeros(400, dtype=int), data.y_test]
    folder = _write_folder(X, tmp_path / "d", files=2, row_group=64)
    kw = dict(epochs=2, random_state=0, device="cpu", validation_fraction=0.0)
    used = fit_table(VAEDetector(**kw), folder, label_column="y", chunk_rows=100)
    ignored = fit_table(VAEDetector(use_labels=False, **kw), folder, label_column="y",
                        chunk_rows=100)
    assert used.n_train_rows_ == 580 and ignored.n_train_rows_ == 600
    # the labels still set a threshold that needs them
    best = fit_table(VAEDetector(use_labels=False, threshold="best_f1", **kw), folder,
                     label_column="y", chunk_rows=100)
    assert best.n_train_rows_ == 600 and best.threshold_method_ == "best_f1"


def test_fit_table_warns_once_per_fit_not_per_row_group(tmp_path: Path) -> None:
    data = make_data(n_train=400, n_test=10, n_anomalies=2, d=3)
    X = data.frame(data.X_train)
    X.insert(0, "cid", np.arange(len(X)))  # an id left among the features
    folder = _write_folder(X, tmp_path / "d", files=2, row_group=64)
    with pytest.warns(UserWarning, match="'cid' counts up by one") as rec:
        fit_table(VAEDetector(epochs=1, random_state=0, device="cpu"), folder, chunk_rows=100)
    assert len([w for w in rec if "'cid'" in str(w.message)]) == 1  # was one per row group (9)
    assert {w.filename for w in rec} == {__file__}


def test_fit_table_refuses_a_spread_its_streaming_sums_cannot_hold(tmp_path: Path) -> None:
    # the squared deviations overflowed: scale 1.0 instead of 1e200, another model than fit's
    X = pd.DataFrame({"a": np.random.default_rng(0).normal(size=300) * 1e200,
                      "b": np.random.default_rng(1).normal(size=300)})
    folder = _write_folder(X, tmp_path / "d", files=1, row_group=100)
    with pytest.raises(DataError, match=r"columns \[0\] .* spread beyond 1e150"):
        fit_table(VAEDetector(epochs=1, random_state=0, device="cpu"), folder)


def test_fit_table_arguments_are_checked(tmp_path: Path) -> None:
    X = make_data(n_train=200, n_test=10, n_anomalies=2, d=3).frame(np.zeros((200, 3)))
    X["label"] = 0
    folder = _write_folder(X.assign(f0=np.random.default_rng(0).normal(size=200)),
                           tmp_path / "d", files=1, row_group=100)
    with pytest.raises(TypeError, match="data must be the path .* got DataFrame"):
        fit_table(VAEDetector(), X)
    with pytest.raises(ValueError, match="leave numeric unset"):  # named what was wrong
        fit_table(VAEDetector(numeric=["f0"]), folder)
    with pytest.raises(ValueError, match="chunk_rows must be >= 1, got 0"):
        fit_table(VAEDetector(), folder, chunk_rows=0)
    det = fit_table(VAEDetector(epochs=1, random_state=0, device="cpu"), folder,
                    exclude="label")  # one name, not its letters
    assert "label" not in list(det.feature_names_in_)


def test_dask_score_names_a_pandas_frame() -> None:
    from anovae.dask import score

    with pytest.raises(TypeError, match="ddf must be a dask DataFrame, got DataFrame"):
        score(VAEDetector(), pd.DataFrame({"a": [1.0]}))
