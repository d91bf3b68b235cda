"""``explain``: the top-k features of each row, consistent with ``feature_scores`` and
``reconstruct``."""

from __future__ import annotations

import numpy as np
import pytest

COLUMNS = ["row", "rank", "feature", "value", "expected", "contribution"]


def test_explain_matches_feature_scores_and_reconstruction(any_fitted, data):
    X = data.X_test[:7]
    k = 3
    table = any_fitted.explain(X, k=k)
    assert table.columns.tolist() == COLUMNS
    assert len(table) == 7 * k
    assert table["row"].tolist() == np.repeat(np.arange(7), k).tolist()
    assert table["rank"].tolist() == [1, 2, 3] * 7
    contrib = any_fitted.feature_scores(X)
    recon = any_fitted.reconstruct(X)
    j = table["feature"].str[1:].astype(int).to_numpy().reshape(7, k)  # "x3" -> 3
    rows = np.arange(7)[:, None]
    assert np.array_equal(table["contribution"].to_numpy().reshape(7, k), contrib[rows, j])
    assert np.array_equal(table["value"].to_numpy().reshape(7, k), X[rows, j])
    assert np.allclose(table["expected"].to_numpy().reshape(7, k), recon[rows, j])
    # the k largest contributions, in decreasing order
    top = -np.sort(-contrib, axis=1)[:, :k]
    assert np.array_equal(table["contribution"].to_numpy().reshape(7, k), top)


def test_explain_all_features_sum_to_the_score(fitted_vae, data):
    X = data.X_test[:5]
    table = fitted_vae.explain(X, k=100)  # more than the 5 features: all of them
    assert len(table) == 25
    sums = table.groupby("row")["contribution"].sum().to_numpy()
    assert np.allclose(sums, fitted_vae.decision_function(X), rtol=1e-5, atol=1e-5)


def test_explain_uses_column_names_and_the_index(fitted_vae_frame, data):
    frame = data.frame(data.X_test[:4]).set_axis([10, 11, 12, 13])
    frame = frame[list(reversed(frame.columns))]  # column order does not matter
    table = fitted_vae_frame.explain(frame, k=2)
    assert table["row"].tolist() == [10, 10, 11, 11, 12, 12, 13, 13]
    assert set(table["feature"]) <= set(data.columns)
    first = table.iloc[0]
    assert first["value"] == frame.loc[10, first["feature"]]


def test_explain_points_at_the_planted_feature(fitted_vae, data):
    x = np.zeros((1, 5))
    x[0, 3] = 25.0
    assert fitted_vae.explain(x, k=1)["feature"].tolist() == ["x3"]


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_explain_rejects_bad_k(fitted_vae, data, k):
    with pytest.raises(ValueError, match="k must be"):
        fitted_vae.explain(data.X_test[:2], k=k)
