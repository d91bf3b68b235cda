"""The HTTP service, in-process (FastAPI's TestClient): scores, model info, health, metrics, the
API key, and the bad-request matrix (every bad request is a 4xx with a message, never a 5xx)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from anovae import AEDetector, VAEDetector, load  # noqa: E402
from anovae.service import create_app  # noqa: E402
from conftest import bomb_png  # noqa: E402

COLS = [f"f{i}" for i in range(5)]


@pytest.fixture(scope="module")
def calibrated(data: Any, make_detector: Callable[..., Any]) -> VAEDetector:
    """A tiny VAE with conformal calibration scores (so responses carry p-values)."""
    return make_detector(VAEDetector, threshold="fpr", threshold_param=0.1).fit(
        data.frame(data.X_train))


@pytest.fixture(scope="module")
def client(fitted_vae_frame: VAEDetector, calibrated: VAEDetector,
           fitted_ae: AEDetector) -> Iterator[TestClient]:
    app = create_app({"main": fitted_vae_frame, "calib": calibrated, "arr": fitted_ae})
    with TestClient(app) as c:  # runs the lifespan (loading and warm-up)
        yield c


@pytest.fixture(scope="module")
def small_client(fitted_vae_frame: VAEDetector) -> Iterator[TestClient]:
    app = create_app(fitted_vae_frame, max_records=5, max_body_bytes=2000, api_key="s3cret")
    with TestClient(app) as c:
        yield c


def records(X: np.ndarray) -> list[dict[str, float]]:
    return [dict(zip(COLS, map(float, row), strict=True)) for row in X]


# -- scoring ---------------------------------------------------------------------------------
def test_scores_match_the_detector(client: TestClient, data: Any,
                                   fitted_vae_frame: VAEDetector) -> None:
    X = data.X_test[:20]
    r = client.post("/v1/score", json={"records": records(X)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "main" and body["n_records"] == 20
    assert body["score_type"] == "elbo" and body["threshold"] == fitted_vae_frame.threshold_
    got = np.array([res["anomaly_score"] for res in body["results"]])
    np.testing.assert_array_equal(got, fitted_vae_frame.decision_function(data.frame(X)))
    flags = [res["is_anomaly"] for res in body["results"]]
    assert flags == fitted_vae_frame.predict(data.frame(X)).astype(bool).tolist()
    assert body["n_anomalies"] == sum(flags)
    feats = fitted_vae_frame.feature_scores(data.frame(X))
    excess = feats - fitted_vae_frame.feature_baselines_["elbo"]  # (20, D): what ranks
    for res, row, ex in zip(body["results"], feats, excess, strict=True):
        assert "p_value" not in res  # this model has no calibration scores
        top = res["top_features"]
        assert len(top) == 3
        j = int(np.argmax(ex))
        assert top[0]["feature"] == COLS[j]
        assert top[0]["contribution"] == pytest.approx(row[j])
        assert top[0]["excess"] == pytest.approx(ex[j])


def test_three_input_forms_agree(client: TestClient, data: Any) -> None:
    X = data.X_test[:7]
    forms = [{"records": records(X)},
             {"columns": {c: X[:, j].tolist() for j, c in enumerate(COLS)}},
             {"instances": X.tolist()}]
    scores = [[res["anomaly_score"] for res in client.post("/v1/score", json=f).json()["results"]]
              for f in forms]
    assert scores[0] == scores[1] == scores[2]


def test_extra_keys_and_column_order_are_fine(client: TestClient, data: Any) -> None:
    rec = dict(reversed(list(records(data.X_test[:1])[0].items())))
    rec["customer_id"] = "abc"
    a = client.post("/v1/score", json={"records": [rec]}).json()["results"][0]
    b = client.post("/v1/score", json={"instances": data.X_test[:1].tolist()}).json()
    assert a["anomaly_score"] == b["results"][0]["anomaly_score"]


def test_top_k_and_explain(client: TestClient, data: Any, fitted_vae_frame: VAEDetector) -> None:
    X = data.X_test[:4]
    r = client.post("/v1/score", json={"records": records(X), "top_k": 0})
    assert all(res["top_features"] == [] for res in r.json()["results"])
    r = client.post("/v1/score", json={"records": records(X), "top_k": 2, "explain": True})
    expected = fitted_vae_frame.explain(data.frame(X), k=2)
    got = [f for res in r.json()["results"] for f in res["top_features"]]
    assert [f["feature"] for f in got] == expected["feature"].tolist()
    np.testing.assert_allclose([f["value"] for f in got], expected["value"])
    np.testing.assert_allclose([f["expected"] for f in got], expected["expected"])
    for bad in ({"top_k": "3"}, {"explain": "yes"}, {"top_k": 2.5}, {"top_k": True}):
        r = client.post("/v1/score", json={"records": records(X), **bad})  # "3", "yes" coerced
        assert r.status_code == 422, r.text
    # a whole float is the integer (JSON writers that make every number a float)
    r = client.post("/v1/score", json={"records": records(X), "top_k": 2.0})
    assert r.status_code == 200, r.text
    assert [len(res["top_features"]) for res in r.json()["results"]] == [2] * len(X)


def test_p_values_where_the_model_has_them(client: TestClient, data: Any,
                                           calibrated: VAEDetector) -> None:
    X = data.X_test[:10]
    res = client.post("/v1/models/calib/score", json={"records": records(X)}).json()["results"]
    proba = calibrated.predict_proba(data.frame(X), method="conformal")[:, 1]
    np.testing.assert_allclose([r["anomaly_probability"] for r in res], proba)
    np.testing.assert_allclose([r["p_value"] for r in res], 1.0 - proba)


def test_models_fitted_on_arrays(client: TestClient, data: Any, fitted_ae: AEDetector) -> None:
    X = data.X_test[:3]
    r = client.post("/v1/models/arr/score", json={"instances": X.tolist()})
    assert r.status_code == 200
    np.testing.assert_array_equal([x["anomaly_score"] for x in r.json()["results"]],
                                  fitted_ae.decision_function(X))
    named = [{f"x{j}": v for j, v in enumerate(row)} for row in X.tolist()]
    r2 = client.post("/v1/models/arr/score", json={"records": named})
    assert r2.json()["results"] == r.json()["results"]


def test_model_info(client: TestClient, fitted_vae_frame: VAEDetector) -> None:
    info = client.get("/v1/model").json()
    assert info["name"] == "main" and info["estimator"] == "VAEDetector"
    assert [c["name"] for c in info["columns"]] == COLS
    assert {c["type"] for c in info["columns"]} == {"numeric"}  # the word mixed models use
    assert info["threshold"] == fitted_vae_frame.threshold_ and info["score_type"] == "elbo"
    assert info["input_shape"] == [5] and info["has_p_value"] is False
    assert client.get("/v1/models/arr").json()["columns"] is None
    assert client.get("/v1/models/arr").json()["format_version"] is None  # served without a file
    assert [m["name"] for m in client.get("/v1/models").json()] == ["main", "calib", "arr"]
    assert client.get("/v1/models/calib").json()["has_p_value"] is True


def test_loads_a_model_file_in_the_lifespan(tmp_path: Path, fitted_vae_frame: VAEDetector,
                                            data: Any) -> None:
    path = fitted_vae_frame.save(tmp_path / "fraud.safetensors")
    app = create_app(path)
    with TestClient(app) as c:
        assert c.get("/readyz").json() == {"status": "ready", "models": ["fraud"]}
        info = c.get("/v1/models/fraud").json()
        assert info["trained_utc"] and info["format_version"] == 1
        r = c.post("/v1/score", json={"records": records(data.X_test[:2])})
        assert r.json()["model"] == "fraud"
        # which file answered (workers restarted after the file was replaced load the new one)
        checksum = _header_metadata(path)["anovae.sha256"]  # what load verified
        assert info["model_version"] == r.json()["model_version"] == checksum[:12]
    with TestClient(create_app(fitted_vae_frame)) as c:  # not from a file: no version
        r = c.post("/v1/score", json={"records": records(data.X_test[:2])})
        assert r.json()["model_version"] is None
    changed = load(path)
    changed.refit_threshold(data.frame(data.X_test), method="contamination")
    with TestClient(create_app(changed)) as c:  # no longer the file's model: no version
        assert c.get("/v1/model").json()["model_version"] is None


def test_not_ready_without_the_lifespan(fitted_vae_frame: VAEDetector) -> None:
    c = TestClient(create_app(fitted_vae_frame))  # not entered: nothing loaded
    assert c.get("/healthz").status_code == 200
    assert c.get("/readyz").status_code == 503
    assert c.head("/healthz").status_code == 200 and c.head("/readyz").status_code == 503
    r = c.post("/v1/score", json={"instances": [[0.0] * 5]})
    assert r.status_code == 503 and "not loaded" in r.json()["detail"]


def test_a_second_lifespan_does_not_unload_the_first(fitted_vae_frame: VAEDetector,
                                                     data: Any) -> None:
    """Two servers (lifespans) of one app, e.g. a fuzzer's transport beside a TestClient: when
    one shuts down, the other still serves its models."""
    app = create_app(fitted_vae_frame)
    body = {"records": records(data.X_test[:2])}
    with TestClient(app) as first:
        with TestClient(app) as second:
            assert second.post("/v1/score", json=body).status_code == 200
        assert first.get("/readyz").status_code == 200
        assert first.post("/v1/score", json=body).status_code == 200


def test_health_metrics_and_docs(client: TestClient, data: Any) -> None:
    client.post("/v1/score", json={"records": records(data.X_test[:12])})
    client.post("/v1/score", json={"records": []})
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["status"] == "ready"
    text = client.get("/metrics").text
    assert 'anovae_http_requests_total{method="POST",route="/v1/score",status="200"}' in text
    assert 'route="/v1/score",status="422"' in text
    assert 'anovae_http_request_duration_seconds_bucket{route="/v1/score",le="+Inf"}' in text
    scored = [line for line in text.splitlines()
              if line.startswith('anovae_records_scored_total{model="main"}')]
    assert scored and int(scored[0].split()[-1]) >= 12
    assert "anovae_anomalies_flagged_total" in text
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/v1/models/{name}/score" in spec["paths"]


def test_api_key(small_client: TestClient, data: Any) -> None:
    body = {"records": records(data.X_test[:1])}
    assert small_client.post("/v1/score", json=body).status_code == 401
    assert small_client.get("/v1/model").status_code == 401
    wrong = small_client.post("/v1/score", json=body, headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401 and "API key" in wrong.json()["detail"]
    assert small_client.post("/v1/score", json=body,
                             headers={"X-API-Key": "s3cret"}).status_code == 200
    assert small_client.post("/v1/score", json=body,
                             headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert small_client.get("/healthz").status_code == 200  # operations stay open
    assert small_client.get("/metrics").status_code == 200
    # a bad body without the key: the key first, nothing about the body
    for bad in ("{not json", json.dumps({"records": "nope"})):
        r = small_client.post("/v1/score", content=bad,
                              headers={"Content-Type": "application/json"})
        assert r.status_code == 401 and "API key" in r.json()["detail"], r.text
    r = small_client.post("/v1/score", content="{not json", headers={
        "Content-Type": "application/json", "X-API-Key": "s3cret"})
    assert r.status_code == 400


def test_a_body_not_sent_as_json_is_415_saying_how(client: TestClient, data: Any) -> None:
    # `curl -d '{...}'` without -H 'Content-Type: application/json' sends a form
    body = json.dumps({"records": records(data.X_test[:1])})
    for ctype in (None, "application/x-www-form-urlencoded", "text/plain"):
        r = client.post("/v1/score", content=body,
                        headers={} if ctype is None else {"Content-Type": ctype})
        assert r.status_code == 415, r.text
        assert "Content-Type: application/json" in r.json()["detail"]
    r = client.post("/v1/score", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200


def test_unknown_model_is_404(client: TestClient) -> None:
    r = client.post("/v1/models/nope/score", json={"instances": [[0.0] * 5]})
    assert r.status_code == 404 and "main" in r.json()["detail"]
    r = client.post("/v1/models/" + "m" * 10_000 + "/score", json={"records": []})
    assert r.status_code == 404 and len(r.text) < 200, len(r.text)  # the name was echoed whole


def test_bad_model_names_are_refused(fitted_ae: AEDetector) -> None:
    with pytest.raises(ValueError, match="model name"):
        create_app({"a/b": fitted_ae})


# -- image models ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_client() -> Iterator[tuple[TestClient, Any, np.ndarray]]:
    """A tiny image VAE on 8x8 grey images (skipped where the image detector is absent)."""
    import anovae

    if not hasattr(anovae, "ImageVAEDetector"):
        pytest.skip("no image detector in this build")
    images = (np.random.default_rng(0).random((64, 8, 8)) * 255).astype(np.uint8)
    det = anovae.ImageVAEDetector(epochs=1, random_state=0, device="cpu").fit(images)
    with TestClient(create_app({"img": det})) as c:
        yield c, det, images


def _png(image: np.ndarray) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _bomb_png() -> str:
    import base64

    return base64.b64encode(bomb_png()).decode()


def test_image_models_take_arrays_and_pngs(image_client: Any) -> None:
    c, det, images = image_client
    want = det.decision_function(images[:3]).tolist()
    assert c.get("/v1/model").json()["input_shape"] == [1, 8, 8]
    forms = [{"instances": images[:3].tolist()},  # (H, W) integer pixels
             {"instances": images[:3, None].tolist()},  # (C, H, W)
             {"instances": (images[:3] / 255.0).tolist()},  # floats in [0, 1]
             {"images": [_png(im) for im in images[:3]]},
             {"images": ["data:image/png;base64," + _png(im) for im in images[:3]]}]
    for form in forms:
        r = c.post("/v1/score", json={**form, "top_k": 2})
        assert r.status_code == 200, r.text
        got = [res["anomaly_score"] for res in r.json()["results"]]
        np.testing.assert_allclose(got, want, rtol=1e-6)
        assert r.json()["results"][0]["top_features"][0]["feature"].startswith("x[0,")


@pytest.mark.parametrize(("body", "message"), [
    ({"images": ["not base64!"]}, "not valid base64"),
    # (Pillow's own words named the address of a BytesIO: "<_io.BytesIO object at 0x7f...>")
    ({"images": ["aGVsbG8="]}, "image 0 is not a PNG or JPEG image"),
    ({"images": [_png(np.zeros((9, 8), dtype=np.uint8))]}, "8x9 pixels"),
    ({"instances": [[[0] * 8] * 7]}, "8x7 pixels (width x height)"),
    ({"instances": [[[-1] * 8] * 8]}, "negative"),
    ({"instances": [[[1.5] * 8] * 8]}, "[0, 1]"),
    ({"instances": [[[0.5] * 8] * 7 + [[0.5] * 7 + [None]]]}, "instance 0, column 'value 63'"),
    # a string makes numpy turn every pixel to text: the bad one is still found and named
    ({"instances": [[[0] * 8] * 8, [[0] * 8] * 7 + [[0] * 7 + ["x"]]]},
     "instance 1, column 'value 63': \"x\" (not a number)"),
    # integer pixels are 8-bit, whatever else is in the batch
    ({"instances": [[[200] * 8] * 8, [[300] * 8] * 8]}, "int64 in [200, 300]"),
    ({"instances": [[[10**6] * 8] * 8]}, "[0, 255]"),
    # a decompression bomb: refused by its declared size, never decoded (was a 500)
    ({"images": [_bomb_png()]}, "image 0 declares 100000x100000 pixels (width x height); "
                                "the model takes 8x8"),
    ({"records": [{"x0": 1.0}]}, "nested arrays"),
    # a colour image for a grey model: refused as `anovae score` refuses its file (it was
    # converted to grey without a word)
    ({"images": [_png(np.zeros((8, 8, 3), dtype=np.uint8))]}, "3 channels"),
    ({"images": [_png(np.zeros((8, 8), dtype=np.uint8)),
                 _png(np.zeros((8, 8, 3), dtype=np.uint8))]},
     "the images mix grey and colour (image 0 is grey, image 1 colour)"),
])
def test_bad_images_are_422(image_client: Any, body: dict[str, Any], message: str) -> None:
    c, _, _ = image_client
    r = c.post("/v1/score", json=body)
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"] and " at 0x" not in r.json()["detail"]


def test_image_files_are_read_as_the_command_line_reads_them(image_client: Any,
                                                               tmp_path: Path) -> None:
    import base64

    from PIL import Image

    from anovae.images import read_image_folder

    c, det, images = image_client
    deep = (images[:2].astype(np.uint16) * 257)  # 16-bit: scaled by the depth, not clipped
    for i, im in enumerate(deep):
        Image.fromarray(im).save(tmp_path / f"{i}.png")
    assert Image.open(tmp_path / "0.png").mode.startswith("I")
    pngs = [base64.b64encode((tmp_path / f"{i}.png").read_bytes()).decode() for i in range(2)]
    r = c.post("/v1/score", json={"images": pngs})
    assert r.status_code == 200, r.text
    want = det.decision_function(read_image_folder(tmp_path).images)
    np.testing.assert_allclose([x["anomaly_score"] for x in r.json()["results"]], want,
                               rtol=1e-6)
    np.testing.assert_allclose(want, det.decision_function(images[:2]), rtol=1e-6)


def test_image_results_have_no_unseen_category(image_client: Any) -> None:
    c, _, images = image_client
    r = c.post("/v1/score", json={"instances": images[:1].tolist()})
    assert r.status_code == 200 and "unseen_category" not in r.json()["results"][0]


def test_an_image_scores_the_same_alone_and_in_a_batch(image_client: Any) -> None:
    c, det, images = image_client
    alone = c.post("/v1/score", json={"instances": images[:1].tolist()})
    bright = np.full_like(images[:1], 255)
    batch = c.post("/v1/score", json={"instances": np.concatenate([images[:1], bright]).tolist()})
    assert alone.status_code == 200 and batch.status_code == 200, batch.text
    assert (alone.json()["results"][0]["anomaly_score"]
            == batch.json()["results"][0]["anomaly_score"])
    np.testing.assert_allclose(alone.json()["results"][0]["anomaly_score"],
                               det.decision_function(images[:1])[0], rtol=1e-6)


def test_images_on_a_table_model_are_422(client: TestClient) -> None:
    r = client.post("/v1/score", json={"images": [_png(np.zeros((8, 8), dtype=np.uint8))]})
    assert r.status_code == 422 and "image models" in r.json()["detail"]


# -- mixed tables ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed_client(make_detector: Callable[..., Any]) -> Iterator[tuple[TestClient, Any, Any]]:
    """A tiny VAE on a table with a category, a boolean and gaps (skipped where the mixed-table
    support is absent)."""
    pytest.importorskip("anovae.mixed")
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 240
    frame = pd.DataFrame({"amount": rng.normal(50, 10, n), "country": rng.choice(["FR", "DE"], n),
                          "weekend": rng.random(n) < 0.3})
    frame.loc[::17, "amount"] = np.nan
    det = make_detector(VAEDetector).fit(frame)
    if not hasattr(det.schema_, "kinds"):
        pytest.skip("this build fits mixed tables on the numeric path")
    with TestClient(create_app({"mixed": det})) as c:
        yield c, det, frame


def test_mixed_tables_take_text_booleans_and_nulls(mixed_client: Any) -> None:
    import pandas as pd

    c, det, frame = mixed_client
    info = c.get("/v1/model").json()
    assert [(col["name"], col["type"]) for col in info["columns"]] == [
        ("amount", "numeric"), ("country", "categorical"), ("weekend", "boolean")]
    assert sorted(info["columns"][1]["categories"]) == ["DE", "FR"]
    recs = [{"amount": 52.0, "country": "FR", "weekend": False},
            {"amount": None, "country": "DE", "weekend": True},  # a gap
            {"amount": 49.0, "country": "XX", "weekend": False}]  # an unseen category
    r = c.post("/v1/score", json={"records": recs, "top_k": 1, "explain": True})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    want = det.decision_function(pd.DataFrame(recs))
    np.testing.assert_allclose([x["anomaly_score"] for x in res], want, rtol=1e-6)
    top = res[2]["top_features"][0]
    assert top["feature"] == "country" and top["value"] == "XX"
    assert isinstance(top["expected"], str)  # the most likely category
    cols = {k: [rec[k] for rec in recs] for k in recs[0]}
    r2 = c.post("/v1/score", json={"columns": cols, "top_k": 1, "explain": True})
    assert r2.json()["results"] == res


def test_mixed_results_name_the_unseen_categories(mixed_client: Any, client: TestClient,
                                                  data: Any) -> None:
    import pandas as pd

    c, det, _ = mixed_client
    recs = [{"amount": 52.0, "country": "FR", "weekend": False},
            {"amount": None, "country": "XX", "weekend": True},  # an unseen category
            {"amount": 49.0, "country": "DE", "weekend": 2},  # neither 0 nor 1: unseen
            {"amount": 49.0, "country": "YY", "weekend": 2}]
    want = [[], ["country"], ["weekend"], ["country", "weekend"]]
    flags = det.unseen_categories(pd.DataFrame(recs))
    assert [flags.columns[r].tolist() for r in flags.to_numpy()] == want  # as score -o has it
    cols = {k: [rec[k] for rec in recs] for k in recs[0]}
    for body in [{"records": recs}, {"columns": cols},
                 {"instances": [list(rec.values()) for rec in recs]}]:
        r = c.post("/v1/score", json={**body, "top_k": 0})
        assert r.status_code == 200, r.text
        assert [x["unseen_category"] for x in r.json()["results"]] == want
    plain = client.post("/v1/score", json={"records": records(data.X_test[:1])})
    assert "unseen_category" not in plain.json()["results"][0]  # a numeric table: no field
    spec = c.get("/openapi.json").json()["components"]["schemas"]["RecordScore"]
    assert "never seen in training" in spec["properties"]["unseen_category"]["description"]


def test_mixed_tables_read_numbers_written_as_text(mixed_client: Any) -> None:
    # as anovae score reads a CSV file: "1e3" in a numeric column is the number 1000
    c, _, _ = mixed_client
    recs = [{"amount": amount, "country": "FR", "weekend": False} for amount in ("1e3", 1000.0)]
    r = c.post("/v1/score", json={"records": recs})
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first == second


@pytest.mark.parametrize(("record", "message"), [
    ({"amount": "lots", "country": "FR", "weekend": False}, "'amount'"),
    ({"amount": 1.0, "country": ["FR"], "weekend": False}, "record 0, column 'country'"),
    ({"amount": 1.0, "country": "FR"}, "lacks columns"),
    ({"amount": 10**400, "country": "FR", "weekend": False}, "out of the range"),
])
def test_mixed_tables_bad_records_are_422(mixed_client: Any, record: dict[str, Any],
                                          message: str) -> None:
    c, _, _ = mixed_client
    r = c.post("/v1/score", json={"records": [record]})
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]


def test_missing_words_in_a_numeric_field_are_missing_as_in_a_csv_file(
        mixed_client: Any) -> None:
    c, _, _ = mixed_client
    recs = [{"amount": v, "country": "FR", "weekend": False}
            for v in (None, "NaN", "nan", "NA", " null ", "N/A")]
    r = c.post("/v1/score", json={"records": recs})
    assert r.status_code == 200, r.text
    scores = {x["anomaly_score"] for x in r.json()["results"]}
    assert len(scores) == 1  # every one of them a missing amount, as null is


def test_a_number_in_a_text_category_is_refused_whatever_the_other_records(
        mixed_client: Any) -> None:
    # it was a 422 alone and an unseen category beside a record holding text
    c, _, _ = mixed_client
    good = {"amount": 1.0, "country": "FR", "weekend": False}
    for batch, i in (([{**good, "country": 3}], 0), ([good, {**good, "country": 3}], 1),
                     ([good, good, {**good, "country": True}], 2)):
        r = c.post("/v1/score", json={"records": batch})
        assert r.status_code == 422, r.text
        assert f"column 'country' of record {i} holds" in r.json()["detail"]
        assert "fitted with it as a text category" in r.json()["detail"]


def test_mixed_tables_score_an_unknown_boolean_value_as_unseen(mixed_client: Any) -> None:
    # it was a 422 for the whole request; a 2 in a 0/1 column was already an unseen value
    c, _, _ = mixed_client
    good = {"amount": 1.0, "country": "FR", "weekend": False}
    r = c.post("/v1/score", json={"records": [good, {**good, "weekend": "maybe"}]})
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert second["unseen_category"] == ["weekend"] and not first["unseen_category"]
    assert second["anomaly_score"] > first["anomaly_score"]


def test_mixed_tables_bad_records_name_the_record(mixed_client: Any) -> None:
    # the library's check named the column "of X" and no record; numeric models name both
    c, _, _ = mixed_client
    good = {"amount": 1.0, "country": "FR", "weekend": False}
    recs = [good, good, {**good, "amount": "lots"}, {**good, "amount": "more"}]
    cases = [({"records": recs}, "column 'amount' of record 2 holds text (e.g. 'lots')"),
             ({"columns": {k: [r[k] for r in recs] for k in good}},
              "column 'amount' of record 2 holds text (e.g. 'lots')"),
             ({"instances": [list(r.values()) for r in recs]},
              "column 'amount' of instance 2 holds text (e.g. 'lots')")]
    for body, message in cases:
        r = c.post("/v1/score", json=body)
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert message in detail and " of X " not in detail, detail
    r = c.post("/v1/score", content='{"records": [{"amount": 1, "country": "FR", "weekend": '
                                    'false}, {"amount": Infinity, "country": "FR", "weekend": '
                                    'false}]}', headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"].startswith(
        "record 1 contains infinite values in 'amount'"), r.text
    # a megabyte of text in the number's column was repeated whole in the 422 body
    r = c.post("/v1/score", json={"records": [{**good, "amount": "x" * 1_000_000}]})
    assert r.status_code == 422 and len(r.content) < 1000, len(r.content)
    assert "holds text (e.g. 'xxxxxxxxxxxx...xxxxxxxxxxxxx')" in r.json()["detail"]


def test_docs_are_counted_under_their_own_routes(fitted_vae_frame: VAEDetector) -> None:
    with TestClient(create_app(fitted_vae_frame)) as c:  # a fresh app: counts of its own
        for path in ("/docs", "/openapi.json", "/docs", "/no-such-page"):
            c.get(path)
        text = c.get("/metrics").text
    assert 'anovae_http_requests_total{method="GET",route="/docs",status="200"} 2' in text
    assert 'anovae_http_requests_total{method="GET",route="/openapi.json",status="200"} 1' in text
    assert 'route="unmatched",status="200"' not in text
    assert 'anovae_http_requests_total{method="GET",route="unmatched",status="404"} 1' in text
    assert "# HELP anovae_records_scored_total Records scored, by model.\n" in text
    assert "# HELP anovae_anomalies_flagged_total Records flagged as anomalies, by model.\n" in text


# -- the bad-request matrix ------------------------------------------------------------------
GOOD = {"f0": 0.1, "f1": 0.2, "f2": 0.3, "f3": 0.4, "f4": 0.5}


def _rec(**changes: Any) -> str:
    rec = {**GOOD, **changes}
    return json.dumps({"records": [GOOD, rec]})


BAD = [
    # (raw body, status, a piece of the message)
    ('{"records": [', 400, "malformed JSON"),
    ('{"records": [', 400, "line 1 column 13"),  # where the syntax error is
    ('{"records": [], "x\\ud800": 1}', 400, "malformed JSON"),  # a lone surrogate
    ("\x00\xff garbage", 400, "malformed JSON"),
    ("{'records': []}", 400, "malformed JSON"),
    ("[1, 2]", 422, ""),
    ('"text"', 422, ""),
    ("{}", 422, "exactly one"),
    (json.dumps({"records": [GOOD], "instances": [[0] * 5]}), 422, "exactly one"),
    (json.dumps({"records": []}), 422, "no records"),
    (json.dumps({"records": [1, 2]}), 422, "records.0"),
    (json.dumps({"records": [GOOD, {"f0": 1.0}]}), 422, "record 1 lacks columns"),
    (_rec(f2=None), 422, "record 1, column 'f2': null"),
    (_rec(f2="abc"), 422, "not a number"),
    (_rec(f2="1.5"), 422, "not a number"),
    (_rec(f2=[1, 2]), 422, "not a number"),
    (_rec(f2={"a": 1}), 422, "not a number"),
    (_rec(f2=10**400), 422, "out of the range"),
    ('{"records": [{"f0": NaN, "f1": 0, "f2": 0, "f3": 0, "f4": 0}]}', 422, "NaN"),
    ('{"records": [{"f0": Infinity, "f1": 0, "f2": 0, "f3": 0, "f4": 0}]}', 422, "inf"),
    ('{"records": [{"f0": 1e999, "f1": 0, "f2": 0, "f3": 0, "f4": 0}]}', 422, "inf"),
    (json.dumps({"instances": [[0.0] * 4]}), 422, "shape [5]"),
    (json.dumps({"instances": [[0.0] * 5, [0.0] * 4]}), 422, "shape"),
    # numpy turns the whole batch into text: the first bad cell is still the one named
    (json.dumps({"instances": [[1, 2, 3, 4, 5], [4, 5, 6, 7, "oops"]]}), 422,
     "instance 1, column 'f4': \"oops\" (not a number)"),
    (json.dumps({"instances": [[1, 2, 3, 4, 5], [4, None, 6, 7, "oops"]]}), 422,
     "instance 1, column 'f1': null"),
    (json.dumps({"instances": [0.0] * 5}), 422, "shape"),
    (json.dumps({"instances": [[[0.0] * 5]]}), 422, "shape"),
    (json.dumps({"instances": [[0.0, 0.0, None, 0.0, 0.0]]}), 422, "instance 0, column 'f2'"),
    (json.dumps({"columns": {"f0": [1.0]}}), 422, "lack"),
    (json.dumps({"columns": {c: [1.0] * (2 if c == "f3" else 1) for c in COLS}}), 422,
     "different lengths"),
    (json.dumps({"columns": {c: [] for c in COLS}}), 422, "no records"),
    (json.dumps({"records": [GOOD], "top_k": -1}), 422, "top_k"),
    (json.dumps({"records": [GOOD], "top_k": "many"}), 422, "top_k"),
    (json.dumps({"records": [GOOD], "surprise": 1}), 422, "surprise"),
    ("[" * 100_000 + "]" * 100_000, 400, ""),  # deeper than the JSON parser goes
]


@pytest.mark.parametrize(("body", "status", "message"), BAD,
                         ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_requests_are_4xx_with_a_message(client: TestClient, body: str, status: int,
                                             message: str) -> None:
    r = client.post("/v1/score", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and message in detail


@pytest.mark.parametrize("changes", [{"f2": 1e300}, {"f2": -1e300},
                                     {"f2": 2**70, "f3": 0.5}])  # beyond int64, within a float
def test_huge_finite_values_are_scored_as_anomalies(client: TestClient,
                                                    changes: dict[str, Any]) -> None:
    # they used to overflow the network and were refused (422); scaled values are now clipped
    # (anovae.tabular.SCALED_MAX), so such a record gets a huge, finite score
    r = client.post("/v1/score", content=_rec(**changes),
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    good, huge = r.json()["results"]
    assert huge["is_anomaly"] and math.isfinite(huge["anomaly_score"])
    assert huge["anomaly_score"] > 1e6 * abs(good["anomaly_score"])


def test_other_bad_requests(client: TestClient) -> None:
    assert client.post("/v1/score", content=_rec(), headers={"Content-Type": "text/plain"}
                       ).status_code == 415  # the body is JSON: say how to send it
    assert client.post("/v1/score").status_code == 422  # no body at all
    assert client.get("/v1/score").status_code == 405
    assert client.get("/nowhere").status_code == 404
    # the worker survived all of it
    assert client.post("/v1/score", content=_rec(), headers={"Content-Type": "application/json"}
                       ).status_code == 200


def test_limits(small_client: TestClient) -> None:
    key = {"X-API-Key": "s3cret"}
    six = {"instances": [[0.0] * 5] * 6}
    r = small_client.post("/v1/score", json=six, headers=key)
    assert r.status_code == 413 and "limit of 5" in r.json()["detail"]
    big = json.dumps({"records": [GOOD] * 3, "pad": "x" * 3000})
    r = small_client.post("/v1/score", content=big, headers=key)
    assert r.status_code == 413 and "2000 bytes" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no content-length: counted as it arrives
        yield b'{"records": ['
        for _ in range(100):
            yield json.dumps(GOOD).encode() + b","
        yield json.dumps(GOOD).encode() + b"]}"

    r = small_client.post("/v1/score", content=chunks(), headers=key)
    assert r.status_code == 413
    assert small_client.post("/v1/score", json={"records": [GOOD]}, headers=key).status_code == 200


def test_the_record_limit_counts_the_longest_column(small_client: TestClient) -> None:
    key = {"X-API-Key": "s3cret"}
    # checked as the body is parsed, before it is validated (pydantic's copy of a 16 MiB batch
    # of empty records took 650 MB, then 413): six records that are not even objects get 413
    for form in ("records", "instances", "images"):
        r = small_client.post("/v1/score", json={form: [1] * 6}, headers=key)
        assert r.status_code == 413 and r.json()["detail"].startswith(
            "6 records exceed the limit of 5 per request (--max-records)"), r.text
        assert small_client.post("/v1/score", json={form: [1] * 6}).status_code == 401  # no key
    # a second, small form beside the large one hid it from the count (then 422, after the
    # whole batch was validated)
    for body in ({"columns": {}, "records": [{}] * 6}, {"instances": [1], "images": ["a"] * 6}):
        r = small_client.post("/v1/score", json=body, headers=key)
        assert r.status_code == 413, r.text
    six = {c: [0.0] * 6 for c in COLS}
    for columns in (six, {"junk": [0], **six}, {**six, "junk": []}):  # extra keys first or last
        r = small_client.post("/v1/score", json={"columns": columns}, headers=key)
        assert r.status_code == 413, r.text
        assert r.json()["detail"].startswith("6 records exceed the limit of 5")
    r = small_client.post("/v1/score", json={"columns": {"junk": [0] * 6,
                                                         **{c: [0.0] * 5 for c in COLS}}},
                          headers=key)
    assert r.status_code == 413  # an ignored column still counts: the batch is too large
    five = {"junk": [0], **{c: [0.0] * 5 for c in COLS}}
    r = small_client.post("/v1/score", json={"columns": five}, headers=key)
    assert r.status_code == 200 and r.json()["n_records"] == 5


# -- fuzzing the OpenAPI spec ----------------------------------------------------------------
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_openapi_fuzz_finds_no_5xx(client: TestClient, mode: str) -> None:
    """Schemathesis generates requests from the OpenAPI spec (valid ones, then invalid ones) for
    every operation; none may get a 5xx, every status code, content type and body must be the
    documented ones, and schema-invalid requests must be refused. Bounded: 25 seeded examples
    per operation and mode.

    (Schema-valid requests may still get a 422: the spec cannot say which columns a model
    needs, so schemathesis's "positive data accepted" check is not run.)"""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import (
        content_type_conformance,
        negative_data_rejection,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance, negative_data_rejection]
    # Schemathesis runs the app's lifespan itself (a second one beside the module's client's,
    # which keeps serving when schemathesis shuts its own down at teardown).
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    generation = schemathesis.GenerationMode(mode)
    seen = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation))
        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(checks=checks)

        try:
            check()
        except Unsatisfiable:  # negative mode: an operation with no inputs to break
            assert mode == "negative"
            continue
        seen += 1
    assert seen >= (8 if mode == "positive" else 4)


_finite = {"allow_nan": False, "allow_infinity": False}


def _values() -> Any:
    from hypothesis import strategies as st

    return st.one_of(st.floats(-1e6, 1e6, **_finite), st.integers(-10**6, 10**6),
                     st.floats(), st.none(), st.booleans(), st.text(max_size=3),
                     st.integers(), st.floats(-1e308, 1e308, **_finite))


def test_random_records_are_scored_or_refused_never_5xx(client: TestClient) -> None:
    """Property: records of any JSON scalars get 200 (all finite numbers) or a 422 that names a
    record, never a 5xx; finite values of a sane size are always scored."""
    from hypothesis import given
    from hypothesis import strategies as st

    @given(st.lists(st.fixed_dictionaries({c: _values() for c in COLS}), min_size=1, max_size=4))
    def check(recs: list[dict[str, Any]]) -> None:
        r = client.post("/v1/score", content=json.dumps({"records": recs}),
                        headers={"Content-Type": "application/json"})
        sane = all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= 1e6
                   for rec in recs for v in rec.values())
        if sane:
            assert r.status_code == 200, r.text
        else:
            assert r.status_code in (200, 422), r.text
            if r.status_code == 422:
                assert "record" in r.json()["detail"]

    check()


# -- the CLI ---------------------------------------------------------------------------------
def _header_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata())


def test_cli_serve_hands_the_config_to_uvicorn(tmp_path: Path, fitted_vae_frame: VAEDetector,
                                               fitted_ae: AEDetector, data: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import gc
    import os

    import uvicorn
    from typer.testing import CliRunner

    from anovae.cli import app
    from anovae.service import API_KEY_ENV, CONFIG_ENV, app_from_env

    a = fitted_vae_frame.save(tmp_path / "a.safetensors")
    b = fitted_ae.save(tmp_path / "b.safetensors")
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda target, **kw: calls.append({"target": target,
                                                                           **kw}))
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    monkeypatch.setenv(CONFIG_ENV, "")  # restored after the test
    runner = CliRunner()
    res = runner.invoke(app, ["serve", str(a), f"other={b}", "--workers", "2", "--max-records",
                              "7"])
    assert res.exit_code == 0, res.output
    (call,) = calls
    assert call["target"] == "anovae.service:app_from_env" and call["factory"] is True
    assert call["host"] == "127.0.0.1" and call["port"] == 8000 and call["workers"] == 2
    assert "warning" not in res.output
    assert json.loads(os.environ[CONFIG_ENV])["freeze_gc"] is True
    frozen: list[bool] = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))  # not in the test process
    with TestClient(app_from_env()) as c:
        assert frozen == [True]  # anovae serve freezes the garbage collector after loading
        assert [m["name"] for m in c.get("/v1/models").json()] == ["a", "other"]
        assert c.get("/v1/model").json()["max_records"] == 7
        r = c.post("/v1/models/other/score", json={"instances": data.X_test[:2].tolist()})
        assert r.status_code == 200

    res = runner.invoke(app, ["serve", str(a), "--host", "0.0.0.0"])
    assert res.exit_code == 0 and "without an API key" in res.output
    res = runner.invoke(app, ["serve", str(tmp_path / "missing.safetensors")])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(app, ["serve", str(a), f"a={b}"])
    assert res.exit_code == 2 and "two models are named 'a'" in res.output
    # refused before the banner, not by the workers after it
    calls.clear()
    for args, piece in (([f"a/b={a}"], "model name 'a/b' must be"),
                        ([str(a), "--host", "999.1.1.1"], "--host '999.1.1.1' is not an address"),
                        ([str(a), "--port", "70000"], "--port")):
        res = runner.invoke(app, ["serve", *args])
        assert res.exit_code == 2 and piece in res.output and "serving" not in res.output, \
            res.output
    assert not calls
    from anovae.cli.serve_export import uvicorn_log_level

    assert uvicorn_log_level(access_log=False) == "warning"  # the CLI's default level
    assert uvicorn_log_level(access_log=True) == "info"  # uvicorn logs the access lines at INFO
    monkeypatch.setattr(logging.getLogger(), "level", logging.DEBUG)  # as --log-level DEBUG
    res = runner.invoke(app, ["serve", str(a), "--access-log"])
    assert res.exit_code == 0 and calls[-1]["log_level"] == "debug", res.output
    # a file whose header reads but whose weights do not load: one line before any worker
    # starts (a worker's startup failure printed a traceback, and exit code 0 with --workers 2)
    from safetensors.torch import load_file, save_file

    tensors, meta = load_file(str(a)), _header_metadata(a)
    first = next(k for k in tensors if k.startswith("net."))
    tensors[first] = torch.full_like(tensors[first], float("nan"))
    bad = tmp_path / "nan.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    calls.clear()
    res = runner.invoke(app, ["serve", str(bad), "--workers", "2"])
    assert res.exit_code == 2 and "not finite" in res.output and not calls
    assert "Traceback" not in res.output


@pytest.mark.slow
def test_a_real_server_on_loopback(tmp_path: Path, fitted_vae_frame: VAEDetector,
                                   data: Any) -> None:
    """``anovae serve`` in a subprocess: uvicorn, the factory and the lifespan, over TCP."""
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    model = fitted_vae_frame.save(tmp_path / "m.safetensors")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ANOVAE_API_KEY": "k"}
    proc = subprocess.Popen([sys.executable, "-m", "anovae", "serve", str(model), "--port",
                             str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        body = {"records": records(data.X_test[:3])}
        assert httpx.post(f"{url}/v1/score", json=body).status_code == 401
        r = httpx.post(f"{url}/v1/score", json=body, headers={"X-API-Key": "k"})
        assert r.status_code == 200 and r.json()["n_records"] == 3
        r = httpx.post(f"{url}/v1/score", content=b"{", headers={"X-API-Key": "k",
                                                                 "Content-Type":
                                                                     "application/json"})
        assert r.status_code == 400
    finally:
        proc.terminate()
        proc.wait(timeout=30)
