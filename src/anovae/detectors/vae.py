"""VAEDetector: a variational autoencoder anomaly detector for tabular data."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from anovae.detectors.base import BaseDetector, _check_param
from anovae.exceptions import warn
from anovae.io import array_columns
from anovae.likelihoods import LIKELIHOODS
from anovae.losses import LossTerms, elbo_loss
from anovae.mixed import MixedSchema, check_mixed, fit_mixed_scaler, needs_mixed
from anovae.nets.blocks import LOGVAR_MIN
from anovae.nets.mixed import MixedConfig
from anovae.nets.mlp import VARIANCES, MLPConfig
from anovae.scores import SCORES
from anovae.tabular import Scaler, match_columns, named_for_unnamed
from anovae.training import TrainConfig

__all__ = ["PRESETS", "VAEDetector"]


#: The most latent draws a score may take (``n_samples``): the draws are held as one ``(S, L)``
#: tensor, and each row is decoded ``S`` times; a model file asking for 10^9 would allocate
#: gigabytes at its first score.
MAX_SAMPLES = 10_000

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


def _asinh_ranges(codes: np.ndarray, schema: MixedSchema) -> tuple[tuple[float, float], ...]:
    """``(lo, hi)`` of ``asinh`` of each numeric column's observed scaled training values
    ``codes`` ``(n, C)`` (``(0, 0)`` for a column never observed): the range
    :class:`anovae.nets.mixed.MixedAutoencoder` clips its encoder's input to."""
    out = []
    for j, kind in enumerate(schema.kinds):
        if kind != "numeric":
            continue
        col = codes[:, j]
        obs = np.arcsinh(col[~np.isnan(col)].astype(np.float64))
        out.append((float(obs.min()), float(obs.max())) if obs.size else (0.0, 0.0))
    return tuple(out)


class VAEDetector(BaseDetector):
    """Variational autoencoder anomaly detector (scikit-learn estimator, PyOD conventions).

    Train on normal (or mostly normal) rows; rows the model cannot explain get high scores.
    ``decision_function`` is higher for more anomalous rows and is deterministic.

    Mixed tables: a DataFrame with text, categorical or boolean columns, or with missing values,
    is modelled column by column (:mod:`anovae.mixed`, :mod:`anovae.nets.mixed`): a Gaussian per
    numeric column, a Bernoulli per boolean (or 0/1) column, a categorical (softmax) per
    categorical column; missing cells (None, NaN, and in text columns empty or whitespace-only
    strings, as a CSV reader reads an empty field) are masked out of the likelihood; categories
    never seen in training, and values other than true/false or 0/1 in a boolean column, score
    as maximally surprising (see :meth:`unseen_categories`). Text columns of dates or times are
    refused at fit unless declared ``categorical`` (see :mod:`anovae.mixed`). Scores,
    ``feature_scores`` and :meth:`explain` stay per original column, and :meth:`reconstruct` and
    :meth:`sample` return DataFrames. ``likelihood``, ``variance`` and
    ``score_type="reconstruction"`` apply to numeric tables only.

    Args:
        hidden_dims: encoder widths (the decoder mirrors them); ``None`` scales them with the
            number of features (see :func:`anovae.detectors.base.auto_architecture`).
        latent_dim: size of ``z``; ``None`` scales it with the number of features.
        likelihood: ``"gaussian"`` (real-valued data) or ``"bernoulli"`` (data in [0, 1]).
        variance: Gaussian only: ``"per_sample"`` (the decoder predicts a variance per row and
            feature), ``"per_feature"`` (one learned variance per feature) or ``"fixed"`` (1).
        logvar_floor: soft lower bound of the learned log-variances of numeric features (in
            scaled units; of the asinh of them for a mixed table's numeric columns); -3, a
            standard deviation of about 0.22 spreads, by default; ignored with
            ``variance="fixed"`` and ``likelihood="bernoulli"``. A higher floor makes the score
            ignore deviations smaller than ``exp(logvar_floor / 2)`` spreads: better where
            anomalies differ from normal rows in many features at once and normal rows have
            one-feature oddities, worse where anomalies hide in precise relations between
            features. Measured (docs/benchmarks.md, "Mixed tables: NSL-KDD"): at 0, a split of
            NSL-KDD's training file +1.3 AUROC points and ADBench cardio +7 / +15 (novelty /
            unsupervised), but Wilt -40 and the ADBench mean -5; on mixed tables a single broken
            column is then much harder to find.
        score_type: ``"elbo"`` (negative ELBO), ``"reconstruction_probability"`` (An & Cho 2015),
            ``"iwae"`` (importance-weighted -log p(x)) or ``"reconstruction"`` (squared error).
        n_samples: Monte-Carlo samples ``L`` (or ``K`` for ``"iwae"``) for the sampled scores,
            at most :data:`MAX_SAMPLES`.
        beta: weight of the KL term (1 = the ELBO).
        warmup_epochs: epochs over which the KL weight rises linearly from 0 to ``beta``;
            ``None``: 10% of the epochs (at least 1).
        free_bits: minimum KL per latent dimension (nats); 0 disables it.
        activation: hidden activation, one of ``anovae.nets.blocks.ACTIVATIONS``.
        dropout: dropout rate in hidden layers.
        epochs: maximum epochs; ``None`` picks about ``TARGET_UPDATES`` (700) updates (10 to
            400 epochs; see :func:`anovae.detectors.base.auto_epochs`). Small mixed tables may
            still be learning then: ``anovae fit`` says so when the last epoch was the best.
        batch_size: rows per update (capped at the number of training rows); ``None``: 256 for
            small tables, up to 2,048 for large ones (see
            :func:`anovae.detectors.base.auto_batch_size`).
        learning_rate: Adam's step size; ``None``: 1e-3, scaled by ``sqrt(batch_size / 256)``
            for batches over 256 rows (see :func:`anovae.detectors.base.auto_learning_rate`).
        weight_decay: Adam's weight decay.
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
        use_labels: what ``fit(X, y)`` does with labels. ``True`` (default): only the rows
            labelled 0 train the network (semi-supervised: the few anomalies you know of are
            kept out of it). ``False``: ``y`` is ignored, as PyOD's unsupervised detectors
            ignore it, except by threshold methods that need labels (``"best_f1"``,
            ``"recall"``). scikit-learn's ``cross_val_score`` and ``GridSearchCV`` always pass
            ``y`` to ``fit``: with ``True`` they evaluate the semi-supervised model, with
            ``False`` the unsupervised one (as for IsolationForest).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        random_state: seed for initialisation, shuffling, noise and the validation split; a
            NumPy ``RandomState`` or ``Generator`` works too (each fit draws a seed from it, as
            in scikit-learn; a model file then records ``None``).
        verbose: show a progress bar and log training.
        categorical: columns to model as categorical (e.g. integer codes); giving it (even
            ``[]``) selects the mixed-table path. ``None``: inferred.
        numeric: columns to model as numeric (Gaussian) even when they hold only 0 and 1; giving
            it selects the mixed-table path. ``None``: inferred.
        max_categories: a categorical column with more categories keeps the
            ``max_categories - 1`` most frequent ones plus ``"<other>"`` for the rest of the
            training categories (a category never seen in training is still unseen).

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

    #: Named configurations :meth:`from_preset` knows (image detectors have their own).
    presets: ClassVar[dict[str, dict[str, Any]]] = PRESETS

    def __init__(
        self,
        *,
        hidden_dims: tuple[int, ...] | None = None,
        latent_dim: int | None = None,
        likelihood: str = "gaussian",
        variance: str = "per_sample",
        logvar_floor: float = LOGVAR_MIN,
        score_type: str = "elbo",
        n_samples: int = 16,
        beta: float = 1.0,
        warmup_epochs: int | None = None,
        free_bits: float = 0.0,
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
        categorical: tuple[str, ...] | None = None,
        numeric: tuple[str, ...] | None = None,
        max_categories: int = 100,
    ) -> None:
        self.hidden_dims = hidden_dims
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.variance = variance
        self.logvar_floor = logvar_floor
        self.score_type = score_type
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
        self.use_labels = use_labels
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.categorical = categorical
        self.numeric = numeric
        self.max_categories = max_categories

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> VAEDetector:
        """A detector configured by a named preset (see :data:`PRESETS`); keywords override it.

        >>> VAEDetector.from_preset("tutorial-mlp").likelihood
        'bernoulli'
        """
        try:
            params = dict(cls.presets[name])
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(cls.presets)}"
                             ) from None
        params.update(overrides)
        return cls(**params)

    @property
    def score_name(self) -> str:
        return self.score_type

    def _baseline_scores(self) -> tuple[str, ...]:
        # a mixed table has no squared error (see _validate)
        mixed = isinstance(getattr(self, "schema_", None), MixedSchema)
        return tuple(s for s in SCORES if not (mixed and s == "reconstruction"))

    def _check_vae_params(self) -> None:
        """Validate the parameters of the objective and the score (shared with image VAEs)."""
        _check_param("likelihood", self.likelihood, str, choices=LIKELIHOODS)
        _check_param("variance", self.variance, str, choices=VARIANCES)
        _check_param("score_type", self.score_type, str, choices=SCORES)
        _check_param("n_samples", self.n_samples, Integral, 1, MAX_SAMPLES)
        _check_param("beta", self.beta, Real, 0.0)
        _check_param("warmup_epochs", self.warmup_epochs, Integral, 0, none_ok=True)
        _check_param("free_bits", self.free_bits, Real, 0.0)

    def _check_params(self) -> None:
        super()._check_params()
        self._check_vae_params()
        _check_param("logvar_floor", self.logvar_floor, Real, -20.0, 10.0)
        _check_param("max_categories", self.max_categories, Integral, 2)
        for name in ("categorical", "numeric"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, (str, bytes))
                                      or not isinstance(value, (list, tuple))
                                      or not all(isinstance(c, (str, Integral))
                                                 and not isinstance(c, bool) for c in value)):
                raise ValueError(f"{name} must be a list of column names (text, or the integers "
                                 f"of a frame with integer column names), got {value!r}")
        self._check_mlp_params()

    def _net_config(self, n_features: int) -> MLPConfig | MixedConfig:
        schema = self.schema_
        if isinstance(schema, MixedSchema):
            # sized like the same table one-hot encoded, so both paths get the same network
            mlp = self._mlp_config(schema.encoded_width)
            return MixedConfig(kinds=schema.kinds, cardinalities=schema.cardinalities,
                               n_observed=schema.n_observed, hidden_dims=mlp.hidden_dims,
                               latent_dim=mlp.latent_dim, activation=mlp.activation,
                               dropout=mlp.dropout, logvar_floor=float(self.logvar_floor),
                               input_bounds=self._input_bounds_)
        return self._mlp_config(n_features, likelihood=self.likelihood, variance=self.variance,
                                variational=True, logvar_floor=float(self.logvar_floor))

    # -- mixed tables (anovae.mixed) ----------------------------------------------------------
    def _validate(self, X: Any, schema: Any, min_rows: int = 1) -> tuple[np.ndarray, Any]:
        mixed = isinstance(schema, MixedSchema) or (
            schema is None and needs_mixed(X, self.categorical, self.numeric))
        if mixed and self.score_type == "reconstruction":  # also after set_params on a fitted model
            raise ValueError("score_type='reconstruction' (squared error) has no meaning for "
                             "categorical or missing cells; use 'elbo' on mixed tables")
        if mixed and schema is None and (self.likelihood, self.variance) != (
                "gaussian", "per_sample"):
            raise ValueError(f"likelihood={self.likelihood!r} / variance={self.variance!r} apply "
                             "to numeric tables; a mixed table gives each column its own "
                             "likelihood (leave both at their defaults)")
        if isinstance(schema, MixedSchema):
            checked = check_mixed(X, schema, min_rows=min_rows)
            if schema.names is None:
                self._warn_if_named(X, schema)
            return checked
        if mixed:
            return check_mixed(X, None, min_rows=min_rows, categorical=self.categorical,
                               numeric=self.numeric, max_categories=int(self.max_categories))
        return super()._validate(X, schema, min_rows)

    def _warn_if_named(self, X: Any, schema: MixedSchema) -> None:
        """scikit-learn's warning for a DataFrame (or Series) with text column names given to a
        model fitted on a mixed table without names (an array: columns ``x0, x1, ...``), as
        :func:`anovae.tabular.check_tabular` warns for numeric tables: its columns are taken by
        position. Not for the model's own names ``x0, x1, ...`` (those of :meth:`sample`,
        :meth:`reconstruct` and the service's rows), nor for integer ones (positions anyway)."""
        if isinstance(X, pd.Series):
            columns = [X.name]
        elif isinstance(X, pd.DataFrame):
            columns = list(X.columns)
        else:
            return
        if all(isinstance(c, str) for c in columns) and tuple(columns) != schema.columns:
            warn(named_for_unnamed())

    def _fit_scaler(self, rows: np.ndarray) -> Scaler:
        if isinstance(getattr(self, "schema_", None), MixedSchema):
            scaler = fit_mixed_scaler(self.scaler, rows, self.schema_)
            self._input_bounds_ = _asinh_ranges(scaler.transform(rows), self.schema_)
            return scaler
        scaler = super()._fit_scaler(rows)
        if self.likelihood == "bernoulli":
            xt = scaler.transform(rows)  # (n, d)
            outside = float(np.mean((xt < 0.0) | (xt > 1.0)))
            if outside > 0.01:
                warn(f"likelihood='bernoulli' models values in [0, 1], but {outside:.0%} of the "
                     f"scaled training values fall outside it (scaler={self.scaler!r}); they "
                     "are charged by their distance from the range instead of modelled: use "
                     "scaler='minmax', or scaler='none' for data already in [0, 1]")
        return scaler

    @classmethod
    def _schema_from_dict(cls, d: dict[str, Any]) -> Any:
        if d.get("kind") == "mixed":
            return MixedSchema.from_dict(d)
        return super()._schema_from_dict(d)

    def _mixed(self) -> MixedSchema | None:
        schema = getattr(self, "schema_", None)
        return schema if isinstance(schema, MixedSchema) else None

    def unseen_categories(self, X: Any) -> pd.DataFrame:
        """``(n, C)`` booleans: the cells of ``X`` holding a category the model never saw in
        training, or a value other than true/false or 0/1 in a boolean column (``2``,
        ``"maybe"``: the column's ``unseen_category`` flag). All False for numeric tables.

        >>> import pandas as pd
        >>> from anovae import VAEDetector
        >>> X = pd.DataFrame({"a": [0.1, 0.5, 0.3, 0.9] * 25, "c": ["x", "y"] * 50})
        >>> det = VAEDetector(epochs=1, random_state=0).fit(X)
        >>> det.unseen_categories(pd.DataFrame({"a": [0.2], "c": ["z"]}))["c"].tolist()
        [True]
        """
        rows = self._checked(X)
        schema = self._mixed()
        if schema is not None:
            names, flags = list(schema.columns), schema.unseen(rows)
        else:
            names = [str(c) for c in getattr(self, "feature_names_in_",
                                             array_columns(rows.shape[1]))]
            flags = np.zeros(rows.shape, dtype=bool)
        index = X.index if isinstance(X, pd.DataFrame) else None
        return pd.DataFrame(flags, columns=names, index=index)

    def _explain_columns(self, X: Any, rows: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        schema = self._mixed()
        if schema is None:
            return super()._explain_columns(X, rows)
        if isinstance(X, pd.DataFrame) and schema.names is not None:
            values = match_columns(X, list(schema.names)).to_numpy(dtype=object)  # by str(name)
        else:
            values = np.asarray(X, dtype=object).reshape(rows.shape)
        expected = schema.decode(self._reconstruct_rows(rows)).to_numpy(dtype=object)
        for j, kind in enumerate(schema.kinds):
            if kind == "boolean":  # both in the column's training form: 0/1, or False/True
                known = np.isin(rows[:, j], (0.0, 1.0))  # "false", 0, "no"... read alike
                values[known, j] = [schema.as_written(j, v >= 0.5) for v in rows[known, j]]
                expected[:, j] = [schema.as_written(j, v) for v in expected[:, j]]
        return values, expected, {"unseen_category": schema.unseen(rows),
                                  "missing": np.isnan(rows)}

    def reconstruct(self, X: Any) -> Any:
        """Decoder mean at ``z = mu`` in the units of ``X``: ``(n, d)`` array; for a mixed
        table a DataFrame (the most likely category, the probability of True)."""
        rows = self._checked(X)
        schema = self._mixed()
        if schema is None:
            return self._reconstruct_rows(rows)
        codes = self._reconstruct_rows(rows)
        out = schema.decode(codes, index=X.index if isinstance(X, pd.DataFrame) else None)
        for j, kind in enumerate(schema.kinds):  # a probability rather than a rounded boolean
            if kind == "boolean":
                out[schema.columns[j]] = codes[:, j]
        return out

    def sample(self, n: int, *,
               random_state: int | np.random.Generator | np.random.RandomState | None = None
               ) -> Any:
        """Draw ``n`` rows from the model (see the base class); a DataFrame for a mixed table.

        Only the code is random: each row is the decoder's typical value at its code (the mean
        of a number, the most likely category, True where its probability is at least 0.5), not
        a draw from the columns' likelihoods, so rare categories appear only where some code
        makes them the most likely."""
        codes = super().sample(n, random_state=random_state)
        schema = self._mixed()
        if schema is None:
            return codes
        probs = codes[:, [k == "boolean" for k in schema.kinds]]
        codes[:, [k == "boolean" for k in schema.kinds]] = probs >= 0.5
        return schema.decode(codes)

    def _train_config(self, n_train: int) -> TrainConfig:
        base = super()._train_config(n_train)
        warmup = (self.warmup_epochs if self.warmup_epochs is not None
                  else max(1, math.ceil(0.1 * base.epochs)))
        if warmup > base.epochs:  # else no epoch reaches the full KL weight (nor is "best")
            warn(f"warmup_epochs={warmup} is more than the {base.epochs} epochs: the KL weight "
                 "reaches beta at the last epoch instead")
            warmup = base.epochs
        return TrainConfig(**{**base.__dict__, "beta": float(self.beta),
                              "warmup_epochs": int(warmup)})

    def _loss(self, net: torch.nn.Module, xb: torch.Tensor, beta: float,
              g: torch.Generator) -> LossTerms:
        return elbo_loss(net, xb, beta=beta, free_bits=float(self.free_bits), generator=g)

    def _n_noise_samples(self) -> int:
        # checked here too: set_params(n_samples=0) on a fitted model (no fit to check it) gave
        # a ZeroDivisionError, and 50,000 ran past MAX_SAMPLES
        _check_param("n_samples", self.n_samples, Integral, 1, MAX_SAMPLES)
        return int(self.n_samples)
