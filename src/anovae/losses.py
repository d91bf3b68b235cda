"""Training objectives (pure functions of a network and a batch), returning named terms.

The VAE objective is the negative ELBO (Kingma & Welling 2014):

    loss = mean_over_batch( sum_features -log p(x|z) + beta * sum_latent KL(q(z|x) || p(z)) )

Both terms are summed over their own axis and then averaged over the batch, so ``beta = 1`` is
the true ELBO whatever the batch size or the number of features (tutorial code often takes a
mean over features for one term and a sum for the other, which silently rescales beta).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from anovae.likelihoods import kl_standard_normal

__all__ = ["AutoencoderNet", "LossTerms", "elbo_loss"]


class AutoencoderNet(Protocol):
    """What losses and scores need from a network (see :class:`anovae.nets.mlp.MLPAutoencoder`)."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...
    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]: ...
    def mean(self, loc: torch.Tensor) -> torch.Tensor: ...
    def nll(self, x: torch.Tensor, loc: torch.Tensor, logvar: torch.Tensor | None
            ) -> torch.Tensor: ...


@dataclass
class LossTerms:
    """Batch-mean loss and its parts (each a scalar tensor)."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor


def elbo_loss(
    net: AutoencoderNet,
    x: torch.Tensor,
    *,
    beta: float = 1.0,
    free_bits: float = 0.0,
    generator: torch.Generator | None = None,
    weights: torch.Tensor | None = None,
) -> LossTerms:
    """Negative ELBO of a batch with one reparameterised sample per row.

    Args:
        net: the (variational) autoencoder; a plain autoencoder (``encode`` returns no logvar)
            gets the reconstruction term only, with ``z = encode(x)``.
        x: ``(B, D)`` batch.
        beta: weight of the KL term (``beta > 1``: beta-VAE; ramped up from 0 during warm-up).
        free_bits: minimum KL per latent dimension in nats, applied to the batch-mean KL of each
            dimension (Kingma et al. 2016); 0 disables it.
        generator: source of the reparameterisation noise.
        weights: optional ``(B,)`` non-negative row weights (down-weighting suspect rows).

    Returns:
        :class:`LossTerms` with ``loss = reconstruction + beta * kl`` (batch means).
    """
    mu, logvar = net.encode(x)  # (B, L), (B, L) or None
    if weights is None:
        w = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=x.dtype, device=x.device)  # (B,)
    else:
        w = weights / weights.sum().clamp_min(1e-12)  # (B,), sums to 1
    if logvar is None:
        z = mu
        kl = torch.zeros((), dtype=x.dtype, device=x.device)
        kl_for_loss = kl
    else:
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps  # reparameterisation trick, (B, L)
        kl_dims = (w[:, None] * kl_standard_normal(mu, logvar)).sum(0)  # batch mean, (L,)
        kl = kl_dims.sum()
        # Free bits: a floor per dimension; below it the KL of that dimension gets no gradient.
        kl_for_loss = torch.clamp(kl_dims, min=free_bits).sum() if free_bits > 0 else kl
    loc, dec_logvar = net.decode(z)  # (B, *F): F = (D,) for tables, (C, H, W) for images
    recon = (w * net.nll(x, loc, dec_logvar).flatten(1).sum(-1)).sum()  # scalar
    return LossTerms(recon + beta * kl_for_loss, recon, kl)
