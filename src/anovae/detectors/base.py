"""The shared skeleton of every anovae detector: validate, scale, build, train, score, threshold.

Subclasses declare their parameters in ``__init__`` (stored unchanged, scikit-learn style) and
implement three small hooks: :meth:`BaseDetector._net_config` (the network to build),
:meth:`BaseDetector._loss` (the training objective) and the ``score_name`` property.

Conventions (PyOD's): ``decision_function`` is higher for more anomalous rows; ``predict`` gives
1 for anomalies and 0 for normal rows; ``threshold_`` is the ``1 - contamination`` quantile of the
training scores ``decision_scores_`` by default (other methods: the ``threshold`` parameter and
:mod:`anovae.thresholds`); ``labels_`` are the training labels.

Feature names (scikit-learn's): a model fitted on a DataFrame records ``feature_names_in_`` and
matches the columns of a DataFrame by name (in any order; missing or unexpected ones raise
:class:`~anovae.exceptions.DataError`); rows without names (an array) are taken by position, with
scikit-learn's warning, once per call of a public method (not on the library's own paths, which
hand it rows in the fitted order: see :meth:`BaseDetector._feature_names_warning`).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import sys
from collections.abc import Iterable
from numbers import Integral, Real
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from scipy.special import erf
from sklearn.base import BaseEstimator, OutlierMixin

from anovae.accel import to_device
from anovae.distributed import check_same_data, shared_seed
from anovae.exceptions import DataError, NotFittedError, warn
from anovae.io import feature_labels
from anovae.losses import LossTerms
from anovae.metrics import binary_labels
from anovae.nets import build_net
from anovae.nets.blocks import ACTIVATIONS
from anovae.nets.mlp import MLPConfig
from anovae.scores import (
    MONTE_CARLO_SCORES,
    common_noise,
    feature_baseline,
    feature_excess,
    feature_scores,
    rank_features,
)
from anovae.tabular import SCALERS, ColumnSchema, Scaler, _list, check_tabular
from anovae.thresholds import (
    ThresholdSpec,
    conformal_pvalues,
    fpr_calibration_problem,
    parse_threshold,
    prediction_confidence,
)
from anovae.training import TrainConfig, TrainResult, small_net_threads, train

__all__ = ["BaseDetector", "auto_architecture", "resolve_device"]

logger = logging.getLogger(__name__)

#: Rows per forward pass when scoring (divided by the number of Monte-Carlo samples).
SCORE_BATCH_ROWS = 65536
#: ... and at most this many cells of decoder output (rows x draws x width) per pass: about
#: 16 MB per float32 temporary, whatever the table's width (a batch is then smaller than
#: SCORE_BATCH_ROWS only for tables wider than about 64 columns at 16 draws).
SCORE_BATCH_CELLS = 1 << 22
#: Most decoder outputs the draws of one row may take (``n_samples`` x the row's values; see
#: :meth:`BaseDetector._check_score_cells`): 16 draws of a 1024 x 1024 RGB image are 2^25.6.
MAX_ROW_SCORE_CELLS = 1 << 26
#: Scoring batches are this many times larger on a GPU.
GPU_BATCH_FACTOR = 4
#: Target number of optimiser updates when ``epochs=None`` (see :func:`auto_epochs`).
#: 700 (was 3000): fit time grows with the updates; on the ADBench dev sets 700 updates cost
#: 0.5 AUROC point against 1000 on both halves, 500 cost 1-2 (docs/benchmarks.md, issue 3).
#: Mixed tables too: 1,400 gained on synthetic ones (0.87 -> 0.975 AUROC) and lost 0.6 on every
#: one of ten seeds of NSL-KDD's test file (docs/benchmarks.md, "the update budget").
TARGET_UPDATES = 700
#: Share of the normal rows held out to calibrate ``threshold="fpr"`` when
#: ``calibration_fraction=None``.
DEFAULT_CALIBRATION_FRACTION = 0.2
#: Training rows (evenly spaced) whose per-feature scores give ``feature_baselines_`` (their
#: median per column: 2,048 rows put it within a few percent of the column's spread, plenty to
#: rank by), fewer for wide tables: at most :data:`BASELINE_CELLS` cells (and 64 rows at least),
#: so the four scores' passes stay a few percent of a fit (125 rows for 2,000 columns).
BASELINE_ROWS = 2048
BASELINE_CELLS = 250_000

def _module(frame: Any) -> str:
    """The name of the module whose code ``frame`` runs (by module, not by file path: the
    paths compiled into ``.pyc`` files need not be where the package is installed)."""
    return str(frame.f_globals.get("__name__", ""))


def _called_from_outside() -> bool:
    """Whether the detector method running was called from outside anovae: by the user, or by
    a tool such as scikit-learn's ``cross_val_score`` or a ``Pipeline`` (the first frame
    outside ``anovae/detectors`` is outside ``anovae``), rather than by the library's own paths
    (:mod:`anovae.scoring`, :mod:`anovae.streaming` and the service, :mod:`anovae.outofcore`,
    the report...), which hand the detector rows they built in the fitted column order
    (records matched by name, columns read from a file). The detector's own calls
    (``predict`` -> ``decision_function``) are skipped over: one warning per public call."""
    frame = sys._getframe(1)
    while frame is not None and _module(frame).startswith("anovae.detectors"):
        frame = frame.f_back
    return frame is None or not (_module(frame) == "anovae"
                                 or _module(frame).startswith("anovae."))


def _positional(names: tuple[str, ...]) -> bool:
    """Whether fitted column names are ``"0", "1", ..., "n-1"``: those of ``pd.DataFrame(array)``
    (a RangeIndex, kept as text), which say no more than an array's positions."""
    return all(name == str(j) for j, name in enumerate(names))


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise the named device (CPU or CUDA:
    the devices anovae is tested on; others, such as ``"mps"``, are refused here rather than
    failing inside torch)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:  # torch's message lists every backend it knows
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}"
                         ) from exc
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r} is not supported: anovae runs on 'cpu' and 'cuda' "
                         "('auto' picks CUDA when available)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available here")
    return dev


def _same_param(a: Any, b: Any) -> bool:
    """``a == b`` for parameter values (numbers, strings, objects: identity); a list and a
    tuple of the same items are the same (a file gives back tuples)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_param(x, y) for x, y in zip(a, b, strict=True))
    try:
        return a is b or bool(a == b)
    except (TypeError, ValueError):  # e.g. arrays: ambiguous truth value
        return False


def auto_architecture(n_features: int) -> tuple[tuple[int, ...], int]:
    """Default hidden widths and latent size as functions of the number of features ``d``.

    Width ``h = clip(2 d, 32, 256)`` rounded to a multiple of 8, two hidden layers ``(h, h/2)``,
    latent ``clip(ceil(d / 8), 2, 32)``: a bottleneck well below ``d`` so the model must learn the
    structure of normal rows rather than copy them (``d / 8`` beat ``d / 4`` on both halves of
    the ADBench dev sets, docs/benchmarks.md).
    """
    h = int(min(256, max(32, 2 * n_features)))
    h = int(math.ceil(h / 8) * 8)
    latent = int(min(32, max(2, math.ceil(n_features / 8))))
    return (h, max(16, h // 2)), latent


def auto_batch_size(n_train: int) -> int:
    """Rows per update when ``batch_size=None``: the largest power of two from 256 to 2,048
    that still gives at least 16 updates per epoch (256 below 8,192 rows, 2,048 from 32,768).

    Small tables keep 256-row batches; large ones take fewer, larger steps. On a CPU a step's
    fixed cost (Python and kernel dispatch, about 1.5 ms for a 3-layer MLP) dwarfs its arithmetic
    at 256 rows: a 1,024-row step costs about 2.5x a 256-row step for 4x the rows, so large
    tables train 2-3x faster per epoch; :func:`auto_epochs` still gives at least about
    :data:`TARGET_UPDATES` updates, and :func:`auto_learning_rate` scales the step size
    (docs/benchmarks.md, issue 2).
    """
    b = 256
    while b < 2048 and n_train / (2 * b) >= 16:
        b *= 2
    return b


def auto_learning_rate(batch_size: int) -> float:
    """Adam's step size when ``learning_rate=None``: 1e-3 up to 256 rows per update, above that
    scaled by the square root of the batch size (the usual rule for Adam: a larger batch
    averages away noise, so it can take a larger step). Smaller batches keep 1e-3, the step
    every small-batch setting was tuned with. With :func:`auto_batch_size` it keeps the
    quality of 256-row batches: ADBench, 16 sets x 2 seeds, 88.0 / 80.1 mean AUROC (novelty /
    unsupervised) against 88.0 / 80.0 with 256 everywhere; on the three largest sets at up to
    200k rows 91.5 / 87.1 against 91.3 / 85.5 (without the scaling: 90.3 / 84.6;
    docs/benchmarks.md)."""
    return 1e-3 * math.sqrt(max(batch_size, 256) / 256)


def auto_epochs(n_train: int, batch_size: int, *, updates: int | None = None,
                min_epochs: int = 10, max_epochs: int | None = 400) -> int:
    """Epochs for about ``updates`` optimiser updates (default :data:`TARGET_UPDATES`) of
    ``batch_size`` rows (capped at ``n_train``), between ``min_epochs`` and ``max_epochs``
    (``None``: no cap).

    >>> auto_epochs(50_000, 2048), auto_epochs(6_000, 64, updates=1500, min_epochs=1)
    (28, 16)
    """
    target = TARGET_UPDATES if updates is None else updates
    steps = max(1, math.ceil(n_train / max(1, min(batch_size, n_train))))
    epochs = max(min_epochs, math.ceil(target / steps))
    return int(epochs if max_epochs is None else min(max_epochs, epochs))


def _check_param(name: str, value: Any, kind: type | tuple[type, ...], low: float | None = None,
                 high: float | None = None, *, low_open: bool = False, none_ok: bool = False,
                 choices: tuple[str, ...] | None = None) -> None:
    if value is None and none_ok:
        return
    if choices is not None:
        if value not in choices:
            raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
        return
    if isinstance(value, bool) or not isinstance(value, kind):
        what = {Integral: "an integer", Real: "a number", str: "a string"}.get(
            kind, f"a {getattr(kind, '__name__', kind)}")  # type: ignore[call-overload]
        raise ValueError(f"{name} must be {what}, got {value!r}")
    # NaN passes every comparison below, and no parameter means anything at infinity.
    if not isinstance(value, Integral) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value!r}")


class BaseDetector(OutlierMixin, BaseEstimator):
    """Shared fit / score / threshold logic. Not used directly: see VAEDetector, AEDetector."""

    #: Rows per forward pass when scoring (images use fewer: their activations are larger).
    _score_batch_rows: int = SCORE_BATCH_ROWS

    # Parameters every subclass has (declared in each subclass's __init__).
    contamination: float
    epochs: int | None
    batch_size: int | None
    learning_rate: float | None
    weight_decay: float
    validation_fraction: float
    patience: int | None
    clip_grad_norm: float
    scaler: str
    device: str
    random_state: int | np.random.RandomState | np.random.Generator | None
    verbose: bool
    use_labels: bool

    # -- hooks -------------------------------------------------------------------------------
    @property
    def score_name(self) -> str:
        """The score used by ``decision_function`` (one of :data:`anovae.scores.SCORES`)."""
        raise NotImplementedError

    def _net_config(self, n_features: int) -> MLPConfig:
        raise NotImplementedError

    def _loss(self, net: torch.nn.Module, xb: torch.Tensor, beta: float,
              g: torch.Generator) -> LossTerms:
        raise NotImplementedError

    def _mlp_config(self, n_features: int, **fixed: Any) -> MLPConfig:
        """The MLP for ``n_features`` from ``hidden_dims``/``latent_dim`` (auto when None)."""
        hidden, latent = auto_architecture(n_features)
        hidden_dims = getattr(self, "hidden_dims", None)
        latent_dim = getattr(self, "latent_dim", None)
        return MLPConfig(
            n_features=n_features,
            hidden_dims=tuple(int(h) for h in hidden_dims) if hidden_dims is not None else hidden,
            latent_dim=int(latent_dim) if latent_dim is not None else latent,
            activation=getattr(self, "activation", "relu"),
            dropout=float(getattr(self, "dropout", 0.0)),
            **fixed,
        )

    def _check_mlp_params(self) -> None:
        """Validate the parameters :meth:`_mlp_config` reads (shared by the MLP detectors)."""
        _check_param("activation", getattr(self, "activation", "relu"), str,
                     choices=tuple(ACTIVATIONS))
        _check_param("dropout", getattr(self, "dropout", 0.0), Real, 0.0, 0.95)
        _check_param("latent_dim", getattr(self, "latent_dim", None), Integral, 1, none_ok=True)
        hidden_dims = getattr(self, "hidden_dims", None)
        if hidden_dims is not None and (
            isinstance(hidden_dims, (str, bytes)) or not isinstance(hidden_dims, Iterable)
            or not all(isinstance(h, Integral) and not isinstance(h, bool) and h > 0
                       for h in hidden_dims)
        ):
            raise ValueError(f"hidden_dims must be a sequence of positive integers, "
                             f"got {hidden_dims!r}")

    def _batch_size(self, n_train: int) -> int:
        """Rows per update: ``batch_size``, or :func:`auto_batch_size` when it is ``None``."""
        return int(self.batch_size) if self.batch_size is not None else auto_batch_size(n_train)

    def _trained_batch_size(self, n_train: int) -> int:
        """The batch the training loop really takes: :meth:`_batch_size` capped at the rows."""
        return min(self._batch_size(n_train), max(1, n_train))

    def _train_config(self, n_train: int) -> TrainConfig:
        epochs = self.epochs if self.epochs is not None else self._auto_epochs(n_train)
        patience = (self.patience if self.patience is not None
                    else max(10, math.ceil(0.1 * epochs)))
        batch_size = self._trained_batch_size(n_train)  # streamed sources do not cap it
        lr = (float(self.learning_rate) if self.learning_rate is not None
              else auto_learning_rate(batch_size))
        return TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr,
                           weight_decay=self.weight_decay, beta=1.0, warmup_epochs=0,
                           patience=patience, clip_grad_norm=self.clip_grad_norm,
                           verbose=self.verbose)

    def _auto_epochs(self, n_train: int) -> int:
        """Epochs when ``epochs=None`` (image detectors use a fixed update budget instead)."""
        return auto_epochs(n_train, self._batch_size(n_train))

    def _n_noise_samples(self) -> int:
        return 1

    def _check_params(self) -> None:
        if callable(getattr(self.contamination, "eval", None)):  # PyOD's place for PyThresh
            name = type(self.contamination).__name__
            raise ValueError(f"contamination must be a number; a thresholder object such as "
                             f"{name}() goes in threshold= (threshold={name}(), or "
                             f"threshold='pythresh:{name}' for PyThresh's)")
        _check_param("contamination", self.contamination, Real, 0.0, 0.5, low_open=True)
        _check_param("epochs", self.epochs, Integral, 1, none_ok=True)
        _check_param("batch_size", self.batch_size, Integral, 1, none_ok=True)
        _check_param("learning_rate", self.learning_rate, Real, 0.0, low_open=True,
                     none_ok=True)
        _check_param("weight_decay", self.weight_decay, Real, 0.0)
        _check_param("validation_fraction", self.validation_fraction, Real, 0.0, 0.5)
        _check_param("patience", self.patience, Integral, 0, none_ok=True)
        _check_param("clip_grad_norm", self.clip_grad_norm, Real, 0.0)
        _check_param("scaler", self.scaler, str, choices=SCALERS)
        if not isinstance(self.random_state, (np.random.RandomState, np.random.Generator)):
            _check_param("random_state", self.random_state, Integral, 0, none_ok=True)
        if not isinstance(getattr(self, "use_labels", True), (bool, np.bool_)):
            raise ValueError(f"use_labels must be True or False, got {self.use_labels!r}")
        if not isinstance(self.device, str):
            raise ValueError(f"device must be a string such as 'auto', 'cpu' or 'cuda', "
                             f"got {self.device!r}")
        resolve_device(self.device)  # unknown or unavailable devices fail before any work
        _check_param("calibration_fraction", getattr(self, "calibration_fraction", None), Real,
                     0.0, 0.5, none_ok=True)
        if (getattr(self, "threshold", "contamination") == "contamination"
                and getattr(self, "threshold_param", None) is not None):
            raise ValueError("threshold='contamination' reads the contamination parameter; "
                             "leave threshold_param=None")
        self._threshold_spec()  # unknown methods or numbers out of range fail here

    def _warn_unused_contamination(self) -> None:
        """At fit: a ``contamination`` other than the default, which another threshold method
        leaves unused (PyOD's main knob; the reverse, ``threshold_param`` with the
        contamination method, is refused by :meth:`_check_params`)."""
        spec = self._threshold_spec()
        default = inspect.signature(type(self)).parameters.get("contamination")
        if (spec.method != "contamination" and default is not None
                and self.contamination != default.default):
            warn(f"contamination={self.contamination!r} is not used: threshold="
                 f"{spec.describe()!r} sets the threshold (contamination is read by "
                 "threshold='contamination' alone; set the method's number with "
                 "threshold_param)")

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, X: Any, y: Any | None = None) -> BaseDetector:
        """Fit the detector on ``X`` (rows of normal data, or mostly normal data).

        Args:
            X: ``(n, d)`` array or DataFrame, ``n >= 2``: numeric and boolean columns; a
                :class:`~anovae.VAEDetector` also takes text, categorical columns and gaps (a
                mixed table, see its ``categorical`` parameter); image detectors take images.
            y: optional 0/1 labels (1 = anomaly). When given (and ``use_labels=True``, the
                default), only the rows labelled 0 train the network; every row is still scored
                for ``decision_scores_``. With ``use_labels=False`` it is ignored, unless the
                threshold method needs labels (``"best_f1"``, ``"recall"``). scikit-learn's
                ``cross_val_score`` and ``GridSearchCV`` always pass it (see ``use_labels``).

        Returns:
            self

        A fit that raises leaves the detector as it was before the call (fitted or not).
        """
        before = {k: v for k, v in vars(self).items() if k.endswith("_")}
        try:
            return self._fit(X, y)
        except BaseException:
            for k in [k for k in vars(self) if k.endswith("_")]:
                delattr(self, k)
            vars(self).update(before)
            raise

    def _fit(self, X: Any, y: Any | None) -> BaseDetector:
        """:meth:`fit`'s steps (the fitted attributes are set as they are computed)."""
        self._check_params()
        self._warn_unused_contamination()
        X_arr, schema = self._validate(X, None, min_rows=2)
        check_same_data(X_arr, None if y is None else np.asarray(y))  # under torchrun
        train_rows = X_arr
        spec = self._threshold_spec()
        if not self.use_labels and not spec.needs_labels:
            y = None  # ignored, as by PyOD's unsupervised detectors
        if y is not None:
            y_arr = binary_labels(y, X_arr.shape[0])
            if self.use_labels:
                train_rows = X_arr[y_arr == 0]
            if train_rows.shape[0] < 2:
                raise DataError("fewer than 2 rows are labelled normal (y == 0); cannot fit")
        self.schema_ = schema
        self.n_features_in_ = schema.n_features
        if schema.names is not None:
            self.feature_names_in_ = np.asarray(schema.names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_  # a refit on an array: the old names no longer apply
        self._check_score_cells()  # before training, not when the training rows are scored
        rng = np.random.default_rng(self._fit_seed())
        y_fit = None if y is None else y_arr.astype(int)
        if missing := spec.missing_labels(y_fit):
            raise DataError(f"threshold={spec.method!r} needs {missing}: fit(X, y) with y = 1 "
                            "for anomalies, 0 for normal rows (CLI: --label-column COLUMN)")
        normal = (np.arange(X_arr.shape[0]) if y_fit is None or not self.use_labels
                  else np.flatnonzero(y_fit == 0))
        cal_rows = self._calibration_rows(normal, spec, rng)  # (n_cal,) indices into X
        if cal_rows.size:  # held out of everything fitted: scaler, network, early stopping
            train_rows = X_arr[np.setdiff1d(normal, cal_rows)]
        self.scaler_ = self._fit_scaler(train_rows)
        xt = self.scaler_.transform(train_rows)
        x_train, x_val = self._split(xt, rng)
        self.net_config_ = self._net_config(self.n_features_in_)
        net = self.net_ = self._train_net(x_train, x_val, x_train.shape[0], rng)
        device = next(net.parameters()).device
        if not self.net_config_.variational:
            step = self._score_batch_rows
            with torch.inference_mode():
                codes = torch.cat([net.encode(torch.from_numpy(x_train[i:i + step]).to(device))[0]
                                   for i in range(0, x_train.shape[0], step)]).float().cpu().numpy()
            self.code_mean_ = codes.mean(0).astype(np.float32)
            self.code_std_ = codes.std(0).astype(np.float32)
        self._fit_score_offsets(train_rows, rng)
        self.decision_scores_ = self._score_rows(X_arr)[0]
        self._fit_feature_baselines(train_rows)
        if cal_rows.size:
            self.calibration_scores_ = self.decision_scores_[cal_rows]
        elif hasattr(self, "calibration_scores_"):
            del self.calibration_scores_  # a refit without calibration: the old ones are stale
        self._fit_threshold(spec, self.decision_scores_, y_fit)
        return self

    def _fit_seed(self) -> int:
        """The seed of a fit: ``random_state`` itself (an int); one drawn from it (a NumPy
        ``RandomState`` or ``Generator``, as scikit-learn accepts: each fit then draws anew);
        or a fresh one (``None``). Under torchrun, rank 0's, so the ranks agree."""
        rs = self.random_state
        if isinstance(rs, np.random.RandomState):
            seed = int(rs.randint(0, 2**31 - 1))
        elif isinstance(rs, np.random.Generator):
            seed = int(rs.integers(0, 2**31 - 1))
        elif rs is not None:
            seed = int(rs)
        else:
            seed = int(np.random.default_rng().integers(0, 2**31 - 1))
        return shared_seed(seed)

    def _train_net(self, x_train: Any, x_val: np.ndarray | None, n_train: int,
                   rng: np.random.Generator) -> torch.nn.Module:
        """Build the network of ``net_config_`` and train it; returns it in eval mode.

        ``x_train``: the scaled ``(n_train, *F)`` training rows, or a
        :class:`anovae.training.BatchSource` of ``n_train`` rows (:mod:`anovae.outofcore`);
        ``x_val``: scaled validation rows or None. Sets ``noise_seed_``, ``history_``,
        ``n_epochs_``, ``best_epoch_``, ``batch_size_`` and ``learning_rate_`` (the resolved
        values when the parameters are ``None``).
        """
        device = resolve_device(self.device)
        tcfg = self._train_config(n_train)
        torch_seed = int(rng.integers(0, 2**31 - 1))
        self.noise_seed_ = int(rng.integers(0, 2**31 - 1))
        # Weight initialisation (on the CPU) and dropout draw from torch's global generators:
        # fork the CPU one and the training GPU's, seed only those, and the caller's random state
        # is left exactly as it was (torch.manual_seed would reseed every GPU for good).
        gpus = [device.index if device.index is not None else torch.cuda.current_device()
                ] if device.type == "cuda" else []
        # a fit called under the caller's torch.no_grad() or inference_mode() still trains (it
        # failed in autograd: "element 0 of tensors does not require grad")
        with torch.random.fork_rng(devices=gpus), torch.inference_mode(False), \
                torch.enable_grad():
            torch.random.default_generator.manual_seed(torch_seed)
            for gpu in gpus:
                with torch.cuda.device(gpu):
                    torch.cuda.manual_seed(torch_seed)
            net = build_net(self.net_config_).to(device)
            gen = torch.Generator(device=device).manual_seed(torch_seed)
            rows = (torch.from_numpy(x_train).to(device) if isinstance(x_train, np.ndarray)
                    else x_train)
            example = rows[:1] if isinstance(rows, torch.Tensor) else None
            tcfg = dataclasses.replace(tcfg, num_threads=small_net_threads(
                net, device, self._trained_batch_size(n_train), example))
            result: TrainResult = train(
                net, self._loss, rows,
                None if x_val is None else torch.from_numpy(x_val).to(device), tcfg, gen)
        self.history_ = result.history
        self.n_epochs_ = result.epochs_run
        self.batch_size_ = self._trained_batch_size(n_train)  # as trained (None -> auto)
        self.learning_rate_ = float(tcfg.learning_rate)
        self.best_epoch_ = result.best_epoch
        self._fit_params_ = self.get_params(deep=False)  # see _check_params_unchanged
        return net.eval()

    def fit_predict(self, X: Any, y: Any | None = None) -> np.ndarray:
        """Fit on ``X`` (with ``y`` as in :meth:`fit`) and return the training labels ``labels_``
        (1 = anomaly). scikit-learn's ``OutlierMixin.fit_predict`` would drop ``y``."""
        return self.fit(X, y).labels_

    def _split(self, xt: np.ndarray, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray | None]:
        n = xt.shape[0]
        n_val = int(round(self.validation_fraction * n))
        if n_val < 1 or n - n_val < 2:
            return np.ascontiguousarray(xt), None
        perm = rng.permutation(n)
        return (np.ascontiguousarray(xt[perm[n_val:]]), np.ascontiguousarray(xt[perm[:n_val]]))

    def _set_threshold(self, threshold: float) -> None:
        """Set ``threshold_``, ``labels_`` from ``decision_scores_`` and ``threshold_score_``:
        the score they are on (see :meth:`_check_threshold_score`)."""
        self.threshold_ = float(threshold)
        # a loaded file's description (its checksum, training date) no longer fits the model
        # once its threshold is set anew (a refit, refit_threshold): the service reports none
        self.__dict__.pop("metadata_", None)
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(int)
        self.threshold_score_ = self.score_name
        self._threshold_scoring_ = self._scoring_params()  # see _check_threshold_score
        self._threshold_params_ = self._threshold_params()  # see _default_refit_method

    def _scoring_params(self) -> dict[str, Any]:
        """The parameters the scores depend on besides the fitted model: ``score_type``, and
        ``n_samples`` for the Monte-Carlo scores (a 1-draw ELBO is not a 16-draw one)."""
        params: dict[str, Any] = {"score_type": self.score_name}
        if self.score_name in MONTE_CARLO_SCORES and hasattr(self, "n_samples"):
            params["n_samples"] = self.n_samples
        return params

    def _threshold_params(self) -> tuple[Any, ...]:
        """The parameters that choose the threshold method."""
        return (getattr(self, "threshold", "contamination"),
                getattr(self, "threshold_param", None), self.contamination)

    def _default_refit_method(self) -> Any:
        """What :meth:`refit_threshold` uses without ``method``: the method an earlier
        ``refit_threshold`` (or ``anovae threshold``) chose, while the threshold parameters
        are as they were then; otherwise ``None``, the parameters themselves (changed with
        ``set_params``, or describing that very method: a thresholder object stays one)."""
        last = getattr(self, "threshold_method_", None)
        if last is None or self._threshold_params() != getattr(self, "_threshold_params_",
                                                                None):
            return None
        return None if self._threshold_spec().describe() == last else last

    # -- thresholds (the methods live in anovae.thresholds) ------------------------------------
    def _threshold_spec(self, method: Any = None, param: float | None = None) -> ThresholdSpec:
        """``method``/``param``, else the ``threshold``/``threshold_param`` parameters; the
        ``"contamination"`` method without a number reads the ``contamination`` parameter."""
        if method is None:
            method = getattr(self, "threshold", "contamination")
            param = getattr(self, "threshold_param", None) if param is None else param
        if isinstance(method, str) and method == "contamination" and param is None:
            param = self.contamination
        return parse_threshold(method, param)

    def _calibration_rows(self, normal: np.ndarray, spec: ThresholdSpec,
                          rng: np.random.Generator) -> np.ndarray:
        """Sorted indices ``(n_cal,)`` of the normal rows held out of training to calibrate the
        threshold: ``calibration_fraction`` of ``normal`` (``None``: 0.2 for ``"fpr"``, else 0).
        Draws from ``rng`` only when rows are held out."""
        frac = getattr(self, "calibration_fraction", None)
        if frac is None:
            frac = DEFAULT_CALIBRATION_FRACTION if spec.method == "fpr" else 0.0
        n_cal = int(round(frac * normal.size))
        if spec.method == "fpr" and (
                problem := fpr_calibration_problem(float(spec.param), n_cal, frac, normal.size)):
            raise DataError(problem)
        if n_cal < 1:
            return np.empty(0, dtype=np.intp)
        if normal.size - n_cal < 2:
            raise DataError(f"{normal.size} normal rows leave fewer than 2 to train after holding "
                            f"out {n_cal} for calibration")
        return np.sort(rng.permutation(normal)[:n_cal])

    def _fit_threshold(self, spec: ThresholdSpec, scores: np.ndarray, y: np.ndarray | None,
                       normal_scores: np.ndarray | None = None) -> None:
        """Set ``threshold_`` by ``spec`` from the ``(n,)`` scores of some rows and their labels
        ``y`` (or None); ``"fpr"``/``"pot"`` use ``normal_scores``, scores of held-out normal
        rows (default: the calibration scores, else the scores of the rows with ``y == 0``)."""
        if spec.wants_normal_scores:
            if normal_scores is None:
                normal_scores = getattr(self, "calibration_scores_", None)
            if normal_scores is None:
                normal_scores = scores if y is None else scores[y == 0]
            threshold = spec.compute(normal_scores)
            reference = normal_scores
        else:
            threshold = spec.compute(scores, y if spec.needs_labels else None)
            reference = scores
        self.threshold_method_ = spec.describe()
        self._set_threshold(threshold)
        # the scores the threshold was set on: predict_confidence's reference rows
        self.threshold_reference_scores_ = np.asarray(reference, dtype=np.float64)
        if spec.method == "contamination":
            share = float(np.mean(scores > threshold))
            if share < 0.5 * float(spec.param):  # PyOD's rule, "score > threshold", on ties
                warn(f"contamination={float(spec.param):g}, but only {share:.1%} of the rows "
                     f"score above the threshold: {int(np.sum(scores == threshold))} tie at it "
                     "(duplicated rows?), and a row must score above it to be flagged")

    def refit_threshold(self, X: Any, y: Any | None = None, *, method: Any = None,
                        param: float | None = None) -> BaseDetector:
        """Recompute ``threshold_`` (and ``labels_``) from new data, without retraining.

        Args:
            X: rows to calibrate on. For ``"fpr"`` and ``"pot"`` they must be normal rows the
                model was not trained on (with ``y``: the rows labelled 0 are used); for
                ``"fpr"`` their scores become ``calibration_scores_`` (conformal p-values).
            y: optional 0/1 labels (1 = anomaly); needed by ``"best_f1"`` and ``"recall"``.
            method: a threshold method (see :func:`anovae.thresholds.parse_threshold`);
                ``None``: the method ``threshold_`` was last set with (``threshold_method_``,
                with its number: an earlier call's, or ``anovae threshold``'s), unless the
                ``threshold`` parameters changed since (``set_params``): then those.
            param: the method's number (contamination, FPR, recall, POT risk ``q``); ``None``:
                the number of the method reused (with ``method=None``), else
                ``threshold_param``, else the method's default (``contamination`` for
                ``"contamination"``).

        Returns:
            self

        >>> import numpy as np
        >>> from anovae import VAEDetector
        >>> rng = np.random.default_rng(0)
        >>> det = VAEDetector(epochs=2, random_state=0).fit(rng.normal(size=(300, 3)))
        >>> X_new = rng.normal(size=(400, 3))
        >>> det.refit_threshold(X_new, method="fpr", param=0.1).threshold_method_
        'fpr=0.1'
        >>> bool(det.predict(X_new).mean() <= 0.1)
        True
        """
        self._check_fitted()
        self._check_threshold_score()  # decision_scores_ (hence labels_) are of that score
        if method is None:
            method = self._default_refit_method()
            if param is not None:  # the method reused (last one, or the parameter), a new number
                reused = method if method is not None else getattr(self, "threshold", None)
                if isinstance(reused, str):
                    method = reused.partition("=")[0]
        spec = self._threshold_spec(method, param)
        scores = self.decision_function(X)
        y_arr = None
        if y is not None:
            y_arr = binary_labels(y, scores.shape[0])
        if missing := spec.missing_labels(y_arr):
            raise DataError(f"threshold method {spec.method!r} needs {missing}: pass y, 1 for "
                            "an anomaly, 0 for a normal row (CLI: --label-column COLUMN)")
        normal = scores if y_arr is None else scores[y_arr == 0]
        if spec.wants_normal_scores and normal.size == 0:
            raise DataError(f"threshold method {spec.method!r} needs rows labelled normal (y = 0)")
        if spec.method == "fpr":  # ("pot" at fit fits its tail on the training scores itself)
            self._warn_if_trained_on(normal, spec)
        if spec.method == "fpr":
            self.calibration_scores_ = normal
        self._fit_threshold(spec, scores, y_arr, normal)
        return self

    def _warn_if_trained_on(self, scores: np.ndarray, spec: ThresholdSpec) -> None:
        """Warn when most of the ``(n,)`` scores of the rows given to :meth:`refit_threshold`
        for ``fpr`` are those of rows the model was trained on: equal, to float32 rounding
        (2e-7 relative: a row scored in another batch moves by up to 1.3e-7), to one of
        ``decision_scores_`` other than the ``calibration_scores_`` (of fit, or of the last
        refit). The model learned those rows, so they score lower than new normal rows and the
        threshold flags more than the target of new ones, silently (0.016 at fpr=0.01 in a
        user's test). A new row lands that close to one of ``m`` training scores by chance with
        a probability that grows with ``m``: about 20 % at a million of them, below the
        majority asked for."""
        trained = np.asarray(getattr(self, "decision_scores_", ()), dtype=np.float64)
        cal = getattr(self, "calibration_scores_", None)
        if cal is not None:
            trained = trained[~np.isin(trained, cal)]
        if trained.size == 0:
            return
        ref = np.r_[-np.inf, np.sort(trained), np.inf]  # (m + 2,) with sentinels
        pos = np.searchsorted(ref, scores)  # (n,) in [1, m + 1]
        near = np.minimum(scores - ref[pos - 1], ref[pos] - scores)  # distance to the closest
        share = float(np.mean(near <= 2e-7 * np.abs(scores)))
        if share > 0.5:
            warn(f"{share:.0%} of the rows given to refit_threshold score as rows the model was "
                 f"trained on: threshold={spec.describe()!r} wants normal rows held out of fit "
                 "(the model learned its training rows, which score lower than new normal "
                 "rows, so the threshold would flag more than the target of new ones); fit "
                 "with threshold='fpr' holds out calibration_fraction of the rows itself")

    # -- scoring -----------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "net_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit(X) or anovae.load(path)"
            )

    def _check_threshold_score(self) -> None:
        """The configured score must be the one ``threshold_`` was set on (``threshold_score_``,
        with its ``n_samples``: :meth:`_scoring_params`; so were ``decision_scores_``,
        ``labels_`` and ``calibration_scores_``).

        ``set_params(score_type=...)`` (or ``n_samples=``) on a fitted model changes what
        ``decision_function``, ``feature_scores``, ``explain`` and anomaly maps give (to compare
        scores on one network, as ``anovae bench images`` does), but the threshold stays the
        fitted score's: whatever compares with it or with the training scores (``predict``,
        ``predict_proba``, ``refit_threshold``, ``save``, scoring image files) refuses here, as
        a changed score term does (``latent_density`` of image VAEs). It is not re-set: that
        needs every training row's new score, and the training rows are not kept.
        """
        fitted = getattr(self, "threshold_score_", self.score_name)  # pickles before it existed
        if self.score_name != fitted:
            raise ValueError(
                f"score_type={self.score_name!r} but this model's threshold (and its training "
                f"scores) were set on score_type={fitted!r}: set score_type={fitted!r} back, or "
                "refit after changing it (decision_function and feature_scores give any score)")
        then = getattr(self, "_threshold_scoring_", None)
        for name, value in self._scoring_params().items():
            if then is not None and name in then and then[name] != value:
                raise ValueError(
                    f"{name}={value!r} but this model's threshold (and its training scores) "
                    f"were set with {name}={then[name]!r}: set {name}={then[name]!r} back, or "
                    "refit after changing it (decision_function gives the new scores)")

    def _validate(self, X: Any, schema: Any, min_rows: int = 1) -> tuple[np.ndarray, Any]:
        """Check ``X`` (against the fitted ``schema`` when given): (array, schema)."""
        return check_tabular(X, schema, min_rows=min_rows)

    def _fit_scaler(self, rows: np.ndarray) -> Scaler:
        return Scaler(self.scaler).fit(rows)

    @classmethod
    def _schema_from_dict(cls, d: dict[str, Any]) -> Any:
        return ColumnSchema.from_dict(d)

    def _checked(self, X: Any) -> np.ndarray:
        """``X`` validated against the fitted schema (unscaled, rows first); every public
        method that takes rows comes through here once, and warns as scikit-learn does when
        ``X`` has no column names but the model was fitted with some
        (:meth:`_feature_names_warning`), unless the library itself called it."""
        self._check_fitted()
        rows = self._validate(X, self.schema_)[0]  # bad rows: their error, without a warning
        message = self._feature_names_warning(X)
        if message is not None and _called_from_outside():
            warn(message)
        return rows

    def _feature_names_warning(self, X: Any) -> str | None:
        """scikit-learn's warning for rows ``X`` given to this fitted model, or ``None``.

        ``X`` without column names (an array, a list; anything but a pandas DataFrame or
        Series) given to a model fitted on a DataFrame: its columns are taken by position,
        and nothing checks that they are the fitted ones in the fitted order (``df.to_numpy()``
        of a frame with its columns in another order is scored as silently wrong). Not for
        fitted names ``"0", "1", ...`` in order (``pd.DataFrame(array)``'s): an array's
        positions are those names. A DataFrame is matched by name (reordered; missing or
        unexpected columns raise :class:`DataError`); one given to a model fitted on an array
        gets the warning of :func:`anovae.tabular.check_tabular` (and, for a mixed table,
        :class:`anovae.VAEDetector`'s)."""
        names = getattr(self.schema_, "names", None)
        if names is None or isinstance(X, (pd.DataFrame, pd.Series)) or _positional(names):
            return None
        return (f"X does not have valid feature names, but {type(self).__name__} was fitted "
                "with feature names: its columns are taken by position, unchecked; pass a "
                f"pandas DataFrame with the fitted columns {_list(list(names))} "
                "(feature_names_in_): they are matched by name, in any order")

    def _check_score_cells(self, score: str | None = None) -> None:
        """Refuse a Monte-Carlo score whose draws of one row exceed
        :data:`MAX_ROW_SCORE_CELLS` decoder outputs (``n_samples`` x the row's values): a
        scoring pass holds them at once for a row, however small its batch (a file declaring
        10,000 draws of a large image would allocate terabytes in its load check)."""
        if (score or self.score_name) not in MONTE_CARLO_SCORES:
            return
        draws, values = self._n_noise_samples(), self._row_width(int(self.schema_.n_features))
        if draws * values > MAX_ROW_SCORE_CELLS:
            raise DataError(f"n_samples={draws} draws of {values:,} decoder outputs are "
                            f"{draws * values:,} per row, more than the {MAX_ROW_SCORE_CELLS:,} "
                            "a score holds: lower n_samples (set_params; at most "
                            f"{max(1, MAX_ROW_SCORE_CELLS // values)} for these rows)")

    def _row_width(self, n_values: int) -> int:
        """Decoder outputs per draw of a row of ``n_values`` values: those values, or the
        network's outputs when it has more (a mixed table's one-hot categories; before the
        network is built, the values)."""
        return max(n_values, int(getattr(getattr(self, "net_", None), "n_params", 0)))

    def _noise(self, device: torch.device, score: str | None = None) -> torch.Tensor | None:
        if (score or self.score_name) not in MONTE_CARLO_SCORES:
            return None
        self._check_score_cells(score)
        return common_noise(self._n_noise_samples(), self.net_config_.latent_dim,
                            self.noise_seed_).to(device)

    def _fit_score_offsets(self, rows: np.ndarray, rng: np.random.Generator) -> None:
        """Fit what :meth:`_score_offsets` needs from the unscaled fitting rows, after the
        network is trained and before ``decision_scores_`` (nothing here; image VAEs fit their
        latent density and complexity correction)."""

    def _baseline_scores(self) -> tuple[str, ...]:
        """The scores this model can give, for :meth:`_fit_feature_baselines` (after a fit the
        ``score_type`` parameter may be changed to any of them)."""
        return (self.score_name,)

    def _fit_feature_baselines(self, rows: np.ndarray) -> None:
        """``feature_baselines_``: for each score of :meth:`_baseline_scores`, each column's
        typical contribution (:func:`anovae.scores.feature_baseline`, a median) over up to
        :data:`BASELINE_ROWS` evenly spaced rows of the unscaled fitting ``rows`` ``(n, D)``
        (the rows the network was fitted on: without labels they are mostly normal, which the
        median tolerates). Explanations rank columns by their excess over it
        (:func:`anovae.scores.rank_features`). Tables only: images explain with anomaly maps."""
        if rows.ndim != 2 or rows.shape[0] == 0:
            vars(self).pop("feature_baselines_", None)
            return
        m = min(rows.shape[0], BASELINE_ROWS, max(64, BASELINE_CELLS // max(1, rows.shape[1])))
        pick = np.unique(np.linspace(0, rows.shape[0] - 1, m).astype(np.int64))
        sample = rows[pick]  # (m, D)
        baselines = {}
        for score in self._baseline_scores():
            with np.errstate(over="ignore", invalid="ignore"):  # overflowing cells: left out
                contrib = self._score_rows(sample, per_feature=True, score=score)[1]  # (m, D)
            assert contrib is not None
            baselines[score] = feature_baseline(contrib)
        self.feature_baselines_ = baselines

    def _feature_baseline(self, score: str | None = None) -> np.ndarray | None:
        """``(D,)`` typical contribution of each column for ``score`` (default: the configured
        one), or ``None`` for models without one (images, files from anovae < 0.4)."""
        return getattr(self, "feature_baselines_", {}).get(score or self.score_name)

    def _top_features(self, contrib: np.ndarray, k: int, missing: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` top features ``(n, k)`` of per-feature scores ``contrib`` ``(n, D)`` and
        their excesses ``(n, D)`` over this model's baseline (NaN without one), as every
        explanation ranks them (:func:`anovae.scores.rank_features`; ``missing``: gaps)."""
        baseline = self._feature_baseline()
        return (rank_features(contrib, k, missing, baseline),
                feature_excess(contrib, baseline))

    def _fitted_json(self) -> dict[str, Any]:
        """Fitted state beyond the common one, for the model file's JSON (see
        :mod:`anovae.persistence`); :meth:`_load_fitted_json` reads it back."""
        return {}

    def _fitted_arrays(self) -> dict[str, np.ndarray]:
        """Fitted arrays beyond the common ones, stored as tensors ``fitted.NAME`` in the model
        file (:mod:`anovae.persistence`); :meth:`_load_fitted_json` gets them back."""
        return {}

    def _load_fitted_json(self, doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`_fitted_json` and :meth:`_fitted_arrays` wrote (``{}`` for files
        written without them)."""

    def _score_offsets(self, rows: np.ndarray, score: str) -> np.ndarray | None:
        """Amounts ``(n,)`` subtracted from the ``score`` of the unscaled ``rows`` (spread evenly
        over the features, so feature scores still add up to the row score); ``None``: none."""
        return None

    @torch.inference_mode()
    def _score_rows(self, rows: np.ndarray, per_feature: bool = False, *,
                    score: str | None = None, raw: bool = False
                    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Scores of validated, *unscaled* rows ``(n, *F)`` -> ``(n,)`` float64, and the
        ``(n, *F)`` per-feature scores when ``per_feature`` (else ``None``). ``score``: another
        score than the configured one; ``raw``: without :meth:`_score_offsets`.

        Rows are scaled chunk by chunk (no full-size scaled copy). The row score is summed in
        float32 from the same per-feature tensor either way, so both paths give bit-identical
        scores, and a row's score does not depend on the other rows (batch-invariant up to BLAS
        blocking, deterministic for the same input). The offsets are subtracted in float64,
        after that sum (and spread evenly over the per-feature scores in float64): an offset of
        millions added in float32 rounded every score to steps of 0.5-2 (ties).
        """
        net = self.net_
        device = next(net.parameters()).device
        score = score or self.score_name
        eps = self._noise(device, score)
        # a GPU wants larger batches (its work per row is tiny); copies go through pinned memory
        batch_rows = self._score_batch_rows * (GPU_BATCH_FACTOR if device.type == "cuda" else 1)
        draws = 1 if eps is None else eps.shape[0]
        # rows x draws x the decoder's output width within SCORE_BATCH_CELLS (a 2,000-column
        # table took 1 GB per temporary at the full batch); narrow tables keep the full batch
        width = self._row_width(math.prod(rows.shape[1:]))
        chunk = max(1, min(batch_rows // draws, SCORE_BATCH_CELLS // (draws * max(1, width))))
        n = rows.shape[0]
        scores = np.empty((n,), dtype=np.float64)
        feats = np.empty((n, *rows.shape[1:]), dtype=np.float64) if per_feature else None
        for start in range(0, n, chunk):
            xb = to_device(self.scaler_.transform(rows[start:start + chunk]), device)
            fs = feature_scores(net, xb, score, eps)  # (B, *F)
            offsets = None if raw else self._score_offsets(rows[start:start + chunk], score)
            scores[start:start + chunk] = fs.flatten(1).sum(-1).double().cpu().numpy()
            if offsets is not None:
                scores[start:start + chunk] -= offsets  # (B,) float64
            if feats is not None:
                feats[start:start + chunk] = fs.double().cpu().numpy()
                if offsets is not None:
                    feats[start:start + chunk] -= (offsets / math.prod(fs.shape[1:])).reshape(
                        -1, *([1] * (fs.dim() - 1)))
        return scores, feats

    def decision_function(self, X: Any) -> np.ndarray:
        """Anomaly score of each row of ``X``: higher = more anomalous. Deterministic.

        Returns:
            ``(n,)`` float64 scores.
        """
        return self._score_rows(self._checked(X))[0]

    def score_samples(self, X: Any) -> np.ndarray:
        """scikit-learn's convention (higher = more normal): ``-decision_function(X)``."""
        return -self.decision_function(X)

    def predict(self, X: Any, return_confidence: bool = False
                ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """0/1 labels: 1 where ``decision_function(X) > threshold_`` (anomaly); with
        ``return_confidence``, also each label's confidence (:meth:`predict_confidence`), as
        PyOD returns them: ``(labels, confidence)``."""
        self._check_fitted()
        self._check_threshold_score()
        s = self.decision_function(X)
        labels = (s > self.threshold_).astype(int)
        return (labels, self._confidence(s)) if return_confidence else labels

    def predict_confidence(self, X: Any) -> np.ndarray:
        """``(n,)`` confidence in each row's :meth:`predict` label, in [0, 1] (ExCeeD, as PyOD's
        ``predict_confidence``): the chance that a threshold set the same way on another draw
        of the reference rows gives the row the same label (see
        :func:`anovae.thresholds.prediction_confidence`). The reference rows are those whose
        scores set the threshold (``threshold_reference_scores_``): the training rows (also for
        ``"pot"`` unless ``calibration_fraction > 0``), the held-out normal rows of ``"fpr"``
        (and of ``"pot"`` with ``calibration_fraction > 0``), or the rows of the last
        :meth:`refit_threshold`."""
        self._check_fitted()
        self._check_threshold_score()
        return self._confidence(self.decision_function(X))

    def _confidence(self, scores: np.ndarray) -> np.ndarray:
        reference = getattr(self, "threshold_reference_scores_", None)
        if reference is None:  # pickled before anovae 0.6
            reference = self.decision_scores_
        return prediction_confidence(reference, self.threshold_, scores)

    def predict_proba(self, X: Any, method: str = "linear", return_confidence: bool = False
                      ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """``(n, 2)`` probabilities of [normal, anomaly], as PyOD computes them (with
        ``return_confidence``: ``(probabilities, confidence)``, see :meth:`predict_confidence`).

        ``"linear"``: the score min-max scaled on the training scores, clipped to [0, 1];
        ``"unify"``: Kriegel et al. (2011), ``erf`` of the score standardised on the training
        scores, clipped to [0, 1];
        ``"conformal"``: ``1 - p`` with ``p`` the conformal p-value of the score against
        ``calibration_scores_`` (held-out normal rows; fit with ``threshold="fpr"`` or
        ``calibration_fraction > 0``, or call :meth:`refit_threshold` with ``method="fpr"``):
        a normal row gets an anomaly probability above ``1 - a`` with probability at most ``a``.
        """
        self._check_fitted()
        self._check_threshold_score()
        if method == "conformal" and not hasattr(self, "calibration_scores_"):
            raise ValueError("method='conformal' needs calibration scores of held-out normal "
                             "rows: fit with threshold='fpr' (or calibration_fraction > 0), or "
                             "call refit_threshold(X_normal, method='fpr')")
        s = self.decision_function(X)
        train = self.decision_scores_
        if method == "linear":
            lo, hi = float(train.min()), float(train.max())
            p = (s - lo) / (hi - lo) if hi > lo else (s > hi).astype(float)
        elif method == "unify":
            std = float(train.std()) or 1.0
            p = erf((s - float(train.mean())) / (std * math.sqrt(2.0)))
        elif method == "conformal":
            p = 1.0 - conformal_pvalues(self.calibration_scores_, s)
        else:
            raise ValueError(f"method must be 'linear', 'unify' or 'conformal', got {method!r}")
        p = np.clip(p, 0.0, 1.0)
        proba = np.column_stack([1.0 - p, p])
        return (proba, self._confidence(s)) if return_confidence else proba

    def feature_scores(self, X: Any) -> np.ndarray:
        """``(n, d)`` per-feature contributions to the score; each row sums to its score."""
        return self.score_with_feature_scores(X)[1]

    def score_with_feature_scores(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """``decision_function(X)`` and ``feature_scores(X)`` from one pass over the network."""
        scores, feats = self._score_rows(self._checked(X), per_feature=True)
        assert feats is not None
        return scores, feats

    def explain(self, X: Any, k: int = 5) -> Any:
        """The ``k`` features that contribute most to each row's score (higher = more anomalous).

        Returns:
            A long pandas DataFrame, ``min(k, n_features)`` lines per row of ``X`` in the order of
            ``X`` then rank, with columns ``row`` (``X``'s index label for a DataFrame, else the
            position), ``rank`` (1 = the largest excess), ``feature`` (the column name, else
            ``"x{j}"``), ``value`` (observed), ``expected`` (the model's expectation: the
            reconstruction, see :meth:`reconstruct`), ``contribution`` (the feature's
            :meth:`feature_scores` entry; over all features a row's entries sum to its score)
            and ``excess`` (the contribution minus the feature's typical contribution, its
            median over training rows: what this cell costs beyond what the feature costs in a
            typical row). Features rank by ``excess``, so a naturally noisy column, which costs
            more in every row, is not blamed for every anomaly. Models without typical
            contributions (images, files saved by anovae < 0.4; refit to get them) have NaN
            excesses and rank by contribution. Mixed tables add ``unseen_category`` and
            ``missing`` flags; their blank cells rank after the observed ones
            (:func:`anovae.scores.rank_features`).

        >>> import numpy as np
        >>> from anovae import VAEDetector
        >>> X = np.random.default_rng(0).normal(size=(300, 4))
        >>> det = VAEDetector(epochs=2, random_state=0).fit(X)
        >>> det.explain(np.array([[0.0, 9.0, 0.0, 0.0]]), k=2).columns.tolist()
        ['row', 'rank', 'feature', 'value', 'expected', 'contribution', 'excess']
        """
        if isinstance(k, bool) or not isinstance(k, Integral) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        rows = self._checked(X)  # (n, *F)
        n = rows.shape[0]
        contrib = self._score_rows(rows, per_feature=True)[1].reshape(n, -1)  # (n, D)
        values, expected, flags = self._explain_columns(X, rows)  # (n, D), (n, D), {name: (n, D)}
        names = getattr(self, "feature_names_in_", None)
        if names is None:
            names = np.asarray(feature_labels(rows.shape[1:]), dtype=object)
        k = min(int(k), values.shape[1])
        top, excess = self._top_features(contrib, k, flags.get("missing"))  # (n, k), (n, D)
        index = X.index.to_numpy() if isinstance(X, pd.DataFrame) else np.arange(n)
        return pd.DataFrame({
            "row": np.repeat(index, k),
            "rank": np.tile(np.arange(1, k + 1), n),
            "feature": np.asarray(names, dtype=object)[top].ravel(),
            "value": np.take_along_axis(values, top, 1).ravel(),
            "expected": np.take_along_axis(expected, top, 1).ravel(),
            "contribution": np.take_along_axis(contrib, top, 1).ravel(),
            "excess": np.take_along_axis(excess, top, 1).ravel(),
            **{name: np.take_along_axis(flag, top, 1).ravel() for name, flag in flags.items()},
        })

    def _explain_columns(self, X: Any, rows: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """For :meth:`explain`: the observed and expected values ``(n, D)`` of validated rows,
        and extra per-cell columns ``{name: (n, D)}`` (none here)."""
        n = rows.shape[0]
        return rows.reshape(n, -1), self._reconstruct_rows(rows).reshape(n, -1), {}

    def transform(self, X: Any) -> np.ndarray:
        """Latent means ``(n, latent_dim)`` (the code ``z`` for a plain autoencoder)."""
        return self._encode_rows(self._checked(X))[0]

    def fit_transform(self, X: Any, y: Any | None = None) -> np.ndarray:
        """:meth:`fit`, then :meth:`transform` of the same rows: their latent means ``(n,
        latent_dim)`` (scikit-learn's transformer method, for a detector used as a step that
        makes features)."""
        return self.fit(X, y).transform(X)

    @torch.inference_mode()
    def _encode_rows(self, rows: np.ndarray, index: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """``q(z | x)`` of validated, unscaled rows ``(n, *F)`` (or of ``rows[index]``, taken
        chunk by chunk without a full copy): means and log-variances ``(n, L)`` float64
        (``None`` for a plain autoencoder)."""
        device = next(self.net_.parameters()).device
        step = self._score_batch_rows
        n = rows.shape[0] if index is None else len(index)
        latent = self.net_config_.latent_dim
        mu_all = np.empty((n, latent))
        logvar_all = np.empty((n, latent)) if self.net_config_.variational else None
        for i in range(0, n, step):
            chunk = rows[i:i + step] if index is None else rows[index[i:i + step]]
            mu, logvar = self.net_.encode(to_device(self.scaler_.transform(chunk), device))
            mu_all[i:i + step] = mu.double().cpu().numpy()
            if logvar_all is not None and logvar is not None:
                logvar_all[i:i + step] = logvar.double().cpu().numpy()
        return mu_all, logvar_all

    def reconstruct(self, X: Any) -> np.ndarray:
        """Decoder mean at ``z = mu``, in the units of ``X``: ``(n, d)``."""
        return self._reconstruct_rows(self._checked(X))

    @torch.inference_mode()
    def _reconstruct_rows(self, rows: np.ndarray) -> np.ndarray:
        """:meth:`reconstruct` of validated, unscaled rows."""
        xt = self.scaler_.transform(rows)
        device = next(self.net_.parameters()).device
        parts = [self.net_(torch.from_numpy(xt[i:i + self._score_batch_rows]).to(device))
                 for i in range(0, xt.shape[0], self._score_batch_rows)]
        return self.scaler_.inverse_transform(torch.cat(parts).float().cpu().numpy())

    @torch.inference_mode()
    def sample(self, n: int, *,
               random_state: int | np.random.Generator | np.random.RandomState | None = None
               ) -> np.ndarray:
        """Draw ``n`` rows from the model: a code ``z``, then the decoder mean, in data units.

        A VAE draws ``z ~ N(0, I)``, its prior. A plain autoencoder has no prior: its codes are
        drawn from a Gaussian with the training codes' mean and standard deviation per
        dimension. ``random_state``: a seed, or a NumPy ``Generator`` or ``RandomState``.
        """
        self._check_fitted()
        _check_param("n", n, Integral, 1)
        if isinstance(random_state, np.random.RandomState):
            random_state = int(random_state.randint(0, 2**31 - 1))
        elif not isinstance(random_state, np.random.Generator):
            _check_param("random_state", random_state, Integral, 0, none_ok=True)
        rng = np.random.default_rng(random_state)
        z = rng.standard_normal((n, self.net_config_.latent_dim)).astype(np.float32)
        if not self.net_config_.variational:
            z = z * self.code_std_ + self.code_mean_
        device = next(self.net_.parameters()).device
        loc, _ = self.net_.decode(torch.from_numpy(np.asarray(z, dtype=np.float32)).to(device))
        return self.scaler_.inverse_transform(self.net_.mean(loc).float().cpu().numpy())

    # -- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Save the fitted detector to one ``.safetensors`` file (atomic write; no pickle).
        Refused after ``set_params(score_type=...)`` to another score than the threshold's (see
        :meth:`_check_threshold_score`): the file would pair that score with this threshold."""
        from anovae.persistence import save_model

        self._check_threshold_score()
        self._check_params_unchanged()
        return save_model(self, path)

    #: Parameters that may change on a fitted model without a refit: they do not shape it.
    #: (The threshold's are recorded with it as ``threshold_method_``; the score's are checked
    #: by :meth:`_check_threshold_score`.)
    _POST_FIT_PARAMS: ClassVar[frozenset[str]] = frozenset(
        {"verbose", "device", "contamination", "threshold", "threshold_param", "score_type",
         "n_samples"})

    def _check_params_unchanged(self) -> None:
        """The parameters that shaped the fitted model must be those it was fitted with: a
        file states them next to the weights, and ``anovae.load`` builds the estimator from
        them (``clone`` of the loaded model would fit another network)."""
        then = getattr(self, "_fit_params_", None)
        if then is None:  # pickled before it was kept
            return
        now = self.get_params(deep=False)
        changed = [k for k in now if k not in self._POST_FIT_PARAMS and k in then
                   and not _same_param(now[k], then[k])]
        if changed:
            what = ", ".join(f"{k}={now[k]!r} (fitted with {then[k]!r})" for k in changed)
            raise ValueError(f"parameters changed since fit: {what}; the file would describe "
                             "another model than it holds: refit, or set them back, before "
                             "saving")

    # -- misc --------------------------------------------------------------------------------
    def _more_tags(self) -> dict[str, Any]:
        return {"allow_nan": False, "non_deterministic": False}

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        from sklearn.utils import TransformerTags

        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        # transform() gives the latent codes; without the tag check_estimator refuses to run
        tags.transformer_tags = TransformerTags()
        return tags
