"""The HTML report: it renders, is self-contained, every embedded image decodes, it copes with
models that are not tables, ``anovae report`` writes it, and headless Chromium shows it."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
from matplotlib.image import imread

from anovae.report import build_report

_IMG = re.compile(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _images(page: str) -> dict[str, np.ndarray]:
    """Every embedded image, decoded to pixels (fails if one does not decode)."""
    out = {}
    for alt, b64 in _IMG.findall(page):
        png = base64.b64decode(b64, validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        out[alt] = imread(io.BytesIO(png), format="png")
        assert out[alt].ndim == 3 and min(out[alt].shape[:2]) > 100
    return out


def _self_contained(page: str) -> None:
    assert page.count("<img") == len(_IMG.findall(page))  # no image from elsewhere
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<script" not in page and "http://" not in page and "https://" not in page


@pytest.fixture(scope="module")
def labelled_report(fitted_vae_frame, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    frame = data.frame(data.X_test).set_axis([f"id{i}" for i in range(len(data.X_test))])
    build_report(fitted_vae_frame, frame, data.y_test, out_path=out, top_k=5)
    return out


def test_report_with_labels(labelled_report, data):
    page = labelled_report.read_text()
    assert page.startswith("<!DOCTYPE html>")
    _self_contained(page)
    images = _images(page)
    assert set(images) == {"Score distribution", "ROC curve", "Precision-recall curve",
                           "Latent space", "Training"}
    for name in ("scores", "roc", "pr", "latent", "training"):  # the same figures as PNG files
        png = labelled_report.with_name(f"report-{name}.png")
        assert imread(png).shape[0] > 100
    assert "AUROC" in page and "Top anomalies" in page
    # the top rows are named by the index, with features and their explanation
    rows = re.findall(r"<tr><td>(\d+)</td><td>(id\d+)</td>", page)
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5"]
    assert any(f"<td>{c}</td>" in page for c in data.columns)
    assert "expected" in page and "contribution" in page


def test_report_without_labels_on_an_array_model(fitted_ae, data, tmp_path):
    out = build_report(fitted_ae, data.X_test, out_path=tmp_path / "sub" / "r.html", top_k=3,
                       title="My <data>")
    page = out.read_text()
    _self_contained(page)
    assert set(_images(page)) == {"Score distribution", "Latent space", "Training"}
    assert "My &lt;data&gt;" in page and "<td>x" in page  # escaped title; features x0..x4
    assert "batch size used" in page and "learning rate used" in page  # resolved defaults


class PixelModel:
    """A stand-in for an image model: 4-D inputs, no explain, no transform, no history."""

    threshold_ = 10.0

    def decision_function(self, X):
        return np.asarray(X, dtype=float).reshape(len(X), -1).sum(1)


def test_report_does_not_assume_a_table(tmp_path):
    X = np.random.default_rng(0).exponential(size=(50, 1, 3, 3))
    page = build_report(PixelModel(), X, out_path=tmp_path / "r.html").read_text()
    _self_contained(page)
    assert set(_images(page)) == {"Score distribution"}
    assert "why (top features)" not in page and "Top anomalies" in page


def test_report_checks_labels(fitted_ae, data, tmp_path):
    with pytest.raises(ValueError, match="labels"):
        build_report(fitted_ae, data.X_test, data.y_test[:3], out_path=tmp_path / "r.html")


def test_cli_report(fitted_vae_frame, data, tmp_path):
    from typer.testing import CliRunner

    from anovae.cli import app

    model = fitted_vae_frame.save(tmp_path / "m.safetensors")
    frame = data.frame(data.X_test).assign(y=data.y_test, key=np.arange(len(data.X_test)) + 100)
    frame.to_csv(tmp_path / "d.csv", index=False)
    out = tmp_path / "rep.html"
    res = CliRunner().invoke(app, ["report", str(model), str(tmp_path / "d.csv"), "-o", str(out),
                                   "--label-column", "y", "--id-column", "key", "--top-k", "4"])
    assert res.exit_code == 0, res.output
    page = out.read_text()
    assert "ROC curve" in page
    ids = [int(i) for i in re.findall(r"<tr><td>\d+</td><td>(\d+)</td>", page)]
    assert len(ids) == 4 and min(ids) >= 100  # rows named by the id column
    assert out.with_name("rep-roc.png").exists()
    res = CliRunner().invoke(app, ["report", str(model), str(tmp_path / "d.csv"), "-o", str(out),
                                   "--label-column", "nope"])
    assert res.exit_code == 2 and "nope" in res.output


_CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_CHROMIUM is None, reason="headless Chromium is not installed")
def test_report_renders_in_headless_chromium(labelled_report, tmp_path):
    shot = tmp_path / "shot.png"
    cmd = [_CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tempfile.mkdtemp(dir=tmp_path)}",
           f"--screenshot={shot}", "--window-size=1280,2000", labelled_report.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=90, check=False)
    assert shot.exists(), "Chromium wrote no screenshot"
    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels[..., :3].std() > 0.05  # not a blank page
    # the histogram's bars (blue) and the anomalies (red) are on screen
    rgb = (pixels[..., :3] * 255).astype(int)
    blue = (abs(rgb[..., 0] - 0x4C) < 40) & (abs(rgb[..., 1] - 0x78) < 40) & (rgb[..., 2] > 140)
    assert blue.sum() > 500


def test_report_of_an_image_model_shows_inputs_reconstructions_and_maps(tmp_path):
    from sklearn.datasets import load_digits

    from anovae.detectors.image import ImageVAEDetector

    digits = load_digits()
    X = (digits.images * 16).clip(0, 255).astype(np.uint8)  # (N, 8, 8) grey images
    y = (digits.target != 0).astype(int)
    det = ImageVAEDetector(epochs=2, random_state=0).fit(X[digits.target == 0])
    out = build_report(det, X[:200], y[:200], out_path=tmp_path / "img.html")
    page = out.read_text()
    _self_contained(page)
    imgs = _images(page)
    assert {"Score distribution", "ROC curve", "Most anomalous images"} <= set(imgs)
    grid = imgs["Most anomalous images"]
    assert grid.shape[1] > grid.shape[0]  # 8 columns of images, 3 rows
    assert (tmp_path / "img-images.png").is_file()
    assert "why (top features)" not in page


def test_operating_point_precision_follows_the_metrics_when_nothing_is_flagged() -> None:
    from anovae.metrics import evaluate
    from anovae.plots import _operating_point

    y = np.r_[np.zeros(20, bool), np.ones(5, bool)]
    s = np.arange(25.0)
    fpr, recall, precision = _operating_point(y, s, 100.0)  # above every score
    m = evaluate(y.astype(int), s, (s > 100.0).astype(int))
    assert (fpr, recall) == (0.0, 0.0) and precision == m["precision"] == 0.0


def test_recall_and_f1_are_undefined_without_an_anomaly() -> None:
    # 0 / 0: NaN (shown as n/a) as AUROC and AUPRC are for one-class labels, not 0.0
    from anovae.metrics import evaluate

    m = evaluate(np.zeros(6, int), np.arange(6.0), np.r_[np.zeros(5, int), 1])
    assert all(np.isnan(m[k]) for k in ("auroc", "auprc", "recall", "f1"))
    assert m["precision"] == 0.0 and m["confusion_matrix"] == [[5, 1], [0, 0]]
    m = evaluate(np.r_[0, 0, 1], [0.1, 0.2, 0.9], [0, 0, 1])
    assert (m["recall"], m["f1"]) == (1.0, 1.0)


def test_report_flags_new_categories_and_gaps_and_writes_booleans_alike(tmp_path):
    # a row holding a country never seen in training read "KP, expected FR" with nothing to
    # say it was new; a boolean read from a CSV as "True" stood beside an expected "no"
    import pandas as pd

    from anovae import VAEDetector

    rng = np.random.default_rng(0)
    n = 400
    train = pd.DataFrame({"amount": rng.normal(50, 5, n),
                          "country": rng.choice(["FR", "DE"], n),
                          "weekend": rng.random(n) < 0.3})
    det = VAEDetector(epochs=3, hidden_dims=(16,), latent_dim=2, random_state=0,
                      device="cpu").fit(train)
    test = pd.DataFrame({"amount": [50.0, None, 51.0], "country": ["KP", "FR", "DE"],
                         "weekend": ["True", "False", "true"]})
    path = build_report(det, test, out_path=tmp_path / "r.html", top_k=3, explain_k=3)
    text = path.read_text()
    assert "KP <i>(new category)</i>" in text
    assert "<i>missing</i>" in text
    why = text[text.index('class="why"'):]
    assert ">True<" not in why and ">true<" not in why


def test_a_second_report_leaves_no_figure_of_the_first(fitted_vae_frame, data, tmp_path):
    out = tmp_path / "st.html"
    frame = data.frame(data.X_test)
    build_report(fitted_vae_frame, frame, data.y_test, out_path=out, top_k=3)
    assert (tmp_path / "st-roc.png").is_file() and (tmp_path / "st-pr.png").is_file()
    (tmp_path / "st-logo.png").write_bytes(b"the user's own file")
    build_report(fitted_vae_frame, frame, out_path=out, top_k=3)  # no labels: no curves
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "st-latent.png", "st-logo.png", "st-scores.png", "st-training.png", "st.html"]
    assert "ROC curve" not in out.read_text()


class OffsetModel:
    """Scores that share a large offset (an image model's are ~57,590), the threshold among
    them."""

    threshold_ = 57590.5

    def decision_function(self, X):
        return 57590.0 + np.asarray(X, dtype=float)[:, 0]


def test_scores_sharing_a_large_offset_show_which_side_of_the_threshold_they_are(tmp_path):
    X = np.linspace(0.01, 1.01, 41)[:, None]  # scores 57590.010 ... 57591.010 by 0.025
    page = build_report(OffsetModel(), X, out_path=tmp_path / "r.html", top_k=30).read_text()
    threshold = re.search(r"<div class=card><b>([^<]*) <small>", page).group(1)
    rows = re.findall(r"<tr><td>\d+</td><td>\d+</td><td>([^<]*)</td><td>(.*?)</td>", page)
    assert len(rows) == 30
    shown = [score for score, _ in rows]
    assert len(set(shown)) == 30 and threshold not in shown  # 5.759e+04 for every one of them
    for score, flag in rows:
        assert (float(score) > float(threshold)) == ("yes" in flag)
    assert float(threshold) == pytest.approx(57590.5)


def test_format_scores_keeps_four_digits_where_they_suffice():
    from anovae.plots import format_scores

    f = format_scores([3.52, 12.9, 60.1], 45.66)
    assert (f(45.66), f(3.52), f(float("nan"))) == ("45.66", "3.52", "n/a")
    f = format_scores([57590.31, 57590.74], 57590.52)
    assert [f(v) for v in (57590.31, 57590.52, 57590.74)] == [
        "57590.310", "57590.520", "57590.740"]
    assert format_scores([1e6, 3e6], 2e6)(2e6) == "2e+06"


def test_histogram_titles_say_row_for_one_row():
    from anovae.plots import score_histogram

    s = np.r_[np.zeros(999), 1e4]  # one score far beyond the axis
    title = score_histogram(s, -1.0).axes[0].get_title()
    assert "(1 row scores beyond the right edge" in title
    assert "of 1 row above" in score_histogram(np.array([2.0]), 1.0).axes[0].get_title()


def test_autoencoder_report_describes_its_own_loss_and_auto_parameters(fitted_ae, data,
                                                                      tmp_path):
    page = build_report(fitted_ae, data.X_test, out_path=tmp_path / "ae.html").read_text()
    caption = page[page.index("<b>Training.</b>"):].split("</figcaption>")[0]
    assert "KL" not in caption and "beta" not in caption
    assert "reconstruction error" in caption
    params = dict(re.findall(r"<tr><th>parameter (\w+)</th><td>([^<]*)</td></tr>", page))
    auto = sorted(k for k, v in fitted_ae.get_params().items() if v is None)
    assert auto and all(params[k] == "auto" for k in auto)
    assert "None" not in params.values()


def test_threshold_methods_are_described_in_percent() -> None:
    from anovae.report import _method_text

    assert _method_text("contamination=0.1").startswith("the top 10% of the scores")
    assert "at most 1% of new normal rows" in _method_text("fpr=0.01")
    assert "still flagged 95% of the labelled anomalies" in _method_text("recall=0.95")
    assert _method_text("pot=0.001").endswith("with probability 0.001")
