"""A self-contained HTML report of a fitted detector on a data set (the library side of
``anovae report``).

One HTML file with every image embedded as base64 PNG (no network, no scripts needed to view it),
and the same images saved as PNG files beside it: the score histogram with the threshold, ROC and
precision-recall curves when labels are given, the top anomalies with the features that explain
them, the latent space, and the training curves.

Nothing here assumes a table where it is cheap not to: explanations (per-feature tables) are
shown for 2-D inputs only, the latent plot needs ``transform``, and the training curves need
``history_``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anovae._version import __version__
from anovae.exceptions import DataError, warn
from anovae.metrics import binary_labels
from anovae.mixed import FALSE_WORDS, TRUE_WORDS

__all__ = ["build_report"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Image:
    name: str  # file-name suffix, e.g. "scores"
    title: str
    caption: str
    png: bytes


def _fmt(x: Any) -> str:
    """Numbers to 4 significant digits; everything else escaped as text."""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if math.isnan(x):
            return "n/a"
        return f"{x:.4g}"
    return html.escape(str(x))


def _value(r: Any) -> str:
    """An explanation row's observed value as the report shows it: flagged when it is a
    category never seen in training or a missing cell (mixed tables), and a boolean written as
    text ("True", from a CSV) as its expected value is (yes / no)."""
    if getattr(r, "missing", False):
        return "<i>missing</i>"
    value = r.value
    if isinstance(r.expected, (bool, np.bool_)) and isinstance(value, str):
        low = value.strip().lower()
        value = True if low in TRUE_WORDS else False if low in FALSE_WORDS else value
    text = _fmt(value)
    return f"{text} <i>(new category)</i>" if getattr(r, "unseen_category", False) else text


def _row_ids(X: Any, n: int, names: Sequence[Any] | None = None) -> np.ndarray:
    if names is not None:
        if len(names) != n:
            raise DataError(f"{len(names)} row names for {n} rows")
        return np.asarray(names, dtype=object)
    return X.index.to_numpy() if isinstance(X, pd.DataFrame) else np.arange(n)


def _take(X: Any, rows: np.ndarray) -> Any:
    return X.iloc[rows] if isinstance(X, pd.DataFrame) else np.asarray(X)[rows]


def _labels(y: Any, n: int) -> np.ndarray | None:
    return None if y is None else binary_labels(y, n)


def _threshold_method(detector: Any) -> str:
    method = getattr(detector, "threshold_method_", None)
    if method:
        return str(method)
    contamination = getattr(detector, "contamination", None)
    return f"contamination={contamination:g}" if contamination is not None else "unknown"


_METHOD_TEXT = {
    "contamination": "the top {pct} of the scores it was set on (the training rows, or those "
                     "given to `anovae threshold`) is flagged (PyOD's rule)",
    "fpr": "conformal calibration on held-out normal rows, so that at most {pct} of new "
           "normal rows are flagged",
    "recall": "the highest threshold that still flagged {pct} of the labelled anomalies",
    "pot": "extreme-value theory (peaks over threshold): a normal row exceeds it with "
           "probability {p:.3g}",
}


def _method_text(method: str) -> str:
    name, _, number = method.partition("=")
    if name == "best_f1":
        return "the threshold with the best F1 score on labelled rows"
    if name.startswith("pythresh:"):
        return f"chosen by the PyThresh thresholder {name.split(':', 1)[1]}"
    if name in _METHOD_TEXT and number:
        p = float(number)
        return _METHOD_TEXT[name].format(p=p, pct=f"{100 * p:.3g}%")
    return ""


#: The figures a report may have (``<stem>-<name>.png`` beside it), in the order shown.
FIGURES = ("scores", "roc", "pr", "latent", "images", "training")


def _images(detector: Any, X: Any, scores: np.ndarray, y: np.ndarray | None,
            fmt: Callable[[Any], str] = _fmt) -> list[_Image]:
    from anovae.plots import (
        figure_png,
        latent_figure,
        loss_figure,
        pr_figure,
        roc_figure,
        score_histogram,
    )

    t = float(detector.threshold_)
    out = [_Image("scores", "Score distribution",
                  "How many rows got each anomaly score. Rows to the right of the dashed line "
                  "(the threshold) are flagged as anomalies."
                  + (" Colours show the given labels." if y is not None else ""),
                  figure_png(score_histogram(scores, t, y)))]
    if y is not None and 0 < y.sum() < y.size:
        out.append(_Image("roc", "ROC curve",
                          "Share of anomalies caught (recall) against share of normal rows "
                          "flagged, for every possible threshold; the dot is this model's "
                          "threshold. AUROC 1 is perfect, 0.5 is chance.",
                          figure_png(roc_figure(y, scores, t))))
        out.append(_Image("pr", "Precision-recall curve",
                          "Of the flagged rows, the share that are real anomalies (precision), "
                          "against the share of anomalies caught (recall); the dotted line is "
                          "what a random ranking gets.",
                          figure_png(pr_figure(y, scores, t))))
    if hasattr(detector, "transform"):
        try:
            latent = detector.transform(X)
        except (NotImplementedError, AttributeError):  # a model without a latent space
            latent = None
        if latent is not None and latent.ndim == 2 and latent.shape[1] >= 1:
            how = ("colour shows the labels" if y is not None
                   else "colour shows the anomaly score; flagged rows are ringed in red")
            pca = " (first two principal components)" if latent.shape[1] > 2 else ""
            out.append(_Image("latent", "Latent space",
                              f"Where the encoder puts each row{pca}; {how}. Normal rows "
                              "cluster where the model learned the data; anomalies often sit "
                              "apart.",
                              figure_png(latent_figure(latent, scores, y, t))))
    if hasattr(detector, "anomaly_maps") and np.ndim(X) >= 3:
        out.append(_Image("images", "Most anomalous images",
                          "The highest-scoring images (top row), the model's reconstructions "
                          "(middle) and where the score comes from (bottom: per-pixel anomaly "
                          "map, brighter = more anomalous, one colour scale for all).",
                          figure_png(_image_grid_figure(detector, X, scores, fmt))))
    history = getattr(detector, "history_", None) or {}
    fig = loss_figure(history, getattr(detector, "best_epoch_", None))
    if fig is not None:
        kl = np.asarray(history.get("kl", []), dtype=np.float64)
        terms = ("the loss's terms: reconstruction error and KL divergence, with the KL weight "
                 "beta (right)" if kl.size and np.any(kl != 0) else
                 "its reconstruction error, the one term of this model's loss (right)")
        out.append(_Image("training", "Training",
                          "Loss per epoch on the training rows and on the validation rows held "
                          f"out for early stopping (left), and {terms}.",
                          figure_png(fig)))
    return out


def _image_grid_figure(detector: Any, X: Any, scores: np.ndarray,
                       fmt: Callable[[Any], str] = _fmt, n: int = 8) -> Any:
    """Inputs, reconstructions and anomaly maps of the ``n`` highest-scoring images."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from anovae.images import check_images, map_colours

    top = np.argsort(-scores, kind="stable")[:n]
    Xt = np.asarray(X)[top]
    inputs, _ = check_images(Xt)  # (n, C, H, W) in [0, 1]
    recon, _ = check_images(np.clip(np.asarray(detector.reconstruct(Xt), np.float64), 0, 1))
    maps = map_colours(detector.anomaly_maps(Xt))  # (n, 3, H, W)
    fig = Figure(figsize=(1.3 * len(top), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(3, len(top), squeeze=False)
    for j in range(len(top)):
        for i, img in enumerate((inputs[j], recon[j], maps[j])):
            ax = grid[i, j]
            chw = np.asarray(img)
            ax.imshow(chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0),
                      cmap="gray" if chw.shape[0] == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        grid[0, j].set_title(fmt(scores[top[j]]), fontsize=8)
    for i, name in enumerate(("input", "reconstruction", "anomaly map")):
        grid[i, 0].set_ylabel(name, fontsize=8)
    return fig


def _summary(detector: Any, scores: np.ndarray, y: np.ndarray | None,
             data_name: str | None, fmt: Callable[[Any], str] = _fmt
             ) -> tuple[list[tuple[str, str]], dict[str, Any] | None]:
    from anovae.metrics import evaluate

    t = float(detector.threshold_)
    flagged = scores > t
    method = _threshold_method(detector)
    cards = [("rows", _fmt(scores.size)),
             ("flagged as anomalies", f"{_fmt(int(flagged.sum()))} "
                                      f"({100.0 * flagged.mean():.1f}%)"),
             ("threshold", f"{fmt(t)} <small>({html.escape(method)})</small>")]
    metrics = None
    if y is not None:
        metrics = evaluate(y, scores, flagged.astype(int))
        cards.append(("labelled anomalies", _fmt(int(y.sum()))))
        for key, name in (("auroc", "AUROC"), ("auprc", "AUPRC"), ("precision", "precision"),
                          ("recall", "recall"), ("f1", "F1")):
            cards.append((name, _fmt(metrics[key])))
    if data_name:
        cards.insert(0, ("data", html.escape(data_name)))
    return cards, metrics


def _model_rows(detector: Any) -> list[tuple[str, str]]:
    cal = getattr(detector, "calibration_scores_", None)
    cfg = getattr(detector, "net_config_", None)
    rows = [("estimator", type(detector).__name__),
            ("score", getattr(detector, "score_name", "?")),
            ("features", _fmt(getattr(detector, "n_features_in_", "?"))),
            ("latent dimensions", _fmt(getattr(cfg, "latent_dim", "?"))),
            ("training rows scored", _fmt(len(getattr(detector, "decision_scores_", [])))),
            ("calibration rows", _fmt(0 if cal is None else len(cal))),
            ("epochs run (best)", f"{_fmt(getattr(detector, 'n_epochs_', '?'))} "
                                  f"({_fmt(getattr(detector, 'best_epoch_', '?'))})")]
    for name, attr in (("batch size used", "batch_size_"),
                       ("learning rate used", "learning_rate_")):
        if getattr(detector, attr, None) is not None:  # the resolved value of a None parameter
            rows.append((name, _fmt(getattr(detector, attr))))
    name = getattr(detector, "score_name", "?")
    weights = getattr(detector, "latent_weights_", None)
    if weights:  # fitted with the latent term (the fitted state rules, as in scoring and export)
        mixture = getattr(detector, "latent_mixture_", None)
        rows.append(("latent density weight (score per nat)", _fmt(weights.get(name, "?"))))
        if mixture is not None:
            rows.append(("latent mixture components", _fmt(mixture.n_components)))
    slopes = getattr(detector, "complexity_slopes_", None)
    if slopes:  # fitted with the correction
        rows.append(("complexity slope (score per PNG nat)", _fmt(slopes.get(name, "?"))))
    meta = getattr(detector, "metadata_", {}) or {}
    if meta.get("created_utc"):
        rows.append(("model saved", _fmt(meta["created_utc"])))
    params = detector.get_params(deep=False) if hasattr(detector, "get_params") else {}
    rows += [(f"parameter {k}", "auto" if v is None else  # resolved when fitting
              _fmt(v if isinstance(v, (int, float, str)) else repr(v)))
             for k, v in sorted(params.items())]
    return rows


def _explanations(detector: Any, X: Any, top: np.ndarray, k: int) -> list[str] | None:
    """One HTML snippet per top row: its ``k`` top features (by excess), or ``None`` when
    the input is not a table (per-feature tables would not help for images)."""
    if not (isinstance(X, pd.DataFrame) or np.ndim(X) == 2) or not hasattr(detector, "explain"):
        return None
    if top.size == 0:
        return []
    table = detector.explain(_take(X, top), k=k)
    k_eff = len(table) // top.size
    parts = []
    for i in range(top.size):
        lines = table.iloc[i * k_eff:(i + 1) * k_eff]
        items = "".join(
            f"<tr><td>{_fmt(r.feature)}</td><td>{_value(r)}</td><td>{_fmt(r.expected)}</td>"
            f"<td>{_fmt(r.contribution)}</td><td>{_fmt(r.excess)}</td></tr>"
            for r in lines.itertuples(index=False))
        parts.append(f'<table class="why"><tr><th>feature</th><th>value</th><th>expected</th>'
                     f"<th>contribution</th><th>excess</th></tr>{items}</table>")
    return parts


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
background:#f6f7f9;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:0 0 4px}h2{font-size:1.2em;margin:28px 0 8px;border-bottom:1px solid
#ddd;padding-bottom:4px}
.sub{color:#666;margin:0 0 16px}.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #e2e4e8;border-radius:6px;padding:8px 12px;min-width:110px}
.card b{display:block;font-size:1.25em}.card span{color:#666;font-size:.85em}
figure{background:#fff;border:1px solid #e2e4e8;border-radius:6px;margin:10px 0;padding:10px}
figure img{max-width:100%;height:auto}figcaption{color:#555;font-size:.9em}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:10px}
table{border-collapse:collapse;background:#fff;font-size:.9em}
td,th{border:1px solid #e2e4e8;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef0f3}table.why{font-size:.85em;margin:0}table.why td,table.why th{border:0;
padding:1px 6px}.flag{color:#c0392b;font-weight:600}p.note{color:#555;font-size:.9em}
"""


def _html(title: str, cards: list[tuple[str, str]], method: str, images: list[_Image],
          top_rows: list[list[str]], top_header: list[str], model_rows: list[tuple[str, str]],
          explained: bool) -> str:
    def figure(img: _Image) -> str:
        data = base64.b64encode(img.png).decode("ascii")
        return (f'<figure><img alt="{html.escape(img.title)}" src="data:image/png;base64,'
                f'{data}"><figcaption><b>{html.escape(img.title)}.</b> '
                f"{html.escape(img.caption)}</figcaption></figure>")

    by_name = {img.name: img for img in images}
    curves = [by_name[n] for n in ("roc", "pr") if n in by_name]
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<p class="sub">anovae {html.escape(__version__)} &middot; generated '
            f'{_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}</p>',
            '<div class="cards">'
            + "".join(f"<div class=card><b>{v}</b><span>{html.escape(k)}</span></div>"
                      for k, v in cards) + "</div>",
            '<p class="note">Each row gets an anomaly score: the higher it is, the worse the '
            "model (trained on normal rows) can explain the row. Rows scoring above the "
            "threshold are flagged as anomalies"
            + (f" (threshold method: {html.escape(method)})" if method else "") + ".</p>",
            "<h2>Scores</h2>"]
    if "scores" in by_name:
        body.append(figure(by_name["scores"]))
    if curves:
        body += ["<h2>Detection quality against the labels</h2>",
                 '<div class="grid">' + "".join(figure(c) for c in curves) + "</div>"]
    body.append("<h2>Top anomalies</h2>")
    note = ("The rows with the highest scores. <i>expected</i> is what the model expected for "
            "the feature given the rest of the row (its reconstruction); <i>contribution</i> is "
            "the feature's share of the row's score, <i>excess</i> that share minus the "
            "feature's typical one (its median over training rows): the features are ranked by "
            "it." if explained
            else "The rows with the highest scores.")
    body.append(f'<p class="note">{note}</p>')
    body.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in top_header) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>"
                          for r in top_rows) + "</table>")
    if "images" in by_name:
        body.append(figure(by_name["images"]))
    for name, heading in (("latent", "Latent space"), ("training", "Training")):
        if name in by_name:
            body += [f"<h2>{heading}</h2>", figure(by_name[name])]
    body += ["<h2>Model</h2>",
             "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>"
                                 for k, v in model_rows) + "</table>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
            f"<body><main>{''.join(body)}</main></body></html>\n")


def build_report(
    detector: Any,
    X: Any,
    y: Any | None = None,
    *,
    out_path: str | Path,
    top_k: int = 20,
    explain_k: int = 5,
    title: str | None = None,
    data_name: str | None = None,
    row_names: Sequence[Any] | None = None,
) -> Path:
    """Write an HTML report of ``detector`` on ``X`` (and the figures as PNG files beside it).

    Args:
        detector: a fitted anovae detector.
        X: the rows to report on (a DataFrame's index labels name the rows in the report,
            unless ``row_names`` is given).
        y: optional 0/1 labels (1 = anomaly): adds ROC and precision-recall curves, metrics at
            the threshold, and colours by label.
        out_path: the HTML file; the PNGs go beside it as ``<stem>-<figure>.png``.
        top_k: how many of the highest-scoring rows to list.
        explain_k: how many features explain each listed row (tables only).
        title: the page title (default: "Anomaly report").
        data_name: a name for the data (e.g. its file name), shown in the summary.
        row_names: one name per row (e.g. image file names) for the top-rows table; default:
            a DataFrame's index labels, else the row numbers.

    Returns:
        The path of the HTML file.

    >>> import numpy as np, tempfile, pathlib
    >>> from anovae import VAEDetector
    >>> X = np.random.default_rng(0).normal(size=(200, 3))
    >>> det = VAEDetector(epochs=2, random_state=0).fit(X)
    >>> out = build_report(det, X, out_path=pathlib.Path(tempfile.mkdtemp()) / "r.html")
    >>> out.read_text().startswith("<!DOCTYPE html>")
    True
    """
    from anovae.io import atomic_output
    from anovae.plots import format_scores

    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 0:
        raise ValueError(f"top_k must be a non-negative integer, got {top_k!r}")
    out_path = Path(out_path)
    check = getattr(detector, "_check_threshold_score", None)  # any detector-like object works
    if check is not None:
        check()  # the report draws the threshold on these scores
    scores = detector.decision_function(X)  # fitted, and X valid: a library call, quiet
    names_warning = getattr(detector, "_feature_names_warning", None)
    message = names_warning(X) if names_warning is not None else None
    if message is not None:  # the user's rows: warn as the detector does for its callers
        warn(message)
    y_arr = _labels(y, scores.size)
    order = np.argsort(-scores, kind="stable")
    top = order[:top_k]
    t = float(detector.threshold_)
    # digits enough to tell the threshold from the scores listed and the image grid's (top 8)
    fmt = format_scores(scores[order[:max(top_k, 8)]], t)
    images = _images(detector, X, scores, y_arr, fmt)
    cards, _ = _summary(detector, scores, y_arr, data_name, fmt)
    why = _explanations(detector, X, top, explain_k)
    ids = _row_ids(X, scores.size, row_names)
    header = ["rank", "row", "score", "flagged"] + (["label"] if y_arr is not None else [])
    header += ["why (top features)"] if why is not None else []
    top_rows = []
    for i, r in enumerate(top):
        cells = [_fmt(i + 1), _fmt(ids[r]), fmt(scores[r]),
                 '<span class="flag">yes</span>' if scores[r] > t else "no"]
        if y_arr is not None:
            cells.append("anomaly" if y_arr[r] else "normal")
        if why is not None:
            cells.append(why[i])
        top_rows.append(cells)
    page = _html(title or "Anomaly report", cards, _method_text(_threshold_method(detector)),
                 images, top_rows, header, _model_rows(detector), why is not None)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for img in images:
        with atomic_output(out_path.with_name(f"{out_path.stem}-{img.name}.png")) as tmp:
            Path(tmp).write_bytes(img.png)
    with atomic_output(out_path) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    made = {img.name for img in images}
    for name in FIGURES:  # an earlier report's figures that this one does not have
        if name not in made:
            out_path.with_name(f"{out_path.stem}-{name}.png").unlink(missing_ok=True)
    logger.info("wrote report %s (%d figures)", out_path, len(images))
    return out_path
