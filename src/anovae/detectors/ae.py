"""AEDetector: a plain (deterministic) autoencoder baseline with the same API as VAEDetector."""

from __future__ import annotations

from typing import Any

import torch

from anovae.detectors.base import BaseDetector
from anovae.losses import LossTerms, elbo_loss
from anovae.nets.mlp import MLPConfig

__all__ = ["AEDetector"]


class AEDetector(BaseDetector):
    """Plain autoencoder trained on squared error; score = reconstruction error (higher = more
    anomalous). The baseline to compare :class:`anovae.VAEDetector` with: same skeleton,
    same preprocessing, same training loop, no latent distribution.

    Parameters are those of :class:`anovae.VAEDetector` that apply to a plain autoencoder.

    Example:
        >>> import numpy as np
        >>> from anovae import AEDetector
        >>> X = np.random.default_rng(0).normal(size=(300, 4))
        >>> AEDetector(epochs=3, random_state=0).fit(X).decision_function(X[:2]).shape
        (2,)
    """

    def __init__(
        self,
        *,
        hidden_dims: tuple[int, ...] | None = None,
        latent_dim: int | None = None,
        activation: str = "relu",
        dropout: float = 0.0,
        epochs: int | None = None,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.1,
        patience: int | None = None,
        clip_grad_norm: float = 5.0,
        scaler: str = "robust",
        contamination: float = 0.1,
        threshold: str | Any = "contamination",
        threshold_param: float | None = None,
        calibration_fraction: float | None = None,
        use_labels: bool = True,
        device: str = "auto",
        random_state: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.hidden_dims = hidden_dims
        self.latent_dim = latent_dim
        self.activation = activation
        self.dropout = dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.clip_grad_norm = clip_grad_norm
        self.scaler = scaler
        self.contamination = contamination
        self.threshold = threshold
        self.threshold_param = threshold_param
        self.calibration_fraction = calibration_fraction
        self.use_labels = use_labels
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    @property
    def score_name(self) -> str:
        return "reconstruction"

    def _check_params(self) -> None:
        super()._check_params()
        self._check_mlp_params()

    def _net_config(self, n_features: int) -> MLPConfig:
        return self._mlp_config(n_features, likelihood="gaussian", variance="fixed",
                                variational=False)

    def _loss(self, net: torch.nn.Module, xb: torch.Tensor, beta: float,
              g: torch.Generator) -> LossTerms:
        return elbo_loss(net, xb, beta=0.0, generator=g)
