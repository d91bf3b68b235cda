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
from anovae.latent import LATENT_COMPONENTS, LatentMixture, fit_latent_mixture
from anovae.nets.conv import ConvConfig, auto_stages
from anovae.scores import SCORES
from anovae.tabular import Scaler

__all__ = ["COMPLEXITY_FIT_IMAGES", "IMAGE_LEARNING_RATE", "IMAGE_PRESETS",
           "IMAGE_TARGET_UPDATES", "LATENT_FIT_IMAGES", "ImageAEDetector", "ImageVAEDetector",
           "auto_conv_architecture"]

#: Optimiser updates when ``epochs=None``: a fixed budget whatever the number of images (the
#: one-class and the multi-class protocols of ``anovae bench images`` cost the same to train).
#: 3,000 since 2026-12-01 (was 1,500): with the latent-density term, twice the updates gained
#: +0.5 points one-class (8 classes) and +1.2 multi-class (Fashion-MNIST, 10 classes) on the
#: training-images-only dev split, where the plain AE with the same budget gained nothing
#: (docs/benchmarks.md, issue 4).
IMAGE_TARGET_UPDATES = 3000

#: Adam's default step size for the image detectors (64-image batches). 2e-3 rather than the
#: tables' 1e-3: with the then budget of 1,500 updates the networks were still learning when it
#: ended, and on the training-images-only dev split the larger step gained more than twice the
#: updates did, at no cost (docs/benchmarks.md, issue 4).
IMAGE_LEARNING_RATE = 2e-3

logger = logging.getLogger(__name__)

#: Fitting images (a random subset) on which :class:`ImageVAEDetector` measures, for every
#: score, how much of it image complexity explains (``complexity_slopes_``).
COMPLEXITY_FIT_IMAGES = 1024

#: Fitting images (a random subset) whose codes fit the latent mixture of
#: ``latent_density=True`` (:func:`anovae.latent.fit_latent_mixture`).
LATENT_FIT_IMAGES = 20000

#: A latent dimension is *active* when the posterior means of the fitting images vary over it by
#: more than this (variance; the prior's is 1): Burda et al. (2016)'s criterion. With none, the
#: codes carry nothing about the image (posterior collapse) and the latent-density term is left
#: out (weight 0): its weight, the score's spread over the density's, would otherwise multiply
#: rounding noise of a near-constant density by up to 1e6 (a user-acceptance finding).
ACTIVE_UNIT_VARIANCE = 0.01

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
            channels=(tuple(int(c) for c in self.channels)
                      if self.channels is not None and len(self.channels) else channels),
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
        image's ``decision_function`` score (higher = more anomalous; per-image terms such as
        ``latent_density`` and ``complexity_correction`` are spread evenly over the pixels)."""
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
        score_type: as in :class:`VAEDetector` (default the negative ELBO). After fitting,
            ``set_params(score_type=...)`` makes ``decision_function`` and :meth:`anomaly_maps` give
            another score from the same network (every score has its latent weight and
            complexity slope), but ``threshold_`` stays the fitted score's, so ``predict``,
            ``predict_proba``, ``refit_threshold`` and ``save`` refuse until it is set back
            (see ``BaseDetector._check_threshold_score``). ``"reconstruction"`` (squared error
            of the decoder's mean at ``z = mu``) scored a little better on MNIST (one-class mean
            AUROC 0.985 vs 0.984, multi-class 0.891 vs 0.885, both with the latent term and
            complexity-corrected), tied on Fashion-MNIST (0.930 vs 0.930, 0.697 vs 0.696), and
            tied on the training-images-only dev split (+0.2 points one-class, -0.3
            multi-class, before the latent term) and on 100 training images of scikit-learn's
            digits (0.950 vs 0.956, the set-up of tests/test_images.py's quality floor), so the
            default stays the ELBO, the VAE's own measure (docs/benchmarks.md).
        latent_density: add to every score the negative log-density of the image's code
            (the posterior mean) under a Gaussian mixture fitted to codes of the normal images
            (:mod:`anovae.latent`; ``latent_mixture_``), weighted so that both terms have the
            same spread on normal images (``latent_weights_``, one per score). The VAE's prior
            ``N(0, I)`` ignores where normal codes really cluster; an image the decoder
            reconstructs well can still be encoded away from every cluster, which this term
            shows (DAGMM, Zong et al. 2018; Ghosh et al. 2020). Measured on the
            training-images-only dev split and the test protocols in docs/benchmarks.md. Spread
            evenly over the pixels in anomaly maps. Part of the fitted model: changing it needs
            a refit. ONNX export needs ``False``.
        complexity_correction: subtract from every score the share that image complexity
            explains on the normal images: ``score - b * png_nats(x)``, with ``b`` the
            least-squares slope of the score (with its latent term) on the image's PNG size over
            :data:`COMPLEXITY_FIT_IMAGES` fitting images, shrunk toward 0 by its reliability
            (``complexity_slopes_``, one per score; :func:`anovae.images.complexity_slope`).
            Where PNG size does not reliably explain the score (noise-like textures, whose PNG
            sizes hardly vary) the slope is 0 and scores are not corrected (a logged warning
            for the configured score): a slope fitted on noise would move the scores of images
            much simpler or more complex than the normal ones at random, either way.
            Likelihood models give simple images (an MNIST 1, a plain sneaker) high likelihood
            whatever they show (Serra et al. 2020).
            It helps where anomalies are simpler than the normal images and hurts where they
            are more complex: mean AUROC +1.6 / +0.5 points one-class (MNIST / Fashion-MNIST),
            +4.3 / -1.9 multi-class (measured with step 1e-3, before the latent term), where
            Fashion-MNIST's held-out
            tops, as complex as the other tops, fell by 9-15 points (docs/benchmarks.md). With
            normal data mixing classes of very different complexity, compare ``False`` on
            held-out data. Anomaly maps spread the correction evenly over the pixels, so they
            still add up to the score. Part of the fitted model: changing it needs a refit.
            ONNX export needs ``False``.
        n_samples, beta, warmup_epochs, free_bits, activation: as in :class:`VAEDetector`.
        epochs: maximum epochs; ``None``: about :data:`IMAGE_TARGET_UPDATES` (3,000) updates.
        batch_size, learning_rate: as in :class:`VAEDetector`, but 64 images and
            :data:`IMAGE_LEARNING_RATE` (2e-3) by default (``None`` picks them as for tables).
        weight_decay, validation_fraction, patience, clip_grad_norm, contamination, threshold,
        threshold_param, calibration_fraction, use_labels, device, random_state, verbose: as in
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
        score_type: str = "elbo",
        latent_density: bool = True,
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
        use_labels: bool = True,
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
        self.score_type = score_type
        self.latent_density = latent_density
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
        self.use_labels = use_labels
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self) -> None:
        BaseDetector._check_params(self)  # not VAEDetector's: its table-only parameters
        self._check_vae_params()
        self._check_mlp_params()  # latent_dim, activation (as ImageAEDetector's AEDetector does)
        self._check_conv_params()
        for name in ("latent_density", "complexity_correction"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    # -- score terms fitted after training: latent density, complexity correction -------------
    def _fit_score_offsets(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        """Fit the score terms of ``latent_density`` and ``complexity_correction`` from the
        unscaled fitting images ``rows (n, C, H, W)``, for every score (so ``decision_function``
        after ``set_params(score_type=...)`` on the fitted model has them; its threshold does not
        follow, see :meth:`~anovae.detectors.base.BaseDetector._check_threshold_score`):

        - ``latent_mixture_``: a Gaussian mixture fitted to codes drawn from ``q(z | x)`` of up
          to :data:`LATENT_FIT_IMAGES` fitting images; ``latent_weights_[score]``: the spread
          (standard deviation) of the raw score over :data:`COMPLEXITY_FIT_IMAGES` fitting
          images divided by that of the code's negative log-density, so both terms weigh the
          same on normal images;
        - ``complexity_slopes_[score]``: the slope of the score (with the latent term) on the
          PNG size over the same images, shrunk toward 0 by its reliability
          (:func:`anovae.images.complexity_slope`; a warning when the configured score's is 0).

        Each is ``{}`` (and the mixture ``None``) when its parameter is off.
        """
        self.complexity_slopes_: dict[str, float] = {}
        self.latent_weights_: dict[str, float] = {}
        self.latent_mixture_: LatentMixture | None = None
        if not (self.complexity_correction or self.latent_density):
            return
        n = rows.shape[0]
        pick = np.sort(rng.permutation(n)[:COMPLEXITY_FIT_IMAGES])  # (m,)
        sample = rows[pick]  # (m, C, H, W)
        scores = {name: self._score_rows(sample, score=name, raw=True)[0] for name in SCORES}
        if self.latent_density:
            chosen = np.sort(rng.permutation(n)[:LATENT_FIT_IMAGES])
            mu, logvar = self._encode_rows(rows, chosen)  # (k, L) each
            assert logvar is not None
            codes = mu + np.exp(0.5 * logvar) * rng.standard_normal(mu.shape)  # z ~ q(z|x)
            self.latent_mixture_ = fit_latent_mixture(
                codes, LATENT_COMPONENTS, seed=int(rng.integers(0, 2**31 - 1)))
            density = self._latent_density(sample)  # (m,)
            spread = float(density.std())
            active = int((mu.var(axis=0) > ACTIVE_UNIT_VARIANCE).sum())  # (fit takes >= 2)
            if not active:
                logger.warning(
                    "latent_density: the codes of the fitting images do not vary (no latent "
                    "dimension with a variance over %g across images: posterior collapse), so "
                    "the images are scored by their likelihood alone; a longer fit or a smaller "
                    "beta usually gives informative codes", ACTIVE_UNIT_VARIANCE)
            for name in SCORES:
                w = float(scores[name].std()) / spread if spread > 0 and active else 0.0
                self.latent_weights_[name] = w
                scores[name] = scores[name] + w * density
        if self.complexity_correction:
            complexity = png_nats(sample)  # (m,)
            self.complexity_slopes_ = {name: complexity_slope(scores[name], complexity)
                                       for name in SCORES}
            if self.complexity_slopes_[self.score_name] == 0.0:
                logger.warning(
                    "complexity_correction: PNG size does not reliably explain the %r score on "
                    "the fitting images (sizes %.4g to %.4g nats): its slope is 0, so scores are "
                    "not corrected", self.score_name, complexity.min(), complexity.max())

    def _latent_density(self, rows: np.ndarray) -> np.ndarray:
        """``-log r(mu(x))`` ``(n,)`` of unscaled images under the fitted latent mixture."""
        mixture = self.latent_mixture_
        assert mixture is not None
        return mixture.neg_log_density(self._encode_rows(rows)[0])

    def _check_fitted_terms(self) -> None:
        """The score terms' parameters must be those the model was fitted with (its
        ``decision_scores_`` and threshold were set on that kind of score)."""
        for param, fitted in (("latent_density", getattr(self, "latent_weights_", {})),
                              ("complexity_correction", getattr(self, "complexity_slopes_", {}))):
            value = bool(getattr(self, param))
            if value != bool(fitted):
                raise ValueError(
                    f"{param}={value} but this model was fitted {'with' if fitted else 'without'}"
                    f" it (its threshold was set on scores {'with' if fitted else 'without'} "
                    f"that term): refit after changing it")

    def _score_offsets(self, rows: np.ndarray, score: str) -> np.ndarray | None:
        self._check_fitted_terms()
        slopes = getattr(self, "complexity_slopes_", {})
        weights = getattr(self, "latent_weights_", {})
        offset = None
        if slopes and slopes[score] != 0.0:  # 0: no correction, no PNG encoding
            offset = slopes[score] * png_nats(rows)  # (n,)
        if weights and weights[score] != 0.0:  # 0: collapsed codes, no latent term
            term = -weights[score] * self._latent_density(rows)  # (n,): added to the score
            offset = term if offset is None else offset + term
        return offset

    def _fitted_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "complexity_slopes": dict(getattr(self, "complexity_slopes_", {})),
            "png_codec": png_codec()}
        if getattr(self, "latent_weights_", {}):
            doc["latent_weights"] = dict(self.latent_weights_)
        return doc

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        mixture = getattr(self, "latent_mixture_", None)
        if mixture is None:
            return {}
        return {f"latent_mixture.{k}": v for k, v in mixture.to_arrays().items()}

    def _load_fitted_json(self, doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        if "complexity_slopes" in doc:
            self.complexity_slopes_ = {str(k): float(v)
                                       for k, v in doc["complexity_slopes"].items()}
            if not all(np.isfinite(v) for v in self.complexity_slopes_.values()):
                raise ValueError("the complexity correction's slopes are not finite")
            saved, here = doc.get("png_codec"), png_codec()
            if self.complexity_slopes_ and saved and saved != here:
                logger.warning("this model's complexity correction was fitted with %s and "
                               "runs here with %s: PNG sizes, so scores, may differ slightly "
                               "from those on the fitting machine", saved, here)
        else:  # written before the correction existed: its scores were uncorrected
            self.complexity_slopes_ = {}
            self.complexity_correction = False
        self.latent_weights_ = {str(k): float(v) for k, v in doc.get("latent_weights", {}).items()}
        self.latent_mixture_ = None
        if self.latent_weights_:
            missing = sorted(set(SCORES) - set(self.latent_weights_))
            if missing or not all(np.isfinite(w) for w in self.latent_weights_.values()):
                raise ValueError(f"the latent term's weights are incomplete or not finite "
                                 f"(missing: {missing})")
            prefix = "latent_mixture."
            mixture = LatentMixture.from_arrays(
                {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
            if mixture.latent_dim != self.net_config_.latent_dim:
                raise ValueError(f"the latent mixture has {mixture.latent_dim} dimensions, the "
                                 f"network's code {self.net_config_.latent_dim}")
            self.latent_mixture_ = mixture
        else:  # written before the latent term existed (or fitted without it)
            self.latent_density = False

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
        use_labels: bool = True,
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
        self.use_labels = use_labels
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _check_params(self) -> None:
        super()._check_params()
        self._check_conv_params()

    def _net_config(self, n_features: int) -> ConvConfig:  # type: ignore[override]
        return self._conv_config(likelihood="gaussian", variance="fixed", variational=False)
