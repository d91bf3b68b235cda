"""Image detectors: a convolutional VAE (:class:`ImageVAEDetector`) and its plain convolutional
autoencoder baseline (:class:`ImageAEDetector`).

They are :class:`~anovae.detectors.vae.VAEDetector` and :class:`~anovae.detectors.ae.AEDetector`
with image input (:func:`anovae.images.check_images`: ``(N, H, W)``, ``(N, H, W, C)`` or
``(N, C, H, W)``, uint8 or float in [0, 1], 1 or 3 channels, any size from 8x8) and the
convolutional network of :mod:`anovae.nets.conv`; the skeleton (training, scores, thresholds,
persistence) is the shared one of :mod:`anovae.detectors.base`. Scores are the same as for
tables with pixels as features, so :meth:`ImageVAEDetector.anomaly_maps` (per-pixel scores)
add up to ``decision_function``.
"""

from __future__ import annotations

import logging
from numbers import Integral
from typing import Any, ClassVar

import numpy as np

from anovae.detectors.ae import AEDetector
from anovae.detectors.base import BaseDetector, _check_param, auto_epochs
from anovae.detectors.vae import VAEDetector
from anovae.images import ImageSchema, check_images, complexity_slope, png_codec, png_nats
from anovae.nets.conv import ConvConfig, auto_stages
from anovae.scores import SCORES
from anovae.tabular import Scaler

__all__ = ["COMPLEXITY_FIT_IMAGES", "IMAGE_LEARNING_RATE", "IMAGE_PRESETS",
           "IMAGE_TARGET_UPDATES", "ImageAEDetector", "ImageVAEDetector", "auto_conv_architecture"]

#: Optimiser updates when ``epochs=None``: a fixed budget whatever the number of images (the
#: one-class and the multi-class protocols of ``anovae bench images`` cost the same to train).
IMAGE_TARGET_UPDATES = 1500

#: Adam's default step size for the image detectors (64-image batches). 2e-3 rather than the
#: tables' 1e-3: with the fixed budget of :data:`IMAGE_TARGET_UPDATES` updates the networks are
#: still learning when it ends, and on the training-images-only dev split the larger step
#: gained more than twice the updates did, at no cost (docs/benchmarks.md, issue 4).
IMAGE_LEARNING_RATE = 2e-3

logger = logging.getLogger(__name__)

#: Fitting images (a random subset) on which :class:`ImageVAEDetector` measures, for every
#: score, how much of it image complexity explains (``complexity_slopes_``).
COMPLEXITY_FIT_IMAGES = 1024

#: ``tutorial-conv``: the TensorFlow convolutional-VAE tutorial's network (see
#: :func:`anovae.nets.conv.tutorial_conv_config`), done right.
IMAGE_PRESETS: dict[str, dict[str, Any]] = {
    "tutorial-conv": {
        "channels": (32, 64),
        "decoder_channels": (64, 32),
        "seed_channels": 32,
        "latent_dim": 2,
        "likelihood": "bernoulli",
        "activation": "relu",
    },
}


def auto_conv_architecture(height: int, width: int) -> tuple[tuple[int, ...], int]:
    """Default conv widths and latent size for ``height x width`` images.

    One stride-2 stage per halving down to at most 8x8 (:func:`anovae.nets.conv.auto_stages`),
    widths 16, 32, 64... (capped at 128), latent 16: a modest network that trains in a few
    minutes on a CPU.

    >>> auto_conv_architecture(28, 28), auto_conv_architecture(64, 64)
    (((16, 32), 16), ((16, 32, 64), 16))
    """
    n = auto_stages(height, width)
    return tuple(min(128, 16 * 2**i) for i in range(n)), 16


class _ImageInput:
    """What image detectors share: validation, the (identity) scaler, schema, conv config."""

    #: Images are mapped to [0, 1] by validation; no per-feature scaler (not a parameter).
    scaler: ClassVar[str] = "none"
    #: Images per forward pass when scoring (divided by the number of Monte-Carlo samples).
    _score_batch_rows: ClassVar[int] = 1024

    schema_: ImageSchema
    epochs: int | None
    batch_size: int | None
    channels: tuple[int, ...] | None
    decoder_channels: tuple[int, ...] | None
    seed_channels: int | None

    def _validate(self, X: Any, schema: Any, min_rows: int = 1) -> tuple[np.ndarray, Any]:
        return check_images(X, schema, min_rows=min_rows)

    def _fit_scaler(self, rows: np.ndarray) -> Scaler:
        c = rows.shape[1]  # (N, C, H, W): identity, shaped to broadcast per channel
        return Scaler("none", np.zeros((c, 1, 1)), np.ones((c, 1, 1)))

    @classmethod
    def _schema_from_dict(cls, d: dict[str, Any]) -> ImageSchema:
        return ImageSchema.from_dict(d)

    def _auto_epochs(self, n_train: int) -> int:
        return auto_epochs(n_train, self._trained_batch_size(n_train),
                           updates=IMAGE_TARGET_UPDATES, min_epochs=1, max_epochs=None)

    def _conv_config(self, **fixed: Any) -> ConvConfig:
        """The network for the fitted image shape; ``None`` parameters take the auto values."""
        s = self.schema_
        channels, latent = auto_conv_architecture(s.height, s.width)
        latent_dim = getattr(self, "latent_dim", None)
        dec = self.decoder_channels
        return ConvConfig(
            in_channels=s.channels, height=s.height, width=s.width,
            channels=tuple(int(c) for c in self.channels) if self.channels else channels,
            latent_dim=int(latent_dim) if latent_dim is not None else latent,
            decoder_channels=None if dec is None else tuple(int(c) for c in dec),
            seed_channels=None if self.seed_channels is None else int(self.seed_channels),
            activation=getattr(self, "activation", "relu"), **fixed)

    def _check_conv_params(self) -> None:
        for name in ("channels", "decoder_channels"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, (str, bytes)) or len(value) == 0
                or not all(isinstance(c, Integral) and not isinstance(c, bool) and c > 0
                           for c in value)):
                raise ValueError(f"{name} must be a non-empty sequence of positive integers, "
                                 f"got {value!r}")
        dec, enc = self.decoder_channels, self.channels
        if dec is not None and enc is not None and len(dec) != len(enc):
            raise ValueError(f"decoder_channels needs one width per encoder stage: "
                             f"{len(dec)} != {len(enc)}")
        _check_param("seed_channels", self.seed_channels, Integral, 1, none_ok=True)

    def anomaly_maps(self, X: Any) -> np.ndarray:
        """Per-pixel anomaly scores ``(N, H, W)`` (summed over channels); each map sums to the
        image's ``decision_function`` score (higher = more anomalous; a per-image correction
        such as ``complexity_correction`` is spread evenly over the pixels)."""
        feats = self.feature_scores(X)  # type: ignore[attr-defined]  # (N, C, H, W)
        return feats.sum(axis=1)


class ImageVAEDetector(_ImageInput, VAEDetector):
    """Convolutional VAE anomaly detector for images (scikit-learn estimator, PyOD conventions).

    Train on normal images; images the model cannot explain get high scores.
    ``decision_function`` is higher for more anomalous images and is deterministic;
    :meth:`anomaly_maps` shows where.

    Args:
        channels: encoder widths, one stride-2 3x3 convolution each; ``None``: 16, 32, ... with
            one stage per halving down to 8x8 or less (see :func:`auto_conv_architecture`).
        latent_dim: size of ``z`` (``None``: 16).
        decoder_channels: widths of the transposed convolutions (``None``: reversed
            ``channels``); ``seed_channels``: depth of the decoder's first (dense) feature map
            (``None``: the last encoder width).
        likelihood: ``"gaussian"`` (the default; with ``variance="per_sample"`` the decoder
            predicts a variance per pixel, floored) or ``"bernoulli"`` (intensities in [0, 1]
            as probabilities, the tutorials' choice). The Bernoulli ELBO rewards images with
            little ink: trained on the 0s of scikit-learn's digits (28x28) it scored the 1s as
            normal (AUROC 0.51 against 0.99 for the Gaussian; on MNIST's class 8, 0.79 against
            0.88; docs/benchmarks.md).
            ``variance`` as in :class:`VAEDetector`.
        score: as in :class:`VAEDetector` (default the negative ELBO). ``"reconstruction"``
            (squared error of the decoder's mean at ``z = mu``) scored better on MNIST (one-class
            mean AUROC 0.970 vs 0.968, multi-class 0.822 vs 0.809, both complexity-corrected),
            tied or lost on Fashion-MNIST (0.909 vs 0.913, 0.653 vs 0.653), and tied on the
            training-images-only dev split (+0.2 points one-class, -0.3 multi-class) and on 100
            training images of scikit-learn's digits (0.950 vs 0.956, the set-up of
            tests/test_images.py's quality floor), so the default stays the ELBO, the VAE's own
            measure (docs/benchmarks.md).
        complexity_correction: subtract from every score the share that image complexity
            explains on the normal images: ``score - b * png_nats(x)``, with ``b`` the
            least-squares slope of the score on the image's PNG size over
            :data:`COMPLEXITY_FIT_IMAGES` fitting images (``complexity_slopes_``, one per score;
            :func:`anovae.images.complexity_slope`). Likelihood models give simple images (an
            MNIST 1, a plain sneaker) high likelihood whatever they show (Serra et al. 2020).
            It helps where anomalies are simpler than the normal images and hurts where they
            are more complex: mean AUROC +1.6 / +0.5 points one-class (MNIST / Fashion-MNIST),
            +4.3 / -1.9 multi-class (measured with step 1e-3), where Fashion-MNIST's held-out
            tops, as complex as the other tops, fell by 9-15 points (docs/benchmarks.md). With
            normal data mixing classes of very different complexity, compare ``False`` on
            held-out data. Anomaly maps spread the correction evenly over the pixels, so they
            still add up to the score. Part of the fitted model: changing it needs a refit.
            ONNX export needs ``False``.
        n_samples, beta, warmup_epochs, free_bits, activation: as in :class:`VAEDetector`.
        epochs: maximum epochs; ``None``: about :data:`IMAGE_TARGET_UPDATES` updates.
        batch_size, learning_rate: as in :class:`VAEDetector`, but 64 images and
            :data:`IMAGE_LEARNING_RATE` (2e-3) by default (``None`` picks them as for tables).
        weight_decay, validation_fraction, patience, clip_grad_norm, contamination, threshold,
        threshold_param, calibration_fraction, device, random_state, verbose: as in
        :class:`VAEDetector`.

    Example:
        >>> import numpy as np
        >>> from anovae import ImageVAEDetector
        >>> rng = np.random.default_rng(0)
        >>> X = (rng.random((64, 28, 28)) < 0.1).astype(np.uint8) * 255
        >>> det = ImageVAEDetector(channels=(8, 16), epochs=2, random_state=0).fit(X)
        >>> det.anomaly_maps(X[:2]).shape
        (2, 28, 28)
    """

    presets: ClassVar[dict[str, dict[str, Any]]] = IMAGE_PRESETS

    def __init__(
        self,
        *,
        channels: tuple[int, ...] | None = None,
        latent_dim: int | None = None,
        decoder_channels: tuple[int, ...] | None = None,
        seed_channels: int | None = None,
        likelihood: str = "gaussian",
        variance: str = "per_sample",
        score: str = "elbo",
        complexity_correction: bool = True,
        n_samples: int = 4,
        beta: float = 1.0,
        warmup_epochs: int | None = None,
        free_bits: float = 0.0,
        activation: str = "relu",
        epochs: int | None = None,
        batch_size: int | None = 64,
        learning_rate: float | None = IMAGE_LEARNING_RATE,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.1,
        patience: int | None = None,
        clip_grad_norm: float = 5.0,
        contamination: float = 0.1,
        threshold: str | Any = "contamination",
        threshold_param: float | None = None,
        calibration_fraction: float | None = None,
        device: str = "auto",
        random_state: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.channels = channels
        self.latent_dim = latent_dim
        self.decoder_channels = decoder_channels
        self.seed_channels = seed_channels
        self.likelihood = likelihood
        self.variance = variance
        self.score = score
        self.complexity_correction = complexity_correction
        self.n_samples = n_samples
        self.beta = beta
        self.warmup_epochs = warmup_epochs
        self.free_bits = free_bits
        self.activation = activation
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.clip_grad_norm = clip_grad_norm
        self.contamination = contamination
        self.threshold = threshold
        self.threshold_param = threshold_param
        self.calibration_fraction = calibration_fraction
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self) -> None:
        BaseDetector._check_params(self)  # not VAEDetector's: its table-only parameters
        self._check_vae_params()
        self._check_conv_params()
        if not isinstance(self.complexity_correction, (bool, np.bool_)):
            raise ValueError(f"complexity_correction must be True or False, "
                             f"got {self.complexity_correction!r}")

    # -- complexity correction (see anovae.images.png_nats and complexity_slope) --------------
    def _fit_score_offsets(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        """``complexity_slopes_``: for every score, the least-squares slope of the raw score on
        the PNG size over :data:`COMPLEXITY_FIT_IMAGES` of the fitting images (all scores, so
        ``set_params(score=...)`` after fitting stays corrected); ``{}`` without correction."""
        self.complexity_slopes_: dict[str, float] = {}
        if not self.complexity_correction:
            return
        n = rows.shape[0]
        pick = np.sort(rng.permutation(n)[:COMPLEXITY_FIT_IMAGES])  # (m,)
        sample = rows[pick]  # (m, C, H, W)
        complexity = png_nats(sample)  # (m,)
        self.complexity_slopes_ = {
            name: complexity_slope(self._score_rows(sample, score=name, raw=True)[0], complexity)
            for name in SCORES}

    def _score_offsets(self, rows: np.ndarray, score: str) -> np.ndarray | None:
        slopes = getattr(self, "complexity_slopes_", {})  # {} when fitted without correction
        if bool(self.complexity_correction) != bool(slopes):
            # the threshold and decision_scores_ were set on the fitted kind of score
            raise ValueError(
                f"complexity_correction={self.complexity_correction} but this model was fitted "
                f"{'with' if slopes else 'without'} it (its threshold was set on "
                f"{'corrected' if slopes else 'uncorrected'} scores): refit after changing it")
        if not slopes:
            return None
        return slopes[score] * png_nats(rows)  # (n,)

    def _fitted_json(self) -> dict[str, Any]:
        return {"complexity_slopes": dict(getattr(self, "complexity_slopes_", {})),
                "png_codec": png_codec()}

    def _load_fitted_json(self, doc: dict[str, Any]) -> None:
        if "complexity_slopes" in doc:
            self.complexity_slopes_ = {str(k): float(v)
                                       for k, v in doc["complexity_slopes"].items()}
            saved, here = doc.get("png_codec"), png_codec()
            if self.complexity_slopes_ and saved and saved != here:
                logger.warning("this model's complexity correction was fitted with %s and "
                               "runs here with %s: PNG sizes, so scores, may differ slightly "
                               "from those on the fitting machine", saved, here)
        else:  # written before the correction existed: its scores were uncorrected
            self.complexity_slopes_ = {}
            self.complexity_correction = False

    def _net_config(self, n_features: int) -> ConvConfig:  # type: ignore[override]
        return self._conv_config(likelihood=self.likelihood, variance=self.variance,
                                 variational=True)


class ImageAEDetector(_ImageInput, AEDetector):
    """Plain convolutional autoencoder on images, trained on squared error; score =
    reconstruction error (higher = more anomalous). The baseline for :class:`ImageVAEDetector`:
    same network shape (a latent code instead of a distribution), input, training loop and
    update budget.

    Parameters are those of :class:`ImageVAEDetector` that apply to a plain autoencoder.

    Example:
        >>> import numpy as np
        >>> from anovae import ImageAEDetector
        >>> X = np.random.default_rng(0).random((64, 1, 28, 28)).astype(np.float32)
        >>> ImageAEDetector(channels=(8, 16), epochs=2, random_state=0).fit(X).score_name
        'reconstruction'
    """

    def __init__(
        self,
        *,
        channels: tuple[int, ...] | None = None,
        latent_dim: int | None = None,
        decoder_channels: tuple[int, ...] | None = None,
        seed_channels: int | None = None,
        activation: str = "relu",
        epochs: int | None = None,
        batch_size: int | None = 64,
        learning_rate: float | None = IMAGE_LEARNING_RATE,
        weight_decay: float = 0.0,
        validation_fraction: float = 0.1,
        patience: int | None = None,
        clip_grad_norm: float = 5.0,
        contamination: float = 0.1,
        threshold: str | Any = "contamination",
        threshold_param: float | None = None,
        calibration_fraction: float | None = None,
        device: str = "auto",
        random_state: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.channels = channels
        self.latent_dim = latent_dim
        self.decoder_channels = decoder_channels
        self.seed_channels = seed_channels
        self.activation = activation
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.clip_grad_norm = clip_grad_norm
        self.contamination = contamination
        self.threshold = threshold
        self.threshold_param = threshold_param
        self.calibration_fraction = calibration_fraction
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self) -> None:
        super()._check_params()
        self._check_conv_params()

    def _net_config(self, n_features: int) -> ConvConfig:  # type: ignore[override]
        return self._conv_config(likelihood="gaussian", variance="fixed", variational=False)
