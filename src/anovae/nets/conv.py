"""Convolutional (variational) autoencoder for images ``(B, C, H, W)``, any size from 8x8 up.

The architecture adapts to the input size: the encoder is a stack of stride-2 3x3 convolutions
(``channels``, one per stage) followed by a dense layer to ``2 x latent`` (``(mu, logvar)``), or
to ``latent`` for a plain autoencoder. The decoder mirrors it: a dense layer to a small feature
map (the encoder's last map size, ``seed_channels`` deep), stride-2 3x3 transposed convolutions
(``decoder_channels``) back to the input size (odd sizes handled by ``output_padding``), then a
3x3 convolution to the parameters of ``p(x|z)`` per pixel (see :mod:`anovae.likelihoods`).
:func:`auto_stages` picks the number of stages so the smallest map is at most 8x8.

``tutorial_conv_config`` is the TensorFlow convolutional-VAE tutorial's network (two stride-2
convolutions with 32 and 64 filters, dense to ``2 x latent``; decoder from a 7x7x32 dense map
through transposed convolutions with 64, 32 and 1 filters; sigmoid cross-entropy likelihood),
with the encoder output flattened before the dense layer and the ELBO computed by
:func:`anovae.losses.elbo_loss` (analytic KL, so the sign of ``log p(z)`` cannot go wrong).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from anovae.nets.blocks import LikelihoodHead, activation

__all__ = ["ConvAutoencoder", "ConvConfig", "auto_stages", "stage_sizes", "tutorial_conv_config"]

#: Smallest image side the conv networks accept.
MIN_SIDE = 8


def auto_stages(height: int, width: int, target: int = 8) -> int:
    """Stride-2 stages so the smallest feature map is at most ``target`` pixels a side (>= 1).

    >>> auto_stages(28, 28), auto_stages(32, 32), auto_stages(64, 64), auto_stages(8, 8)
    (2, 2, 3, 1)
    """
    side = max(height, width)
    return max(1, math.ceil(math.log2(side / target))) if side > target else 1


def stage_sizes(height: int, width: int, n_stages: int) -> list[tuple[int, int]]:
    """Feature-map sizes ``[(H, W), (ceil(H/2), ceil(W/2)), ...]`` of a stride-2 stack."""
    sizes = [(height, width)]
    for _ in range(n_stages):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


@dataclass(frozen=True)
class ConvConfig:
    """Everything needed to rebuild a :class:`ConvAutoencoder` (stored in saved models)."""

    in_channels: int
    height: int
    width: int
    channels: tuple[int, ...] = (32, 64)
    latent_dim: int = 16
    decoder_channels: tuple[int, ...] | None = None  # None: reversed(channels)
    seed_channels: int | None = None  # depth of the decoder's dense map; None: channels[-1]
    likelihood: str = "bernoulli"  # "bernoulli" | "gaussian"
    variance: str = "per_sample"  # gaussian only: "per_sample" | "per_feature" | "fixed"
    activation: str = "relu"
    variational: bool = True
    kind: str = field(default="conv", init=False)

    def __post_init__(self) -> None:
        dec = self.decoder_channels
        if dec is not None and len(dec) != len(self.channels):
            raise ValueError(f"decoder_channels {dec} needs one width per encoder stage "
                             f"({len(self.channels)})")
        if min(self.height, self.width) < MIN_SIDE:
            raise ValueError(f"images must be at least {MIN_SIDE}x{MIN_SIDE}, got "
                             f"{self.height}x{self.width}")

    @property
    def n_features(self) -> int:
        return self.in_channels * self.height * self.width

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("channels", "decoder_channels"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConvConfig:
        d = {k: v for k, v in d.items() if k != "kind"}
        for k in ("channels", "decoder_channels"):
            if d.get(k) is not None:
                d[k] = tuple(int(c) for c in d[k])
        return cls(**d)


def tutorial_conv_config(in_channels: int = 1, height: int = 28, width: int = 28,
                         latent_dim: int = 2) -> ConvConfig:
    """The TensorFlow CVAE tutorial's network (latent 2 as there), done right (see module doc)."""
    return ConvConfig(in_channels, height, width, channels=(32, 64), latent_dim=latent_dim,
                      decoder_channels=(64, 32), seed_channels=32, likelihood="bernoulli")


class ConvAutoencoder(LikelihoodHead, nn.Module):
    """Convolutional encoder/decoder with the interface every anovae network shares.

    >>> net = ConvAutoencoder(ConvConfig(1, 28, 28, channels=(8, 16), latent_dim=4))
    >>> mu, logvar = net.encode(torch.zeros(3, 1, 28, 28))
    >>> tuple(mu.shape), tuple(net.decode(mu)[0].shape)
    ((3, 4), (3, 1, 28, 28))
    """

    def __init__(self, config: ConvConfig) -> None:
        super().__init__()
        self.config = config
        c, act = config.in_channels, config.activation
        n = len(config.channels)
        sizes = stage_sizes(config.height, config.width, n)
        self._map = sizes[-1]
        enc: list[nn.Module] = []
        prev = c
        for width in config.channels:
            enc += [nn.Conv2d(prev, width, 3, stride=2, padding=1), activation(act)]
            prev = width
        self.encoder = nn.Sequential(*enc, nn.Flatten())  # (B, C_n * h * w)
        flat = prev * self._map[0] * self._map[1]
        latent = config.latent_dim
        self.to_latent = nn.Linear(flat, 2 * latent if config.variational else latent)

        seed = config.seed_channels or config.channels[-1]
        dec_widths = config.decoder_channels or tuple(reversed(config.channels))
        self._seed = seed
        self.from_latent = nn.Sequential(nn.Linear(latent, seed * self._map[0] * self._map[1]),
                                         activation(act))
        dec: list[nn.Module] = []
        prev = seed
        for i, width in enumerate(dec_widths):
            (h_out, w_out), (h_in, w_in) = sizes[n - 1 - i], sizes[n - i]
            pad = (h_out - 2 * h_in + 1, w_out - 2 * w_in + 1)  # 0 for odd, 1 for even sides
            dec += [nn.ConvTranspose2d(prev, width, 3, stride=2, padding=1, output_padding=pad),
                    activation(act)]
            prev = width
        self.decoder = nn.Sequential(*dec)
        gaussian = config.likelihood == "gaussian"
        self.learned_sample_var = gaussian and config.variance == "per_sample"
        self.head = nn.Conv2d(prev, 2 * c if self.learned_sample_var else c, 3, padding=1)
        if gaussian and config.variance == "per_feature":
            self.feature_logvar = nn.Parameter(torch.zeros(c, config.height, config.width))
        else:
            self.register_parameter("feature_logvar", None)

    # -- the interface every anovae network shares -------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` (B, C, H, W) -> ``mu`` (B, L) and ``logvar`` (B, L), or ``(z, None)``."""
        return self._posterior_params(self.to_latent(self.encoder(x)))  # from (B, 2L) or (B, L)

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``z`` (B, L) -> ``loc`` (B, C, H, W) and ``logvar`` (B, C, H, W) or ``None``.

        ``loc`` is the mean for a Gaussian and the logits for a Bernoulli likelihood.
        """
        h = self.from_latent(z).view(z.shape[0], self._seed, *self._map)  # (B, seed, h, w)
        return self._likelihood_params(self.head(self.decoder(h)), dim=1)  # (B, C or 2C, H, W)
