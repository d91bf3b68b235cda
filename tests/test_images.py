"""Image detectors, image input, image files, the CLI on images and `anovae bench images`.

Small and offline: scikit-learn's bundled 8x8 digits upsampled to 28x28, and generated images.
"""

from __future__ import annotations

import copy
import gzip
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageOps
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from anovae import DataError, ImageAEDetector, ImageVAEDetector, ModelFileError, load
from anovae.bench.images import make_figure, run_image_benchmark, write_idx
from anovae.cli import app
from anovae.images import (
    PNG_THREADS_MIN_VALUES,
    ImageSchema,
    check_images,
    complexity_slope,
    is_image_source,
    png_codec,
    png_nats,
    read_idx,
    read_images,
    save_grid,
    score_images,
)
from anovae.nets.conv import ConvAutoencoder, ConvConfig, stage_sizes
from anovae.report import build_report
from anovae.scores import SCORES
from conftest import bomb_png

TINY = {"channels": (4, 8), "latent_dim": 4, "random_state": 0}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as uint8 (N, 28, 28): each 8x8 pixel becomes 3x3, padded by 2."""
    d = load_digits()
    img = np.kron(d.images, np.ones((3, 3)))  # (N, 24, 24) in 0..16
    img = np.pad(img, ((0, 0), (2, 2), (2, 2)))
    return np.round(img * (255 / 16)).astype(np.uint8), d.target


@pytest.fixture(scope="module")
def fitted(digits: tuple[np.ndarray, np.ndarray]) -> ImageVAEDetector:
    X, y = digits
    return ImageVAEDetector(epochs=2, **TINY).fit(X[y == 0][:80])


# -- input validation -------------------------------------------------------------------------
def test_layouts_agree_and_uint8_is_scaled() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(3, 30, 32, 3), dtype=np.uint8)  # (N, H, W, C)
    a, schema = check_images(rgb)
    b, _ = check_images(rgb.transpose(0, 3, 1, 2))  # (N, C, H, W)
    assert a.shape == (3, 3, 30, 32) and a.dtype == np.float32
    assert schema == ImageSchema(3, 30, 32)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a[0, 1, 2, 5], rgb[0, 2, 5, 1] / 255, rtol=1e-6)
    grey, s = check_images(rgb[..., 0])  # (N, H, W)
    assert grey.shape == (3, 1, 30, 32) and s.channels == 1
    np.testing.assert_array_equal(grey[:, 0], a[:, 0])


def test_uint8_and_the_same_images_as_floats_are_the_same_input() -> None:
    """uint8 and x / 255 in float32 or float64 give bit-identical arrays (x * float32(1 / 255)
    did not, for half the values: a model's complexity slope once flipped sign on that)."""
    every = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    as_uint8, _ = check_images(every)
    np.testing.assert_array_equal(as_uint8, check_images(every.astype(np.float32) / 255)[0])
    np.testing.assert_array_equal(as_uint8, check_images(every / 255.0)[0])
    wide = (np.arange(256, dtype=np.uint16) * 257).reshape(1, 16, 16)
    np.testing.assert_array_equal(check_images(wide)[0],
                                  check_images(wide.astype(np.float32) / 65535)[0])


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 28, 28, 2)), "channel"),
    (np.zeros((2, 6, 6)), "smallest side"),
    (np.full((2, 28, 28), 2.0), r"\[0, 1\]"),
    (np.full((2, 28, 28), np.nan), "NaN"),
    (np.zeros((5, 10)), r"\(N, H, W\)"),
    (np.zeros((0, 28, 28)), "no images"),
    (np.array(["a", "b"]), "numeric"),
    # one shape, values that are not numbers: were "images of different sizes"
    ([[[2**70] * 8] * 8] * 2, r"not pixel numbers \(e.g. 1180591620717411303424\)"),
    ([[[0] * 8] * 7 + [[0] * 7 + [None]]] * 2, r"not pixel numbers \(e.g. None\)"),
    ([np.zeros((8, 8)), np.zeros((9, 8))], "different sizes"),
])
def test_bad_images_are_named(bad: np.ndarray, match: str) -> None:
    with pytest.raises(DataError, match=match):
        check_images(bad)


def test_integer_pixels_are_scaled_by_dtype_not_by_batch(fitted: ImageVAEDetector) -> None:
    grey = np.full((1, 28, 28), 200, dtype=np.int64)  # integers from JSON are int64
    out, _ = check_images(grey)
    np.testing.assert_allclose(out, 200 / 255, rtol=1e-6)
    np.testing.assert_array_equal(out, check_images(grey.astype(np.uint8))[0])
    np.testing.assert_array_equal(out, check_images(grey.astype(np.int16))[0])
    # 16-bit data: uint16 only, scaled by 65535 even when every value is <= 255
    np.testing.assert_allclose(check_images(grey.astype(np.uint16))[0], 200 / 65535, rtol=1e-6)
    wide = np.full((1, 28, 28), 60_000, dtype=np.uint16)
    both, _ = check_images(np.concatenate([grey.astype(np.uint16), wide]))
    np.testing.assert_allclose(both[0], 200 / 65535, rtol=1e-6)
    # a wider integer dtype holds 8-bit pixels: the rest of a batch never changes the divisor
    with pytest.raises(DataError, match=r"int64 in \[200, 300\]\); integer pixels must lie in "
                                        r"\[0, 255\]"):
        check_images(np.concatenate([grey, np.full_like(grey, 300)]))
    with pytest.raises(DataError, match=r"\[0, 1000000\]"):
        check_images(np.concatenate([np.zeros_like(grey), np.full_like(grey, 10**6)]))
    with pytest.raises(DataError, match=r"negative integer pixel values \(int32 in \[-1, 5\]\)"):
        check_images(np.concatenate([np.full_like(grey, -1), np.full_like(grey, 5)]
                                    ).astype(np.int32))
    # the same image scores the same alone and beside any other valid image
    bright = np.full_like(grey, 255)
    alone = fitted.decision_function(grey)
    np.testing.assert_array_equal(fitted.decision_function(np.concatenate([grey, bright]))[:1],
                                  alone)
    np.testing.assert_array_equal(fitted.decision_function(grey.astype(np.uint8)), alone)


def test_wrong_size_for_fitted_model(fitted: ImageVAEDetector) -> None:
    with pytest.raises(DataError, match=r"32x32 pixels.*fitted on 28x28"):
        fitted.decision_function(np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(DataError, match="3 channels"):
        fitted.decision_function(np.zeros((2, 28, 28, 3), np.uint8))


def test_shape_mismatch_names_the_source_and_sizes_read_width_x_height(
        tmp_path: Path, fitted: ImageVAEDetector) -> None:
    """Images from a file or folder name it (not "X"), and every message gives sizes as
    width x height, said so."""
    rgb = tmp_path / "rgb"
    rgb.mkdir()
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(rgb / "a.png")
    want = (r"'[^']*rgb' holds 28x28 pixels \(width x height\) with 3 channels, but the model "
            r"was fitted on 28x28 pixels \(width x height\) with 1 channel")
    with pytest.raises(DataError, match=want):
        score_images(fitted, rgb, tmp_path / "s.csv")
    np.save(tmp_path / "rgb.npy", np.zeros((2, 3, 28, 28), np.uint8))
    with pytest.raises(DataError, match=r"'[^']*rgb\.npy' holds 28x28 pixels \(width x height\) "
                                        "with 3 channels"):
        read_images(tmp_path / "rgb.npy", schema=fitted.schema_)
    # an array has no name; a wide one reads width first, as files and viewers give it
    with pytest.raises(DataError, match=r"X holds 30x28 pixels \(width x height\) with 1 "
                                        r"channel, but the model was fitted on 28x28"):
        fitted.decision_function(np.zeros((2, 28, 30), np.uint8))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(mixed / "a.png")
    Image.fromarray(np.zeros((28, 30), np.uint8)).save(mixed / "b.png")  # 30 wide, 28 high
    with pytest.raises(DataError, match=r"mixed sizes: 28x28 pixels \(width x height\) with 1 "
                                        r"channel e\.g\. .*; 30x28 pixels \(width x height\)"):
        read_images(mixed)  # what fit reads
    with pytest.raises(DataError, match=r"b\.png' is 30x28 pixels \(width x height\); the "
                                        "model was fitted on 28x28"):
        read_images(mixed, schema=fitted.schema_)  # what score reads
    with pytest.raises(DataError, match=r"X holds images of 6x9 pixels \(width x height\); the "
                                        "smallest side"):
        check_images(np.zeros((2, 9, 6)))


# -- the network ------------------------------------------------------------------------------
@pytest.mark.parametrize("c, h, w", [(1, 28, 28), (3, 32, 32), (1, 45, 60), (3, 64, 64)])
def test_conv_net_any_size(c: int, h: int, w: int) -> None:
    cfg = ConvConfig(c, h, w, channels=(4, 8, 8)[:len(stage_sizes(h, w, 3)) - 1], latent_dim=3)
    net = ConvAutoencoder(cfg)
    x = torch.rand(2, c, h, w)
    mu, logvar = net.encode(x)
    loc, _ = net.decode(mu)
    assert mu.shape == logvar.shape == (2, 3)
    assert loc.shape == (2, c, h, w)
    assert net.nll(x, loc, None).shape == (2, c, h, w)
    assert ConvConfig.from_dict(cfg.to_dict()) == cfg


def test_tutorial_conv_preset_is_the_tutorial_network() -> None:
    det = ImageVAEDetector.from_preset("tutorial-conv")
    cfg = ConvConfig(1, 28, 28, channels=det.channels, latent_dim=det.latent_dim,
                     decoder_channels=det.decoder_channels, seed_channels=det.seed_channels,
                     likelihood=det.likelihood)
    net = ConvAutoencoder(cfg)
    convs = [m for m in net.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [(m.out_channels, m.stride) for m in convs] == [(32, (2, 2)), (64, (2, 2))]
    assert net.to_latent.in_features == 7 * 7 * 64  # flattened before the dense layer
    assert net.to_latent.out_features == 2 * 2  # 2 x latent (latent 2)
    assert net.from_latent[0].out_features == 7 * 7 * 32
    tconvs = [m.out_channels for m in net.decoder if isinstance(m, torch.nn.ConvTranspose2d)]
    assert tconvs + [net.head.out_channels] == [64, 32, 1]
    assert det.likelihood == "bernoulli"
    out = net.decode(torch.zeros(1, 2))[0]
    assert out.shape == (1, 1, 28, 28)


# -- the detectors ----------------------------------------------------------------------------
def test_scores_deterministic_and_maps_sum_to_scores(fitted: ImageVAEDetector,
                                                     digits: tuple[np.ndarray, np.ndarray]
                                                     ) -> None:
    X, _ = digits
    s1 = fitted.decision_function(X[:20])
    s2 = fitted.decision_function(X[:20])
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(fitted.decision_function(X[5:6]), s1[5:6])  # batch-invariant
    maps = fitted.anomaly_maps(X[:20])
    assert maps.shape == (20, 28, 28)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), s1, rtol=1e-5)
    assert fitted.feature_scores(X[:3]).shape == (3, 1, 28, 28)
    refit = ImageVAEDetector(epochs=2, **TINY).fit(X[digits[1] == 0][:80])
    np.testing.assert_array_equal(refit.decision_function(X[:20]), s1)


def test_reconstruct_sample_transform_shapes(fitted: ImageVAEDetector,
                                             digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = digits
    rec = fitted.reconstruct(X[:4])
    assert rec.shape == (4, 1, 28, 28) and np.isfinite(rec).all()
    smp = fitted.sample(5, random_state=0)
    assert smp.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(smp, fitted.sample(5, random_state=0))
    assert fitted.transform(X[:4]).shape == (4, 4)
    assert fitted.n_features_in_ == 784 and fitted.predict(X[:4]).shape == (4,)


def test_rgb_32_and_large_nonsquare_images() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(16, 32, 32, 3), dtype=np.uint8)
    det = ImageVAEDetector(epochs=1, likelihood="gaussian", **TINY).fit(rgb)
    assert det.anomaly_maps(rgb[:2]).shape == (2, 32, 32)
    assert det.reconstruct(rgb[:2]).shape == (2, 3, 32, 32)
    big = rng.random((6, 1, 72, 90)).astype(np.float32)
    det = ImageAEDetector(epochs=1, random_state=0).fit(big)  # auto: 4 stages to <= 8x8
    assert len(det.net_config_.channels) == 4
    assert det.reconstruct(big[:2]).shape == (2, 1, 72, 90)


def test_one_class_quality_floor(digits: tuple[np.ndarray, np.ndarray]) -> None:
    """Trained on zeros only, both detectors rank the other digits as more anomalous."""
    X, y = digits
    test = np.r_[np.flatnonzero(y == 0)[100:], np.flatnonzero(y != 0)[:300]]
    for det in (ImageVAEDetector(epochs=20, channels=(8, 16), latent_dim=8, random_state=0),
                ImageAEDetector(epochs=20, channels=(8, 16), latent_dim=8, random_state=0)):
        det.fit(X[y == 0][:100])
        auc = roc_auc_score(y[test] != 0, det.decision_function(X[test]))
        assert auc > 0.8, (type(det).__name__, auc)


# -- complexity correction --------------------------------------------------------------------
def test_png_nats_measures_complexity() -> None:
    rng = np.random.default_rng(0)
    blank = np.zeros((1, 1, 28, 28), np.float32)
    stroke = blank.copy()
    stroke[0, 0, 4:24, 13:15] = 1.0
    noise = rng.random((1, 1, 28, 28)).astype(np.float32)
    sizes = png_nats(np.concatenate([blank, stroke, noise]))  # (3,)
    assert sizes.shape == (3,) and sizes.dtype == np.float64
    assert sizes[0] < sizes[1] < sizes[2]
    # the 8-bit image is what is measured: uint8 input scaled by check_images gives the same
    as_uint8, _ = check_images(np.round(noise[:, 0] * 255).astype(np.uint8))
    assert png_nats(as_uint8)[0] == sizes[2]
    rgb = rng.random((2, 3, 16, 16)).astype(np.float32)
    assert png_nats(rgb).shape == (2,) and png_nats(rgb[:, :1]).mean() < png_nats(rgb).mean()
    # large images are encoded on threads: same sizes, same order as one by one
    big = rng.random((6, 3, 48, 48)).astype(np.float32) * np.linspace(0, 1, 6)[:, None, None,
                                                                             None]
    assert big[0].size >= PNG_THREADS_MIN_VALUES
    np.testing.assert_array_equal(png_nats(big), [png_nats(im[None])[0] for im in big])
    assert png_nats(np.zeros((0, 1, 28, 28))).shape == (0,)
    # the layouts of read_images (N, H, W, C) and 8-bit pixels: a clear error (Pillow's said
    # "Cannot handle this data type: (1, 1, 64), |u1")
    for bad in (np.zeros((2, 16, 16, 3), np.uint8), np.zeros((2, 16, 16, 3)),
                np.zeros((2, 16, 16))):
        with pytest.raises(DataError, match=r"png_nats takes \(N, C, H, W\) floats .*"
                                            r"check_images"):
            png_nats(bad)


def test_complexity_slope_is_least_squares_shrunk_by_its_reliability() -> None:
    from scipy.stats import linregress

    rng = np.random.default_rng(0)
    c = rng.uniform(500, 2000, 400)
    s = 3.0 + 0.07 * c + rng.normal(0, 1, 400)
    fit = linregress(c, s)  # b0 and its standard error
    assert complexity_slope(s, c) == pytest.approx(
        fit.slope * (1 - (fit.stderr / fit.slope) ** 2), rel=1e-9)
    assert complexity_slope(s, c) == pytest.approx(np.polyfit(c, s, 1)[0], rel=1e-5)  # t ~ 600
    weak = 3.0 + 0.0003 * c + rng.normal(0, 1, 400)  # t = 2.2: shrunk by 1 / t^2, about 20%
    fit = linregress(c, weak)
    assert 2 < fit.slope / fit.stderr < 2.5
    assert complexity_slope(weak, c) == pytest.approx(
        fit.slope * (1 - (fit.stderr / fit.slope) ** 2), rel=1e-9)
    # scores unrelated to complexity: the least-squares slope is noise (here within one
    # standard error of 0), so no correction
    noise = rng.normal(1000, 50, 400)
    fit = linregress(c, noise)
    assert fit.slope != 0 and abs(fit.slope / fit.stderr) < 1
    assert complexity_slope(noise, c) == 0.0
    assert complexity_slope(s, np.full(400, 7.0)) == 0.0  # no spread: no correction
    # one PNG size for every image (noise textures): its float mean is not exactly that size,
    # and the old fit divided rounding noise by rounding noise (a slope of -0.016 here)
    same = np.full(200, 3172 * 8 * np.log(2.0))
    assert same.mean() != same[0]
    assert complexity_slope(noise[:200], same) == 0.0
    assert complexity_slope(s[:2], c[:2]) == 0.0  # two images: no error to measure


def test_no_complexity_correction_where_png_size_explains_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    """Noise textures all have one PNG size: the slope is 0 (it was a large one of either sign,
    different for uint8 and float input), so uint8 and float32 / 255 give the same model, and
    it scores as without the correction."""
    rng = np.random.default_rng(0)
    tex = rng.integers(0, 256, (60, 16, 16, 3), dtype=np.uint8)  # one PNG size, 4724 nats
    blank = np.zeros((3, 16, 16, 3), np.uint8)
    with caplog.at_level(logging.WARNING, logger="anovae.detectors.image"):
        a = ImageVAEDetector(epochs=2, **TINY).fit(tex)
        b = ImageVAEDetector(epochs=2, **TINY).fit(tex.astype(np.float32) / 255)
        plain = ImageVAEDetector(epochs=2, complexity_correction=False, **TINY).fit(tex)
    assert set(a.complexity_slopes_.values()) == {0.0}
    assert a.complexity_slopes_ == b.complexity_slopes_
    assert a.threshold_ == b.threshold_ == plain.threshold_
    for det in (b, plain):
        np.testing.assert_array_equal(det.decision_function(blank), a.decision_function(blank))
    # said once per fit with the correction (a and b)
    assert caplog.text.count("does not reliably explain the 'elbo' score") == 2


def test_complexity_correction_subtracts_the_fitted_share(
        digits: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    """decision_function = raw score - b * PNG size, for every score, one b per score; maps
    still add up."""
    X, y = digits
    det = ImageVAEDetector(epochs=15, channels=(8, 16), latent_dim=8, latent_density=False,
                           random_state=0)
    det.fit(X[y == 8][:120])
    assert set(det.complexity_slopes_) == {"reconstruction", "reconstruction_probability",
                                           "elbo", "iwae"}
    assert det.latent_weights_ == {} and det.latent_mixture_ is None
    test = np.r_[np.flatnonzero(y == 8)[120:], np.flatnonzero(y == 1)[:100]]
    images, _ = check_images(X[test])
    corrected = det.decision_function(X[test])
    maps = det.anomaly_maps(X[test])
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), corrected, rtol=1e-5, atol=1e-3)
    uncorrected = det._score_rows(images, raw=True)[0]
    b = det.complexity_slopes_["elbo"]
    np.testing.assert_allclose(corrected, uncorrected - b * png_nats(images), rtol=1e-6,
                               atol=1e-3)
    det.set_params(score_type="reconstruction")  # every score has its slope
    np.testing.assert_allclose(
        det.decision_function(X[test]),
        det._score_rows(images, raw=True)[0]
        - det.complexity_slopes_["reconstruction"] * png_nats(images), rtol=1e-6, atol=1e-4)
    det.set_params(score_type="elbo")
    # on these blocky upsampled 8x8 digits the 1s are not simpler to the model than the 8s
    # (0.844 uncorrected, 0.853 corrected; 0.67-0.96 over seeds and step sizes, from 30
    # updates): the gain shows on MNIST's own images (docs/benchmarks.md); here both stay good
    is_one = y[test] == 1
    assert roc_auc_score(is_one, corrected) > 0.8 and roc_auc_score(is_one, uncorrected) > 0.8
    page = build_report(det, X[test], out_path=tmp_path / "r.html").read_text()
    assert "complexity slope (score per PNG nat)" in page
    # the correction is part of the fitted model (its threshold was set on corrected scores):
    # switching it either way after fitting needs a refit, and ONNX export goes by the fit
    with pytest.raises(ValueError, match="fitted with it .* refit"):
        clone(det).set_params(epochs=1).fit(X[y == 8][:40]).set_params(
            complexity_correction=False).decision_function(X[:2])
    plain = clone(det).set_params(epochs=1, complexity_correction=False).fit(X[y == 8][:40])
    assert plain.complexity_slopes_ == {}
    with pytest.raises(ValueError, match="fitted without it .* refit"):
        plain.set_params(complexity_correction=True).decision_function(X[:2])
    with pytest.raises(ValueError, match="complexity_correction must be True or False"):
        ImageVAEDetector(complexity_correction="yes").fit(X[:4])


# -- latent density ---------------------------------------------------------------------------
def test_latent_density_adds_the_weighted_code_density(
        digits: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    """decision_function = raw score + w * (-log r(mu)) - b * PNG size, for every score: r the
    mixture fitted to the normal codes, w equalising the two spreads on the fitting images, b
    the slope of the sum; maps still add up; part of the fitted model."""
    X, y = digits
    fit_rows = X[y == 8][:120]
    # (80 epochs: at 15 the codes of these 120 images hardly vary, and the term is left out)
    det = ImageVAEDetector(epochs=80, channels=(8, 16), latent_dim=4, random_state=0)
    det.fit(fit_rows)
    mixture = det.latent_mixture_
    assert mixture is not None and mixture.latent_dim == 4
    assert mixture.n_components == 4  # 10 capped: 120 codes, 14 parameters a component
    assert set(det.latent_weights_) == set(det.complexity_slopes_) == {
        "reconstruction", "reconstruction_probability", "elbo", "iwae"}
    images, _ = check_images(fit_rows)  # all 120 are the spread-fitting images here (< 1024)
    density = mixture.neg_log_density(det.transform(fit_rows))  # (120,)
    for name, w in det.latent_weights_.items():
        raw = det._score_rows(images, score=name, raw=True)[0]
        assert w > 0 and w * density.std() == pytest.approx(raw.std(), rel=1e-5)
        assert det.complexity_slopes_[name] == pytest.approx(
            complexity_slope(raw + w * density, png_nats(images)), rel=1e-5, abs=1e-8)
    test = np.r_[np.flatnonzero(y == 8)[120:], np.flatnonzero(y == 1)[:100]]
    test_images, _ = check_images(X[test])
    scores = det.decision_function(X[test])
    expected = (det._score_rows(test_images, raw=True)[0]
                + det.latent_weights_["elbo"] * mixture.neg_log_density(det.transform(X[test]))
                - det.complexity_slopes_["elbo"] * png_nats(test_images))
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(det.decision_function(X[test]), scores)  # deterministic
    np.testing.assert_allclose(det.anomaly_maps(X[test]).sum(axis=(1, 2)), scores, rtol=1e-5,
                               atol=1e-3)
    # (quality: test_one_class_quality_floor with the defaults; on 120 blocky 8s the 1s score
    # 0.77-0.89 with the term and 0.81-0.85 without it, by latent size: small-sample noise)
    page = build_report(det, X[test], out_path=tmp_path / "r.html").read_text()
    assert "latent density weight (score per nat)" in page
    with pytest.raises(ValueError, match="latent_density=False but .* fitted with it .* refit"):
        copy.deepcopy(det).set_params(latent_density=False).decision_function(X[:2])
    plain = clone(det).set_params(epochs=1, latent_density=False,
                                  complexity_correction=False).fit(fit_rows[:40])
    assert plain.latent_weights_ == {} and plain.complexity_slopes_ == {}
    np.testing.assert_array_equal(plain.decision_function(X[:5]),
                                  plain._score_rows(check_images(X[:5])[0], raw=True)[0])
    with pytest.raises(ValueError, match="fitted without it .* refit"):
        plain.set_params(latent_density=True).decision_function(X[:2])
    with pytest.raises(ValueError, match="latent_density must be True or False"):
        ImageVAEDetector(latent_density=1).fit(X[:4])
    with pytest.raises(ValueError, match=r"latent_density=True \(fitted with False\)"):
        plain.save(tmp_path / "plain.safetensors")
    plain.set_params(latent_density=False)
    # a model without the term still needs a reader that knows the parameter
    assert load(plain.save(tmp_path / "plain.safetensors")).metadata_["format_version"] == 3


def test_collapsed_codes_get_no_latent_term(digits: tuple[np.ndarray, np.ndarray],
                                            tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """Codes that do not vary between images (posterior collapse: no latent dimension with a
    variance over 0.01) carry nothing: the term is left out (weight 0, a warning), where its
    weight, the score's spread over the density's, multiplied rounding noise by 3e5."""
    X, y = digits
    fit_rows = X[y == 8][:120]
    with caplog.at_level(logging.WARNING, logger="anovae.detectors.image"):
        det = ImageVAEDetector(epochs=2, channels=(8, 16), latent_dim=4,
                               complexity_correction=False, random_state=0).fit(fit_rows)
    assert float(det.transform(fit_rows).var(axis=0).max()) < 0.01
    assert det.latent_weights_ == dict.fromkeys(SCORES, 0.0)
    assert "posterior collapse" in caplog.text
    images, _ = check_images(X[:20])
    np.testing.assert_array_equal(det.decision_function(X[:20]),
                                  det._score_rows(images, raw=True)[0])
    again = load(det.save(tmp_path / "collapsed.safetensors"))
    np.testing.assert_array_equal(again.decision_function(X[:20]), det.decision_function(X[:20]))


def test_large_score_offsets_keep_the_scores_precision(
        digits: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> None:
    """Offsets are subtracted in float64: one of millions, added to a float32 per-pixel tensor,
    rounded every score to steps of 0.5-2 (half of 400 images tied)."""
    X, _ = digits
    det = ImageVAEDetector(epochs=1, channels=(8, 16), latent_dim=4, latent_density=False,
                           complexity_correction=False, random_state=0).fit(X[:40])
    images, _ = check_images(X[:50])
    raw = det._score_rows(images, raw=True)[0]
    offsets = -4.89e6 + 1e-3 * np.arange(50)  # (50,): a score of about 4.89e6 + raw
    monkeypatch.setattr(det, "_score_offsets", lambda rows, score: offsets[:len(rows)])
    scores, maps = det._score_rows(images, per_feature=True)
    np.testing.assert_allclose(scores - 4.89e6, raw - 1e-3 * np.arange(50), rtol=0, atol=1e-6)
    assert len(np.unique(scores)) == 50
    np.testing.assert_allclose(maps.sum(axis=(1, 2, 3)), scores, rtol=1e-9)


def test_broken_latent_mixture_in_a_model_file(tmp_path: Path, fitted: ImageVAEDetector) -> None:
    """A mixture that cannot score (tensors lost, non-finite, not positive definite, another
    code size) or a missing weight is refused at load, naming the latent mixture."""
    path = fitted.save(tmp_path / "img.safetensors")
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        doc = json.loads(f.metadata()["anovae"])
    w, u = "fitted.latent_mixture.weights", "fitted.latent_mixture.precisions_cholesky"
    nan_weight = {**tensors, w: torch.full_like(tensors[w], float("nan"))}
    flipped = {**tensors, u: -tensors[u]}
    wrong_size = {**tensors, "fitted.latent_mixture.means": tensors[
        "fitted.latent_mixture.means"][:, :2].contiguous(), u: tensors[u][:, :2, :2].contiguous()}
    lost = {k: v for k, v in tensors.items() if not k.startswith("fitted.")}
    no_iwae = json.loads(json.dumps(doc))
    del no_iwae["fitted"]["latent_weights"]["iwae"]
    for case, (arrays, meta, match) in {
            "nan": (nan_weight, doc, "not finite"),
            "flipped": (flipped, doc, "positive diagonal"),
            "size": (wrong_size, doc, "2 dimensions, the network's code 4"),
            "lost": (lost, doc, "latent mixture lacks"),
            "weight": (tensors, no_iwae, r"weights are incomplete .*iwae")}.items():
        broken = tmp_path / f"{case}.safetensors"
        save_file(arrays, str(broken), metadata={"anovae": json.dumps(meta)})
        with pytest.raises(ModelFileError, match=f"inconsistent anovae model: .*{match}"):
            load(broken)


def doc_png_codec(path: Path) -> str:
    with safe_open(str(path), "pt") as f:
        return json.loads(f.metadata()["anovae"])["fitted"]["png_codec"]


def test_save_load_round_trip(tmp_path: Path, fitted: ImageVAEDetector,
                              digits: tuple[np.ndarray, np.ndarray],
                              caplog: pytest.LogCaptureFixture) -> None:
    X, _ = digits
    path = fitted.save(tmp_path / "img.safetensors")
    again = load(path)
    assert isinstance(again, ImageVAEDetector) and again.schema_ == fitted.schema_
    np.testing.assert_array_equal(again.decision_function(X[:30]),
                                  fitted.decision_function(X[:30]))
    np.testing.assert_array_equal(again.anomaly_maps(X[:3]), fitted.anomaly_maps(X[:3]))
    assert again.complexity_slopes_ == fitted.complexity_slopes_ and fitted.complexity_slopes_
    assert again.latent_weights_ == fitted.latent_weights_ and fitted.latent_weights_
    for key, value in fitted.latent_mixture_.to_arrays().items():
        np.testing.assert_array_equal(again.latent_mixture_.to_arrays()[key], value)
    # format 3 (the latent term; 2: the "fitted" section): an anovae that reads only older
    # versions says to upgrade, rather than scoring without the term against a threshold set
    # with it
    assert again.metadata_["format_version"] == 3
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        doc = json.loads(f.metadata()["anovae"])
    # a file written before the latent term existed (version 2: slopes only, no parameter)
    # scores as it did: with the correction, without the term
    v2 = json.loads(json.dumps(doc))
    del v2["fitted"]["latent_weights"], v2["params"]["latent_density"]
    v2["format_version"] = 2
    v2_path = tmp_path / "v2.safetensors"
    save_file({k: v for k, v in tensors.items() if not k.startswith("fitted.")}, str(v2_path),
              metadata={"anovae": json.dumps(v2)})
    older = load(v2_path)
    assert older.latent_density is False and older.latent_mixture_ is None
    assert older.complexity_slopes_ == fitted.complexity_slopes_
    some = check_images(X[:5])[0]
    np.testing.assert_allclose(older.decision_function(X[:5]), again._score_rows(some, raw=True)[0]
                               - fitted.complexity_slopes_["elbo"] * png_nats(some), rtol=1e-6)
    # a file with the latent term but its mixture tensors lost is inconsistent, and says so
    broken_path = tmp_path / "broken.safetensors"
    save_file({k: v for k, v in tensors.items() if not k.startswith("fitted.")},
              str(broken_path), metadata={"anovae": json.dumps(doc)})
    with pytest.raises(ModelFileError, match="inconsistent"):
        load(broken_path)
    # a file written before the correction existed (no slopes, no parameter) scores as it did
    del doc["fitted"], doc["params"]["complexity_correction"], doc["params"]["latent_density"]
    doc["format_version"] = 1
    legacy_path = tmp_path / "legacy.safetensors"
    save_file({k: v for k, v in tensors.items() if not k.startswith("fitted.")},
              str(legacy_path), metadata={"anovae": json.dumps(doc)})
    legacy = load(legacy_path)
    assert legacy.complexity_correction is False and legacy.complexity_slopes_ == {}
    assert legacy.latent_density is False and legacy.latent_weights_ == {}
    np.testing.assert_array_equal(legacy.decision_function(X[:5]),
                                  again._score_rows(check_images(X[:5])[0], raw=True)[0])
    # fitted with another PNG encoder: scores may differ by a few bytes' worth; it says so
    assert doc_png_codec(path) == png_codec()
    doc = json.loads(safe_open(str(path), "pt").metadata()["anovae"])
    doc["fitted"]["png_codec"] = "Pillow 0.0, zlib 0.0"
    other_path = tmp_path / "other-codec.safetensors"
    save_file(load_file(str(path)), str(other_path), metadata={"anovae": json.dumps(doc)})
    with caplog.at_level(logging.WARNING, logger="anovae"):
        load(other_path)
    assert "Pillow 0.0, zlib 0.0" in caplog.text
    with pytest.raises(DataError, match="fitted on 28x28"):
        again.decision_function(np.zeros((1, 30, 30), np.uint8))
    ae = ImageAEDetector(epochs=1, **TINY).fit(X[:50])
    ae2 = load(ae.save(tmp_path / "ae.safetensors"))
    assert ae2.metadata_["format_version"] == 1
    np.testing.assert_array_equal(ae2.decision_function(X[:9]), ae.decision_function(X[:9]))
    np.testing.assert_array_equal(ae2.sample(2, random_state=1), ae.sample(2, random_state=1))


def test_a_changed_score_scores_but_keeps_off_the_fitted_threshold(
        tmp_path: Path, fitted: ImageVAEDetector, digits: tuple[np.ndarray, np.ndarray]) -> None:
    """After set_params(score_type=...) on a fitted model, decision_function gives the new score
    (every score has its fitted terms: anovae bench images compares them on one network), but
    what compares with threshold_ (set on the fitted score, as decision_scores_ were) refuses,
    for image and table VAEs alike; the fitted score set back, everything works again."""
    from anovae import VAEDetector

    X, _ = digits
    det = copy.deepcopy(fitted)  # the fixture is shared
    before = det.predict(X[:20])
    images, _ = check_images(X[:20])
    det.set_params(score_type="reconstruction")
    np.testing.assert_array_equal(det.decision_function(X[:20]),
                                  det._score_rows(images, score="reconstruction")[0])
    assert det.anomaly_maps(X[:2]).shape == (2, 28, 28)
    refused = r"score_type='reconstruction' but this model's threshold .* set on score_type='elbo'"
    folder = _png_folder(tmp_path / "png", X[:3], np.zeros(3, int), classes=False)
    for call in (lambda: det.predict(X[:2]), lambda: det.predict_proba(X[:2]),
                 lambda: det.refit_threshold(X[:20]), lambda: det.save(tmp_path / "m.safetensors"),
                 lambda: score_images(det, folder, tmp_path / "s.csv")):
        with pytest.raises(ValueError, match=refused):
            call()
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "s.csv").exists()
    det.set_params(score_type="elbo")
    np.testing.assert_array_equal(det.predict(X[:20]), before)
    back = load(det.save(tmp_path / "m.safetensors"))
    assert back.threshold_score_ == "elbo"
    np.testing.assert_array_equal(back.predict(X[:20]), before)
    # clone, and parameters before fitting: the score is the one fitted
    other = clone(back).set_params(score_type="reconstruction", epochs=1)
    assert other.get_params()["score_type"] == "reconstruction"
    other.fit(X[:40])
    assert other.threshold_score_ == "reconstruction" and other.predict(X[:2]).shape == (2,)
    table = VAEDetector(epochs=1, random_state=0).fit(np.random.default_rng(0).normal(size=(60, 3)))
    table.set_params(score_type="iwae")
    assert table.decision_function(np.zeros((2, 3))).shape == (2,)
    from anovae.report import build_report
    from anovae.scoring import score_frame
    from anovae.streaming import RecordScorer

    rows = np.zeros((2, 3))
    for call in (lambda: table.predict(rows), lambda: score_frame(table, pd.DataFrame(rows)),
                 lambda: RecordScorer(table),
                 lambda: build_report(table, rows, out_path=tmp_path / "r.html")):
        with pytest.raises(ValueError, match=r"score_type='iwae' but .* set on score_type='elbo'"):
            call()


def test_estimator_contract() -> None:
    det = ImageVAEDetector(channels=(8, 16), latent_dim=3)
    assert clone(det).get_params() == det.get_params()
    with pytest.raises(ValueError, match="channels"):
        ImageVAEDetector(channels=(8, 0)).fit(np.zeros((4, 28, 28)))
    with pytest.raises(ValueError, match="one width per encoder stage"):
        ImageVAEDetector(channels=(8, 16), decoder_channels=(8,)).fit(np.zeros((4, 28, 28)))


# -- files ------------------------------------------------------------------------------------
def _png_folder(root: Path, X: np.ndarray, y: np.ndarray, classes: bool = True) -> Path:
    for i, (img, label) in enumerate(zip(X, y, strict=True)):
        folder = root / f"class_{label}" if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"img{i:03d}.png")
    return root


def test_idx_and_numpy_and_png_readers(tmp_path: Path,
                                       digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = digits
    raw = write_idx(tmp_path / "imgs-idx3-ubyte", X[:10])
    gz = write_idx(tmp_path / "imgs-idx3-ubyte.gz", X[:10])
    with gzip.open(gz, "rb") as fh:
        assert fh.read(4) == b"\x00\x00\x08\x03"
    np.testing.assert_array_equal(read_idx(raw), X[:10])
    np.testing.assert_array_equal(read_idx(gz), X[:10])
    np.testing.assert_array_equal(read_images(raw).images, X[:10])
    np.savez(tmp_path / "d.npz", X=X[:10], y=y[:10])
    got = read_images(tmp_path / "d.npz")
    np.testing.assert_array_equal(got.images, X[:10])
    np.testing.assert_array_equal(got.labels, y[:10])
    folder = _png_folder(tmp_path / "png", X[:6], y[:6])
    assert is_image_source(folder) and is_image_source(raw) and is_image_source(tmp_path / "d.npz")
    data = read_images(folder)
    assert data.images.shape == (6, 28, 28)
    assert sorted(set(data.labels)) == sorted({f"class_{c}" for c in y[:6]})
    order = [int(Path(n).stem[3:]) for n in data.names]
    np.testing.assert_array_equal(data.images, X[:6][order])
    (tmp_path / "t.npy").write_bytes(b"")
    np.save(tmp_path / "table.npy", np.zeros((5, 3)))
    assert not is_image_source(tmp_path / "table.npy")


def test_idx_files_by_their_name_or_magic_number_not_idx_in_a_table_name(
        tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = digits
    for name in ("idx.csv", "Train_IDX_2024.csv", "price_idx.parquet", "s_idx.csv.gz",
                 "idx.npy"):
        path = tmp_path / name
        write_idx(path, X[:3])  # even IDX bytes: a table extension makes it a table
        assert not is_image_source(path), name
    pd.DataFrame({"a": [1.0, 2.0]}).to_csv(tmp_path / "idx.csv", index=False)
    with pytest.raises(DataError, match="is not an image source"):
        read_images(tmp_path / "idx.csv")  # what scoring with an image model reads
    for name in ("t10k-images.idx3-ubyte", "train-labels-idx1-ubyte.gz", "mnist_raw",
                 "mnist_raw.gz", "images.bin"):
        path = write_idx(tmp_path / name, X[:3])
        assert is_image_source(path), name
        np.testing.assert_array_equal(read_images(path).images, X[:3])
    (tmp_path / "notes").write_text("idx,a\n1,2\n")
    assert not is_image_source(tmp_path / "notes")
    broken = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03not deflate data"  # a gzip header only
    (tmp_path / "broken").write_bytes(broken)
    assert not is_image_source(tmp_path / "broken")
    (tmp_path / "broken-idx3-ubyte.gz").write_bytes(broken)
    with pytest.raises(DataError, match="cannot read IDX file .*broken-idx3-ubyte.gz"):
        read_idx(tmp_path / "broken-idx3-ubyte.gz")


def test_bad_image_files(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "a" / "ok.png")
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match="broken.png"):
        read_images(tmp_path / "a")
    (tmp_path / "b").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "b" / "grey.png")
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(tmp_path / "b" / "rgb.png")
    with pytest.raises(DataError, match="mixed channel counts"):
        read_images(tmp_path / "b")
    (tmp_path / "c").mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "c" / "small.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "c" / "big.png")
    with pytest.raises(DataError, match="mixed sizes"):
        read_images(tmp_path / "c")
    (tmp_path / "short-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (9).to_bytes(4, "big")
                                                 + (28).to_bytes(4, "big") * 2 + b"\x00" * 50)
    with pytest.raises(DataError, match="cut short"):
        read_idx(tmp_path / "short-idx3-ubyte")


def test_hidden_files_in_image_folders_are_skipped(tmp_path: Path) -> None:
    """macOS leaves AppleDouble files (``._x.png``, not images) and ``.DS_Store`` beside copied
    files: skipped like hidden folders, at the top and in class folders."""
    for folder in (tmp_path / "flat", tmp_path / "classes" / "good"):
        folder.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(folder / f"{i}.png")
        (folder / "._0.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
        (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
        (folder / ".hidden").mkdir()
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(folder / ".hidden" / "x.png")
    assert read_images(tmp_path / "flat").names == ["0.png", "1.png"]
    classes = read_images(tmp_path / "classes")
    assert classes.names == ["good/0.png", "good/1.png"] and list(classes.labels) == ["good"] * 2
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "._0.png").write_bytes(b"\x00\x05\x16\x07")
    assert not is_image_source(tmp_path / "only")
    with pytest.raises(DataError, match="holds no .parquet files and no .png/.jpg/.jpeg images"):
        read_images(tmp_path / "only")


def _bomb_png(path: Path) -> Path:
    path.write_bytes(bomb_png())
    return path


def test_decompression_bombs_and_sizes_in_folders(tmp_path: Path,
                                                  fitted: ImageVAEDetector) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(folder / "ok.png")
    _bomb_png(folder / "bomb.png")
    with pytest.raises(DataError, match=r"bomb\.png' declares 100000x100000 pixels \(width x "
                                        r"height\), over the limit of \d+ pixels"):
        read_images(folder)
    with pytest.raises(DataError, match=r"bomb\.png' declares 100000x100000 pixels \(width x "
                                        r"height\); the model was fitted on 28x28"):
        read_images(folder, schema=fitted.schema_)
    with pytest.raises(DataError, match=r"declares 100000x100000 pixels.*fitted on 28x28"):
        score_images(fitted, folder, tmp_path / "s.csv")
    assert not (tmp_path / "s.csv").exists()
    # with a model, a file of another size is named (from its header, before decoding)
    (folder / "bomb.png").unlink()
    Image.fromarray(np.zeros((40, 32), np.uint8)).save(folder / "wide.png")
    with pytest.raises(DataError, match=r"wide\.png' is 32x40 pixels \(width x height\); the "
                                        "model was fitted on 28x28"):
        read_images(folder, schema=fitted.schema_)
    # the CLI: a message, not a PIL traceback
    model = fitted.save(tmp_path / "m.safetensors")
    (folder / "wide.png").unlink()
    _bomb_png(folder / "bomb.png")
    res = CliRunner().invoke(app, ["score", str(model), str(folder), "-o",
                                   str(tmp_path / "x.csv")])
    assert res.exit_code == 2, res.output
    assert "bomb.png' declares 100000x100000 pixels" in res.output
    assert "fitted on 28x28" in res.output and "Traceback" not in res.output


def test_save_grid(tmp_path: Path, fitted: ImageVAEDetector,
                   digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = digits
    p = save_grid(fitted.sample(6, random_state=0), tmp_path / "s.png", ncol=3, padding=2)
    with Image.open(p) as im:
        assert im.size == (3 * 30 + 2, 2 * 30 + 2) and im.mode == "L"
    p = save_grid(fitted.anomaly_maps(X[:4]), tmp_path / "m.png", normalize=True,
                  cmap="inferno", scale=2)
    with Image.open(p) as im:
        assert im.mode == "RGB" and im.size == (2 * (2 * 30 + 2),) * 2
    p = make_figure(fitted, X[:5], tmp_path / "fig.png", n=5)
    with Image.open(p) as im:
        assert im.size == (2 * (5 * 30 + 2), 2 * (3 * 30 + 2))


# -- CLI --------------------------------------------------------------------------------------
def test_cli_fit_score_png_folder_with_maps(tmp_path: Path,
                                            digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = digits
    runner = CliRunner()
    train = _png_folder(tmp_path / "train", X[y == 0][:40], y[y == 0][:40], classes=False)
    model = tmp_path / "m.safetensors"
    res = runner.invoke(app, ["fit", str(train), "-o", str(model), "--epochs", "2", "--seed",
                              "0", "--set", "channels=[4,8]", "--latent-dim", "4"])
    assert res.exit_code == 0, res.output
    assert "ImageVAEDetector" in res.output
    test = _png_folder(tmp_path / "test", X[:8], y[:8])
    res = runner.invoke(app, ["score", str(model), str(test), "-o", str(tmp_path / "s.csv"),
                              "--maps", str(tmp_path / "maps")])
    assert res.exit_code == 0, res.output
    out = pd.read_csv(tmp_path / "s.csv")
    assert list(out.columns) == ["image", "label", "anomaly_score", "is_anomaly", "map"]
    det = load(model)
    data = read_images(test)
    np.testing.assert_allclose(out["anomaly_score"], det.decision_function(data.images),
                               rtol=1e-6)
    maps = sorted((tmp_path / "maps").glob("*_map.png"))
    assert len(maps) == 8 and sorted(p.name for p in maps) == sorted(out["map"])
    with Image.open(maps[0]) as im:
        assert im.size == (28, 28) and im.mode == "RGB"


def test_cli_idx_and_bad_images(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, _ = digits
    runner = CliRunner()
    idx = write_idx(tmp_path / "train-images-idx3-ubyte.gz", X[:60])
    model = tmp_path / "ae.safetensors"
    res = runner.invoke(app, ["fit", str(idx), "-o", str(model), "--detector", "ae",
                              "--epochs", "1", "--set", "channels=[4,8]"])
    assert res.exit_code == 0, res.output
    assert "ImageAEDetector" in res.output
    res = runner.invoke(app, ["score", str(model), str(idx), "-o", str(tmp_path / "s.parquet")])
    assert res.exit_code == 0, res.output
    assert len(pd.read_parquet(tmp_path / "s.parquet")) == 60
    np.save(tmp_path / "big.npy", np.zeros((3, 32, 32), np.uint8))
    res = runner.invoke(app, ["score", str(model), str(tmp_path / "big.npy"), "-o",
                              str(tmp_path / "x.csv")])
    assert res.exit_code == 2 and "fitted on 28x28" in res.output
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"garbage")
    res = runner.invoke(app, ["score", str(model), str(bad), "-o", str(tmp_path / "x.csv")])
    assert res.exit_code == 2 and "x.png" in res.output
    assert not (tmp_path / "x.csv").exists()
    # table-only options are refused by name, not silently ignored
    res = runner.invoke(app, ["fit", str(idx), "-o", str(tmp_path / "m2.safetensors"),
                              "--label-column", "y", "--exclude", "a"])
    assert res.exit_code == 2 and "--label-column, --exclude apply to tables" in res.output
    assert not (tmp_path / "m2.safetensors").exists()
    res = runner.invoke(app, ["score", str(model), str(idx), "-o", str(tmp_path / "x.csv"),
                              "--id-column", "id"])
    assert res.exit_code == 2 and "--id-column applies to tables" in res.output
    res = runner.invoke(app, ["evaluate", str(model), str(idx), "--label-column", "y"])
    assert res.exit_code == 2 and "--label-column applies to tables" in res.output
    assert "none: an IDX file holds images only" in res.output
    res = runner.invoke(app, ["evaluate", str(model), str(idx)])  # an IDX file has no labels
    assert res.exit_code == 2 and "holds no labels" in res.output


# -- the benchmark harness --------------------------------------------------------------------
def test_bench_images_tiny(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> None:
    X, y = digits
    keep = y < 3
    for split in ("train", "t10k"):
        write_idx(tmp_path / "toy" / f"{split}-images-idx3-ubyte.gz", X[keep])
        write_idx(tmp_path / "toy" / f"{split}-labels-idx1-ubyte.gz", y[keep].astype(np.uint8))
    res = run_image_benchmark(tmp_path, datasets=["toy"], protocols=("one-class", "multi-class"),
                              detectors=("vae", "ae"), classes=[1], max_train=80, max_test=120,
                              params={"epochs": 2, "channels": (4, 8)}, out_dir=tmp_path / "o",
                              extra_scores=("reconstruction", "elbo"), progress=False)
    r = res.results
    # the VAE's own score (elbo) is not repeated; the extra one shares the VAE's fit
    assert len(r) == 6 and set(r["detector"]) == {"vae", "ae", "vae:reconstruction"}
    for proto in ("one-class", "multi-class"):
        part = r[r["protocol"] == proto].set_index("detector")
        assert part.loc["vae:reconstruction", "fit_s"] == part.loc["vae", "fit_s"]
    assert r["auroc"].between(0, 1).all() and (r["n_train"] == 80).all()
    assert (r["n_test"] == 120).all()
    assert (tmp_path / "o" / "results.csv").is_file()
    assert "toy, one-class" in res.to_markdown()
    cli = CliRunner().invoke(app, ["bench", "images", "--data-dir", str(tmp_path),
                                   "--datasets", "toy", "--detectors", "ae", "--classes", "0",
                                   "--set", "epochs=1", "--set", "channels=[4,8]",
                                   "--max-train", "50", "--max-test", "60",
                                   "--out", str(tmp_path / "cli"), "--no-progress"])
    assert cli.exit_code == 0, cli.output
    assert "mean / total" in cli.output
    assert len(pd.read_csv(tmp_path / "cli" / "results.csv")) == 1
    with pytest.raises(ValueError, match="unknown score 'nope'"):
        run_image_benchmark(tmp_path, datasets=["toy"], extra_scores=("nope",), progress=False)


def test_16_bit_png_folders_scale_by_their_depth(tmp_path: Path) -> None:
    from anovae.images import read_image_folder

    dark = (np.arange(64).reshape(8, 8) * 4).astype(np.uint16)  # every value <= 255
    Image.fromarray(dark).save(tmp_path / "dark.png")
    Image.fromarray((dark * 256).astype(np.uint16)).save(tmp_path / "full.png")
    data = read_image_folder(tmp_path)
    by_name = {Path(n).stem: x for n, x in zip(data.names, data.images, strict=True)}
    assert by_name["dark"].max() <= 1  # 252 / 65535 of full scale, not 252 / 255
    assert by_name["full"].max() == np.round(252 * 256 / 65535 * 255)


def test_map_names_are_distinct() -> None:
    from anovae.images import map_names

    names = ["cat.png", "cat.jpg", "a/b.png", "a__b.png", "dog.png"]
    out = map_names(names)
    assert len(set(out)) == len(out) == 5
    assert out[0] == "cat.png_map.png" and out[1] == "cat.jpg_map.png"
    assert out[4] == "dog_map.png"  # no clash: the extension is dropped


@pytest.mark.parametrize(("param", "value"), [("latent_dim", 0), ("latent_dim", 2.5),
                                              ("latent_dim", -3), ("activation", "foo")])
def test_image_vae_checks_latent_dim_and_activation_up_front(param: str, value: object) -> None:
    X = np.random.default_rng(0).random((20, 28, 28)).astype(np.float32)
    det = ImageVAEDetector(channels=(4, 8), epochs=1, random_state=0, **{param: value})
    with pytest.raises(ValueError, match=param):
        det.fit(X)
    assert not hasattr(det, "net_")


def test_image_vae_takes_channels_as_an_array_and_leaves_python_random_alone() -> None:
    import random

    X = np.random.default_rng(0).random((40, 28, 28)).astype(np.float32)
    random.seed(5)
    state = random.getstate()
    det = ImageVAEDetector(channels=np.array([4, 8]), epochs=1, random_state=0).fit(X)
    assert det.net_config_.channels == (4, 8)
    assert random.getstate() == state  # sklearn's first import of its mixtures draws from it


def test_corrupt_or_odd_numpy_image_files_get_anovae_s_messages(tmp_path: Path) -> None:
    # NumPy's own message for a file without its header offers to unpickle it; and an .npz
    # without an images key was named twice ("cannot read 'a.npz' ...: 'a.npz' holds arrays")
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"garbage, not an array")
    with pytest.raises(DataError, match=r"is not a valid \.npy array") as info:
        read_images(bad)
    assert "pickle" not in str(info.value)
    odd = tmp_path / "keys.npz"
    np.savez(odd, a=np.zeros((2, 8, 8)), b=np.zeros(2))
    with pytest.raises(DataError, match=r"holds arrays \['a', 'b'\]; name the images") as info:
        read_images(odd)
    assert str(info.value).count("keys.npz") == 1


def _corrupt_npz_files(tmp_path: Path) -> dict[str, Path]:
    """Image archives that cannot be read: cut short, a member whose data fails its CRC, and
    members that are no .npy array (raw bytes, a pickle)."""
    import pickle
    import zipfile

    images = np.random.default_rng(0).integers(0, 256, (50, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "good.npz", X=images)
    raw = (tmp_path / "good.npz").read_bytes()
    files = {"cut": tmp_path / "cut.npz", "crc": tmp_path / "crc.npz",
             "raw": tmp_path / "raw.npz", "pickle": tmp_path / "pickle.npz"}
    files["cut"].write_bytes(raw[:3000])  # `head -c 3000 some.npz > cut.npz`
    flipped = bytearray(raw)
    flipped[1000] ^= 0xFF  # inside the stored pixels
    files["crc"].write_bytes(bytes(flipped))
    with zipfile.ZipFile(files["raw"], "w") as zf:
        zf.writestr("X.npy", b"no header")
    with zipfile.ZipFile(files["pickle"], "w") as zf:
        zf.writestr("X.npy", pickle.dumps([1, 2]))  # never unpickled
    return files


def test_corrupt_npz_image_files_are_data_errors(tmp_path: Path) -> None:
    """zipfile.BadZipFile and "'bytes' object has no attribute 'ndim'" were tracebacks."""
    messages = {"cut": r"cut.npz' is not a valid .npz archive: corrupt or cut short",
                "crc": r"crc.npz' is corrupt or cut short: cannot read its array 'X' \(Bad CRC",
                "raw": r"array 'X' of '.*raw.npz' is not a NumPy array: it lacks the .npy header",
                "pickle": r"array 'X' of '.*pickle.npz' is not a NumPy array"}
    for name, path in _corrupt_npz_files(tmp_path).items():
        assert not is_image_source(path), name  # the reader then says what is wrong
        with pytest.raises(DataError, match=messages[name]):
            read_images(path)


def test_cli_fit_and_score_refuse_corrupt_npz_files_in_one_line(
        tmp_path: Path, fitted: ImageVAEDetector) -> None:
    model = fitted.save(tmp_path / "m.safetensors")
    runner = CliRunner()
    for name, path in _corrupt_npz_files(tmp_path).items():
        for args in (["fit", str(path), "-o", str(tmp_path / "new.safetensors"), "--epochs", "1"],
                     ["score", str(model), str(path), "-o", str(tmp_path / "s.csv")]):
            res = runner.invoke(app, args)
            assert res.exit_code == 2, (name, args[0], res.output)
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and path.name in lines[0]
    assert not (tmp_path / "new.safetensors").exists() and not (tmp_path / "s.csv").exists()


def _portrait_jpeg(path: Path, seed: int = 0) -> np.ndarray:
    """A JPEG stored 12 wide x 8 high with EXIF orientation 6 (turn 90 degrees clockwise to
    show it): shown 8 wide x 12 high. Returns the image as shown (H=12, W=8)."""
    stored = np.random.default_rng(seed).integers(0, 40, (8, 12)).astype(np.uint8)
    stored[:, :4] = 255  # the stored left third: the top third once shown
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(path, exif=exif, quality=100)
    return np.asarray(ImageOps.exif_transpose(Image.open(path)))


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    shown = [_portrait_jpeg(folder / f"p{i}.jpg", seed=i) for i in range(2)]
    data = read_images(folder)
    assert data.images.shape == (2, 12, 8)  # as shown: 8 wide, 12 high (stored 12 x 8)
    np.testing.assert_array_equal(data.images[0], shown[0])
    assert data.images[0, :4].mean() > 200 and data.images[0, 8:].mean() < 50


def test_the_service_reads_images_as_files_are_read(tmp_path: Path) -> None:
    import base64

    from anovae.streaming import RecordScorer

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(8):
        _portrait_jpeg(folder / f"p{i}.jpg", seed=i)
    det = ImageAEDetector(epochs=1, random_state=0).fit(read_images(folder).images)
    text = base64.b64encode((folder / "p0.jpg").read_bytes()).decode()
    rows = RecordScorer(det).rows_from_images([text])  # 8 x 12 as shown: not refused
    np.testing.assert_allclose(det.decision_function(rows),
                               det.decision_function(read_images(folder).images[:1]), rtol=1e-6)


def test_files_a_folder_leaves_out_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "coll"
    for sub in ("normal", "anomaly", "anomaly/deep"):
        (folder / sub).mkdir(parents=True)
    img = Image.fromarray(np.zeros((8, 8), np.uint8))
    img.save(folder / "normal" / "a.png")
    img.save(folder / "anomaly" / "b.png")
    img.save(folder / "anomaly" / "deep" / "c.png")
    img.save(folder / "normal" / "d.bmp")
    (folder / "labels.csv").write_text("file,label\n")
    with pytest.warns(UserWarning) as rec:
        data = read_images(folder)
    assert data.names == ["anomaly/b.png", "normal/a.png"]
    text = " ".join(str(w.message) for w in rec)
    assert "1 image in" in text and "'normal/d.bmp'" in text and "not PNG or JPEG" in text
    assert "labels.csv" not in text  # other files are no images: left out without a word
    assert "1 image in" in text and "'anomaly/deep/c.png'" in text and "deeper than one" in text


def test_npy_output_of_image_scores(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (40, 8, 8)).astype(np.uint8)
    np.save(tmp_path / "imgs.npy", arr)
    runner = CliRunner()
    model = str(tmp_path / "m.safetensors")
    res = runner.invoke(app, ["fit", str(tmp_path / "imgs.npy"), "-o", model, "--epochs", "1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["score", model, str(tmp_path / "imgs.npy"), "-o",
                              str(tmp_path / "s.npy")])
    assert res.exit_code == 0, res.output  # it said ".npy output holds numbers only"
    out = np.load(tmp_path / "s.npy")
    assert out.shape == (40, 3) and out[:, 0].tolist() == list(range(40))  # image row numbers
    res = runner.invoke(app, ["score", model, str(tmp_path / "imgs.npy"), "-o",
                              str(tmp_path / "s.parquet")])
    assert pd.read_parquet(tmp_path / "s.parquet")["image"].dtype.kind == "i"
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(arr[i]).save(folder / f"{i}.png")
    res = runner.invoke(app, ["score", model, str(folder), "-o", str(tmp_path / "f.npy")])
    assert res.exit_code == 2 and "these images carry file names" in res.output, res.output


def test_api_mistakes_get_messages_that_say_what_to_pass(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (8, 8)).astype(np.uint8)).save(folder / f"{i}.png")
    data = read_images(folder)
    det = ImageAEDetector(epochs=1, random_state=0).fit(data.images)
    with pytest.raises(DataError, match=r"what read_images returns: pass its \.images"):
        det.decision_function(data)
    with pytest.raises(DataError, match=r"is a path .*read_images\(path\)\.images"):
        det.decision_function(str(folder))


def test_evaluate_reads_an_image_folder_s_classes(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    rng = np.random.default_rng(0)
    root = tmp_path / "test"
    for cls, level in (("normal", 30), ("anomaly", 220)):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            pixels = np.clip(rng.normal(level, 10, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    train = np.clip(rng.normal(30, 10, (40, 8, 8)), 0, 255).astype(np.uint8)
    np.save(tmp_path / "train.npy", train)
    runner = CliRunner()
    model = str(tmp_path / "m.safetensors")
    assert runner.invoke(app, ["fit", str(tmp_path / "train.npy"), "-o", model, "--detector",
                               "ae", "--epochs", "3", "--seed", "0"]).exit_code == 0
    res = runner.invoke(app, ["evaluate", model, str(root), "--json"])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.stdout)
    assert metrics["n"] == 12 and metrics["n_anomalies"] == 6 and metrics["auroc"] > 0.9
    res = runner.invoke(app, ["evaluate", model, str(root / "normal")])  # a flat folder
    assert res.exit_code == 2 and "holds no labels" in res.output, res.output


def test_a_wrong_size_png_is_refused_from_its_header(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The size check comes before the pixels are decoded (a decompression bomb's guard): a
    PNG's EXIF block, which Pillow finds only by decoding, is not looked for."""
    import base64
    import io as _io

    from PIL import ImageFile

    from anovae.streaming import RecordScorer

    rng = np.random.default_rng(0)
    det = ImageAEDetector(epochs=1, random_state=0).fit(
        rng.integers(0, 255, (20, 8, 8)).astype(np.uint8))
    big = _io.BytesIO()
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(big, format="PNG")
    text = base64.b64encode(big.getvalue()).decode()
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "x.png").write_bytes(big.getvalue())

    loads: list[object] = []
    load = ImageFile.ImageFile.load

    def counted(self: object) -> object:
        loads.append(self)
        return load(self)  # type: ignore[arg-type]

    monkeypatch.setattr(ImageFile.ImageFile, "load", counted)
    with pytest.raises(DataError, match="image 0 is 64x64 pixels"):
        RecordScorer(det).rows_from_images([text])
    with pytest.raises(DataError, match="is 64x64"):
        read_images(folder, schema=det.schema_)
    assert loads == []  # refused before any pixel was decoded
