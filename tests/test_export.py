"""ONNX export: onnxruntime's scores equal anovae's (relative 1e-5) for every score type, on
random rows and on real ones (scikit-learn's breast-cancer table; ADBench tables when
../shared/data is there), plus the CLI command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from anovae import VAEDetector
from anovae.cli import app

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from anovae.export import export_onnx  # noqa: E402

RTOL = 1e-5


def onnx_scores(path: Path, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scores, flags = session.run(["anomaly_score", "is_anomaly"], {"x": X.astype(np.float32)})
    return scores, flags


def check_equal(det: Any, path: Path, X: np.ndarray) -> None:
    X32 = X.astype(np.float32)  # the graph takes float32: compare on the same values
    got, flags = onnx_scores(path, X32)
    names = getattr(det, "feature_names_in_", None)  # the graph takes columns by position
    rows = X32.astype(np.float64)
    want = det.decision_function(rows if names is None else pd.DataFrame(rows, columns=names))
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)
    near = np.abs(want - det.threshold_) <= RTOL * abs(det.threshold_)
    assert (flags == (want > det.threshold_))[~near].all()


def test_every_score_type_on_random_rows(any_fitted: Any, data: Any, tmp_path: Path) -> None:
    path = export_onnx(any_fitted, tmp_path / "m.onnx")
    rng = np.random.default_rng(1)
    X = np.vstack([data.X_test, rng.normal(0, 3, size=(40, data.X_test.shape[1]))])
    check_equal(any_fitted, path, X)
    check_equal(any_fitted, path, X[:1])  # the batch size is dynamic


@pytest.fixture(scope="module")
def cancer() -> np.ndarray:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer().data  # (569, 30), features from 1e-3 to 4e3


@pytest.mark.parametrize("params", [
    {"score_type": "elbo"}, {"score_type": "iwae"}, {"score_type": "reconstruction"},
    {"score_type": "reconstruction_probability", "variance": "per_feature"},
    {"likelihood": "bernoulli", "scaler": "minmax"},
], ids=lambda p: "-".join(map(str, p.values())))
def test_real_rows(cancer: np.ndarray, params: dict[str, Any], tmp_path: Path) -> None:
    det = VAEDetector(epochs=3, hidden_dims=(16, 8), latent_dim=3, n_samples=4, device="cpu",
                      random_state=0, **params).fit(cancer[:400])
    path = export_onnx(det, tmp_path / "m.onnx")
    check_equal(det, path, cancer[400:])
    # rows far outside the training range: saturated logits gave inf / NaN in the graph of
    # torch's cross-entropy with a Bernoulli likelihood
    far = np.vstack([cancer[400:403] * 100, -cancer[403:406] * 1e4, cancer[406:407] + 1e5])
    check_equal(det, path, far)
    assert np.isfinite(onnx_scores(path, far)[0]).all()


ADBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "adbench"


@pytest.mark.shared
@pytest.mark.parametrize("name", ["6_cardio", "4_breastw"])
def test_real_rows_adbench(name: str, tmp_path: Path) -> None:
    """ADBench tables from ../shared/data (float64 and uint8 columns), skipped when absent."""
    path = ADBENCH / f"{name}.npz"
    if not path.exists():
        pytest.skip(f"{path} is absent (shared data)")
    with np.load(path, allow_pickle=False) as d:
        X, y = d["X"].astype(np.float64), d["y"]
    det = VAEDetector(epochs=3, n_samples=4, device="cpu", random_state=0).fit(X[y == 0][:600])
    onnx_path = export_onnx(det, tmp_path / "m.onnx")
    rng = np.random.default_rng(0)
    check_equal(det, onnx_path, X[rng.permutation(len(X))[:500]])


def test_image_models(tmp_path: Path) -> None:
    """The image detector's graph: (N, C, H, W) floats in [0, 1] (skipped where absent)."""
    import anovae

    if not hasattr(anovae, "ImageVAEDetector"):
        pytest.skip("no image detector in this build")
    images = (np.random.default_rng(0).random((64, 8, 8)) * 255).astype(np.uint8)
    det = anovae.ImageVAEDetector(epochs=1, random_state=0, device="cpu",
                                  complexity_correction=False, latent_density=False).fit(images)
    path = export_onnx(det, tmp_path / "m.onnx")
    check_equal(det, path, images[:, None] / 255.0)


def test_image_models_with_fitted_score_terms_are_refused(tmp_path: Path) -> None:
    """The PNG size and the latent mixture are not graph ops: the default image VAE says how
    to export instead."""
    import anovae

    if not hasattr(anovae, "ImageVAEDetector"):
        pytest.skip("no image detector in this build")
    images = (np.random.default_rng(0).random((64, 8, 8)) * 255).astype(np.uint8)
    det = anovae.ImageVAEDetector(epochs=1, random_state=0, device="cpu").fit(images)
    both = "complexity_correction=False, latent_density=False to export"
    with pytest.raises(ValueError, match="fitted with complexity_correction=True and "
                                         f"latent_density=True .*{both}"):
        export_onnx(det, tmp_path / "m.onnx")
    latent_only = anovae.ImageVAEDetector(epochs=1, random_state=0, device="cpu",
                                          complexity_correction=False).fit(images)
    with pytest.raises(ValueError, match=f"fitted with latent_density=True is .*{both}"):
        export_onnx(latent_only, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_mixed_table_models_are_refused(make_detector: Any, tmp_path: Path) -> None:
    pytest.importorskip("anovae.mixed")
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=200), "c": rng.choice(["x", "y"], 200)})
    det = make_detector(VAEDetector).fit(frame)
    if not hasattr(det.schema_, "kinds"):
        pytest.skip("this build fits mixed tables on the numeric path")
    with pytest.raises(ValueError, match="mixed-table models"):
        export_onnx(det, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    model = det.save(tmp_path / "m.safetensors")
    res = CliRunner().invoke(app, ["export", str(model), "-o", str(tmp_path / "m.onnx")])
    assert res.exit_code == 2 and "mixed-table models" in res.output


def test_metadata(fitted_vae_frame: VAEDetector, tmp_path: Path) -> None:
    import onnx

    path = export_onnx(fitted_vae_frame, tmp_path / "m.onnx")
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    doc = json.loads(meta["anovae"])
    assert doc["columns"] == [f"f{i}" for i in range(5)]
    assert doc["threshold"] == fitted_vae_frame.threshold_ and doc["score_type"] == "elbo"


def test_cli_export(tmp_path: Path, fitted_vae_frame: VAEDetector, data: Any) -> None:
    model = fitted_vae_frame.save(tmp_path / "m.safetensors")
    out = tmp_path / "m.onnx"
    res = CliRunner().invoke(app, ["export", str(model), "--format", "onnx", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "exported VAEDetector" in res.output
    check_equal(fitted_vae_frame, out, data.X_test)
    res = CliRunner().invoke(app, ["export", str(model), "--format", "tflite", "-o", str(out)])
    assert res.exit_code == 2 and "onnx" in res.output
    res = CliRunner().invoke(app, ["export", str(tmp_path / "nope.safetensors"), "-o", str(out)])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_a_row_holding_nan_is_flagged_not_passed_as_normal(fitted_vae: Any, data: Any,
                                                           tmp_path: Path) -> None:
    path = export_onnx(fitted_vae, tmp_path / "m.onnx")
    X = data.X_test[:3].astype(np.float32).copy()
    X[1, 0] = np.nan
    scores, flags = onnx_scores(path, X)
    assert np.isnan(scores[1]) and flags[1]
    assert not np.isnan(scores[[0, 2]]).any()
