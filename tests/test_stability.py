"""Numerical stability on awkward but legal data (regressions of real failures)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anovae import VAEDetector
from anovae.nets.blocks import POSTERIOR_LOGVAR_MAX, posterior_logvar
from anovae.tabular import SCALED_MAX, Scaler


def test_posterior_logvar_is_identity_on_sane_values_and_bounded_above() -> None:
    raw = torch.tensor([-20.0, -2.0, 0.0, 2.0, 50.0, 1e6])
    out = posterior_logvar(raw)
    assert torch.allclose(out[:4], raw[:4], atol=5e-4)
    assert torch.all(out <= POSTERIOR_LOGVAR_MAX)
    assert torch.isfinite(torch.exp(out)).all()


def test_near_constant_column_with_extreme_values_trains() -> None:
    # ADBench's shuttle: a column whose interquartile range is tiny next to its rare values, so
    # robust scaling puts some training rows thousands of units out; the encoder's variance
    # used to overflow to inf and the loss to NaN at the first epoch.
    rng = np.random.default_rng(0)
    n = 3000
    X = rng.normal(size=(n, 6))
    X[:, 0] = np.round(rng.normal(size=n) * 0.01, 3)  # IQR about 0.013
    X[rng.choice(n, 30, replace=False), 0] = rng.uniform(500, 2000, size=30)  # about 10^5 IQRs out
    det = VAEDetector(epochs=5, random_state=0).fit(X)
    scores = det.decision_function(X)
    assert np.isfinite(scores).all()
    assert np.isfinite(det.history_["loss"]).all()


def _fitted(score: str, X: np.ndarray) -> VAEDetector:
    return VAEDetector(epochs=3, random_state=0, score_type=score).fit(X)


@pytest.mark.parametrize("score", ["elbo", "iwae", "reconstruction_probability",
                                   "reconstruction"])
@pytest.mark.parametrize("value", [3e3, 1e19, 1e30, -1e300])
def test_extreme_values_score_finite_and_are_flagged(score: str, value: float) -> None:
    # 3e3: the encoder's posterior variance underflows and the IWAE bound's log q(z|x) was
    # NaN; 1e19 and beyond: squares overflow float32 (inf - inf = NaN) in every score. A NaN
    # score is never above the threshold, so the most anomalous row was predicted normal.
    X = np.random.default_rng(0).normal(size=(300, 4))
    det = _fitted(score, X)
    row = X[:1].copy()
    row[0, 0] = value
    assert np.isfinite(det.decision_function(row)).all()
    assert np.isfinite(det.feature_scores(row)).all()
    assert det.predict(row).tolist() == [1]


def test_an_extreme_training_row_does_not_break_the_iwae_fit() -> None:
    X = np.random.default_rng(0).normal(size=(300, 4))
    X[0, 0] = 1e4
    det = _fitted("iwae", X)
    assert np.isfinite(det.decision_scores_).all()
    assert det.labels_[0] == 1


def test_scaled_values_are_clipped_and_gaps_kept() -> None:
    s = Scaler("standard").fit(np.array([[0.0], [1.0], [2.0]]))
    out = s.transform(np.array([[1e300], [-1e300], [np.nan], [1.0]]))
    assert out[0, 0] == np.float32(SCALED_MAX) and out[1, 0] == -np.float32(SCALED_MAX)
    assert np.isnan(out[2, 0]) and out[3, 0] == 0.0


@pytest.mark.parametrize("unit", [1e-13, 1e-35, 1e200, 1e39])
@pytest.mark.parametrize("method", ["robust", "standard", "minmax"])
def test_a_table_in_tiny_or_huge_units_scales_like_the_same_table_in_ones(
        unit: float, method: str) -> None:
    # A spread of 1e-13 was taken for a constant column (an absolute 1e-12 cut-off: every
    # score equal); 1e200 overflowed the standard deviation's squares; 1e39 overflowed
    # float32 while centring (every row clipped to the same value).
    X = np.random.default_rng(0).normal(size=(200, 3))
    ref = Scaler(method).fit(X).transform(X)
    out = Scaler(method).fit(X * unit).transform(X * unit)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_a_constant_column_and_one_of_rounding_noise_get_scale_one() -> None:
    X = np.column_stack([np.full(10, 5.0), np.where(np.arange(10) % 2, 0.1 + 0.2, 0.3),
                         np.arange(10.0)])
    for method in ("robust", "standard", "minmax"):
        scale = Scaler(method).fit(X).scale
        assert scale is not None and scale[0] == 1.0 and scale[1] == 1.0 and scale[2] != 1.0


def test_anomalies_in_tiny_units_are_found() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)) * 1e-13
    det = VAEDetector(epochs=3, random_state=0).fit(X)
    normal, odd = X[:5], X[:5] + 6e-13
    assert (det.decision_function(odd) > det.decision_function(normal)).all()
