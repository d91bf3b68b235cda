"""Threshold methods: known answers and properties (pure functions), then the detector's use of
them (``threshold=`` parameters, calibration split, conformal probabilities, ``refit_threshold``,
persistence) and ``anovae threshold``."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import f1_score

from anovae import AEDetector, DataError, VAEDetector, load
from anovae.thresholds import (
    ThresholdSpec,
    best_f1_threshold,
    conformal_pvalues,
    contamination_threshold,
    fpr_threshold,
    parse_threshold,
    pot_threshold,
    recall_threshold,
    threshold_from_labels,
)

# Scores with many ties (small integers) and without (floats).
_scores = st.one_of(
    arrays(np.float64, st.integers(1, 60), elements=st.integers(-5, 5).map(float)),
    arrays(np.float64, st.integers(1, 60),
           elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)),
)


@st.composite
def _labelled(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    s = draw(_scores)
    y = draw(arrays(np.int64, s.size, elements=st.integers(0, 1)))
    y[draw(st.integers(0, s.size - 1))] = 1  # at least one anomaly
    return s, y


# -- contamination ------------------------------------------------------------------------------
def test_contamination_flags_the_top_fraction():
    s = np.random.default_rng(0).normal(size=10_000)
    assert (s > contamination_threshold(s, 0.05)).mean() == pytest.approx(0.05, abs=1e-3)


# -- fpr / conformal ----------------------------------------------------------------------------
def test_fpr_threshold_on_a_known_normal_sample():
    rng = np.random.default_rng(0)
    t = fpr_threshold(rng.normal(size=4000), 0.05)
    assert t == pytest.approx(1.6449, abs=0.08)  # the N(0, 1) 95% quantile
    assert (rng.normal(size=200_000) > t).mean() == pytest.approx(0.05, abs=0.008)


def test_fpr_threshold_is_valid_over_repeated_calibration_sets():
    """Marginal guarantee: with n = 99 and fpr = 0.1, k = 90 and P(new > t) = 10/100 exactly."""
    rng = np.random.default_rng(1)
    cal, new = rng.exponential(size=(4000, 99)), rng.exponential(size=4000)
    t = np.array([fpr_threshold(c, 0.1) for c in cal])
    assert (new > t).mean() == pytest.approx(0.10, abs=0.015)


def test_fpr_threshold_too_few_calibration_rows_flags_nothing():
    assert fpr_threshold(np.arange(5.0), 0.05) == math.inf


@settings(max_examples=150, deadline=None)
@given(_scores, _scores, st.floats(0.01, 0.99))
def test_fpr_threshold_matches_conformal_pvalues(cal, s, fpr):
    t = fpr_threshold(cal, fpr)
    assert (cal > t).mean() <= fpr + 1e-12
    p = conformal_pvalues(cal, np.r_[s, cal])
    assert np.array_equal(np.r_[s, cal] > t, p <= fpr + 1e-12)


@settings(max_examples=100, deadline=None)
@given(_scores, _scores)
def test_conformal_pvalues_range_and_order(cal, s):
    p = conformal_pvalues(cal, s)
    assert ((p >= 1 / (cal.size + 1) - 1e-12) & (p <= 1.0)).all()
    order = np.argsort(s, kind="stable")
    assert (np.diff(p[order]) <= 1e-12).all()  # higher score, smaller p-value


def test_conformal_pvalues_known_answer():
    assert conformal_pvalues([1.0, 2.0, 3.0], [0.0, 2.0, 2.5, 5.0]).tolist() == [1.0, 0.75, 0.5,
                                                                                  0.25]


# -- labelled methods ---------------------------------------------------------------------------
def test_best_f1_and_recall_known_answers():
    s, y = [1.0, 2.0, 3.0, 10.0, 11.0], [0, 0, 0, 1, 1]
    assert best_f1_threshold(s, y) == 3.0
    assert recall_threshold([1.0, 2.0, 3.0, 4.0, 10.0, 11.0], [0, 0, 1, 0, 1, 1], 0.6) == 4.0
    assert recall_threshold([1.0, 2.0, 3.0, 4.0, 10.0, 11.0], [0, 0, 1, 0, 1, 1], 1.0) == 2.0
    assert best_f1_threshold([5.0, 6.0], [1, 1]) < 5.0  # flag everything


@settings(max_examples=150, deadline=None)
@given(_labelled())
def test_best_f1_is_the_best_of_all_cuts(sy):
    s, y = sy
    t = best_f1_threshold(s, y)
    cuts = np.r_[np.unique(s), np.nextafter(s.min(), -np.inf)]
    best = max(f1_score(y, (s > c).astype(int), zero_division=0) for c in cuts)
    assert f1_score(y, (s > t).astype(int), zero_division=0) == pytest.approx(best)


@settings(max_examples=150, deadline=None)
@given(_labelled(), st.floats(0.05, 1.0))
def test_recall_threshold_is_the_highest_reaching_the_target(sy, recall):
    s, y = sy
    t = recall_threshold(s, y, recall)
    assert (s[y == 1] > t).mean() >= recall - 1e-9
    higher = s[s > t]
    if higher.size:  # the next data-valued threshold up misses the target
        assert (s[y == 1] > higher.min()).mean() < recall - 1e-9


def test_labelled_methods_need_an_anomaly():
    with pytest.raises(ValueError, match="no anomalies"):
        best_f1_threshold([1.0, 2.0], [0, 0])


# -- POT ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [1.0, 0.25])
def test_pot_on_exponential_tails(rate):
    s = np.random.default_rng(0).exponential(1 / rate, size=20_000)
    assert pot_threshold(s, q=1e-3) == pytest.approx(-math.log(1e-3) / rate, rel=0.08)


def test_pot_on_a_generalised_pareto_tail():
    from scipy.stats import genpareto

    s = genpareto(c=0.2).rvs(size=40_000, random_state=1)
    q = 1e-4
    assert pot_threshold(s, q=q) == pytest.approx((q ** -0.2 - 1) / 0.2, rel=0.15)


def test_pot_checks_its_inputs():
    s = np.random.default_rng(0).exponential(size=1000)
    with pytest.raises(ValueError, match="q must be"):
        pot_threshold(s, q=0.5)
    with pytest.raises(ValueError, match="at least 10"):
        pot_threshold(s[:20], q=1e-3, level=0.9)


# -- PyThresh and the spec -----------------------------------------------------------------------
class TopFive:
    """A PyThresh-like thresholder: flags the five highest scores."""

    def eval(self, scores):
        return (scores >= np.sort(scores)[-5]).astype(int)


def test_threshold_from_labels_reproduces_the_labels():
    s = np.random.default_rng(0).normal(size=100)
    t = parse_threshold(TopFive()).compute(s)
    assert t == threshold_from_labels(s, TopFive().eval(s))
    assert np.array_equal(s > t, TopFive().eval(s).astype(bool))
    assert threshold_from_labels([1.0, 2.0], [0, 0]) == 2.0


def test_real_pythresh_thresholder():
    pytest.importorskip("pythresh")
    from pythresh.thresholds.iqr import IQR

    s = np.random.default_rng(0).exponential(size=500)
    labels = IQR().eval(s)
    spec = parse_threshold("pythresh:IQR")
    assert spec.describe() == "pythresh:IQR"
    assert np.array_equal(s > spec.compute(s), np.asarray(labels).astype(bool))


def test_parse_threshold_names_numbers_and_errors():
    assert parse_threshold("fpr") == ThresholdSpec("fpr", 0.05)
    assert parse_threshold("pot", 1e-4).describe() == "pot=0.0001"
    assert parse_threshold("recall=0.8") == ThresholdSpec("recall", 0.8)
    assert parse_threshold(parse_threshold("fpr=0.2").describe()).param == 0.2
    assert parse_threshold("best_f1").param is None
    for bad, param in [("nope", None), ("fpr", 1.5), ("contamination", 0.7), ("best_f1", 0.1),
                       ("recall", 0.0), ("fpr", "x"), (42, None), (TopFive(), 0.1),
                       ("fpr=abc", None)]:
        with pytest.raises(ValueError):
            parse_threshold(bad, param)
    with pytest.raises(ValueError, match="needs labels"):
        parse_threshold("best_f1").compute([1.0, 2.0])


# -- the detectors -------------------------------------------------------------------------------
def test_default_threshold_is_unchanged(fitted_vae):
    assert fitted_vae.threshold_ == contamination_threshold(fitted_vae.decision_scores_, 0.1)
    assert fitted_vae.threshold_method_ == "contamination=0.1"
    assert not hasattr(fitted_vae, "calibration_scores_")
    with pytest.raises(ValueError, match="conformal"):
        fitted_vae.predict_proba(np.zeros((1, 5)), method="conformal")


@pytest.mark.parametrize("cls", [VAEDetector, AEDetector])
def test_fpr_threshold_holds_out_calibration_rows(cls, data, make_detector):
    det = make_detector(cls, threshold="fpr", threshold_param=0.1).fit(data.X_train)
    cal = det.calibration_scores_
    assert cal.shape == (48,)  # 20% of 240
    assert np.isin(cal, det.decision_scores_).all()
    assert det.threshold_ == fpr_threshold(cal, 0.1)
    assert det.threshold_method_ == "fpr=0.1"
    s = det.decision_function(data.X_test)
    p_anomaly = det.predict_proba(data.X_test, method="conformal")[:, 1]
    assert np.allclose(p_anomaly, 1.0 - conformal_pvalues(cal, s))
    assert np.array_equal(det.predict(data.X_test) == 1, conformal_pvalues(cal, s) <= 0.1)


def test_calibration_rows_are_kept_out_of_training(data, make_detector, monkeypatch):
    import anovae.detectors.base as base

    seen = []

    def spy(net, loss, x_train, x_val, cfg, gen):
        seen.append(x_train.shape[0] + (0 if x_val is None else x_val.shape[0]))
        return real(net, loss, x_train, x_val, cfg, gen)

    real = base.train
    monkeypatch.setattr(base, "train", spy)
    det = make_detector(VAEDetector, threshold="fpr", calibration_fraction=0.25)
    det.fit(data.X_train)
    assert det.calibration_scores_.size == 60
    assert seen == [240 - 60]
    assert det.decision_scores_.size == 240  # every row of X is still scored


def test_labelled_and_pot_methods_in_fit(data, make_detector):
    X = np.r_[data.X_train, data.X_test]
    y = np.r_[np.zeros(len(data.X_train), int), data.y_test]
    det = make_detector(VAEDetector, threshold="best_f1").fit(X, y)
    assert det.threshold_ == best_f1_threshold(det.decision_scores_, y)
    det = make_detector(VAEDetector, threshold="recall", threshold_param=0.5).fit(X, y)
    assert (det.labels_[y == 1]).mean() >= 0.5
    det = make_detector(VAEDetector, threshold="pot", threshold_param=0.01).fit(X, y)
    assert det.threshold_ == pot_threshold(det.decision_scores_[y == 0], 0.01)


def test_thresholder_object_in_fit_and_saved_by_name(data, make_detector, tmp_path):
    det = make_detector(AEDetector, threshold=TopFive()).fit(data.X_train)
    assert det.labels_.sum() == 5
    twin = load(det.save(tmp_path / "m.safetensors"))
    assert twin.get_params()["threshold"] == "object:TopFive"  # not PyThresh's: its own name
    assert twin.threshold_ == det.threshold_
    assert np.array_equal(twin.predict(data.X_test), det.predict(data.X_test))
    # a file cannot rebuild the object: it says so (it said "needs PyThresh: pip install")
    with pytest.raises(ValueError, match="thresholder object of your own.*TopFive\\(...\\)"):
        twin.refit_threshold(data.X_test)
    twin.refit_threshold(data.X_test, method=TopFive())
    assert twin.predict(data.X_test).sum() == 5 and twin.threshold_method_ == "object:TopFive"


def test_too_few_calibration_rows_are_refused_at_fit(data, make_detector, monkeypatch):
    # 48 calibration rows cannot promise 0.1 %: the fit used to train, then save an inf
    # threshold (a model that flags nothing) with only a warning; now it stops before training
    monkeypatch.setattr(AEDetector, "_train_net", lambda *a: pytest.fail("trained"))
    with pytest.raises(DataError, match=r"threshold='fpr' at 0.001 needs at least 999 held-out "
                       r"normal rows, but calibration_fraction=0.2 of 240 normal rows holds out "
                       r"48: give more normal rows \(about 4995\)"):
        make_detector(AEDetector, threshold="fpr", threshold_param=0.001).fit(data.X_train)
    with pytest.raises(DataError, match=r"needs held-out normal rows: set calibration_fraction "
                       r"> 0 \(got 0\)"):
        make_detector(AEDetector, threshold="fpr", calibration_fraction=0.0).fit(data.X_train)
    with pytest.raises(DataError, match="needs a row labelled normal"):  # all labelled 1
        make_detector(AEDetector, threshold="best_f1", use_labels=False).fit(
            data.X_train, np.ones(len(data.X_train)))


def test_too_few_calibration_rows_at_refit_flag_nothing_and_survive_saving(
        fitted_vae, data, tmp_path):
    det = copy.deepcopy(fitted_vae)
    with pytest.warns(UserWarning, match="needs at least 999 calibration scores, got 50"):
        det.refit_threshold(data.X_test[data.y_test == 0][:50], method="fpr", param=0.001)
    assert det.threshold_ == math.inf
    assert det.predict(data.X_test).sum() == 0
    assert load(det.save(tmp_path / "m.st")).threshold_ == math.inf
    with pytest.raises(DataError, match="'best_f1' needs a row labelled normal"):
        det.refit_threshold(data.X_test[:5], np.ones(5), method="best_f1")


@pytest.mark.parametrize("params, match", [
    ({"threshold": "median"}, "threshold must be"),
    ({"threshold": "fpr", "threshold_param": 1.5}, "must be in"),
    ({"threshold_param": 0.05}, "contamination parameter"),
    ({"calibration_fraction": 0.9}, "calibration_fraction"),
    ({"threshold": "fpr", "calibration_fraction": 0.0}, "held-out normal rows"),
    ({"threshold": "best_f1"}, "needs labels"),
])
def test_bad_threshold_settings_fail_before_training(params, match, data, make_detector):
    with pytest.raises(ValueError, match=match):
        make_detector(VAEDetector, **params).fit(data.X_train)


def test_refit_threshold_without_retraining(fitted_vae, data, tmp_path):
    det = copy.deepcopy(fitted_vae)
    weights = {k: v.clone() for k, v in det.net_.state_dict().items()}
    normal = data.X_test[data.y_test == 0]
    det.refit_threshold(normal, method="fpr", param=0.2)
    assert np.array_equal(det.calibration_scores_, det.decision_function(normal))
    assert det.threshold_ == fpr_threshold(det.calibration_scores_, 0.2)
    assert det.predict(normal).mean() <= 0.2
    assert all((v == weights[k]).all() for k, v in det.net_.state_dict().items())
    det.refit_threshold(normal[::-1])  # no method: the one last used (fpr=0.2), not the
    assert det.threshold_method_ == "fpr=0.2"  # `threshold` parameter (contamination)
    det.refit_threshold(data.X_test, data.y_test, method="best_f1")
    assert det.threshold_ == best_f1_threshold(det.decision_function(data.X_test), data.y_test)
    with pytest.raises(DataError, match=r"needs labels.*\(CLI: --label-column COLUMN\)"):
        det.refit_threshold(data.X_test)  # best_f1 again
    det.refit_threshold(data.X_test, method="contamination")
    assert det.threshold_ == contamination_threshold(det.decision_function(data.X_test), 0.1)
    with pytest.raises(DataError, match="needs labels"):
        det.refit_threshold(data.X_test, method="recall")
    twin = load(det.save(tmp_path / "m.safetensors"))
    assert twin.threshold_ == det.threshold_
    assert twin.threshold_method_ == "contamination=0.1"
    assert np.array_equal(twin.calibration_scores_, det.calibration_scores_)


def test_refit_on_the_training_rows_warns(fitted_vae, data):
    # the training rows score lower than new normal ones: an fpr threshold set on them flagged
    # 0.016 of new normal rows at 0.01, silently
    for rows in (data.X_train, data.X_train[7:200]):  # all of them, or some (other batches)
        det = copy.deepcopy(fitted_vae)
        with pytest.warns(UserWarning, match=r"100% of the rows given to refit_threshold score "
                          "as rows the model was trained on"):
            det.refit_threshold(rows, method="fpr", param=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # new normal rows: nothing to say
        det.refit_threshold(data.X_test[data.y_test == 0], method="fpr", param=0.1)
        # "pot" at fit fits its tail on the training scores: a refit on them is that default
        det.refit_threshold(data.X_train, method="pot", param=0.01)


def test_the_training_row_check_is_not_fooled_by_many_training_scores(fitted_vae):
    # with 60,000 training rows scoring about 0.05, new rows landed within the 1e-6 absolute
    # tolerance of one of them by chance: 62 % "training rows"; a million scores near 5: 79 %
    rng = np.random.default_rng(0)
    det = copy.deepcopy(fitted_vae)
    det.decision_scores_ = rng.lognormal(np.log(5.0), 0.5, size=1_000_000)
    vars(det).pop("calibration_scores_", None)
    spec = parse_threshold("fpr", 0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        det._warn_if_trained_on(rng.lognormal(np.log(5.0), 0.5, size=5000), spec)
        det._warn_if_trained_on(rng.lognormal(np.log(0.05), 0.5, size=5000) / 100, spec)
    moved = det.decision_scores_[:5000] * (1 + 1.3e-7)  # training rows scored in other batches
    with pytest.warns(UserWarning, match="score as rows the model was trained on"):
        det._warn_if_trained_on(moved, spec)


def test_refit_threshold_without_a_method_follows_set_params_and_keeps_thresholder_objects(
        make_detector, data):
    # reusing threshold_method_ (a description) lost a thresholder object (rebuilt from its
    # name: "needs PyThresh") and ignored set_params made after the threshold was set
    class Quantile:
        def __init__(self, q: float = 0.95) -> None:
            self.q = q

        def eval(self, scores):
            scores = np.asarray(scores)
            return (scores > np.quantile(scores, self.q)).astype(int)

    X_new = data.X_test
    det = make_detector(VAEDetector, threshold=Quantile(0.99)).fit(data.X_train)
    det.refit_threshold(X_new)  # the object itself
    assert det.threshold_method_ == "object:Quantile"
    det = make_detector(VAEDetector).fit(data.X_train)
    det.set_params(contamination=0.02)
    det.refit_threshold(X_new)
    assert det.threshold_method_ == "contamination=0.02"
    assert det.predict(X_new).mean() == pytest.approx(0.02, abs=0.01)
    det.refit_threshold(X_new, method="fpr", param=0.2)
    det.refit_threshold(X_new[::-1])  # parameters unchanged since: the method just used
    assert det.threshold_method_ == "fpr=0.2"
    det.set_params(threshold="pot")  # changed since: the parameters
    det.refit_threshold(X_new)
    assert det.threshold_method_.startswith("pot")
    det.refit_threshold(X_new, method="contamination", param=0.0123456789)
    assert det.threshold_method_ == "contamination=0.0123456789"  # the number, unrounded


# -- CLI -----------------------------------------------------------------------------------------
def test_cli_threshold_refits_a_saved_model(data, make_detector, tmp_path):
    from typer.testing import CliRunner

    from anovae.cli import app

    model = make_detector(VAEDetector).fit(data.frame(data.X_train)).save(tmp_path / "m.st")
    frame = data.frame(data.X_test).assign(y=data.y_test)
    frame.to_csv(tmp_path / "new.csv", index=False)
    frame[frame.y == 0].drop(columns="y").to_csv(tmp_path / "normal.csv", index=False)
    runner = CliRunner()
    res = runner.invoke(app, ["threshold", str(model), str(tmp_path / "normal.csv"),
                              "--method", "fpr", "--param", "0.2", "-o", str(tmp_path / "o.st")])
    assert res.exit_code == 0, res.output
    assert "fpr=0.2" in res.output
    det = load(tmp_path / "o.st")
    normal = pd.read_csv(tmp_path / "normal.csv")
    assert det.threshold_ == fpr_threshold(det.decision_function(normal), 0.2)
    res = runner.invoke(app, ["threshold", str(model), str(tmp_path / "new.csv"),
                              "--label-column", "y", "--method", "best_f1"])
    assert res.exit_code == 0, res.output
    assert load(model).threshold_method_ == "best_f1"
    for args in (["--method", "nope"], ["--method", "recall"]):
        res = runner.invoke(app, ["threshold", str(model), str(tmp_path / "normal.csv"), *args])
        assert res.exit_code == 2
        assert "error:" in res.output and "Traceback" not in res.output


def test_prediction_confidence_follows_exceed() -> None:
    from scipy.stats import binom

    from anovae.thresholds import prediction_confidence

    ref = np.arange(200.0)  # threshold at the 90 % point: 180 reference scores at or below
    conf = prediction_confidence(ref, 179.5, [0.0, 179.0, 181.0, 1e9])
    p = (1 + np.array([1, 180, 182, 200])) / 202  # #{ref <= s}
    flagged = binom.sf(180, 200, p)
    np.testing.assert_allclose(conf, [1 - flagged[0], 1 - flagged[1], flagged[2], flagged[3]])
    assert conf[0] > 0.999 and conf[3] > 0.999 and 0.3 < conf[1] < 0.7
    assert (prediction_confidence(ref, np.inf, [0.0, 1e9]) == 1.0).all()  # nothing flagged


def test_predict_confidence_api_as_pyod(fitted_vae, data) -> None:
    labels, conf = fitted_vae.predict(data.X_test, return_confidence=True)
    np.testing.assert_array_equal(labels, fitted_vae.predict(data.X_test))
    np.testing.assert_array_equal(conf, fitted_vae.predict_confidence(data.X_test))
    proba, conf2 = fitted_vae.predict_proba(data.X_test, method="unify", return_confidence=True)
    np.testing.assert_array_equal(proba, fitted_vae.predict_proba(data.X_test, method="unify"))
    np.testing.assert_array_equal(conf, conf2)
    assert conf.shape == (len(data.X_test),) and ((conf >= 0) & (conf <= 1)).all()
    s = fitted_vae.decision_function(data.X_test)
    far = np.abs(s - fitted_vae.threshold_) > 3 * fitted_vae.decision_scores_.std()
    assert far.any() and (conf[far] > 0.99).all()


def test_labels_are_checked_wherever_they_enter() -> None:
    from anovae.metrics import evaluate

    y, s = [0, 0, 1, 1, 0], [0.1, 0.4, 0.35, 0.8, 0.4]
    # predict_proba's column as labels was truncated to 0: precision/recall/F1 0.0, no word
    with pytest.raises(DataError, match=r"predicted labels must be 0 .* or 1 .*, found '0.7'"):
        evaluate(y, s, [0, 0, 0.7, 0.7, 0])
    with pytest.raises(DataError, match="found '-1'"):  # scikit-learn's convention
        evaluate(y, s, [1, 1, -1, -1, 1])
    with pytest.raises(DataError, match="4 labels in the predicted labels, but there are 5"):
        evaluate(y, s, [0, 0, 1, 1])
    with pytest.raises(DataError, match="found 'None'"):  # was NumPy's TypeError ('<')
        evaluate([0, 1, None], [1.0, 2.0, 3.0])
    with pytest.raises(DataError, match="found 'None'"):
        best_f1_threshold([1.0, 2.0, 3.0], [0, 1, None])
    # a thresholder answering -1/1 flagged every row (-1 is truthy)
    with pytest.raises(DataError, match="the thresholder's labels must be 0 .* found '-1'"):
        threshold_from_labels([1.0, 2.0, 3.0], [-1, -1, 1])
    assert evaluate([True, False], [2.0, 1.0], [1.0, 0.0])["f1"] == 1.0
    # a 2-D y was flattened first: "8 labels in y, but X has 4 rows"
    with pytest.raises(DataError, match=r"y must be one 0/1 label per row.*got shape \(4, 2\)"):
        VAEDetector().fit(np.zeros((4, 2)), np.zeros((4, 2)))
    VAEDetector(epochs=1).fit(np.eye(4), np.zeros((4, 1)))  # a column is one label per row


def test_a_number_given_twice_must_agree() -> None:
    assert parse_threshold("fpr=0.1", 0.1).param == 0.1
    with pytest.raises(ValueError, match="'fpr=0.1' and the number 0.2 disagree"):
        parse_threshold("fpr=0.1", 0.2)


def test_refit_with_a_new_number_reuses_the_method(data, make_detector) -> None:
    det = make_detector(AEDetector, threshold="fpr", threshold_param=0.2).fit(data.X_train)
    det.refit_threshold(data.X_train, param=0.3)  # the method reused ("fpr=0.2"), 0.3 its number
    assert det.threshold_method_ == "fpr=0.3"


def test_pot_on_few_rows_warns_that_it_extrapolates() -> None:
    rng = np.random.default_rng(0)
    with pytest.warns(UserWarning, match=r"q n = 0.05 < 1.*at least 1000 rows"):
        pot_threshold(rng.exponential(size=50), 1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pot_threshold(rng.exponential(size=2000), 1e-3)


def test_contamination_on_tied_scores_warns(make_detector) -> None:
    # duplicated rows: the 90 % point is a tie, and "score > threshold" flagged nothing, silently
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 3))[rng.integers(0, 5, 400)]
    with pytest.warns(UserWarning, match=r"contamination=0.1, but only 0.0% .* tie at it"):
        det = make_detector(AEDetector).fit(X)
    assert det.labels_.sum() == 0
    with pytest.raises(ValueError, match="NaN"):
        contamination_threshold(np.array([1.0, np.nan]), 0.1)
    with pytest.raises(ValueError, match="empty"):
        contamination_threshold(np.array([]), 0.1)


def test_a_new_number_for_a_method_written_with_its_number(data, make_detector) -> None:
    det = make_detector(AEDetector, threshold="fpr=0.1").fit(data.X_train)
    det.refit_threshold(data.X_train, param=0.2)  # refused: "'fpr=0.1' and 0.2 disagree"
    assert det.threshold_method_ == "fpr=0.2"


def test_score_files_carry_the_conformal_fields_of_fpr_models(data, make_detector) -> None:
    # the service and --stream gave p_value and anomaly_probability; `anovae score -o` did not
    from anovae.dask import _meta
    from anovae.scoring import score_frame

    det = make_detector(AEDetector, threshold="fpr", threshold_param=0.1).fit(data.X_train)
    frame = data.frame(data.X_test)
    out = score_frame(det, frame)
    np.testing.assert_allclose(out["p_value"],
                               conformal_pvalues(det.calibration_scores_, out["anomaly_score"]))
    np.testing.assert_allclose(out["anomaly_probability"], 1 - out["p_value"])
    assert list(_meta(det, None, 3, frame).columns) == ["row", *out.columns]
    plain = make_detector(AEDetector).fit(data.X_train)
    assert "p_value" not in score_frame(plain, frame).columns
