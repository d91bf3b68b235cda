"""The ``logvar_floor`` parameter of :class:`VAEDetector`: the soft lower bound of the decoder's
learned log-variance, for numeric tables and the numeric columns of mixed tables, and how it is
saved (docs/benchmarks.md, "Mixed tables: NSL-KDD", for what it does to detection)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from anovae import VAEDetector, load
from anovae.nets.blocks import LOGVAR_MIN
from anovae.nets.mixed import MixedConfig
from anovae.nets.mlp import MLPConfig
from anovae.persistence import read_metadata


def test_parameter_is_a_plain_sklearn_parameter() -> None:
    det = VAEDetector(logvar_floor=0.0)
    assert det.get_params()["logvar_floor"] == 0.0
    assert clone(det).logvar_floor == 0.0
    assert VAEDetector().logvar_floor == LOGVAR_MIN == -3.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "high", 50.0, True])
def test_invalid_floor_is_refused_by_name(bad: Any) -> None:
    X = np.random.default_rng(0).normal(size=(50, 3))
    with pytest.raises(ValueError, match="logvar_floor"):
        VAEDetector(logvar_floor=bad, epochs=1).fit(X)


def _decoder_logvar(det: VAEDetector, X: Any) -> torch.Tensor:
    x = torch.from_numpy(det.scaler_.transform(det._checked(X)))
    with torch.no_grad():
        mu, _ = det.net_.encode(x)
        loc, logvar = det.net_.decode(mu)
        if logvar is None:  # the mixed network packs its log-variances into loc
            logvar = det.net_._split(loc)[1]
    return logvar


def test_floor_bounds_the_learned_variances_and_caps_one_odd_feature(
        data: Any, make_detector: Callable[..., Any]) -> None:
    coarse = make_detector(VAEDetector, logvar_floor=0.0).fit(data.X_train)
    fine = make_detector(VAEDetector).fit(data.X_train)
    assert coarse.net_config_.logvar_floor == 0.0 and fine.net_config_.logvar_floor == -3.0
    assert float(_decoder_logvar(coarse, data.X_test).min()) > 0.0
    assert float(_decoder_logvar(fine, data.X_test).min()) < 0.0  # below the coarse floor
    far_below = torch.full((1, 2 * data.X_train.shape[1]), -50.0)  # (means, raw log-variances)
    torch.testing.assert_close(coarse.net_._likelihood_params(far_below, dim=-1)[1],
                               torch.zeros(1, data.X_train.shape[1]))
    # one feature 8 spreads off: its term grows with the square of its deviation over the
    # predicted spread, so the coarse noise model charges it less than the fine one
    odd = data.X_train[:20].copy()
    odd[:, 0] += 8.0 * data.X_train[:, 0].std()
    assert (coarse.feature_scores(odd)[:, 0] < fine.feature_scores(odd)[:, 0]).all()
    per_feature = make_detector(VAEDetector, variance="per_feature", logvar_floor=1.0)
    assert float(_decoder_logvar(per_feature.fit(data.X_train), data.X_test).min()) > 1.0


def test_mixed_tables_floor_their_numeric_columns() -> None:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=300), "c": rng.choice(["x", "y"], 300)})
    det = VAEDetector(logvar_floor=-0.5, epochs=3, random_state=0, device="cpu").fit(df)
    assert isinstance(det.net_config_, MixedConfig) and det.net_config_.logvar_floor == -0.5
    assert float(_decoder_logvar(det, df).min()) > -0.5
    # the floor is what bounds them: a decoder output far below it lands on it
    loc = torch.full((2, det.net_.n_params), -50.0)
    torch.testing.assert_close(det.net_._split(loc)[1], torch.full((2, 1), -0.5))
    other = VAEDetector(epochs=1, random_state=0, device="cpu").fit(df)
    torch.testing.assert_close(other.net_._split(loc)[1], torch.full((2, 1), LOGVAR_MIN))


def test_configs_keep_the_old_document_at_the_default_floor() -> None:
    mlp = MLPConfig(n_features=3)
    assert "logvar_floor" not in mlp.to_dict()  # what anovae 0.2 reads
    assert MLPConfig.from_dict(mlp.to_dict()) == mlp
    moved = MLPConfig(n_features=3, logvar_floor=0.5)
    assert MLPConfig.from_dict(json.loads(json.dumps(moved.to_dict()))) == moved
    mixed = MixedConfig(kinds=("numeric",), cardinalities=(0,), n_observed=(5,), logvar_floor=0)
    assert MixedConfig.from_dict(mixed.to_dict()).logvar_floor == 0.0
    assert "logvar_floor" not in MixedConfig(kinds=("numeric",), cardinalities=(0,),
                                             n_observed=(5,)).to_dict()


def test_saved_floor_round_trips_in_format_4_and_the_default_stays_format_1(
        data: Any, make_detector: Callable[..., Any], fitted_vae: VAEDetector,
        tmp_path: Path) -> None:
    coarse = make_detector(VAEDetector, logvar_floor=0.0).fit(data.X_train)
    path = coarse.save(tmp_path / "coarse.safetensors")
    meta = read_metadata(path)
    assert meta["format_version"] == 4 and meta["params"]["logvar_floor"] == 0.0
    back = load(path)
    assert back.logvar_floor == 0.0 and back.net_config_ == coarse.net_config_
    np.testing.assert_array_equal(back.decision_function(data.X_test),
                                  coarse.decision_function(data.X_test))
    plain = read_metadata(fitted_vae.save(tmp_path / "plain.safetensors"))
    assert plain["format_version"] == 1  # readable by anovae before the parameter
    assert "logvar_floor" not in plain["params"] and "logvar_floor" not in plain["net"]
    assert load(tmp_path / "plain.safetensors").logvar_floor == LOGVAR_MIN
