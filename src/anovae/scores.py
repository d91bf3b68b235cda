"""Anomaly scores of a fitted (variational) autoencoder: pure functions, higher = more anomalous.

Every score is computed per feature first, ``(B, *F)`` (``F = (D,)`` for tables, ``(C, H, W)`` for
images: "features" are pixels there), and the row score is the sum over features,
so :func:`feature_scores` always adds up to :func:`row_scores` (for ``"iwae"`` the part that does
not split by feature is spread evenly; see below).

Monte-Carlo scores use *common random numbers*: one fixed set of ``S`` standard-normal draws
``eps`` of shape ``(S, L)`` is shared by every row, so a row's score depends on that row alone
(not on its batch, its position, or the call) and scoring is deterministic.

Every score is of ``x`` as the network sees it: the rows after the detector's scaler
(``scaler_``; for mixed tables numeric cells also pass through asinh), not in the units of the
caller's data (what ``reconstruct`` gives back).

Scores:

``"reconstruction"``
    squared error of the decoder mean at ``z = mu``: ``(x - E[x|mu])^2`` per feature.
``"reconstruction_probability"``
    An & Cho (2015, Algorithm 4): the mean likelihood of ``x`` over posterior draws
    ``z_s = mu + sigma * eps_s``, as a surprise: ``-log mean_s p(x | z_s)``. Per feature: the
    likelihood-weighted average of ``-log p(x_j|z_s)``, plus the rest spread evenly (as
    ``"iwae"``). (Before anovae 0.3.1 this was ``mean_s -log p(x|z_s)``, the ELBO's
    reconstruction term, which Jensen's inequality puts above it.)
``"elbo"``
    negative ELBO: ``mean_s -log p(x | z_s)`` plus ``KL(q(z|x) || p(z))`` (spread evenly over
    the features).
``"iwae"``
    importance-weighted bound on ``-log p(x)`` (Burda et al. 2016) with ``K = S`` samples:
    ``-log mean_s p(x|z_s) p(z_s) / q(z_s|x)``. Per feature: the importance-weighted average of
    ``-log p(x_j|z_s)``, plus the rest of the bound spread evenly.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from anovae.likelihoods import kl_standard_normal, log_normal
from anovae.losses import AutoencoderNet

__all__ = ["MONTE_CARLO_SCORES", "SCORES", "common_noise", "feature_baseline", "feature_excess",
           "feature_scores", "rank_features", "row_scores"]

SCORES = ("reconstruction", "reconstruction_probability", "elbo", "iwae")
MONTE_CARLO_SCORES = ("reconstruction_probability", "elbo", "iwae")


def common_noise(n_samples: int, latent_dim: int, seed: int) -> torch.Tensor:
    """The fixed ``(S, L)`` standard-normal draws shared by every row (NumPy's stable generator)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal((n_samples, latent_dim)).astype(np.float32))


def _check(score: str) -> None:
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; choose one of {list(SCORES)}")


def feature_scores(net: AutoencoderNet, x: torch.Tensor, score: str,
                   eps: torch.Tensor | None = None) -> torch.Tensor:
    """Per-feature contributions ``(B, D)`` to the row score; rows sum to :func:`row_scores`.

    Args:
        net: a fitted network in eval mode.
        x: ``(B, D)`` preprocessed rows.
        score: one of :data:`SCORES`.
        eps: ``(S, L)`` common noise for the Monte-Carlo scores (see :func:`common_noise`).
    """
    _check(score)
    mu, logvar = net.encode(x)  # (B, L)
    feat_dims = tuple(range(1, x.dim()))  # the non-batch axes of x
    if score == "reconstruction" or logvar is None:
        if score != "reconstruction":
            raise ValueError(f"score {score!r} needs a variational model; use 'reconstruction'")
        loc, _ = net.decode(mu)
        return (x - net.mean(loc)).pow(2)  # (B, *F)
    if eps is None:
        raise ValueError(f"score {score!r} needs the common noise eps")
    eps = eps.to(device=x.device, dtype=x.dtype)
    s_, b_ = eps.shape[0], x.shape[0]
    z = mu.unsqueeze(0) + torch.exp(0.5 * logvar).unsqueeze(0) * eps[:, None, :]  # (S, B, L)
    loc, dec_logvar = net.decode(z.reshape(s_ * b_, -1))  # (S*B, *F)
    # (S, B, *P): the decoder's parameters need not have x's shape (mixed tables pack every
    # column's parameters), nll maps them back to (S, B, *F)
    loc = loc.reshape(s_, b_, *loc.shape[1:])
    if dec_logvar is not None:
        dec_logvar = dec_logvar.reshape(s_, b_, *dec_logvar.shape[1:])
    nll = net.nll(x, loc, dec_logvar)  # (S, B, *F)
    d = x[0].numel()
    expand = (slice(None),) + (None,) * len(feat_dims)  # (B,) -> (B, 1, ...)
    log_lik = -nll.flatten(2).sum(-1)  # (S, B): log p(x|z_s)
    if score == "reconstruction_probability":
        return _neg_log_mean_exp(log_lik, nll)  # (B, *F)
    if score == "elbo":
        kl = kl_standard_normal(mu, logvar).sum(-1)  # (B,)
        return nll.mean(0) + (kl / d)[expand]  # (B, *F)
    # iwae: log w_s = log p(x|z_s) + log p(z_s) - log q(z_s|x). log q from eps itself
    # ((z - mu) / sigma = eps): for a far outlier the posterior variance underflows, z - mu
    # rounds to 0 and exp(-logvar) to inf, and the textbook form gives 0 * inf = NaN.
    log_q = -0.5 * (math.log(2 * math.pi) + logvar.unsqueeze(0)
                    + eps.pow(2)[:, None, :]).sum(-1)  # (S, B)
    return _neg_log_mean_exp(log_lik + log_normal(z) - log_q, nll)  # (B, *F)


def _neg_log_mean_exp(log_w: torch.Tensor, nll: torch.Tensor) -> torch.Tensor:
    """``-log mean_s exp(log_w_s)`` per row, split into per-feature parts ``(B, *F)``.

    ``log_w``: ``(S, B)`` log weights of the ``S`` draws; ``nll``: ``(S, B, *F)`` per-feature
    ``-log p(x_j|z_s)``. Feature ``j`` gets the weight-averaged ``nll`` of its draws, plus an
    even share of the rest of the total, so the parts add up to it.
    """
    s_, feat = log_w.shape[0], nll.shape[2:]
    total = -(torch.logsumexp(log_w, dim=0) - math.log(s_))  # (B,)
    weights = torch.softmax(log_w, dim=0)  # (S, B), normalised
    per_feature = (weights[(...,) + (None,) * len(feat)] * nll).sum(0)  # (B, *F)
    rest = total - per_feature.flatten(1).sum(-1)  # (B,)
    return per_feature + (rest / math.prod(feat))[(slice(None),) + (None,) * len(feat)]


def row_scores(net: AutoencoderNet, x: torch.Tensor, score: str,
               eps: torch.Tensor | None = None) -> torch.Tensor:
    """Row anomaly scores ``(B,)``: higher = more anomalous. See the module docstring."""
    return feature_scores(net, x, score, eps).flatten(1).sum(-1)


def rank_features(contrib: np.ndarray, k: int, missing: np.ndarray | None = None,
                  baseline: np.ndarray | None = None) -> np.ndarray:
    """``(n, k)`` column indices of each row's ``k`` top features, top first (ties: the lower
    index): the largest :func:`feature_excess` over ``baseline`` ``(D,)`` (each column's typical
    contribution, see :func:`feature_baseline`), or the largest contributions ``(n, D)`` when
    ``baseline`` is ``None`` (a model without one).

    Ranking by the excess asks what a cell costs beyond what its column costs in a typical
    training row: columns differ in their typical surprise (a noisy column costs more in every
    row than a precise one), so ranking the raw contributions blames the naturally noisy
    columns. With ``missing`` ``(n, D)`` (a mixed table's gaps), blank cells rank after every
    observed one: a gap costs its expected surprise, which says nothing about what is wrong with
    the row.

    >>> rank_features(np.array([[1.0, 3.0, 2.0]]), 2).tolist()
    [[1, 2]]
    >>> rank_features(np.array([[1.0, 3.0, 2.0]]), 2, np.array([[False, True, False]])).tolist()
    [[2, 0]]
    >>> rank_features(np.array([[1.0, 3.0, 2.0]]), 2, baseline=np.array([0.0, 2.5, 0.5])).tolist()
    [[2, 0]]
    """
    key = contrib if baseline is None else contrib - baseline
    if missing is None or not missing.any():
        return np.argsort(-key, axis=1, kind="stable")[:, :k]
    return np.lexsort((-key, missing), axis=1)[:, :k]


def feature_excess(contrib: np.ndarray, baseline: np.ndarray | None) -> np.ndarray:
    """``(n, D)`` contributions ``(n, D)`` minus each column's typical one ``baseline`` ``(D,)``:
    what :func:`rank_features` ranks by. NaN everywhere for a model without a baseline (images,
    files from anovae < 0.4), whose features rank by their contribution.

    >>> feature_excess(np.array([[1.0, 3.0]]), np.array([0.5, 2.0])).tolist()
    [[0.5, 1.0]]
    """
    if baseline is None:
        return np.full(contrib.shape, np.nan)
    return contrib - baseline


def feature_baseline(contrib: np.ndarray) -> np.ndarray:
    """Each column's typical contribution ``(D,)``: the median over training rows of their
    per-feature scores ``(m, D)``, ignoring cells whose score is not finite (0 for a column
    without one). The median, not the mean: the training rows are only mostly normal, and one
    anomalous cell can cost 1e13 nats, which a mean would carry into its column's baseline.

    >>> feature_baseline(np.array([[1.0, 4.0], [3.0, 0.0], [2.0, 1e13]])).tolist()
    [2.0, 4.0]
    """
    if contrib.shape[0] == 0:
        return np.zeros(contrib.shape[1])
    ok = np.isfinite(contrib)
    if ok.all():
        return np.median(contrib, axis=0)
    with warnings.catch_warnings():  # a column without a finite cell: "All-NaN slice"
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(np.where(ok, contrib, np.nan), axis=0)
    return np.where(np.isfinite(med), med, 0.0)
