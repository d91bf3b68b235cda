"""Decision thresholds on anomaly scores (pure functions; higher score = more anomalous).

A row is an anomaly when its score is strictly greater than the threshold. Every method returns a
float threshold from a 1-D array of scores, so it works with any detector's scores:

``contamination``
    PyOD's rule: the top ``contamination`` fraction of the (training) scores is flagged.
``fpr``
    split-conformal: from scores of *held-out normal* rows (a calibration set), the threshold
    whose false-positive rate on new normal rows is at most ``fpr`` (Vovk et al. 2005; Bates et
    al. 2023, "Testing for outliers with conformal p-values"). :func:`conformal_pvalues` gives
    the matching per-row p-values.
``best_f1`` / ``recall``
    with a few labelled rows: the threshold of best F1, or the highest threshold that still
    catches a target share of the labelled anomalies.
``pot``
    extreme-value theory, peaks over threshold (Siffer et al., KDD 2017): a Generalised Pareto
    tail fitted above a high quantile gives the score exceeded with probability ``q``.
``pythresh``
    any PyThresh thresholder (an object whose ``eval(scores)`` returns 0/1 labels), as in PyOD.

:class:`ThresholdSpec` carries one method and its number, so a single parameter selects it in the
estimators (``threshold=``, ``threshold_param=``) and in the CLI (``--method``, ``--param``).

>>> spec = parse_threshold("fpr", 0.1)
>>> spec.compute(np.arange(1.0, 20.0))   # 19 held-out normal scores
18.0
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from anovae.exceptions import warn
from anovae.metrics import binary_labels

__all__ = [
    "DEFAULT_PARAMS",
    "METHODS",
    "ThresholdSpec",
    "best_f1_threshold",
    "conformal_pvalues",
    "contamination_threshold",
    "fpr_calibration_problem",
    "fpr_min_calibration",
    "fpr_threshold",
    "parse_threshold",
    "pot_threshold",
    "prediction_confidence",
    "recall_threshold",
    "threshold_from_labels",
]


#: The named methods (a PyThresh object, or ``"pythresh:NAME"``, is accepted as well).
METHODS = ("contamination", "fpr", "best_f1", "recall", "pot")
#: The number each method uses when none is given (``None``: the method takes no number).
DEFAULT_PARAMS: dict[str, float | None] = {
    "contamination": 0.1, "fpr": 0.05, "best_f1": None, "recall": 0.9, "pot": 1e-3,
}
#: Slack when turning a fraction into a count, so ``0.9 * 10`` counts as 9 and not 10.
_EPS = 1e-9


def _scores(scores: Any, what: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError(f"{what} is empty")
    if not np.isfinite(s).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return s


def _labels(y: Any, n: int) -> np.ndarray:
    y = binary_labels(y, n, rows="there are {n} scores")
    if not y.any():
        raise ValueError("y has no anomalies (label 1): this method needs at least one")
    return y.astype(bool)


def _just_below(scores: np.ndarray, value: float) -> float:
    """The largest score strictly below ``value`` (else the float just below ``value``): the
    highest data-valued threshold that flags every row scoring ``>= value``."""
    below = scores[scores < value]
    return float(below.max()) if below.size else float(np.nextafter(value, -np.inf))


def contamination_threshold(scores: np.ndarray, contamination: float) -> float:
    """PyOD's rule: the ``(1 - contamination)`` quantile of the (training) scores.

    Args:
        scores: ``(n,)`` anomaly scores (higher = more anomalous).
        contamination: expected fraction of anomalies, in (0, 0.5].

    >>> round(contamination_threshold(np.arange(100.0), 0.1), 6)
    89.1
    """
    scores = _scores(scores)
    if not 0.0 < contamination <= 0.5:
        raise ValueError(f"contamination must be in (0, 0.5], got {contamination}")
    return float(np.percentile(scores, 100.0 * (1.0 - contamination)))


def fpr_threshold(calibration_scores: Any, fpr: float) -> float:
    """Split-conformal threshold for a target false-positive rate.

    With ``n`` scores of held-out normal rows (not used to train the model), the threshold is the
    ``k = ceil((n + 1)(1 - fpr))``-th smallest of them. A new normal row exchangeable with them
    then has ``P(score > threshold) <= fpr`` (and ``> fpr - 1 / (n + 1)`` without ties). It flags
    exactly the rows whose :func:`conformal_pvalues` are ``<= fpr``. When ``k > n`` (fewer than
    ``1 / fpr - 1`` calibration rows) no finite threshold keeps the promise: ``inf`` is returned
    (nothing is flagged) with a warning.

    Args:
        calibration_scores: ``(n,)`` scores of held-out normal rows (higher = more anomalous).
        fpr: target false-positive rate, in (0, 1).

    >>> fpr_threshold(np.arange(1.0, 100.0), 0.05)   # n = 99: the 95th smallest
    95.0
    """
    cal = np.sort(_scores(calibration_scores, "calibration_scores"))  # (n,) ascending
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    n, need = cal.size, fpr_min_calibration(fpr)
    if n < need:
        warn(f"fpr={fpr:g} needs at least {need} calibration scores, got {n}: nothing is "
             "flagged")
        return math.inf
    k = math.ceil((n + 1) * (1.0 - fpr) - _EPS)  # <= n from fpr_min_calibration on
    return float(cal[min(max(k, 1), n) - 1])


def fpr_min_calibration(fpr: float) -> int:
    """The fewest held-out normal rows for which :func:`fpr_threshold` at ``fpr`` is finite
    (``ceil(1 / fpr - 1)``: 19 at 0.05, 99 at 0.01): with ``n`` of them the threshold is the
    ``ceil((n + 1)(1 - fpr))``-th smallest, which exists once ``n >= 1 / fpr - 1``.

    >>> fpr_min_calibration(0.05)
    19
    """
    return max(1, math.ceil(1.0 / fpr - 1.0 - _EPS))


def fpr_calibration_problem(fpr: float, n_cal: int, fraction: float,
                            n_normal: int | None = None) -> str | None:
    """Why ``n_cal`` held-out normal rows cannot set ``threshold="fpr"`` at ``fpr`` (None: they
    can), for a refusal *before* training: :func:`fpr_threshold` would return ``inf``, a model
    that flags nothing. ``fraction``: the ``calibration_fraction`` that held them out, of
    ``n_normal`` normal rows (None: of the rows, when the count is not known, out of core).

    >>> fpr_calibration_problem(0.01, 99, 0.2) is None
    True
    >>> fpr_calibration_problem(0.01, 40, 0.2, n_normal=200)[:60]
    "threshold='fpr' at 0.01 needs at least 99 held-out normal ro"
    """
    if n_cal < 1:
        return (f"threshold='fpr' needs held-out normal rows: set calibration_fraction > 0 "
                f"(got {fraction:g}) or give more rows")
    need = fpr_min_calibration(fpr)
    if n_cal >= need:
        return None
    if n_normal is None:
        held, more = f"calibration_fraction={fraction:g} of the rows", "more rows"
    else:
        held = f"calibration_fraction={fraction:g} of {n_normal} normal rows"
        more = f"more normal rows (about {math.ceil(need / fraction)})"
    return (f"threshold='fpr' at {fpr:g} needs at least {need} held-out normal rows, but "
            f"{held} holds out {n_cal}: give {more}, or raise calibration_fraction or the fpr")


def conformal_pvalues(calibration_scores: Any, scores: Any) -> np.ndarray:
    """Conformal p-values ``(1 + #{cal >= s}) / (n + 1)`` of each score against ``n`` scores of
    held-out normal rows: small = unlike normal rows. Under exchangeability a new normal row has
    ``P(p <= a) <= a`` for every ``a``, so ``1 - p`` is an anomaly probability that means
    something and ``p <= fpr`` is the :func:`fpr_threshold` rule.

    Args:
        calibration_scores: ``(n,)`` held-out normal scores.
        scores: ``(m,)`` scores to test (higher = more anomalous).

    Returns:
        ``(m,)`` p-values in ``[1 / (n + 1), 1]``.

    >>> conformal_pvalues([1.0, 2.0, 3.0], [0.0, 2.0, 5.0])
    array([1.  , 0.75, 0.25])
    """
    cal = np.sort(_scores(calibration_scores, "calibration_scores"))  # (n,)
    s = np.asarray(scores, dtype=np.float64).ravel()  # (m,)
    n_at_least = cal.size - np.searchsorted(cal, s, side="left")  # (m,) #{cal >= s}
    return (1.0 + n_at_least) / (cal.size + 1.0)


def prediction_confidence(reference_scores: Any, threshold: float, scores: Any) -> np.ndarray:
    """How sure each prediction ``score > threshold`` is: ExCeeD (Perini, Vercruyssen & Davis,
    ECML PKDD 2020), the probability that the row would get the same label from a threshold set
    the same way on another draw of the ``n`` reference rows.

    The threshold flags a row when more than ``k = #{ref <= threshold}`` reference scores lie
    below its score. Of a new draw of ``n`` reference rows, the number below score ``s`` is
    ``Binomial(n, p_s)``, with ``p_s = (1 + #{ref <= s}) / (n + 2)`` (the posterior mean under a
    uniform prior); so ``P(flagged) = P(Binomial(n, p_s) > k)``, and the confidence is that
    for a flagged row and ``1 - P(flagged)`` for the others. Rows far from the threshold get
    about 1; rows near it about 0.5, or less where the label would flip more often than not.

    Args:
        reference_scores: ``(n,)`` scores the threshold was set against (training or held-out
            normal scores).
        threshold: the threshold (``inf``: nothing is flagged).
        scores: ``(m,)`` scores of the rows predicted.

    Returns:
        ``(m,)`` confidences in ``[0, 1]``.

    >>> ref = np.arange(100.0)
    >>> prediction_confidence(ref, 89.5, [10.0, 89.5, 99.0]).round(2)
    array([1.  , 0.65, 1.  ])
    """
    from scipy.stats import binom

    ref = np.sort(_scores(reference_scores, "reference_scores"))  # (n,)
    s = np.asarray(scores, dtype=np.float64).ravel()  # (m,)
    n = ref.size
    k = int(np.searchsorted(ref, threshold, side="right"))  # #{ref <= threshold}
    p = (1.0 + np.searchsorted(ref, s, side="right")) / (n + 2.0)  # (m,)
    flagged = binom.sf(k, n, p)  # (m,) P(Binomial(n, p) > k)
    return np.where(s > threshold, flagged, 1.0 - flagged)


def best_f1_threshold(scores: Any, y: Any) -> float:
    """The threshold with the best F1 on labelled rows (``y = 1``: anomaly).

    The threshold is one of the scores (the largest giving that labelling; ties go to the higher
    threshold, i.e. fewer alarms), or just below the lowest score when flagging every row wins.

    Args:
        scores: ``(n,)`` anomaly scores (higher = more anomalous).
        y: ``(n,)`` 0/1 labels with at least one anomaly.

    >>> best_f1_threshold([1.0, 2.0, 3.0, 10.0, 11.0], [0, 0, 0, 1, 1])
    3.0
    """
    s = _scores(scores)
    y = _labels(y, s.size)
    order = np.argsort(-s, kind="stable")  # descending score
    s_desc, y_desc = s[order], y[order]
    # Candidate i flags the rows of rank <= i; only the last rank of a run of ties is a cut.
    last_of_tie = np.r_[s_desc[1:] != s_desc[:-1], True]  # (n,)
    tp = np.cumsum(y_desc)[last_of_tie]
    flagged = np.flatnonzero(last_of_tie) + 1.0
    f1 = 2.0 * tp / (flagged + y.sum())  # 2 TP / (2 TP + FP + FN) = 2 TP / (flagged + positives)
    best = int(np.argmax(f1))  # first maximum: the highest threshold
    cut_score = s_desc[np.flatnonzero(last_of_tie)[best]]  # lowest flagged score
    return _just_below(s, float(cut_score))


def recall_threshold(scores: Any, y: Any, recall: float) -> float:
    """The highest threshold that flags at least ``recall`` of the labelled anomalies.

    Args:
        scores: ``(n,)`` anomaly scores (higher = more anomalous).
        y: ``(n,)`` 0/1 labels with at least one anomaly.
        recall: target share of anomalies caught, in (0, 1].

    >>> recall_threshold([1.0, 2.0, 3.0, 4.0, 10.0, 11.0], [0, 0, 1, 0, 1, 1], 0.6)
    4.0
    """
    s = _scores(scores)
    y = _labels(y, s.size)
    if not 0.0 < recall <= 1.0:
        raise ValueError(f"recall must be in (0, 1], got {recall}")
    anomalies = np.sort(s[y])[::-1]  # descending
    m = max(1, math.ceil(recall * anomalies.size - _EPS))  # anomalies that must be flagged
    return _just_below(s, float(anomalies[m - 1]))


def pot_threshold(scores: Any, q: float = 1e-3, level: float | None = None) -> float:
    """Peaks-over-threshold (Siffer et al., "Anomaly detection in streams with extreme value
    theory", KDD 2017): the score that a normal row exceeds with probability ``q``.

    The ``level`` quantile ``t`` of the scores splits off the tail; the ``N_t`` excesses
    ``s - t`` are fitted with a Generalised Pareto distribution (shape ``gamma``, scale
    ``sigma``) by maximum likelihood, and the threshold is

    ``z_q = t + sigma / gamma * ((q n / N_t) ** -gamma - 1)``, or ``t - sigma log(q n / N_t)``
    in the exponential limit ``gamma -> 0``.

    Args:
        scores: ``(n,)`` scores of (mostly) normal rows (higher = more anomalous).
        q: risk, the target probability that a normal row is flagged; ``q < N_t / n``.
        level: quantile where the tail starts; ``None``: 0.98, lowered so that at least 30 scores
            are excesses (and never below 0.8).

    >>> s = np.random.default_rng(0).exponential(size=20000)   # true answer: -log(q) = 6.91
    >>> round(pot_threshold(s, q=1e-3), 1)
    6.9
    """
    from scipy.stats import genpareto

    s = _scores(scores)
    n = s.size
    if level is None:
        level = max(0.8, min(0.98, 1.0 - 30.0 / n))
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    t = float(np.quantile(s, level))
    excess = s[s > t] - t  # (N_t,)
    n_t = excess.size
    if n_t < 10 or np.ptp(excess) == 0.0:
        raise ValueError(f"POT needs at least 10 distinct scores above the {level:g} quantile, "
                         f"got {n_t} of {n}: give more rows (with more distinct scores)")
    if not 0.0 < q < n_t / n:
        raise ValueError(f"q must be in (0, {n_t / n:g}) (the tail share above level), got {q}")
    if q * n < 1.0:
        warn(f"pot with q={q:g} on {n} scores extrapolates past the largest of them (q n = "
             f"{q * n:.2g} < 1): the share of normal rows flagged can be several times q; "
             f"give at least {math.ceil(1.0 / q)} rows, or a larger q")
    gamma, _, sigma = genpareto.fit(excess, floc=0.0)
    ratio = q * n / n_t
    if abs(gamma) < 1e-8:
        return t - sigma * math.log(ratio)
    return float(t + sigma / gamma * (ratio ** (-gamma) - 1.0))


def threshold_from_labels(scores: Any, labels: Any) -> float:
    """A threshold reproducing 0/1 ``labels`` given to ``scores`` (e.g. by a PyThresh object):
    the largest score below the lowest flagged one, so ``scores > threshold`` flags it. With no
    flagged row: the highest score (nothing is flagged).

    >>> threshold_from_labels([1.0, 5.0, 2.0, 7.0], [0, 1, 0, 1])
    2.0
    """
    s = _scores(scores)
    flagged = binary_labels(labels, s.size, "the thresholder's labels",
                            "there are {n} scores").astype(bool)
    if not flagged.any():
        return float(s.max())
    return _just_below(s, float(s[flagged].min()))


def _is_thresholder(obj: Any) -> bool:
    return callable(getattr(obj, "eval", None))


def _pythresh(name: str) -> Any:
    """A PyThresh thresholder with default settings from its class name, e.g. ``"IQR"``."""
    try:
        module = importlib.import_module(f"pythresh.thresholds.{name.lower()}")
    except ImportError as exc:
        if importlib.util.find_spec("pythresh") is None:
            raise ValueError(f"threshold 'pythresh:{name}' needs PyThresh: pip install pythresh"
                             ) from exc
        raise ValueError(f"PyThresh has no thresholder {name!r}") from exc
    cls = next((v for k, v in vars(module).items() if k.lower() == name.lower()
                and isinstance(v, type)), None)
    if cls is None:
        raise ValueError(f"PyThresh has no thresholder {name!r}")
    return cls()


@dataclass(frozen=True)
class ThresholdSpec:
    """One threshold method and its number (see the module docstring).

    Attributes:
        method: one of :data:`METHODS`, or ``"pythresh"``.
        param: the method's number (contamination, FPR, target recall or POT risk ``q``);
            ``None`` for ``best_f1`` and ``pythresh``.
        thresholder: the PyThresh-like object when ``method == "pythresh"``.
    """

    method: str
    param: float | None = None
    thresholder: Any = None

    @property
    def needs_labels(self) -> bool:
        """Whether :meth:`compute` needs 0/1 labels (``best_f1``, ``recall``)."""
        return self.method in ("best_f1", "recall")

    def missing_labels(self, y: np.ndarray | None) -> str | None:
        """What the ``(n,)`` 0/1 labels ``y`` (or ``None``) lack for this method, in words
        (``None``: nothing): an anomaly, for the labelled methods; for ``best_f1`` a normal row
        too (with anomalies only, flagging every row is trivially the best F1)."""
        if not self.needs_labels:
            return None
        if y is None or not np.any(y):
            return "labels with at least one anomaly"
        if self.method == "best_f1" and np.all(y):
            return ("a row labelled normal (0) too: with anomalies only, flagging every row is "
                    "trivially the best F1")
        return None

    @property
    def wants_normal_scores(self) -> bool:
        """Whether :meth:`compute` expects scores of held-out normal rows (``fpr``, ``pot``)."""
        return self.method in ("fpr", "pot")

    def describe(self) -> str:
        """A short string naming the method, e.g. ``"fpr=0.05"`` or ``"pythresh:IQR"``;
        :func:`parse_threshold` reads it back (a thresholder of your own is ``"object:NAME"``:
        only its name, which a model file keeps, and which cannot rebuild it)."""
        if self.method == "pythresh":
            kind = type(self.thresholder)
            prefix = "pythresh" if kind.__module__.split(".")[0] == "pythresh" else "object"
            return f"{prefix}:{kind.__name__}"
        return self.method if self.param is None else f"{self.method}={float(self.param)!r}"

    def compute(self, scores: Any, y: Any | None = None) -> float:
        """The threshold from ``(n,)`` scores (and ``(n,)`` 0/1 labels ``y`` for the labelled
        methods). For ``fpr`` and ``pot`` the scores must be those of held-out normal rows."""
        if self.method == "contamination":
            return contamination_threshold(_scores(scores), float(self.param))
        if self.method == "fpr":
            return fpr_threshold(scores, float(self.param))
        if self.method == "pot":
            return pot_threshold(scores, float(self.param))
        if self.needs_labels:
            if y is None:
                raise ValueError(f"threshold method {self.method!r} needs labels "
                                 "(y, 1 = anomaly)")
            if self.method == "best_f1":
                return best_f1_threshold(scores, y)
            return recall_threshold(scores, y, float(self.param))
        s = _scores(scores)
        return threshold_from_labels(s, self.thresholder.eval(s))


def parse_threshold(threshold: Any = "contamination", param: float | None = None
                    ) -> ThresholdSpec:
    """A :class:`ThresholdSpec` from what a user passes as ``threshold``.

    Args:
        threshold: a method name of :data:`METHODS`; a PyThresh thresholder object (anything with
            an ``eval(scores) -> labels`` method); ``"pythresh:NAME"`` (e.g. ``"pythresh:IQR"``,
            built with PyThresh's defaults); ``"METHOD=NUMBER"`` as :meth:`ThresholdSpec.describe`
            writes it; or a :class:`ThresholdSpec`.
        param: the method's number; ``None``: :data:`DEFAULT_PARAMS`.

    Raises:
        ValueError: unknown method, or a number out of its range.

    >>> parse_threshold("recall")
    ThresholdSpec(method='recall', param=0.9, thresholder=None)
    """
    if isinstance(threshold, ThresholdSpec):
        if param is None:
            return threshold
        return parse_threshold(threshold.thresholder if threshold.method == "pythresh"
                               else threshold.method, param)
    if not isinstance(threshold, str):
        if not _is_thresholder(threshold):
            raise ValueError(f"threshold must be one of {list(METHODS)}, 'pythresh:NAME' or an "
                             f"object with an eval(scores) method, got {threshold!r}")
        spec = ThresholdSpec("pythresh", None, threshold)
    elif threshold.startswith("pythresh:"):
        spec = ThresholdSpec("pythresh", None, _pythresh(threshold.split(":", 1)[1]))
    elif threshold.startswith("object:"):
        name = threshold.split(":", 1)[1]
        raise ValueError(f"threshold {threshold!r} was a thresholder object of your own, which a "
                         f"model file names but does not hold: pass the object again "
                         f"(threshold={name}(...), or refit_threshold(X, method={name}(...)))")
    else:
        return _parse_named(threshold, param)
    if param is not None:
        raise ValueError(f"threshold {spec.describe()!r} takes no number")
    return spec


def _parse_named(threshold: str, param: float | None) -> ThresholdSpec:
    method, _, number = threshold.partition("=")
    if number:
        try:
            written = float(number)
        except ValueError:
            raise ValueError(f"threshold {threshold!r}: {number!r} is not a number") from None
        if param is not None and param != written:
            raise ValueError(f"threshold {threshold!r} and the number {param:g} disagree: give "
                             "the number once")
        param = written
    if method not in METHODS:
        raise ValueError(f"threshold must be one of {list(METHODS)}, 'pythresh:NAME' or a "
                         f"PyThresh object, got {threshold!r}")
    if param is None:
        param = DEFAULT_PARAMS[method]
    elif method == "best_f1":
        raise ValueError("threshold 'best_f1' takes no number")
    if param is not None:
        if isinstance(param, bool) or not isinstance(param, (int, float, np.floating)):
            raise ValueError(f"the number of threshold {method!r} must be a float, got {param!r}")
        param = float(param)
        ranges = {"contamination": (0.0, 0.5), "fpr": (0.0, 1.0), "recall": (0.0, 1.0),
                  "pot": (0.0, 1.0)}
        low, high = ranges[method]
        closed = method in ("contamination", "recall")
        if not (low < param <= high if closed else low < param < high):
            raise ValueError(f"the number of threshold {method!r} must be in ({low:g}, {high:g}"
                             f"{']' if closed else ')'}, got {param:g}")
    return ThresholdSpec(method, param)
