"""The one layer builder: fully connected stacks used by every network family."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACTIVATIONS", "POSTERIOR_LOGVAR_MAX", "activation", "mlp", "posterior_logvar"]

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
