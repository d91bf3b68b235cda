"""The estimator contract every anovae detector keeps: scikit-learn's API, PyOD's conventions,
determinism, batch invariance and a quality floor on small synthetic data."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted

import anovae
from anovae import AEDetector, TrainingError, VAEDetector
from anovae.detectors.vae import PRESETS

DETECTORS = [VAEDetector, AEDetector]


# -- scikit-learn: parameters ---------------------------------------------------------------------
@pytest.mark.parametrize("cls", DETECTORS)
def test_clone_and_params_round_trip(cls, make_detector):
    det = make_detector(cls, contamination=0.05, learning_rate=3e-3)
    params = det.get_params()
    twin = clone(det)
    assert twin is not det
    assert twin.get_params() == params
    assert det.set_params(batch_size=32, epochs=2) is det
    assert det.get_params() == {**params, "batch_size": 32, "epochs": 2}
    fresh = cls(**params)
    assert fresh.get_params() == params


@pytest.mark.parametrize("cls", DETECTORS)
def test_init_stores_params_unchanged_without_validation(cls):
    hidden = [7, "x"]  # nonsense on purpose: __init__ must neither validate nor copy it
    det = cls(hidden_dims=hidden, latent_dim=-3, contamination=5.0, batch_size=0,
              scaler="nope", device=42)
    params = det.get_params()
    assert params["hidden_dims"] is hidden
    assert (params["latent_dim"], params["contamination"], params["batch_size"]) == (-3, 5.0, 0)
    assert (params["scaler"], params["device"]) == ("nope", 42)
    assert not [k for k in vars(det) if k.endswith("_")]


_COMMON_BAD = [
    ("contamination", 0.0), ("contamination", 0.7), ("contamination", "auto"),
    ("epochs", 0), ("epochs", 2.5), ("batch_size", 0), ("learning_rate", 0.0),
    ("learning_rate", -1e-3), ("weight_decay", -1.0), ("validation_fraction", 0.9),
    ("patience", -1), ("clip_grad_norm", -1.0), ("scaler", "zscore"), ("random_state", -1),
    ("random_state", "seed"), ("device", 3), ("device", "banana"), ("latent_dim", 0),
    ("hidden_dims", (16, 0)), ("hidden_dims", "16,8"), ("dropout", 1.5), ("activation", "swish"),
    # NaN passes every bound check (all comparisons are false); inf is never a setting.
    ("contamination", float("nan")), ("learning_rate", float("nan")),
    ("learning_rate", float("inf")), ("weight_decay", float("nan")),
    ("validation_fraction", float("nan")), ("clip_grad_norm", float("nan")),
    ("clip_grad_norm", float("inf")), ("dropout", float("nan")),
]
_VAE_BAD = [
    ("likelihood", "poisson"), ("variance", "learned"), ("score_type", "mahalanobis"),
    ("n_samples", 0), ("beta", -1.0), ("warmup_epochs", -1), ("free_bits", -0.5),
    ("beta", float("nan")), ("beta", float("inf")), ("free_bits", float("nan")),
]
_BAD_PARAMS = ([(c, p, v) for c in DETECTORS for p, v in _COMMON_BAD]
               + [(VAEDetector, p, v) for p, v in _VAE_BAD])


@pytest.mark.parametrize(("cls", "param", "value"), _BAD_PARAMS,
                         ids=[f"{c.__name__}-{p}={v!r}" for c, p, v in _BAD_PARAMS])
def test_bad_params_raise_clear_value_error_in_fit(cls, param, value, data, make_detector):
    det = make_detector(cls, **{param: value})  # construction never fails
    with pytest.raises(ValueError, match=param) as info:
        det.fit(data.X_train[:20])
    assert not type(info.value).__module__.startswith("torch")
    assert not hasattr(det, "net_")


# -- scikit-learn: fitting and fitted state -------------------------------------------------------
@pytest.mark.parametrize("cls", DETECTORS)
def test_fit_returns_self_and_sets_underscore_attributes(cls, data, make_detector):
    det = make_detector(cls)
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(det)
    assert det.fit(data.X_train) is det
    check_is_fitted(det)
    for attr in ("decision_scores_", "threshold_", "labels_", "n_features_in_"):
        assert hasattr(det, attr), attr
    assert det.n_features_in_ == data.X_train.shape[1]
    assert det.decision_scores_.shape == (data.X_train.shape[0],)
    assert det.decision_scores_.dtype == np.float64
    assert not hasattr(det, "feature_names_in_")  # fitted on an array
    new = set(vars(det)) - set(det.get_params())
    assert all(k.endswith("_") for k in new), sorted(k for k in new if not k.endswith("_"))


def test_dataframe_fit_sets_feature_names_and_array_refit_clears_them(data, make_detector):
    det = make_detector(AEDetector).fit(data.frame(data.X_train))
    assert list(det.feature_names_in_) == list(data.columns)
    det.fit(data.X_train)
    assert not hasattr(det, "feature_names_in_")
    # a frame given to a model fitted without names: taken by position, with scikit-learn's
    # warning (nothing can check that its columns are the fitted ones)
    with pytest.warns(UserWarning, match="fitted on an array without names: its columns are "
                                         "taken by position"):
        by_frame = det.decision_function(data.frame(data.X_test))
    np.testing.assert_array_equal(by_frame, det.decision_function(data.X_test))


@pytest.mark.parametrize("cls", DETECTORS)
def test_methods_refuse_an_unfitted_detector(cls, data, tmp_path):
    det = cls()
    X = data.X_test[:3]
    calls = [lambda: det.decision_function(X), lambda: det.predict(X),
             lambda: det.predict_proba(X), lambda: det.feature_scores(X),
             lambda: det.score_samples(X), lambda: det.transform(X),
             lambda: det.reconstruct(X), lambda: det.sample(2),
             lambda: det.save(tmp_path / "m.safetensors")]
    for call in calls:
        with pytest.raises(anovae.NotFittedError, match="not fitted|fit"):
            call()


# -- PyOD conventions -----------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["vae", "ae"])
def test_pyod_threshold_labels_and_predict(which, data, fitted_vae, fitted_ae):
    det = fitted_vae if which == "vae" else fitted_ae
    s = det.decision_scores_
    assert det.threshold_ == np.percentile(s, 100 * (1 - det.contamination))
    np.testing.assert_array_equal(det.labels_, (s > det.threshold_).astype(int))
    assert abs(det.labels_.mean() - det.contamination) <= 2 / len(s)
    np.testing.assert_array_equal(det.decision_function(data.X_train), s)
    scores = det.decision_function(data.X_test)
    pred = det.predict(data.X_test)
    assert set(np.unique(pred).tolist()) <= {0, 1}
    np.testing.assert_array_equal(pred, (scores > det.threshold_).astype(int))
    np.testing.assert_array_equal(det.score_samples(data.X_test), -scores)


@pytest.mark.parametrize("method", ["linear", "unify"])
@pytest.mark.parametrize("which", ["vae", "ae"])
def test_predict_proba(which, method, data, fitted_vae, fitted_ae):
    det = fitted_vae if which == "vae" else fitted_ae
    X = np.vstack([data.X_test, data.X_test[:3] * 50.0])  # include rows far beyond training
    proba = det.predict_proba(X, method=method)
    assert proba.shape == (X.shape[0], 2)
    assert np.all((proba >= 0.0) & (proba <= 1.0))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    scores = det.decision_function(X)
    order = np.argsort(scores, kind="stable")
    assert np.all(np.diff(proba[order, 1]) >= -1e-12)  # monotone in the score
    assert np.all(proba[-3:, 1] == 1.0)


def test_predict_proba_unknown_method(fitted_vae, data):
    with pytest.raises(ValueError, match="method"):
        fitted_vae.predict_proba(data.X_test, method="softmax")


# -- determinism ----------------------------------------------------------------------------------
def test_scoring_is_deterministic(any_fitted, data):
    a = any_fitted.decision_function(data.X_test)
    b = any_fitted.decision_function(data.X_test)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(any_fitted.feature_scores(data.X_test),
                                  any_fitted.feature_scores(data.X_test))


@pytest.mark.parametrize("cls", DETECTORS)
def test_same_random_state_same_model(cls, data, make_detector):
    kw = {"dropout": 0.1, "validation_fraction": 0.2}
    a = make_detector(cls, **kw).fit(data.X_train)
    b = make_detector(cls, **kw).fit(data.X_train)
    np.testing.assert_array_equal(a.decision_scores_, b.decision_scores_)
    np.testing.assert_array_equal(a.decision_function(data.X_test),
                                  b.decision_function(data.X_test))
    c = make_detector(cls, random_state=1, **kw).fit(data.X_train)
    assert not np.array_equal(a.decision_scores_, c.decision_scores_)


@pytest.mark.parametrize("random_state", [0, None])
@pytest.mark.parametrize("cls", DETECTORS)
def test_fit_leaves_global_random_state_alone(cls, random_state, data, make_detector):
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()  # noqa: NPY002 (the legacy global state is the point)
    py_state = random.getstate()
    det = make_detector(cls, random_state=random_state, dropout=0.2, epochs=2)
    det.fit(data.X_train[:64]).decision_function(data.X_test[:5])
    assert torch.equal(torch.get_rng_state(), torch_state)
    after = np.random.get_state()  # noqa: NPY002
    assert after[0] == np_state[0] and np.array_equal(after[1], np_state[1])
    assert after[2:] == np_state[2:]
    assert random.getstate() == py_state


@pytest.mark.parametrize("grad_off", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("cls", DETECTORS)
def test_fit_trains_under_the_callers_no_grad(cls, grad_off, data, make_detector):
    # a pipeline wrapped in no_grad / inference_mode failed deep in autograd ("element 0 of
    # tensors does not require grad"); the fit turns gradients on for itself, and only there
    plain = make_detector(cls, epochs=2).fit(data.X_train[:64])
    with grad_off():
        det = make_detector(cls, epochs=2).fit(data.X_train[:64])
        assert not torch.is_grad_enabled()
    np.testing.assert_array_equal(det.decision_scores_, plain.decision_scores_)


def test_batch_invariance(any_fitted, data):
    X = data.X_test[:16]
    together = any_fitted.decision_function(X)
    one_by_one = np.concatenate([any_fitted.decision_function(X[i:i + 1])
                                 for i in range(len(X))])
    np.testing.assert_allclose(one_by_one, together, rtol=1e-5, atol=1e-5)
    perm = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_allclose(any_fitted.decision_function(X[perm]), together[perm],
                               rtol=1e-5, atol=1e-5)


# -- quality floor --------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", DETECTORS)
def test_quality_floor_auroc(cls, data):
    det = cls(epochs=40, batch_size=64, device="cpu", random_state=0).fit(data.X_train)
    auroc = roc_auc_score(data.y_test, det.decision_function(data.X_test))
    assert auroc > 0.9, auroc


# -- per-feature scores ---------------------------------------------------------------------------
def test_feature_scores_sum_to_decision_function(any_fitted, data):
    scores = any_fitted.decision_function(data.X_test)
    feats = any_fitted.feature_scores(data.X_test)
    assert feats.shape == data.X_test.shape
    assert np.all(np.isfinite(feats))
    np.testing.assert_allclose(feats.sum(axis=1), scores, rtol=1e-5, atol=1e-4)
    both_scores, both_feats = any_fitted.score_with_feature_scores(data.X_test)
    np.testing.assert_array_equal(both_scores, scores)
    np.testing.assert_array_equal(both_feats, feats)


# -- other outputs --------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["vae", "ae"])
def test_transform_reconstruct_sample_shapes(which, data, fitted_vae, fitted_ae):
    det = fitted_vae if which == "vae" else fitted_ae
    n, d = data.X_test.shape
    z = det.transform(data.X_test)
    assert z.shape == (n, det.net_config_.latent_dim) and np.all(np.isfinite(z))
    rec = det.reconstruct(data.X_test)
    assert rec.shape == (n, d) and np.all(np.isfinite(rec))
    drawn = det.sample(7, random_state=3)
    assert drawn.shape == (7, d) and np.all(np.isfinite(drawn))
    np.testing.assert_array_equal(drawn, det.sample(7, random_state=3))
    with pytest.raises(ValueError, match="n must be"):
        det.sample(0)


@pytest.mark.parametrize("n", [2, 3, 10])
@pytest.mark.parametrize("cls", DETECTORS)
def test_tiny_training_sets(cls, n, data, make_detector):
    X = data.X_train[:n]
    det = make_detector(cls, batch_size=256).fit(X)  # n < batch_size
    assert det.decision_scores_.shape == (n,)
    assert np.all(np.isfinite(det.decision_function(data.X_test[:4])))
    assert set(np.unique(det.predict(X)).tolist()) <= {0, 1}
    assert det.n_features_in_ == X.shape[1]


def test_tiny_dataframe(data, make_detector):
    det = make_detector(VAEDetector).fit(data.frame(data.X_train[:2]))
    assert det.decision_function(data.frame(data.X_test[:3])).shape == (3,)


# -- presets --------------------------------------------------------------------------------------
def test_tutorial_preset(data):
    det = VAEDetector.from_preset("tutorial-mlp", epochs=2, device="cpu", random_state=0)
    assert isinstance(det, VAEDetector)
    assert det.hidden_dims == (32, 16)
    assert det.latent_dim == 10
    assert det.likelihood == "bernoulli"
    det.fit(data.X_train)
    assert det.net_config_.hidden_dims == (32, 16)
    assert det.net_config_.latent_dim == 10
    assert det.net_config_.likelihood == "bernoulli"
    assert np.all(np.isfinite(det.decision_function(data.X_test)))
    assert PRESETS["tutorial-mlp"]["hidden_dims"] == (32, 16)  # the preset itself is untouched


def test_bernoulli_models_flag_values_far_outside_the_training_range():
    # the tutorial preset (min-max scaling, Bernoulli likelihood): a value 10 spreads below the
    # training data used to be clipped to the range's bound and scored below the median normal
    # row, its explanation blaming another column
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 4))
    det = VAEDetector.from_preset("tutorial-mlp", epochs=5, device="cpu", random_state=0).fit(X)
    probe = np.zeros((3, 4))
    probe[:, 0] = [-10.0, 10.0, -100.0]
    scores = det.decision_function(probe)
    assert np.all(scores > det.decision_scores_.max())
    assert scores[2] > scores[0]  # farther out, higher
    assert (det.feature_scores(probe).argmax(1) == 0).all()
    with pytest.warns(UserWarning, match=r"likelihood='bernoulli' models values in \[0, 1\].*"
                                         r"scaler='robust'"):
        VAEDetector(likelihood="bernoulli", epochs=1, device="cpu", random_state=0).fit(X)


def test_preset_keywords_override():
    det = VAEDetector.from_preset("tutorial-mlp", latent_dim=4)
    assert det.latent_dim == 4 and det.likelihood == "bernoulli"


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'nope'.*tutorial-mlp"):
        VAEDetector.from_preset("nope")


# -- selected scikit-learn estimator checks -------------------------------------------------------
# The full check_estimator suite does not apply: like PyOD, predict returns 0/1 (not -1/1) and a
# given y selects the normal rows to train on (so it must be 0/1). These checks do apply.
_SKLEARN_CHECKS = [
    "check_estimator_cloneable", "check_estimator_repr", "check_no_attributes_set_in_init",
    "check_parameters_default_constructible", "check_get_params_invariance",
    "check_set_params", "check_do_not_raise_errors_in_init_or_set_params",
    "check_estimators_unfitted", "check_mixin_order", "check_estimators_nan_inf",
    "check_fit_check_is_fitted", "check_n_features_in", "check_fit1d",
    "check_fit_idempotent", "check_outlier_contamination",
]


@pytest.mark.parametrize("check_name", _SKLEARN_CHECKS)
@pytest.mark.parametrize("cls", DETECTORS)
def test_sklearn_estimator_checks(cls, check_name):
    from sklearn.utils import estimator_checks

    check = getattr(estimator_checks, check_name)
    kw = {"n_samples": 2} if cls is VAEDetector else {}
    det = cls(hidden_dims=(8,), latent_dim=2, epochs=2, device="cpu", random_state=0, **kw)
    check(cls.__name__, det)


def test_pandas_series_is_one_column(make_detector, data):
    s = pd.Series(data.X_train[:, 0], name="only")
    det = make_detector(AEDetector).fit(s)
    assert det.n_features_in_ == 1 and list(det.feature_names_in_) == ["only"]


# -- the training loop ----------------------------------------------------------------------------
def test_training_history_averages_over_the_rows_trained_on():
    from anovae.losses import LossTerms
    from anovae.training import TrainConfig, train

    net = torch.nn.Linear(2, 2)

    def constant_loss(net, xb, beta, g):  # 1.0 for every batch, whatever its size
        one = (net.weight * 0.0).sum() + 1.0
        return LossTerms(one, one, torch.zeros(()))

    # 5 rows in batches of 4: the trailing one-row batch is skipped, so must not be counted.
    cfg = TrainConfig(epochs=2, batch_size=4, warmup_epochs=0, patience=0)
    result = train(net, constant_loss, torch.zeros(5, 2), None, cfg,
                   torch.Generator().manual_seed(0))
    assert result.history["loss"] == [1.0, 1.0]
    assert result.history["reconstruction"] == [1.0, 1.0]


@pytest.mark.parametrize("cls", DETECTORS)
def test_fit_predict_uses_y_and_gives_the_training_labels(cls, data, make_detector):
    X = np.vstack([data.X_train[:60], data.X_test[:12]])
    y = np.r_[np.zeros(60, dtype=int), np.ones(12, dtype=int)]
    labels = make_detector(cls).fit_predict(X, y)
    det = make_detector(cls).fit(X, y)
    np.testing.assert_array_equal(labels, det.labels_)
    np.testing.assert_array_equal(labels, det.predict(X))


@pytest.mark.parametrize("cls", DETECTORS)
def test_a_failed_refit_leaves_the_fitted_model_as_it_was(cls, data, make_detector):
    det = make_detector(cls).fit(data.X_train)
    before = det.decision_function(data.X_test[:5])
    threshold = det.threshold_
    det.set_params(learning_rate=1e30)  # the loss turns NaN: TrainingError
    with pytest.raises(TrainingError):
        det.fit(data.X_train * 1000 + 50)
    np.testing.assert_array_equal(det.decision_function(data.X_test[:5]), before)
    assert det.threshold_ == threshold
    fresh = make_detector(cls, learning_rate=1e30)
    with pytest.raises(TrainingError):
        fresh.fit(data.X_train * 1000 + 50)
    assert not [k for k in vars(fresh) if k.endswith("_")]  # still unfitted


def test_no_score_attribute_hides_scikit_learns_score_method(data, tmp_path):
    # the score type was the parameter `score`: scikit-learn took that string for the score()
    # method, and cross_val_score without `scoring` gave NaN; now it says what is missing, as
    # for IsolationForest
    from sklearn.model_selection import cross_val_score

    det = VAEDetector(epochs=1, hidden_dims=(8,), latent_dim=2, device="cpu", random_state=0)
    assert not hasattr(det, "score") and det.get_params()["score_type"] == "elbo"
    with pytest.raises(TypeError, match="should have a 'score' method"):
        cross_val_score(det, data.X_train, cv=2)
    # files keep the old name (older readers read newer files) and it reads back
    fitted = det.set_params(score_type="iwae").fit(data.X_train)
    path = fitted.save(tmp_path / "m.safetensors")
    doc = anovae.persistence.read_metadata(path)
    assert doc["params"]["score"] == "iwae" and "score_type" not in doc["params"]
    back = anovae.load(path)
    assert back.score_type == "iwae"
    np.testing.assert_array_equal(back.decision_function(data.X_test),
                                  fitted.decision_function(data.X_test))


def test_warnings_name_the_callers_line_whatever_the_depth() -> None:
    # They named lines inside anovae (base.py, tabular.py), a different one per call path.
    rng = np.random.default_rng(0)
    ids = pd.DataFrame({"id": np.arange(60), "a": rng.normal(size=60), "b": rng.normal(size=60)})
    with pytest.warns(UserWarning, match="looks like an id") as fit_rec:
        VAEDetector(epochs=1, random_state=0).fit(ids)
    mixed = ids.assign(c=np.where(np.arange(60) % 2, "x", "y"))
    with pytest.warns(UserWarning, match="looks like an id") as mixed_rec:
        VAEDetector(epochs=1, random_state=0).fit(mixed)
    arr = VAEDetector(epochs=1, random_state=0).fit(rng.normal(size=(60, 3)))
    with pytest.warns(UserWarning, match="fitted on an array without names") as score_rec:
        arr.decision_function(pd.DataFrame(rng.normal(size=(5, 3)), columns=["a", "b", "c"]))
    for rec in (fit_rec, mixed_rec, score_rec):
        assert {w.filename for w in rec} == {__file__}


def test_a_changed_sample_count_is_refused_where_the_threshold_is_compared(data, tmp_path):
    # set_params(n_samples=1) after fit: 1-draw scores were compared with a threshold set on
    # 16-draw scores, without a word (9.5 % flagged at contamination 0.1 on training rows)
    det = VAEDetector(epochs=2, hidden_dims=(8,), latent_dim=2, device="cpu",
                      random_state=0).fit(data.X_train)
    det.set_params(n_samples=1)
    assert np.isfinite(det.decision_function(data.X_test)).all()  # any score stays available
    for use in (lambda: det.predict(data.X_test), lambda: det.predict_proba(data.X_test),
                lambda: det.refit_threshold(data.X_test), lambda: det.save(tmp_path / "m")):
        with pytest.raises(ValueError, match="n_samples=1 but .* set with n_samples=16"):
            use()
    # checked where it is used, as at fit: n_samples=0 was a ZeroDivisionError, 50,000 ran
    for bad, match in ((0, "n_samples must be >= 1, got 0"), (50_000, "must be <= 10000")):
        with pytest.raises(ValueError, match=match):
            det.set_params(n_samples=bad).decision_function(data.X_test[:2])
    det.set_params(n_samples=16)
    np.testing.assert_array_equal(det.predict(data.X_train), det.labels_)
    rec = VAEDetector(epochs=2, hidden_dims=(8,), latent_dim=2, device="cpu", random_state=0,
                      score_type="reconstruction").fit(data.X_train)
    rec.set_params(n_samples=1)  # a score without draws: its threshold still holds
    np.testing.assert_array_equal(rec.predict(data.X_train), rec.labels_)


def test_save_refuses_parameters_changed_since_fit(data, tmp_path):
    # the file held a (8,)-network under hidden_dims=(4,): anovae.load gave a model whose
    # parameters described another network, and clone(loaded).fit built that other one
    det = VAEDetector(epochs=1, hidden_dims=(8,), latent_dim=2, device="cpu",
                      random_state=0).fit(data.X_train)
    det.set_params(hidden_dims=(4,), epochs=5)
    with pytest.raises(ValueError, match=r"epochs=5 \(fitted with 1\), "
                                         r"hidden_dims=\(4,\) \(fitted with \(8,\)\)"):
        det.save(tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
    det.set_params(hidden_dims=(8,), epochs=1, verbose=True, device="cpu", contamination=0.2)
    back = anovae.load(det.save(tmp_path / "m.safetensors"))  # these do not shape the model
    assert back.hidden_dims == (8,) and back.contamination == 0.2
    back.set_params(latent_dim=3)
    with pytest.raises(ValueError, match="latent_dim=3 .fitted with 2."):
        back.save(tmp_path / "again.safetensors")


def test_use_labels_false_ignores_y_as_pyod_does(tmp_path):
    # cross_val_score passes y to fit: by default the folds' anomalies were left out of
    # training (a semi-supervised evaluation, 0.93-0.98 here); use_labels=False evaluates the
    # unsupervised model, as the same fits without y do (0.77-0.88)
    from sklearn.model_selection import KFold, cross_val_score

    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(size=(300, 4)), rng.normal(size=(60, 4)) * 0.3 + 1.5])
    y = np.r_[np.zeros(300), np.ones(60)].astype(int)
    cv = KFold(3, shuffle=True, random_state=0)
    kw = dict(epochs=3, hidden_dims=(8,), latent_dim=2, device="cpu", random_state=0)

    def auc(est, X_, y_):
        return roc_auc_score(y_, est.decision_function(X_))

    unsup = cross_val_score(VAEDetector(use_labels=False, **kw), X, y, scoring=auc, cv=cv)
    by_hand = [auc(VAEDetector(**kw).fit(X[tr]), X[te], y[te]) for tr, te in cv.split(X)]
    np.testing.assert_allclose(unsup, by_hand)
    semi = cross_val_score(VAEDetector(**kw), X, y, scoring=auc, cv=cv)
    assert not np.allclose(semi, unsup)
    # y is not even read (PyOD: "ignored"), unless the threshold needs labels
    VAEDetector(use_labels=False, **kw).fit(X, ["a"] * len(X))
    best = VAEDetector(use_labels=False, threshold="best_f1", **kw).fit(X, y)
    np.testing.assert_array_equal(best.decision_scores_,
                                  VAEDetector(**kw).fit(X).decision_scores_)
    assert best.threshold_method_ == "best_f1"
    with pytest.raises(ValueError, match="use_labels must be True or False"):
        VAEDetector(use_labels="no", **kw).fit(X)
    # saved as format 5 (a version-4 reader does not know the parameter); True stays as it was
    path = best.save(tmp_path / "m.safetensors")
    assert anovae.persistence.read_metadata(path)["format_version"] == 5
    assert anovae.load(path).use_labels is False
    plain = VAEDetector(**kw).fit(X).save(tmp_path / "p.safetensors")
    assert "use_labels" not in anovae.persistence.read_metadata(plain)["params"]


def test_random_state_objects_are_accepted_as_in_scikit_learn(data, tmp_path):
    kw = dict(epochs=1, hidden_dims=(8,), latent_dim=2, device="cpu")
    a = VAEDetector(random_state=np.random.RandomState(0), **kw).fit(data.X_train)
    b = VAEDetector(random_state=np.random.RandomState(0), **kw).fit(data.X_train)
    np.testing.assert_array_equal(a.decision_scores_, b.decision_scores_)
    gen = np.random.default_rng(0)
    c = VAEDetector(random_state=gen, **kw).fit(data.X_train)
    d = VAEDetector(random_state=gen, **kw).fit(data.X_train)  # the generator moved on
    assert not np.array_equal(c.decision_scores_, d.decision_scores_)
    assert anovae.load(c.save(tmp_path / "m.safetensors")).random_state is None
    with pytest.raises(ValueError, match="random_state must be"):
        VAEDetector(random_state="0", **kw).fit(data.X_train)


# -- scikit-learn's whole check suite --------------------------------------------------------
#: The checks of check_estimator a detector fails by design (with use_labels=False, so that a
#: class label in y is not taken for "1 = anomaly"): PyOD's 0/1 labels instead of -1/1; object
#: arrays holding a dict refused with a DataError (a ValueError, not the TypeError the check
#: wants); the wrong width refused in anovae's words; and float rounding of a row's score that
#: moves by 1e-7 with the shape of the batch it is scored in (the VAE's score; the same rows in
#: the same batch always score the same).
_BY_DESIGN = {"check_outliers_fit_predict", "check_outliers_train", "check_dtype_object",
              "check_n_features_in_after_fitting", "check_methods_subset_invariance"}


@pytest.mark.parametrize("cls", DETECTORS)
def test_check_estimator_runs_and_fails_only_by_design(cls):
    from sklearn.utils.estimator_checks import check_estimator

    kw = {"n_samples": 2} if cls is VAEDetector else {}
    det = cls(hidden_dims=(8,), latent_dim=2, epochs=2, device="cpu", random_state=0,
              use_labels=False, **kw)
    results = check_estimator(det, on_fail=None)  # it refused to run without transformer tags
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert failed <= _BY_DESIGN, failed - _BY_DESIGN
    assert {"check_transformer_general", "check_fit2d_1sample",
            "check_estimators_empty_data_messages", "check_complex_data"} <= passed


@pytest.mark.parametrize("cls", DETECTORS)
def test_fit_transform_is_fit_then_transform(cls, data, make_detector):
    codes = make_detector(cls).fit_transform(data.X_train)
    det = make_detector(cls).fit(data.X_train)
    np.testing.assert_array_equal(codes, det.transform(data.X_train))
    assert codes.shape == (len(data.X_train), det.latent_dim)


def test_a_thresholder_object_in_contamination_points_to_threshold(data, make_detector):
    class IQR:  # PyThresh's interface: eval(scores) -> 0/1 labels
        def eval(self, scores):
            return (np.asarray(scores) > np.median(scores)).astype(int)

    with pytest.raises(ValueError, match=r"threshold= \(threshold=IQR\(\)"):
        make_detector(VAEDetector, contamination=IQR()).fit(data.X_train)
    det = make_detector(VAEDetector, threshold=IQR()).fit(data.X_train)
    assert det.labels_.mean() == pytest.approx(0.5, abs=0.05)


def test_a_contamination_another_threshold_method_ignores_warns(data, make_detector):
    with pytest.warns(UserWarning, match=r"contamination=0.05 is not used: threshold='fpr=0.05'"):
        make_detector(VAEDetector, threshold="fpr", contamination=0.05).fit(data.X_train)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="contamination=")
        make_detector(VAEDetector, threshold="fpr").fit(data.X_train)  # the default: silent
        make_detector(VAEDetector, contamination=0.05).fit(data.X_train)  # read: silent
