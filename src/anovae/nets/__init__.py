"""Network families. Each module defines a frozen config dataclass (with a ``kind`` field) and an
``nn.Module`` with the shared interface ``encode``/``decode``/``mean``/``nll``/``forward``
(see :class:`anovae.losses.AutoencoderNet`). :func:`build_net` rebuilds any of them from the
config dict stored in a model file.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from anovae.nets.conv import ConvAutoencoder, ConvConfig
from anovae.nets.mixed import MixedAutoencoder, MixedConfig
from anovae.nets.mlp import MLPAutoencoder, MLPConfig

#: kind -> (config class, module class). Other families register themselves here.
NETS: dict[str, tuple[type, type[nn.Module]]] = {"mlp": (MLPConfig, MLPAutoencoder),
                                                 "mixed": (MixedConfig, MixedAutoencoder),
                                                 "conv": (ConvConfig, ConvAutoencoder)}


def config_from_dict(d: dict[str, Any]) -> Any:
    """The config object for a stored config dict (its ``kind`` picks the family)."""
    kind = d.get("kind", "mlp")
    if kind not in NETS:
        raise ValueError(f"unknown network kind {kind!r}; known: {sorted(NETS)}")
    return NETS[kind][0].from_dict(d)


def build_net(config: Any) -> nn.Module:
    """A freshly initialised network for ``config`` (a config object of a registered family)."""
    return NETS[config.kind][1](config)


__all__ = ["NETS", "build_net", "config_from_dict"]
