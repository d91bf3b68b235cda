"""The detection-quality harness (``anovae.bench``) on a tiny synthetic suite: seconds, offline."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from anovae.bench import DetectorSpec, load_datasets, resolve_data_dir, run_tabular_benchmark
from anovae.bench.cli import bench_app
from anovae.bench.tabular import split, subsample

TINY = {"hidden_dims": (16, 8), "latent_dim": 2, "epochs": 3, "batch_size": 64}


def _write_suite(folder: Path) -> Path:
    """Three small .npz sets: Gaussian normals with planted shifted anomalies."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k, (name, d) in enumerate([("1_alpha", 4), ("2_beta", 6), ("3_gamma", 3)]):
        normal = rng.normal(size=(240, d)) @ rng.normal(size=(d, d))
        anomalies = rng.normal(size=(16, d)) + 6.0 + k
        X = np.vstack([normal, anomalies]).astype(np.float32 if k == 0 else np.float64)
        y = np.r_[np.zeros(240, dtype=np.int64), np.ones(16, dtype=np.int64)]
        np.savez(folder / f"{name}.npz", X=X, y=y)
    return folder


def _tiny_detectors() -> list[DetectorSpec | str]:
    from anovae import AEDetector, VAEDetector

    return [
        DetectorSpec("vae", lambda s: VAEDetector(random_state=s, device="cpu", **TINY)),
        DetectorSpec("ae", lambda s: AEDetector(random_state=s, device="cpu", **TINY)),
        "iforest",
    ]


def test_both_protocols_on_a_tiny_suite(tmp_path: Path) -> None:
    data = _write_suite(tmp_path / "data")
    res = run_tabular_benchmark(data, detectors=_tiny_detectors(), seeds=[3],
                                out_dir=tmp_path / "out", progress=False)
    r = res.results
    assert len(r) == 2 * 3 * 1 * 3  # protocols x data sets x seeds x detectors
    assert (r["seed"] == 3).all()
    assert (r["error"] == "").all()
    assert r[["auroc", "auprc", "fit_s", "score_s"]].notna().all().all()
    # the protocols: novelty fits on the normal half, unsupervised on 70 % with anomalies
    nov = r[(r["protocol"] == "novelty") & (r["dataset"] == "1_alpha")]
    uns = r[(r["protocol"] == "unsupervised") & (r["dataset"] == "1_alpha")]
    assert (nov["n_fit"] == 120).all() and (nov["n_eval"] == 128).all()
    assert (uns["n_fit"] == 179).all()
    s = res.summary()
    assert set(s["protocol"]) == {"novelty", "unsupervised"}
    assert (s.groupby("protocol")["rank"].mean() == 2.0).all()  # ranks 1..3 average to 2
    assert (s["auroc"] > 0.9).all()  # planted anomalies are easy
    md = res.to_markdown()
    assert "#### novelty: mean over data sets" in md and "| iforest |" in md
    for f in ("results.csv", "summary.csv", "results.md"):
        assert (tmp_path / "out" / f).is_file()


def test_filters_max_rows_and_split(tmp_path: Path) -> None:
    data = _write_suite(tmp_path)
    sets = load_datasets(data, ["beta", "1"])  # by name without prefix, and by number
    assert [d.name for d in sets] == ["1_alpha", "2_beta"]
    small = subsample(sets[0], 64, seed=0)
    assert small.X.shape[0] == 64 and small.y.sum() == 4  # stratified: 1/16 anomalies
    X_fit, X_eval, y_eval = split(small.X, small.y, "novelty", 0)
    assert X_fit.shape[0] == 30 and y_eval.sum() == 2
    with pytest.raises(FileNotFoundError, match="no data set named"):
        load_datasets(data, ["nope"])


def test_failures_are_recorded_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                          ) -> None:
    class Broken:
        def fit(self, X: np.ndarray) -> Broken:
            raise RuntimeError("boom")

    data = _write_suite(tmp_path)
    with caplog.at_level(logging.WARNING):
        res = run_tabular_benchmark(data, protocols=("novelty",), datasets=["alpha"],
                                    detectors=[DetectorSpec("broken", lambda s: Broken()),
                                               "iforest"], seeds=1, progress=False)
    r = res.results.set_index("detector")
    assert np.isnan(r.loc["broken", "auroc"]) and "boom" in r.loc["broken", "error"]
    assert r.loc["iforest", "auroc"] > 0.9
    assert res.summary().set_index("detector").loc["broken", "failed"] == 1
    assert "broken failed" in caplog.text


def test_missing_folder_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    monkeypatch.delenv("ANOVAE_ADBENCH", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="ANOVAE_ADBENCH"):
        resolve_data_dir()
    monkeypatch.setenv("ANOVAE_ADBENCH", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    result = CliRunner().invoke(bench_app, ["tabular", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_cli_tabular(tmp_path: Path) -> None:
    data = _write_suite(tmp_path / "data")
    out = tmp_path / "res"
    result = CliRunner().invoke(bench_app, [
        "tabular", "--data-dir", str(data), "--protocol", "unsupervised", "--detectors",
        "iforest", "--datasets", "alpha,gamma", "--seeds", "1", "--max-rows", "100", "--out",
        str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "#### unsupervised: mean over data sets" in result.output
    assert "| iforest |" in result.output
    assert (out / "results.csv").is_file()
    bad = CliRunner().invoke(bench_app, ["tabular", "--data-dir", str(data), "--detectors",
                                         "nope", "--no-progress"])
    assert bad.exit_code == 2 and "unknown detector" in bad.output


@pytest.mark.skipif(importlib.util.find_spec("pyod") is None, reason="PyOD is not installed")
def test_pyod_detectors(tmp_path: Path) -> None:
    data = _write_suite(tmp_path)
    res = run_tabular_benchmark(data, protocols=("novelty",), datasets=["gamma"],
                                detectors=["pyod-ae"], seeds=1, progress=False)
    assert res.results["error"].eq("").all()
    assert res.results["auroc"].iloc[0] > 0.8
