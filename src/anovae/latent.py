"""Density of latent codes: a Gaussian mixture fitted to the codes of the normal data.

A VAE's prior ``p(z) = N(0, I)`` says little about where the codes of normal data really lie:
the *aggregate posterior* ``q(z) = mean_x q(z | x)`` of a VAE trained on digits or clothes is
clustered (one cluster per style or class), with empty regions between the clusters. An input
that the decoder reconstructs well can still be encoded far from every cluster (a held-out
class, a digit drawn in an unusual way), and the negative log-density of its code under a
mixture fitted to the normal codes shows it where the reconstruction term does not (Ghosh et
al. 2020 fit such an ex-post density to sample from deterministic autoencoders; the idea of
scoring by latent density goes back to DAGMM, Zong et al. 2018).

:func:`fit_latent_mixture` fits the mixture (scikit-learn's EM, full covariances) to codes drawn
from ``q(z | x)`` of the fitting rows; :meth:`LatentMixture.neg_log_density` scores codes (a pure
function of the stored parameters, float64, deterministic). :class:`~anovae.ImageVAEDetector`
adds it to its score (``latent_density=True``).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

__all__ = ["LATENT_COMPONENTS", "LatentMixture", "fit_latent_mixture"]

#: Mixture components when not given (chosen on the training-images-only dev split of
#: ``benchmarks/images_dev_split.py``; docs/benchmarks.md, issue 4).
LATENT_COMPONENTS = 10
#: Added to the diagonal of every covariance (scikit-learn's ``reg_covar``): a floor that keeps
#: a component over nearly constant latent dimensions from collapsing.
REG_COVAR = 1e-4


@dataclass(frozen=True, eq=False)  # arrays: no field-wise == or hash
class LatentMixture:
    """A Gaussian mixture over latent codes (float64 parameters).

    ``weights (K,)`` sum to 1; ``means (K, L)``; ``precisions_cholesky (K, L, L)``: for each
    component the upper-triangular ``U`` with ``U U^T`` = the inverse covariance
    (scikit-learn's ``precisions_cholesky_``).
    """

    weights: np.ndarray
    means: np.ndarray
    precisions_cholesky: np.ndarray

    @property
    def n_components(self) -> int:
        return int(self.weights.shape[0])

    @property
    def latent_dim(self) -> int:
        return int(self.means.shape[1])

    def neg_log_density(self, z: np.ndarray) -> np.ndarray:
        """``-log r(z)`` of codes ``z (n, L)`` -> ``(n,)`` float64 (higher = less typical).

        >>> m = LatentMixture(np.ones(1), np.zeros((1, 2)), np.eye(2)[None])
        >>> round(float(m.neg_log_density(np.zeros((1, 2)))[0]), 4)  # log(2 pi)
        1.8379
        """
        z = np.asarray(z, dtype=np.float64)  # (n, L)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"codes must be (n, {self.latent_dim}), got {z.shape}")
        u = self.precisions_cholesky  # (K, L, L)
        # y_k = (z - m_k) U_k: (K, n, L); log N = -0.5 (L log 2 pi + |y|^2) + log det U_k
        y = np.einsum("nl,klm->knm", z, u) - np.einsum("kl,klm->km", self.means, u)[:, None, :]
        log_det = np.log(np.diagonal(u, axis1=1, axis2=2)).sum(-1)  # (K,)
        log_comp = (-0.5 * (self.latent_dim * math.log(2 * math.pi) + (y * y).sum(-1))
                    + log_det[:, None] + np.log(self.weights)[:, None])  # (K, n)
        return -logsumexp(log_comp, axis=0)  # (n,)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The parameters by name (stored as tensors in model files)."""
        return {"weights": self.weights, "means": self.means,
                "precisions_cholesky": self.precisions_cholesky}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> LatentMixture:
        """Inverse of :meth:`to_arrays` (e.g. tensors read from a model file); checks that the
        parameters are all there and make a mixture: shapes agree, values are finite, weights
        are positive and sum to 1, the Cholesky factors have a positive diagonal."""
        missing = sorted({"weights", "means", "precisions_cholesky"} - set(arrays))
        if missing:
            raise ValueError(f"the latent mixture lacks {missing}")
        w = np.asarray(arrays["weights"], dtype=np.float64)
        m = np.asarray(arrays["means"], dtype=np.float64)
        u = np.asarray(arrays["precisions_cholesky"], dtype=np.float64)
        k = w.shape[0] if w.ndim == 1 else -1
        if k < 1 or m.ndim != 2 or m.shape[0] != k or u.shape != (k, m.shape[1], m.shape[1]):
            raise ValueError(f"inconsistent latent mixture: weights {w.shape}, means {m.shape}, "
                             f"precisions_cholesky {u.shape}")
        if not (np.isfinite(w).all() and np.isfinite(m).all() and np.isfinite(u).all()):
            raise ValueError("the latent mixture has values that are not finite")
        if (w <= 0).any() or abs(float(w.sum()) - 1.0) > 1e-6:
            raise ValueError("the latent mixture's weights must be positive and sum to 1")
        if (np.diagonal(u, axis1=1, axis2=2) <= 0).any():
            raise ValueError("the latent mixture's Cholesky factors need a positive diagonal")
        return cls(w, m, u)


def fit_latent_mixture(codes: np.ndarray, n_components: int = LATENT_COMPONENTS, *,
                       seed: int = 0) -> LatentMixture:
    """Fit a full-covariance Gaussian mixture to codes ``(n, L)`` (EM, k-means start).

    Args:
        codes: draws from ``q(z | x)`` of normal rows (one per row is enough).
        n_components: components; capped so that there are at least twice as many codes as
            free parameters (``L + L (L + 1) / 2`` per component): with few normal rows a
            many-component mixture fits the noise of the training codes (trained on 100 of
            scikit-learn's digits, 10 components in 8 dimensions took the one-class AUROC from
            0.96 to 0.77; the cap gives one component there).
        seed: the EM start's seed (the fit is deterministic for a seed).

    >>> rng = np.random.default_rng(0)
    >>> z = np.r_[rng.normal(-3, 1, (200, 2)), rng.normal(3, 1, (200, 2))]
    >>> m = fit_latent_mixture(z, 2)
    >>> bool(m.neg_log_density(np.zeros((1, 2)))[0] > m.neg_log_density(np.full((1, 2), 3.0))[0])
    True
    """
    state = random.getstate()
    from sklearn.mixture import GaussianMixture  # its first import draws from Python's random
    random.setstate(state)  # (sklearn.metrics does): leave the caller's global state as it was

    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or codes.shape[0] < 2:
        raise ValueError(f"need codes of shape (n >= 2, L), got {codes.shape}")
    n, dim = codes.shape
    per_component = dim + dim * (dim + 1) // 2  # mean and full covariance
    k = max(1, min(int(n_components), n // (2 * per_component)))
    gm = GaussianMixture(k, covariance_type="full", reg_covar=REG_COVAR, random_state=seed)
    gm.fit(codes)
    return LatentMixture(np.asarray(gm.weights_, dtype=np.float64),
                         np.asarray(gm.means_, dtype=np.float64),
                         np.asarray(gm.precisions_cholesky_, dtype=np.float64))
