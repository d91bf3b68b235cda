"""The one layer builder: fully connected stacks used by every network family."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anovae.likelihoods import bernoulli_nll, gaussian_nll

__all__ = ["ACTIVATIONS", "LOGVAR_MIN", "POSTERIOR_LOGVAR_MAX", "LikelihoodHead", "activation",
           "decoder_logvar", "floor_from_doc", "floor_to_doc", "mlp", "posterior_logvar"]

#: Lower bound of the decoder's log-variance (soft): stops the variance collapsing onto discrete
#: values, which would make the likelihood (and so the score) explode for exact repeats.
#: -3 (a standard deviation of about 0.22 scaled units; was -6): a noise floor that keeps a few
#: precisely predicted features from dominating the score (+0.9 / +0.3 AUROC on the two halves
#: of the ADBench dev sets, docs/benchmarks.md).
LOGVAR_MIN = -3.0

def floor_to_doc(d: dict[str, Any]) -> dict[str, Any]:
    """Drop ``logvar_floor`` from a network config's document when it is the default.

    Older anovae versions refuse unknown fields, so a default-floor model keeps the document
    they read; :func:`floor_from_doc` restores the field. Every network config with the field
    serialises through this pair (persistence's ``_NEWER_PARAMS`` does the same for params).
    """
    if d.get("logvar_floor") == LOGVAR_MIN:
        del d["logvar_floor"]
    return d


def floor_from_doc(d: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`floor_to_doc`: an absent ``logvar_floor`` is the default."""
    d["logvar_floor"] = float(d.get("logvar_floor", LOGVAR_MIN))
    return d


#: Soft ceiling of the encoder's log-variance: a standard deviation of e^5 (about 150) in latent
#: space is far wider than the N(0, I) prior, so this never binds on sane inputs, but it stops
#: ``exp(logvar)`` overflowing to inf (then NaN) when an input feature is thousands of scaled
#: units away from the training median (a near-constant column under robust scaling).
POSTERIOR_LOGVAR_MAX = 10.0

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module by name (one of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}"
        ) from None


def mlp(dims: Sequence[int], act: str = "relu", dropout: float = 0.0) -> nn.Sequential:
    """Linear layers ``dims[0] -> dims[1] -> ... -> dims[-1]`` with an activation between them.

    No activation (and no dropout) follows the last layer: its output parametrises a distribution.

    >>> mlp([4, 8, 2])
    Sequential(
      (0): Linear(in_features=4, out_features=8, bias=True)
      (1): ReLU()
      (2): Linear(in_features=8, out_features=2, bias=True)
    )
    """
    if len(dims) < 2:
        raise ValueError(f"mlp needs at least an input and an output size, got {list(dims)}")
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=False)):
        layers.append(nn.Linear(int(d_in), int(d_out)))
        if i < len(dims) - 2:
            layers.append(activation(act))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def posterior_logvar(raw: torch.Tensor) -> torch.Tensor:
    """Raw encoder output ``(..., L)`` -> log-variance softly bounded above by
    :data:`POSTERIOR_LOGVAR_MAX` (identity to within 5e-4 below 2; smooth, so gradients flow)."""
    return POSTERIOR_LOGVAR_MAX - F.softplus(POSTERIOR_LOGVAR_MAX - raw)


def decoder_logvar(raw: torch.Tensor, floor: float = LOGVAR_MIN) -> torch.Tensor:
    """Raw decoder output -> log-variance softly bounded below by ``floor`` (the network's
    ``config.logvar_floor``; default :data:`LOGVAR_MIN`)."""
    return floor + F.softplus(raw - floor)


class LikelihoodHead:
    """What every autoencoder shares, whatever the network's shape (mixed into the MLP and
    convolutional ones): reading ``q(z|x)``'s parameters from the encoder output, splitting the
    decoder output into ``loc`` and ``logvar``, the distribution's mean, the per-element negative
    log-likelihood, and the deterministic reconstruction. The host sets ``config.likelihood``,
    ``learned_sample_var`` (the decoder emits a log-variance per element beside ``loc``) and
    ``feature_logvar`` (a learned log-variance per element of one row, or ``None``)."""

    config: Any
    learned_sample_var: bool
    feature_logvar: torch.Tensor | None

    def _posterior_params(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Encoder output ``(B, 2L)`` -> ``mu`` and a softly bounded ``logvar`` ``(B, L)``; for a
        plain autoencoder (``config.variational`` false) ``(B, L)`` -> ``(z, None)``."""
        if not self.config.variational:
            return h, None
        mu, raw_logvar = h.chunk(2, dim=-1)
        return mu, posterior_logvar(raw_logvar)

    def _likelihood_params(self, out: torch.Tensor, dim: int
                           ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decoder output -> ``loc`` and ``logvar`` (or ``None``), split along ``dim`` when the
        decoder predicts a variance per element."""
        floor = getattr(self.config, "logvar_floor", LOGVAR_MIN)
        if self.learned_sample_var:
            loc, raw = out.chunk(2, dim=dim)
            return loc, decoder_logvar(raw, floor)
        if self.feature_logvar is not None:
            return out, decoder_logvar(self.feature_logvar, floor).expand_as(out)
        return out, None

    def mean(self, loc: torch.Tensor) -> torch.Tensor:
        """Expected value of ``p(x|z)`` from the decoder's ``loc`` (..., *F)."""
        return torch.sigmoid(loc) if self.config.likelihood == "bernoulli" else loc

    def nll(self, x: torch.Tensor, loc: torch.Tensor, logvar: torch.Tensor | None) -> torch.Tensor:
        """Per-element ``-log p(x|z)``: ``x`` (B, *F) against ``loc`` (..., B, *F) -> same shape.

        A Bernoulli likelihood charges values outside [0, 1] by their distance (see
        :func:`anovae.likelihoods.bernoulli_nll`); a Gaussian with fixed variance is the
        unit-variance Gaussian (squared error / 2 plus a constant).
        """
        if self.config.likelihood == "bernoulli":
            return bernoulli_nll(x, loc)
        if logvar is None:
            logvar = torch.zeros((), dtype=loc.dtype, device=loc.device)
        return gaussian_nll(x, loc, logvar)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic reconstruction: decoder mean at ``z = mu``. (B, *F) -> (B, *F)."""
        mu, _ = self.encode(x)  # type: ignore[attr-defined]
        loc, _ = self.decode(mu)  # type: ignore[attr-defined]
        return self.mean(loc)
