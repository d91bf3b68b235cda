"""Fully connected (variational) autoencoder for tabular rows.

One module serves the VAE and the plain autoencoder: ``variational=True`` makes the encoder output
``(mu, logvar)`` of ``q(z|x)``; ``variational=False`` makes it a deterministic code ``z``.
The decoder outputs the parameters of ``p(x|z)`` per feature (see :mod:`anovae.likelihoods`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anovae.likelihoods import bernoulli_nll, gaussian_nll
from anovae.nets.blocks import mlp, posterior_logvar

__all__ = ["LOGVAR_MIN", "MLPAutoencoder", "MLPConfig", "VARIANCES"]

#: Lower bound of the decoder's log-variance (soft): stops the variance collapsing onto discrete
#: values, which would make the likelihood (and so the score) explode for exact repeats.
#: -3 (a standard deviation of about 0.22 scaled units; was -6): a noise floor that keeps a few
#: precisely predicted features from dominating the score (+0.9 / +0.3 AUROC on the two halves
#: of the ADBench dev sets, docs/benchmarks.md).
LOGVAR_MIN = -3.0

VARIANCES = ("per_sample", "per_feature", "fixed")


@dataclass(frozen=True)
class MLPConfig:
    """Everything needed to rebuild an :class:`MLPAutoencoder` (stored in saved models)."""

    n_features: int
    hidden_dims: tuple[int, ...] = (64, 32)
    latent_dim: int = 8
    likelihood: str = "gaussian"  # "gaussian" | "bernoulli"
    variance: str = "per_sample"  # gaussian only: "per_sample" | "per_feature" | "fixed"
    activation: str = "relu"
    dropout: float = 0.0
    variational: bool = True
    kind: str = field(default="mlp", init=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MLPConfig:
        d = {k: v for k, v in d.items() if k != "kind"}
        d["hidden_dims"] = tuple(int(h) for h in d["hidden_dims"])
        return cls(**d)


class MLPAutoencoder(nn.Module):
    """Encoder ``D -> hidden -> (mu, logvar)``, decoder ``L -> reversed(hidden) -> params(x)``.

    >>> net = MLPAutoencoder(MLPConfig(n_features=5, hidden_dims=(8,), latent_dim=2))
    >>> mu, logvar = net.encode(torch.zeros(3, 5))
    >>> tuple(mu.shape), tuple(net.decode(mu)[0].shape)
    ((3, 2), (3, 5))
    """

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        d, h, latent = config.n_features, list(config.hidden_dims), config.latent_dim
        enc_out = 2 * latent if config.variational else latent
        self.encoder = mlp([d, *h, enc_out], config.activation, config.dropout)
        gaussian = config.likelihood == "gaussian"
        self.learned_sample_var = gaussian and config.variance == "per_sample"
        dec_out = 2 * d if self.learned_sample_var else d
        self.decoder = mlp([latent, *reversed(h), dec_out], config.activation, config.dropout)
        if config.likelihood == "gaussian" and config.variance == "per_feature":
            self.feature_logvar = nn.Parameter(torch.zeros(d))
        else:
            self.register_parameter("feature_logvar", None)

    # -- the interface every anovae network shares -------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` (B, D) -> ``mu`` (B, L) and ``logvar`` (B, L), or ``(z, None)`` for a plain AE."""
        h = self.encoder(x)
        if not self.config.variational:
            return h, None
        mu, raw_logvar = h.chunk(2, dim=-1)
        return mu, posterior_logvar(raw_logvar)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``z`` (..., L) -> ``loc`` (..., D) and ``logvar`` (..., D) or ``None``.

        ``loc`` is the mean for a Gaussian and the logits for a Bernoulli likelihood.
        """
        out = self.decoder(z)
        if self.learned_sample_var:
            loc, raw = out.chunk(2, dim=-1)
            return loc, LOGVAR_MIN + F.softplus(raw - LOGVAR_MIN)
        if self.feature_logvar is not None:
            logvar = LOGVAR_MIN + F.softplus(self.feature_logvar - LOGVAR_MIN)
            return out, logvar.expand_as(out)
        return out, None

    def mean(self, loc: torch.Tensor) -> torch.Tensor:
        """Expected value of ``p(x|z)`` from the decoder's ``loc`` (..., D)."""
        return torch.sigmoid(loc) if self.config.likelihood == "bernoulli" else loc

    def nll(self, x: torch.Tensor, loc: torch.Tensor, logvar: torch.Tensor | None) -> torch.Tensor:
        """Per-feature ``-log p(x|z)``: ``x`` (B, D) against ``loc`` (..., B, D) -> (..., B, D).

        A Bernoulli likelihood sees ``x`` clipped into [0, 1]; a Gaussian with fixed variance is
        the unit-variance Gaussian (squared error / 2 plus a constant).
        """
        if self.config.likelihood == "bernoulli":
            return bernoulli_nll(x.clamp(0.0, 1.0), loc)
        if logvar is None:
            logvar = torch.zeros((), dtype=loc.dtype, device=loc.device)
        return gaussian_nll(x, loc, logvar)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction: decoder mean at ``z = mu``. (B, D) -> (B, D)."""
        mu, _ = self.encode(x)
        loc, _ = self.decode(mu)
        return self.mean(loc)
