"""Shared fixtures: small seeded tables with planted anomalies and tiny fitted detectors.

Everything here is small on purpose (a few hundred rows, a few features, a few epochs): the whole
suite runs on two CPU cores in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import settings

from anovae import AEDetector, VAEDetector
from anovae.scores import SCORES

# Property tests: seeded (reproducible offline) and few examples, no per-example deadline on
# the shared CPUs.
settings.register_profile("anovae", max_examples=30, deadline=None, derandomize=True)
settings.load_profile("anovae")

#: Small networks and few epochs: fast, and still enough to separate the planted anomalies.
TINY: dict[str, Any] = {
    "hidden_dims": (16, 8),
    "latent_dim": 2,
    "epochs": 3,
    "batch_size": 64,
    "device": "cpu",
    "random_state": 0,
}


@dataclass(frozen=True)
class Data:
    """``X_train``: normal rows only; ``X_test`` / ``y_test``: normal rows and planted anomalies
    (``y = 1``); ``columns``: names for DataFrame versions."""

    X_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    columns: tuple[str, ...]

    def frame(self, X: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame(X, columns=list(self.columns))


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header declares ``width x height`` pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data)))

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))


def make_data(n_train: int = 240, n_test: int = 120, n_anomalies: int = 12, d: int = 5,
              seed: int = 0) -> Data:
    """Correlated Gaussian rows (rank-2 structure plus noise); anomalies are rows shifted by 5
    standard deviations along a random direction and so break the structure."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(2, d))

    def normal(n: int) -> np.ndarray:
        return rng.normal(size=(n, 2)) @ mix + 0.3 * rng.normal(size=(n, d))

    X_test = normal(n_test)
    direction = rng.normal(size=(n_anomalies, d))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    X_test[:n_anomalies] += 5.0 * X_test.std(axis=0) * direction
    y_test = np.zeros(n_test, dtype=int)
    y_test[:n_anomalies] = 1
    return Data(normal(n_train), X_test, y_test, tuple(f"f{i}" for i in range(d)))


@pytest.fixture(scope="session")
def data() -> Data:
    return make_data()


@pytest.fixture(scope="session")
def make_detector() -> Callable[..., Any]:
    """``make_detector(cls, **overrides)``: an unfitted detector with the tiny settings."""

    def make(cls: type, **overrides: Any) -> Any:
        params = dict(TINY)
        if cls is VAEDetector:
            params["n_samples"] = 4
        params.update(overrides)
        return cls(**params)

    return make


@pytest.fixture(scope="session")
def fitted_vaes(data: Data, make_detector: Callable[..., Any]) -> dict[str, VAEDetector]:
    """One tiny fitted VAEDetector per score type (tests must not mutate them)."""
    return {s: make_detector(VAEDetector, score_type=s).fit(data.X_train) for s in SCORES}


@pytest.fixture(scope="session")
def fitted_vae(fitted_vaes: dict[str, VAEDetector]) -> VAEDetector:
    """The default (ELBO-scored) tiny VAEDetector, fitted on normal rows."""
    return fitted_vaes["elbo"]


@pytest.fixture(scope="session")
def fitted_ae(data: Data, make_detector: Callable[..., Any]) -> AEDetector:
    return make_detector(AEDetector).fit(data.X_train)


@pytest.fixture(scope="session")
def fitted_vae_frame(data: Data, make_detector: Callable[..., Any]) -> VAEDetector:
    """A tiny VAEDetector fitted on a DataFrame (it knows its column names)."""
    return make_detector(VAEDetector).fit(data.frame(data.X_train))


@pytest.fixture(params=list(SCORES))
def score_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=["ae", *SCORES])
def any_fitted(request: pytest.FixtureRequest, fitted_vaes: dict[str, VAEDetector],
               fitted_ae: AEDetector) -> Any:
    """Every fitted model kind: the AE, and the VAE with each of its score types."""
    return fitted_ae if request.param == "ae" else fitted_vaes[request.param]
