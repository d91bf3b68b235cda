"""Fully connected (variational) autoencoder for tabular rows.

One module serves the VAE and the plain autoencoder: ``variational=True`` makes the encoder output
``(mu, logvar)`` of ``q(z|x)``; ``variational=False`` makes it a deterministic code ``z``.
The decoder outputs the parameters of ``p(x|z)`` per feature (see :mod:`anovae.likelihoods`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from anovae.nets.blocks import LOGVAR_MIN, LikelihoodHead, floor_from_doc, floor_to_doc, mlp

__all__ = ["LOGVAR_MIN", "MLPAutoencoder", "MLPConfig", "VARIANCES"]


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
    #: soft floor of the decoder's log-variance (learned variances only; see
    #: :func:`anovae.nets.blocks.decoder_logvar`)
    logvar_floor: float = LOGVAR_MIN
    kind: str = field(default="mlp", init=False)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        return floor_to_doc(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MLPConfig:
        d = {k: v for k, v in d.items() if k != "kind"}
        d["hidden_dims"] = tuple(int(h) for h in d["hidden_dims"])
        return cls(**floor_from_doc(d))


class MLPAutoencoder(LikelihoodHead, nn.Module):
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
        return self._posterior_params(self.encoder(x))

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``z`` (..., L) -> ``loc`` (..., D) and ``logvar`` (..., D) or ``None``.

        ``loc`` is the mean for a Gaussian and the logits for a Bernoulli likelihood.
        """
        return self._likelihood_params(self.decoder(z), dim=-1)
