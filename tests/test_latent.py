"""The latent mixture (anovae.latent): density, fitting, stored parameters."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from anovae.latent import REG_COVAR, LatentMixture, fit_latent_mixture


def clusters(n: int = 600, seed: int = 0) -> np.ndarray:
    """Three elongated clusters in 4-d, as the codes of three kinds of normal images."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-4.0, 0, 0, 0], [4.0, 0, 0, 0], [0, 5.0, 0, 0]])
    scale = np.array([1.0, 0.3, 0.1, 2.0])
    return np.concatenate([c + rng.standard_normal((n // 3, 4)) * scale for c in centres])


def test_density_is_scikit_learns() -> None:
    z = clusters()
    mixture = fit_latent_mixture(z, 3, seed=0)
    gm = GaussianMixture(3, covariance_type="full", reg_covar=REG_COVAR, random_state=0).fit(z)
    probe = np.random.default_rng(1).normal(0, 4, (50, 4))
    np.testing.assert_allclose(mixture.neg_log_density(probe), -gm.score_samples(probe),
                               rtol=1e-10, atol=1e-10)
    # far from every code: less dense than at a cluster; between clusters: less than inside
    nld = mixture.neg_log_density(np.array([[-4.0, 0, 0, 0], [0, 0, 0, 0], [40.0, 0, 0, 0]]))
    assert nld[0] < nld[1] < nld[2]
    assert mixture.neg_log_density(probe).dtype == np.float64


def test_fit_is_deterministic_and_caps_components() -> None:
    z = clusters()
    a, b = fit_latent_mixture(z, 3, seed=5), fit_latent_mixture(z, 3, seed=5)
    for key, value in a.to_arrays().items():
        np.testing.assert_array_equal(b.to_arrays()[key], value)
    assert a.n_components == 3 and a.latent_dim == 4
    assert a.weights.sum() == pytest.approx(1.0)
    # at least twice as many codes as parameters (4 + 10 per component in 4-d)
    assert fit_latent_mixture(z, 10).n_components == 10
    assert fit_latent_mixture(z[:100], 10).n_components == 3
    assert fit_latent_mixture(z[:6], 10).n_components == 1
    with pytest.raises(ValueError, match="n >= 2"):
        fit_latent_mixture(z[:1])
    # a constant latent dimension (an unused one) does not make the density singular
    flat = z.copy()
    flat[:, 2] = 0.5
    assert np.isfinite(fit_latent_mixture(flat, 3).neg_log_density(z)).all()


def test_arrays_round_trip_and_shape_checks() -> None:
    mixture = fit_latent_mixture(clusters(), 3)
    again = LatentMixture.from_arrays(mixture.to_arrays())
    probe = clusters(seed=2)
    np.testing.assert_array_equal(again.neg_log_density(probe), mixture.neg_log_density(probe))
    arrays = mixture.to_arrays()
    arrays["means"] = arrays["means"][:2]
    with pytest.raises(ValueError, match="inconsistent latent mixture"):
        LatentMixture.from_arrays(arrays)
    for name, value, match in (("weights", np.r_[mixture.weights[:-1], 0.0], "sum to 1"),
                               ("means", np.full_like(mixture.means, np.inf), "not finite"),
                               ("precisions_cholesky", -mixture.precisions_cholesky,
                                "positive diagonal")):
        with pytest.raises(ValueError, match=match):
            LatentMixture.from_arrays({**mixture.to_arrays(), name: value})
    with pytest.raises(ValueError, match=r"lacks \['means'\]"):
        LatentMixture.from_arrays({k: v for k, v in mixture.to_arrays().items() if k != "means"})
    with pytest.raises(ValueError, match=r"codes must be \(n, 4\)"):
        mixture.neg_log_density(np.zeros((3, 5)))
