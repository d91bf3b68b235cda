"""Figures for reports: matplotlib ``Figure`` objects (no pyplot, no global state) and PNG bytes.

Every function takes plain arrays (scores: higher = more anomalous; labels: 1 = anomaly) and
returns a :class:`matplotlib.figure.Figure`; :func:`figure_png` renders one to PNG with the Agg
backend, so nothing needs a display and figures can be made from several threads.

>>> import numpy as np
>>> png = figure_png(score_histogram(np.random.default_rng(0).normal(size=100), 1.5))
>>> png[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from anovae._text import plural

__all__ = [
    "figure_png",
    "format_scores",
    "latent_figure",
    "loss_figure",
    "pca_2d",
    "pr_figure",
    "roc_figure",
    "score_histogram",
]

NORMAL_COLOR = "#4C78A8"
ANOMALY_COLOR = "#E45756"
THRESHOLD_COLOR = "#222222"
#: At most this many points in a scatter plot (a seeded subsample beyond it; anomalies kept).
MAX_POINTS = 5000


def format_scores(values: Any, threshold: float | None = None) -> Callable[[Any], str]:
    """A formatter for the scores ``values`` shown beside ``threshold``: 4 significant digits
    where they tell the threshold from each score and show the spread of the values, else as
    many decimals as that takes. Scores that share a large offset (57,590.31, 57,590.74 and a
    threshold of 57,590.52) all read 5.759e+04 in 4 digits, hiding which side of the threshold
    each one is on.

    >>> f = format_scores([57590.31, 57590.74], 57590.52)
    >>> f(57590.31), f(57590.52), f(57590.74)
    ('57590.310', '57590.520', '57590.740')
    >>> format_scores([3.52, 12.9], 45.66)(45.66)
    '45.66'
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    t = threshold if threshold is not None and math.isfinite(threshold) else None
    every = v if t is None else np.append(v, t)
    gaps = []
    if t is not None:
        off = np.abs(v - t)
        if (off > 0).any():
            gaps.append(float(off[off > 0].min()))  # tell the threshold from every score
    if every.size and every.max() > every.min():
        gaps.append(float(every.max() - every.min()) / 10)  # and show the spread
    if not gaps:
        return _four_digits
    gap = min(gaps)
    decimals = math.ceil(-math.log10(gap)) + 1  # a difference of gap shows in the last digit
    magnitude = max(float(np.abs(every).max()), gap)
    if math.floor(math.log10(magnitude)) + 1 + decimals <= 4:
        return _four_digits
    decimals = min(max(decimals, 0), 12)

    def fixed(x: Any) -> str:
        x = float(x)
        return "n/a" if math.isnan(x) else f"{x:.{decimals}f}"

    return fixed


def _four_digits(x: Any) -> str:
    x = float(x)
    return "n/a" if math.isnan(x) else f"{x:.4g}"


def _figure(width: float = 6.4, height: float = 4.0, ncols: int = 1) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure rendered as PNG bytes (Agg backend)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def score_histogram(scores: Any, threshold: float, y: Any | None = None) -> Figure:
    """Histogram of ``(n,)`` anomaly scores with the threshold as a dashed line; normal and
    anomalous rows in two colours when 0/1 labels ``y`` are given. Positive scores spread over
    more than two orders of magnitude get a logarithmic x-axis; otherwise the axis stops at the
    99.5% quantile (or just past the threshold) so a few huge scores do not squash the rest, and
    the title says how many rows lie beyond."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    lo, hi = float(s.min()), float(s.max())
    log_x = lo > 0 and hi / lo > 100
    if log_x:
        bins = np.geomspace(lo, hi, 61)
    else:
        hi = float(np.quantile(s, 0.995))
        if math.isfinite(threshold):
            hi = max(hi, float(threshold))
        hi = hi + 0.02 * (hi - lo) if hi > lo else lo + 1.0
        bins = np.linspace(lo, hi, 61)
    beyond = int((s > hi).sum())
    fig, ax = _figure(8.8, 3.6)
    if y is None:
        ax.hist(np.clip(s, lo, hi), bins=bins, color=NORMAL_COLOR, label="rows")
    else:
        lab = np.asarray(y).ravel().astype(bool)
        ax.hist(np.clip(s[lab], lo, hi), bins=bins, color=ANOMALY_COLOR, alpha=0.6,
                label=f"anomaly (label 1, {int(lab.sum())})")
        ax.hist(np.clip(s[~lab], lo, hi), bins=bins, color=NORMAL_COLOR, alpha=0.6,
                label=f"normal (label 0, {int((~lab).sum())})")
    if math.isfinite(threshold):
        shown = format_scores([lo, hi], threshold)(threshold)  # the axis range beside it
        ax.axvline(threshold, color=THRESHOLD_COLOR, linestyle="--", linewidth=1.5,
                   label=f"threshold {shown}")
    ax.set_yscale("log")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel("anomaly score (higher = more anomalous)" + (", log scale" if log_x else ""))
    ax.set_ylabel("rows (log scale)")
    flagged = int((s > threshold).sum())
    title = (f"{flagged} of {plural(s.size, 'row')} above the threshold "
             f"({100.0 * flagged / s.size:.1f}%)")
    if beyond:
        title += (f"\n({beyond} {'row scores' if beyond == 1 else 'rows score'} beyond the right "
                  "edge: counted in the last bin)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return fig


def _operating_point(y: np.ndarray, s: np.ndarray, threshold: float | None
                     ) -> tuple[float, float, float] | None:
    """(false-positive rate, recall, precision) of ``s > threshold``."""
    if threshold is None or not math.isfinite(threshold):
        return None
    pred = s > threshold
    tp = float((pred & y).sum())
    fpr = float((pred & ~y).sum()) / max(1, int((~y).sum()))
    recall = tp / max(1, int(y.sum()))
    precision = tp / pred.sum() if pred.any() else 0.0  # as metrics.evaluate (zero_division=0)
    return fpr, recall, precision


def roc_figure(y: Any, scores: Any, threshold: float | None = None) -> Figure:
    """ROC curve of ``(n,)`` scores against 0/1 labels, with its AUROC and, when ``threshold``
    is given, the detector's operating point."""
    from sklearn.metrics import roc_auc_score, roc_curve

    lab = np.asarray(y).ravel().astype(bool)
    s = np.asarray(scores, dtype=np.float64).ravel()
    fpr, tpr, _ = roc_curve(lab, s)
    fig, ax = _figure(4.6, 4.2)
    ax.plot(fpr, tpr, color=NORMAL_COLOR, linewidth=2,
            label=f"AUROC {roc_auc_score(lab, s):.3f}")
    ax.plot([0, 1], [0, 1], color="#999999", linestyle=":", label="chance")
    point = _operating_point(lab, s, threshold)
    if point is not None:
        ax.plot(point[0], point[1], "o", color=ANOMALY_COLOR,
                label=f"threshold: FPR {point[0]:.3f}, recall {point[1]:.3f}")
    ax.set_xlabel("false-positive rate (normal rows flagged)")
    ax.set_ylabel("recall (anomalies flagged)")
    ax.set_title("ROC curve", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def pr_figure(y: Any, scores: Any, threshold: float | None = None) -> Figure:
    """Precision-recall curve of ``(n,)`` scores against 0/1 labels, with the average precision
    (AUPRC), the share of anomalies (a random ranking's precision) and the operating point."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    lab = np.asarray(y).ravel().astype(bool)
    s = np.asarray(scores, dtype=np.float64).ravel()
    precision, recall, _ = precision_recall_curve(lab, s)
    fig, ax = _figure(4.6, 4.2)
    ax.plot(recall, precision, color=NORMAL_COLOR, linewidth=2,
            label=f"AUPRC {average_precision_score(lab, s):.3f}")
    ax.axhline(lab.mean(), color="#999999", linestyle=":", label=f"chance {lab.mean():.3f}")
    point = _operating_point(lab, s, threshold)
    if point is not None:
        ax.plot(point[1], point[2], "o", color=ANOMALY_COLOR,
                label=f"threshold: recall {point[1]:.3f}, precision {point[2]:.3f}")
    ax.set_xlabel("recall (anomalies flagged)")
    ax.set_ylabel("precision (flagged rows that are anomalies)")
    ax.set_ylim(0.0, 1.02)
    ax.set_title("Precision-recall curve", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    return fig


def pca_2d(Z: Any) -> tuple[np.ndarray, np.ndarray]:
    """The first two principal components of ``(n, L)`` rows, ``(n, 2)``, and the share of
    variance each explains, ``(2,)`` (``L = 1`` pads a zero column)."""
    Z = np.asarray(Z, dtype=np.float64)
    Zc = Z - Z.mean(axis=0)  # (n, L)
    _, sing, vt = np.linalg.svd(Zc, full_matrices=False)  # vt: (min(n, L), L)
    comps = Zc @ vt[:2].T  # (n, <=2)
    var = sing**2
    share = var[:2] / var.sum() if var.sum() > 0 else np.zeros(min(2, var.size))
    if comps.shape[1] < 2:
        comps = np.column_stack([comps, np.zeros(Z.shape[0])])
        share = np.r_[share, 0.0]
    return comps, share


def _subsample(n: int, keep: np.ndarray | None, seed: int = 0) -> np.ndarray:
    """At most :data:`MAX_POINTS` row indices (every ``keep`` row first), sorted."""
    if n <= MAX_POINTS:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    must = np.flatnonzero(keep) if keep is not None else np.empty(0, dtype=np.intp)
    must = must[:MAX_POINTS]
    rest = np.setdiff1d(np.arange(n), must)
    extra = rng.choice(rest, size=MAX_POINTS - must.size, replace=False)
    return np.sort(np.r_[must, extra])


def latent_figure(latent: Any, scores: Any, y: Any | None = None,
                  threshold: float | None = None) -> Figure:
    """The latent means ``(n, L)`` in 2-D (PCA when ``L > 2``), coloured by 0/1 label when ``y``
    is given, else by score (flagged rows, above ``threshold``, ringed in red)."""
    Z = np.asarray(latent, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64).ravel()
    if Z.shape[1] == 2:
        xy, names = Z, ("z1", "z2")
    else:
        xy, share = pca_2d(Z)
        names = (f"PC1 of z ({100 * share[0]:.0f}% of variance)",
                 f"PC2 of z ({100 * share[1]:.0f}%)") if Z.shape[1] > 2 else ("z1", "(none)")
    lab = None if y is None else np.asarray(y).ravel().astype(bool)
    flagged = s > threshold if threshold is not None and math.isfinite(threshold) else None
    idx = _subsample(len(s), lab if lab is not None else flagged)
    fig, ax = _figure(5.6, 4.6)
    if lab is not None:
        for mask, color, name in ((~lab, NORMAL_COLOR, "normal (label 0)"),
                                  (lab, ANOMALY_COLOR, "anomaly (label 1)")):
            sel = idx[mask[idx]]
            ax.scatter(xy[sel, 0], xy[sel, 1], s=8, alpha=0.6, color=color, label=name,
                       linewidths=0)
        ax.legend(fontsize=8)
    else:
        lo, hi = np.quantile(s, [0.01, 0.99])
        order = idx[np.argsort(s[idx], kind="stable")]  # high scores drawn on top
        points = ax.scatter(xy[order, 0], xy[order, 1], c=s[order], cmap="viridis",
                            vmin=lo, vmax=hi if hi > lo else lo + 1.0, s=8, linewidths=0)
        fig.colorbar(points, ax=ax, label="anomaly score")
        if flagged is not None and flagged[idx].any():
            sel = idx[flagged[idx]]
            ax.scatter(xy[sel, 0], xy[sel, 1], s=30, facecolors="none",
                       edgecolors=ANOMALY_COLOR, linewidths=0.8, label="above threshold")
            ax.legend(fontsize=8)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(f"Latent space ({Z.shape[1]}-D latent means)", fontsize=10)
    return fig


def loss_figure(history: Mapping[str, Sequence[float]], best_epoch: int | None = None
                ) -> Figure | None:
    """Training curves from ``detector.history_`` (keys ``loss``, ``val_loss``,
    ``reconstruction``, ``kl``, ``beta``; one value per epoch): the loss and validation loss,
    and the loss's two terms with the KL weight. ``None`` when there is no history."""
    loss = list(history.get("loss", []))
    if not loss:
        return None
    epochs = np.arange(1, len(loss) + 1)
    fig, (ax, ax2) = _figure(9.6, 3.6, ncols=2)
    ax.plot(epochs, loss, color=NORMAL_COLOR, label="training loss")
    val = list(history.get("val_loss", []))
    if val and val != loss:  # without a validation split the training loss is recorded there
        ax.plot(np.arange(1, len(val) + 1), val, color=ANOMALY_COLOR, label="validation loss")
    if best_epoch:
        ax.axvline(best_epoch, color="#999999", linestyle=":", label=f"best epoch {best_epoch}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (per row)")
    ax.set_title("Loss", fontsize=10)
    ax.legend(fontsize=8)
    for key, color in (("reconstruction", NORMAL_COLOR), ("kl", "#54A24B")):
        values = np.asarray(history.get(key, []), dtype=np.float64)
        if values.size and np.any(values != 0):
            ax2.plot(np.arange(1, values.size + 1), values, color=color,
                     label={"kl": "KL divergence"}.get(key, key))
    ax2.set_xlabel("epoch")
    ax2.set_title("Loss terms", fontsize=10)
    handles = list(ax2.lines)
    beta = np.asarray(history.get("beta", []), dtype=np.float64)
    if beta.size and np.ptp(beta) > 0:
        twin = ax2.twinx()
        handles += twin.plot(np.arange(1, beta.size + 1), beta, color="#999999",
                             linestyle="--", label="KL weight beta (right axis)")
        twin.set_ylim(0.0, 1.05 * float(beta.max()))
    if handles:
        ax2.legend(handles=handles, fontsize=8, loc="center right")
    return fig
