"""Batch scoring with Dask on a 2-worker LocalCluster: exactly the single-process scores.

Each partition is scored by the same code as ``decision_function`` in one process, so the scores
are bit-identical to ``decision_function`` on the same rows. Against one call on *all* rows at
once a float32 score can differ in its last bit (~1e-7 relative): the matmul kernels block a
59-row batch differently from a 360-row one (the same holds for ``anovae score``'s chunks).
"""

from __future__ import annotations

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
                                 "top_contribution_1", "top_feature_2", "top_contribution_2"]
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
    # a second run replaces the dataset as a whole
    assert CliRunner().invoke(app, args).exit_code == 0
    assert len(list(out.iterdir())) == 6


def _row_groups(path: Path) -> list[pd.DataFrame]:
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    return [f.read_row_group(i).to_pandas() for i in range(f.num_row_groups)]


def test_dask_input_errors_are_clear(tmp_path: Path, fitted_vae: Any) -> None:
    with pytest.raises(DataError, match="no Parquet files match"):
        adask.read_parquet(tmp_path / "nothing-*.parquet")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="cannot read"):
        adask.read_parquet(bad)
    with pytest.raises(Exception, match="not fitted"):
        adask.score(type(fitted_vae)(), dd.from_pandas(pd.DataFrame({"a": [1.0]}), 1))
