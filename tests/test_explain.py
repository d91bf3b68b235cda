"""``explain``: the top-k features of each row, consistent with ``feature_scores`` and
``reconstruct``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from anovae import VAEDetector

COLUMNS = ["row", "rank", "feature", "value", "expected", "contribution", "excess"]


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
    # the k largest excesses over each feature's typical contribution (its median over training
    # rows), in decreasing order
    excess = contrib - any_fitted.feature_baselines_[any_fitted.score_name]  # (7, D)
    assert np.array_equal(table["excess"].to_numpy().reshape(7, k), excess[rows, j])
    assert np.array_equal(table["excess"].to_numpy().reshape(7, k),
                          -np.sort(-excess, axis=1)[:, :k])


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


def test_each_score_ranks_against_its_own_baseline(make_detector, data):
    from anovae.scores import feature_baseline

    det = make_detector(VAEDetector).fit(data.X_train)
    X = data.X_test[:6]
    for score in ("elbo", "iwae", "reconstruction_probability", "reconstruction"):
        det.set_params(score_type=score)
        contrib = det.feature_scores(X)
        excess = contrib - det.feature_baselines_[score]
        table = det.explain(X, k=5)
        np.testing.assert_array_equal(table["excess"].to_numpy().reshape(6, 5),
                                      -np.sort(-excess, axis=1))
    # the baseline: the median per-feature score of the training rows (all of them: n < 2,048)
    np.testing.assert_allclose(det.feature_baselines_["reconstruction"],
                               feature_baseline(det.feature_scores(data.X_train)), rtol=1e-6)


def test_a_precise_column_is_named_over_naturally_noisy_ones():
    # three copies of one factor (predictable to 0.1) and two independent noise columns: the
    # copies cost ~0.1 nats in a typical row, the noise ~1.8; a copy broken by 5 of its noise
    # sd costs less than a typical noise cell, so ranking raw contributions blames the noise
    rng = np.random.default_rng(0)

    def draw(n):
        a = rng.normal(size=n)
        return np.column_stack([a, a + 0.1 * rng.normal(size=n), a - 0.1 * rng.normal(size=n),
                                rng.normal(size=n), rng.normal(size=n)])

    det = VAEDetector(random_state=0, device="cpu").fit(draw(1500))
    broken = draw(200)
    broken[:, 1] += 0.5
    raw = det.feature_scores(broken).argmax(1)
    top = det.explain(broken, k=1)["feature"]
    assert (top == "x1").mean() >= 0.6 > 0.3 >= (raw == 1).mean()


def test_one_wild_training_cell_does_not_spoil_the_explanations():
    # unlabelled training rows are only mostly normal: a cell of 1e8 costs ~1e13 nats, which a
    # mean would carry into its column's typical contribution (and every excess of the others)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 5))
    X[7, 3] = 1e8
    det = VAEDetector(random_state=0, device="cpu").fit(X)
    base = det.feature_baselines_["elbo"]
    assert np.abs(base).max() < 10, base
    rows = np.zeros((3, 5))
    rows[0, 0], rows[1, 4], rows[2, 1] = 8.0, 8.0, 8.0
    assert det.explain(rows, k=1)["feature"].tolist() == ["x0", "x4", "x1"]


def test_baselines_come_from_the_normal_training_rows(make_detector, data):
    X = np.vstack([data.X_train, np.full((20, data.X_train.shape[1]), 50.0)])
    y = np.r_[np.zeros(len(data.X_train), dtype=int), np.ones(20, dtype=int)]
    with_labels = make_detector(VAEDetector).fit(X, y)
    normal_only = make_detector(VAEDetector).fit(data.X_train)
    for score, base in normal_only.feature_baselines_.items():
        np.testing.assert_allclose(with_labels.feature_baselines_[score], base, rtol=1e-6)


def test_images_have_no_baselines():
    from anovae import ImageVAEDetector

    rng = np.random.default_rng(0)
    imgs = rng.random((64, 1, 28, 28)).astype(np.float32)
    det = ImageVAEDetector(epochs=1, random_state=0, device="cpu").fit(imgs)
    assert not hasattr(det, "feature_baselines_")
    table = det.explain(imgs[:2], k=3)
    assert table["excess"].isna().all()
    top = -np.sort(-det.feature_scores(imgs[:2]).reshape(2, -1), axis=1)[:, :3]
    np.testing.assert_array_equal(table["contribution"].to_numpy().reshape(2, 3), top)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_explain_rejects_bad_k(fitted_vae, data, k):
    with pytest.raises(ValueError, match="k must be"):
        fitted_vae.explain(data.X_test[:2], k=k)


def test_boolean_values_and_expectations_read_alike() -> None:
    # a CSV's true/false column with gaps is read as text: observed 'false', expected False
    import io

    from anovae.scoring import score_frame

    rng = np.random.default_rng(0)
    n = 300
    raw = pd.DataFrame({"amount": rng.normal(size=n), "city": rng.choice(["a", "b"], n),
                        "flag": rng.choice(["true", "false", ""], n)})
    df = pd.read_csv(io.StringIO(raw.to_csv(index=False)))
    det = VAEDetector(epochs=2, random_state=0, device="cpu").fit(df)
    assert det.schema_.kinds[2] == "boolean"
    out = score_frame(det, df.head(20), top_k=3, explain=True)
    for i in (1, 2, 3):
        flag = out[f"top_feature_{i}"] == "flag"
        seen = out.loc[flag, f"top_value_{i}"].dropna()
        assert {type(v) for v in seen} <= {bool} and len(seen)
        assert {type(v) for v in out.loc[flag, f"top_expected_{i}"]} <= {bool}
