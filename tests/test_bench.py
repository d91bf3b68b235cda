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
    with pytest.raises(FileNotFoundError, match="no data set named nope .* it holds alpha, beta"):
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


def test_bench_errors_are_one_line_and_come_before_the_run(tmp_path: Path) -> None:
    import gzip

    suite = _write_suite(tmp_path / "suite")
    runner = CliRunner()
    (tmp_path / "afile").write_text("x")
    res = runner.invoke(bench_app, ["tabular", "--data-dir", str(suite), "--detectors",
                                    "iforest", "--seeds", "1", "--out", str(tmp_path / "afile")])
    assert res.exit_code == 2 and "a file of that name exists" in res.output
    assert "novelty" not in res.output  # refused before the run, not after it
    (suite / "4_broken.npz").write_text("not a zip")
    res = runner.invoke(bench_app, ["tabular", "--data-dir", str(suite), "--out",
                                    str(tmp_path / "o")])
    assert res.exit_code == 2 and "4_broken.npz is not a readable .npz" in res.output
    kdd = tmp_path / "kdd"
    kdd.mkdir()
    for name in ("KDDTrain+.csv.gz", "KDDTest+.csv.gz"):
        (kdd / name).write_bytes(gzip.compress(b"a,b\n1,2\n"))
    res = runner.invoke(bench_app, ["nslkdd", "--data-dir", str(kdd), "--out",
                                    str(tmp_path / "o")])
    assert res.exit_code == 2 and "has no 'label' column" in res.output
    (kdd / "KDDTrain+.csv.gz").write_text("not gzip")
    res = runner.invoke(bench_app, ["nslkdd", "--data-dir", str(kdd), "--out",
                                    str(tmp_path / "o")])
    assert res.exit_code == 2 and "cannot read" in res.output and "KDDTrain+" in res.output


def test_image_bench_checks_every_data_set_before_training(tmp_path: Path) -> None:
    from anovae.bench.images import run_image_benchmark, write_idx

    rng = np.random.default_rng(0)
    mnist = tmp_path / "data" / "mnist"
    mnist.mkdir(parents=True)
    for split_name, n in (("train", 40), ("t10k", 20)):
        write_idx(mnist / f"{split_name}-images-idx3-ubyte.gz",
                  (rng.random((n, 8, 8)) * 255).astype(np.uint8))
        write_idx(mnist / f"{split_name}-labels-idx1-ubyte.gz",
                  (np.arange(n) % 2).astype(np.uint8))
    trained = []
    import anovae.bench.images as bench_images

    real = bench_images._detector
    bench_images._detector = lambda *a: trained.append(a) or real(*a)
    try:
        with pytest.raises(FileNotFoundError, match="fashion-mnist"):
            run_image_benchmark(tmp_path / "data", datasets=["mnist", "fashion-mnist"],
                                detectors=["ae"], params={"epochs": 1}, progress=False)
        with pytest.raises(ValueError, match=r"class\(es\) \[7\]"):
            run_image_benchmark(tmp_path / "data", datasets=["mnist"], classes=[7],
                                detectors=["ae"], params={"epochs": 1}, progress=False)
    finally:
        bench_images._detector = real
    assert not trained  # nothing was fitted


def test_missing_optional_packages_name_the_extra() -> None:
    from anovae.cli.app import missing_module_message

    exc = ModuleNotFoundError("No module named 'dask'", name="dask.dataframe")
    assert missing_module_message(exc).endswith("pip install 'anovae[dask]'")
    assert "anovae[serve]" in missing_module_message(ModuleNotFoundError(name="uvicorn"))
