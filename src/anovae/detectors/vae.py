"""VAEDetector: a variational autoencoder anomaly detector for tabular data."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import torch

from anovae.detectors.base import BaseDetector, _check_param
from anovae.likelihoods import LIKELIHOODS
from anovae.losses import LossTerms, elbo_loss
from anovae.nets.mlp import VARIANCES, MLPConfig
from anovae.scores import SCORES
from anovae.training import TrainConfig

__all__ = ["PRESETS", "VAEDetector"]

#: Named configurations. ``tutorial-mlp``: the Keras-tutorial VAE (input -> 32 -> 16 -> latent 10,
#: mirrored decoder, Bernoulli likelihood on [0, 1]-scaled data), with a correct ELBO.
PRESETS: dict[str, dict[str, Any]] = {
    "tutorial-mlp": {
        "hidden_dims": (32, 16),
        "latent_dim": 10,
        "likelihood": "bernoulli",
        "scaler": "minmax",
        "activation": "relu",
    },
}


class VAEDetector(BaseDetector):
    """Variational autoencoder anomaly detector (scikit-learn estimator, PyOD conventions).

    Train on normal (or mostly normal) rows; rows the model cannot explain get high scores.
    ``decision_function`` is higher for more anomalous rows and is deterministic.

    Args:
        hidden_dims: encoder widths (the decoder mirrors them); ``None`` scales them with the
            number of features (see :func:`anovae.detectors.base.auto_architecture`).
        latent_dim: size of ``z``; ``None`` scales it with the number of features.
        likelihood: ``"gaussian"`` (real-valued data) or ``"bernoulli"`` (data in [0, 1]).
        variance: Gaussian only: ``"per_sample"`` (the decoder predicts a variance per row and
            feature), ``"per_feature"`` (one learned variance per feature) or ``"fixed"`` (1).
        score: ``"elbo"`` (negative ELBO), ``"reconstruction_probability"`` (An & Cho 2015),
            ``"iwae"`` (importance-weighted -log p(x)) or ``"reconstruction"`` (squared error).
        n_samples: Monte-Carlo samples ``L`` (or ``K`` for ``"iwae"``) for the sampled scores.
        beta: weight of the KL term (1 = the ELBO).
        warmup_epochs: epochs over which the KL weight rises linearly from 0 to ``beta``;
            ``None``: 10% of the epochs (at least 1).
        free_bits: minimum KL per latent dimension (nats); 0 disables it.
        activation: hidden activation, one of ``anovae.nets.blocks.ACTIVATIONS``.
        dropout: dropout rate in hidden layers.
        epochs: maximum epochs; ``None`` picks about ``TARGET_UPDATES`` (700) updates (10 to
            400 epochs; see :func:`anovae.detectors.base.auto_epochs`).
        batch_size: rows per update (capped at the number of training rows).
        learning_rate, weight_decay: Adam settings.
        validation_fraction: share of training rows held out for early stopping (0 disables).
        patience: epochs without validation improvement before stopping (0 disables);
            ``None``: 10% of the epochs, at least 10.
        clip_grad_norm: gradient-norm clipping (0 disables).
        scaler: ``"robust"``, ``"standard"``, ``"minmax"`` or ``"none"`` (fitted in ``fit``).
        contamination: expected share of anomalies; sets ``threshold_`` from training scores.
        threshold: how ``threshold_`` is set: ``"contamination"`` (PyOD's rule, the default),
            ``"fpr"`` (conformal, a target false-positive rate on held-out normal rows),
            ``"best_f1"`` / ``"recall"`` (needs ``y`` in ``fit``), ``"pot"`` (extreme-value
            theory, risk ``q``), or a PyThresh thresholder (or ``"pythresh:NAME"``); see
            :mod:`anovae.thresholds`.
        threshold_param: the method's number: the FPR (default 0.05), the target recall (0.9)
            or the POT risk ``q`` (1e-3); ``None`` for ``"contamination"`` (it reads
            ``contamination``), ``"best_f1"`` and PyThresh.
        calibration_fraction: share of the normal rows held out of training; their scores are
            kept as ``calibration_scores_`` (``fpr`` threshold, ``predict_proba(method=
            "conformal")``, ``pot``). ``None``: 0.2 with ``threshold="fpr"``, else 0.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        random_state: seed for initialisation, shuffling, noise and the validation split.
        verbose: show a progress bar and log training.

    Example:
        >>> import numpy as np
        >>> from anovae import VAEDetector
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(500, 4))
        >>> det = VAEDetector(epochs=5, random_state=0).fit(X)
        >>> scores = det.decision_function(X[:3])   # higher = more anomalous
        >>> det.predict(np.array([[8.0, -8.0, 8.0, -8.0]]))
        array([1])
    """

    def __init__(
        self,
        *,
        hidden_dims: tuple[int, ...] | None = None,
        latent_dim: int | None = None,
        likelihood: str = "gaussian",
        variance: str = "per_sample",
        score: str = "elbo",
        n_samples: int = 16,
        beta: float = 1.0,
        warmup_epochs: int | None = None,
        free_bits: float = 0.0,
        activation: str = "relu",
        dropout: float = 0.0,
        epochs: int | None = None,
        batch_size: int = 256,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.1,
        patience: int | None = None,
        clip_grad_norm: float = 5.0,
        scaler: str = "robust",
        contamination: float = 0.1,
        threshold: str | Any = "contamination",
        threshold_param: float | None = None,
        calibration_fraction: float | None = None,
        device: str = "auto",
        random_state: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.hidden_dims = hidden_dims
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.variance = variance
        self.score = score
        self.n_samples = n_samples
        self.beta = beta
        self.warmup_epochs = warmup_epochs
        self.free_bits = free_bits
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
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> VAEDetector:
        """A detector configured by a named preset (see :data:`PRESETS`); keywords override it.

        >>> VAEDetector.from_preset("tutorial-mlp").likelihood
        'bernoulli'
        """
        try:
            params = dict(PRESETS[name])
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
        params.update(overrides)
        return cls(**params)

    @property
    def score_name(self) -> str:
        return self.score

    def _check_params(self) -> None:
        super()._check_params()
        _check_param("likelihood", self.likelihood, str, choices=LIKELIHOODS)
        _check_param("variance", self.variance, str, choices=VARIANCES)
        _check_param("score", self.score, str, choices=SCORES)
        _check_param("n_samples", self.n_samples, Integral, 1)
        _check_param("beta", self.beta, Real, 0.0)
        _check_param("warmup_epochs", self.warmup_epochs, Integral, 0, none_ok=True)
        _check_param("free_bits", self.free_bits, Real, 0.0)
        self._check_mlp_params()

    def _net_config(self, n_features: int) -> MLPConfig:
        return self._mlp_config(n_features, likelihood=self.likelihood, variance=self.variance,
                                variational=True)

    def _train_config(self, n_train: int) -> TrainConfig:
        base = super()._train_config(n_train)
        warmup = (self.warmup_epochs if self.warmup_epochs is not None
                  else max(1, math.ceil(0.1 * base.epochs)))
        return TrainConfig(**{**base.__dict__, "beta": float(self.beta),
                              "warmup_epochs": int(warmup)})

    def _loss(self, net: torch.nn.Module, xb: torch.Tensor, beta: float,
              g: torch.Generator) -> LossTerms:
        return elbo_loss(net, xb, beta=beta, free_bits=float(self.free_bits), generator=g)

    def _n_noise_samples(self) -> int:
        return int(self.n_samples)
