"""The HTTP scoring service: a FastAPI app factory, thin routes over the library.

``create_app(models)`` builds the app; the models are loaded once, in the app's lifespan (never at
import). Routes (OpenAPI docs at ``/docs``):

- ``POST /v1/score`` and ``POST /v1/models/{name}/score``: a batch of records in, per record
  ``anomaly_score`` (higher = more anomalous), ``is_anomaly``, the conformal ``p_value`` and
  ``anomaly_probability`` when the model has calibration scores, and the top features (their
  contribution and its excess over the feature's typical one, which ranks them); for a model
  fitted on a mixed table also ``unseen_category``, the columns holding a category never seen
  in training. Records come as objects keyed by column name (``records``), as columns
  (``columns``), or as arrays in the model's feature order (``instances``); for image models as
  nested arrays (``instances``) or base64-encoded PNG/JPEG (``images``).
- ``GET /v1/model``, ``GET /v1/models/{name}``, ``GET /v1/models``: schema, threshold, score
  type, training date, library and format versions.
- ``GET /healthz`` (alive), ``GET /readyz`` (models loaded), ``GET /metrics`` (Prometheus text:
  requests by route and status, a latency histogram, records scored, anomalies flagged).

``/v1/score`` and ``/v1/model`` serve the default model: the first one given.

Safe by default: with an API key every ``/v1`` request must carry it (``X-API-Key: KEY`` or
``Authorization: Bearer KEY``); bodies over ``max_body_bytes`` get 413 before they are parsed,
batches over ``max_records`` get 413; malformed JSON gets 400, and wrong columns, missing values,
NaN, wrong shapes and wrong types get 422 with a message naming the column and the record (or
the bad value). A mixed-table model reads numbers written as text (``"1e3"``) in its numeric
columns as numbers, as a CSV file is read; other models take JSON numbers only. Metrics are per
process (each ``--workers`` process counts its own requests).

Scoring runs on the event loop, without a hop to a thread pool (the cheapest for the small
requests of real-time scoring): a worker scores one request at a time, so serve concurrent
clients with ``--workers`` (one per core, ``--threads 1``).

Example:
    >>> import numpy as np
    >>> from fastapi.testclient import TestClient
    >>> from anovae import VAEDetector
    >>> X = np.random.default_rng(0).normal(size=(200, 2))
    >>> det = VAEDetector(epochs=2, random_state=0).fit(X)
    >>> with TestClient(create_app({"demo": det})) as client:
    ...     r = client.post("/v1/score", json={"records": [{"x0": 0.1, "x1": 9.0}]})
    >>> r.status_code, sorted(r.json()["results"][0])
    (200, ['anomaly_score', 'is_anomaly', 'top_features'])
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydantic_core
from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from anovae._text import quoted
from anovae._version import __version__
from anovae.exceptions import DataError
from anovae.persistence import load
from anovae.streaming import RecordScorer, input_shape

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_RECORDS", "app_from_env", "create_app"]

logger = logging.getLogger(__name__)

#: Records per scoring request, at most (a larger batch gets 413).
DEFAULT_MAX_RECORDS = 10_000
#: Request body size, at most (a larger body gets 413 before it is parsed).
DEFAULT_MAX_BODY_BYTES = 16 * 2**20
#: Environment variables read by :func:`app_from_env` (``anovae serve`` sets the first).
CONFIG_ENV = "ANOVAE_SERVE_CONFIG"
API_KEY_ENV = "ANOVAE_API_KEY"
#: Upper bounds (seconds) of the latency histogram's buckets.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Key of the loaded models in the lifespan state.
_STATE_KEY = "anovae_models"
_LIMITS_KEY = "anovae_limits"  # (max_records, api_key) of the app


# -- request and response bodies -------------------------------------------------------------
class ScoreRequest(BaseModel):
    """A batch of records: exactly one of ``records``, ``columns``, ``instances`` or
    ``images``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"records": [{"f0": 0.3, "f1": -1.2}, {"f0": 8.1, "f1": 0.4}]},
        {"columns": {"f0": [0.3, 8.1], "f1": [-1.2, 0.4]}, "top_k": 1},
        {"instances": [[0.3, -1.2], [8.1, 0.4]], "explain": True},
    ]})

    records: list[dict[str, Any]] | None = Field(
        None, description="Records as objects keyed by column name; numbers (or booleans) for "
                          "every column the model was fitted on (a mixed-table model also takes "
                          "text categories, null for a missing cell and numbers written as "
                          "text). Other keys are ignored.")
    columns: dict[str, list[Any]] | None = Field(
        None, description="The columnar form: {column name: [one number per record]}.")
    instances: list[Any] | None = Field(
        None, description="Records as arrays of numbers in the model's feature order; for image "
                          "models nested arrays, (H, W), (H, W, C) or (C, H, W), of integer "
                          "pixels 0-255 or floats in [0, 1].")
    images: list[str] | None = Field(
        None, description="For image models: base64-encoded PNG or JPEG images (or data: "
                          "URLs) of the model's size and channel count (grey or colour).")
    # strict: "3" and "yes" were coerced to 3 and true; a whole float (3.0, what some JSON
    # writers make of every number) is taken as the integer (_whole_top_k)
    top_k: int | None = Field(None, ge=0, le=1000, strict=True,
                              description="Top features per record, by excess (default: the "
                                          "server's, 3).")
    explain: bool = Field(False, strict=True,
                          description="Add each top feature's observed value and the model's "
                                      "expected (reconstructed) value.")

    @field_validator("top_k", mode="before")
    @classmethod
    def _whole_top_k(cls, v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return v

    @model_validator(mode="after")
    def _one_form(self) -> ScoreRequest:
        given = [k for k in ("records", "columns", "instances", "images")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'records', 'columns', 'instances' or 'images'"
                             + (f" (got {given})" if given else ""))
        return self


Cell = float | bool | str | None


class FeatureContribution(BaseModel):
    feature: str = Field(description="Column name (x0, x1... for models fitted on arrays).")
    contribution: float = Field(description="The feature's share of the anomaly score.")
    excess: float | None = Field(description="The contribution minus the feature's typical one "
                                             "(its median over training rows); features rank "
                                             "by it. null for models without typical "
                                             "contributions (images, files from anovae < 0.4).")
    value: Cell = Field(None, description="Observed value (with explain; text, true/false or "
                                          "null for the columns of a mixed table).")
    expected: Cell = Field(None, description="The model's expected value (with explain): the "
                                             "reconstruction; the most likely category, or the "
                                             "probability of true, for a mixed table.")


class RecordScore(BaseModel):
    anomaly_score: float = Field(description="Higher = more anomalous.")
    is_anomaly: bool = Field(description="anomaly_score > the model's threshold.")
    p_value: float | None = Field(None, description="Conformal p-value against held-out normal "
                                                    "rows (models fitted with calibration rows).")
    anomaly_probability: float | None = Field(None, description="1 - p_value.")
    top_features: list[FeatureContribution]
    unseen_category: list[str] | None = Field(
        None, description="Mixed-table models: the columns whose value in this record is a "
                          "category never seen in training, or a number other than 0/1 in a "
                          "boolean column (empty when none). Absent for other models.")


#: Hex digits of the model's checksum (persistence.CHECKSUM_KEY) that name its version.
VERSION_DIGITS = 12


class ScoreResponse(BaseModel):
    model: str
    model_version: str | None = Field(
        None, description="The first hex digits of the model's checksum (the SHA-256 of its "
                          "JSON document and tensors, stored in the file and verified at load; "
                          "not the file's sha256sum). Null for a model served without a file, "
                          "or changed since it was loaded. Tells which file answered, e.g. "
                          "while workers restart after the file was replaced.")
    score_type: str
    threshold: float
    n_records: int
    n_anomalies: int
    results: list[RecordScore]


class ColumnInfo(BaseModel):
    name: str
    type: str = Field("numeric", description="numeric (JSON numbers); for a mixed-table model "
                                             "numeric, boolean or categorical (those take "
                                             "text; every column of a mixed table takes null "
                                             "for a missing cell).")
    categories: list[str] | None = Field(None, description="A categorical column's categories "
                                                           "seen in training.")


class ModelInfo(BaseModel):
    name: str
    estimator: str
    score_type: str = Field(description="elbo, reconstruction_probability, iwae or "
                                        "reconstruction; higher = more anomalous.")
    threshold: float
    threshold_method: str | None
    n_features: int
    input_shape: list[int]
    columns: list[ColumnInfo] | None = Field(description="Null for models fitted on arrays "
                                                         "(send 'instances' or x0, x1...).")
    has_p_value: bool
    model_version: str | None = Field(
        None, description="The first hex digits of the model's checksum, as in each score "
                          "response.")
    trained_utc: str | None
    trained_with_library_version: str | None
    format_version: int | None = Field(
        description="The model file's format version (null for a model served without a file).")
    library_version: str = Field(description="The anovae serving this model.")
    max_records: int
    max_body_bytes: int


class Problem(BaseModel):
    detail: str
    errors: list[dict[str, Any]] | None = None


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": what} for code, what in [
        (400, "Malformed JSON."), (401, "Missing or wrong API key."), (404, "Unknown model."),
        (413, "Body or batch too large."), (415, "Body not sent as JSON."),
        (422, "Wrong schema, missing columns, NaN..."),
    ]}


def check_model_name(name: Any) -> None:
    """A ``ValueError`` for a name no URL path can carry (``/v1/models/NAME/score``)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"model name {name!r} must be 1-64 letters, digits, '_', '.' or "
                         "'-', starting with a letter or digit")


# -- the served models -----------------------------------------------------------------------
@dataclass
class _Served:
    """One loaded model and what each request needs, computed once."""

    name: str
    detector: Any
    scorer: RecordScorer
    info: ModelInfo


def _columns(schema: Any, names: Any) -> list[ColumnInfo]:
    kinds = getattr(schema, "kinds", None)
    if kinds is None:
        return [ColumnInfo(name=str(n)) for n in names]
    return [ColumnInfo(name=str(n), type=kind, categories=None if vocab is None else list(vocab))
            for n, kind, vocab in zip(names, kinds, schema.vocabularies, strict=True)]


def _served(name: str, det: Any, max_records: int, max_body_bytes: int, top_k: int) -> _Served:
    meta = getattr(det, "metadata_", {}) or {}
    names = getattr(det.schema_, "names", None)
    shape = input_shape(det)
    scorer = RecordScorer(det, top_k=top_k)
    info = ModelInfo(
        name=name, estimator=type(det).__name__, score_type=det.score_name,
        threshold=float(det.threshold_),
        threshold_method=getattr(det, "threshold_method_", None),
        n_features=int(np.prod(shape)), input_shape=list(shape),
        columns=None if names is None else _columns(det.schema_, names),
        has_p_value=scorer.calibration is not None,
        model_version=meta["sha256"][:VERSION_DIGITS] if meta.get("sha256") else None,
        trained_utc=meta.get("created_utc"),
        trained_with_library_version=meta.get("library_version"),
        format_version=meta.get("format_version"),
        library_version=__version__, max_records=max_records, max_body_bytes=max_body_bytes)
    return _Served(name, det, scorer, info)


# -- metrics ---------------------------------------------------------------------------------
class _Metrics:
    """Prometheus counters and a latency histogram, kept in plain dicts (one event loop)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, list[float]] = {}  # route -> bucket counts + [sum, count]
        self.records: dict[str, int] = {}
        self.anomalies: dict[str, int] = {}
        self.errors: dict[tuple[str, int], int] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get(route)
        if hist is None:
            hist = self.latency[route] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                hist[i] += 1
                break
        hist[-2] += seconds
        hist[-1] += 1

    def render(self, models: Mapping[str, _Served]) -> str:
        lines = ["# HELP anovae_http_requests_total HTTP requests by method, route and status.",
                 "# TYPE anovae_http_requests_total counter"]
        for (method, route, status), n in sorted(self.requests.items()):
            lines.append(f'anovae_http_requests_total{{method="{method}",route="{route}",'
                         f'status="{status}"}} {n}')
        lines += ["# HELP anovae_http_request_duration_seconds Request latency (server side).",
                  "# TYPE anovae_http_request_duration_seconds histogram"]
        for route, hist in sorted(self.latency.items()):
            cum = 0.0
            for bound, n in zip(LATENCY_BUCKETS, hist, strict=False):
                cum += n
                lines.append(f'anovae_http_request_duration_seconds_bucket{{route="{route}",'
                             f'le="{bound}"}} {int(cum)}')
            lines.append(f'anovae_http_request_duration_seconds_bucket{{route="{route}",'
                         f'le="+Inf"}} {int(hist[-1])}')
            lines.append(f'anovae_http_request_duration_seconds_sum{{route="{route}"}} '
                         f'{hist[-2]:.6f}')
            lines.append(f'anovae_http_request_duration_seconds_count{{route="{route}"}} '
                         f'{int(hist[-1])}')
        for metric, help_, table in [
            ("anovae_records_scored_total", "Records scored, by model.", self.records),
            ("anovae_anomalies_flagged_total", "Records flagged as anomalies, by model.",
             self.anomalies),
        ]:
            lines += [f"# HELP {metric} {help_}", f"# TYPE {metric} counter"]
            for name in models:
                lines.append(f'{metric}{{model="{name}"}} {table.get(name, 0)}')
        lines += ["# HELP anovae_model_threshold The decision threshold of each served model.",
                  "# TYPE anovae_model_threshold gauge"]
        for name, served in models.items():
            lines.append(f'anovae_model_threshold{{model="{name}",'
                         f'score_type="{served.info.score_type}"}} {served.info.threshold!r}')
        return "\n".join(lines) + "\n"


class _JSONRequest(Request):
    """A request whose JSON body is parsed by pydantic-core's parser (Rust): several times
    faster than the standard library's on 1,000-record batches, with its own nesting limit (no
    RecursionError) and a message naming the line and column of a syntax error. NaN and
    Infinity literals are read (the scorer refuses them with a 422 naming the record)."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = pydantic_core.from_json(await self.body(), allow_inf_nan=True)
            except ValueError as exc:  # FastAPI turns this into a "json_invalid" error (400)
                raise json.JSONDecodeError(str(exc), "", 0) from None
            # too many records: 413 before the body is validated (validating a 16 MiB batch of
            # 5 M empty records took 2 s and half of its 650 MB, to be refused after)
            # (a request without the API key still gets 401 first, as every other does)
            limit, api_key = getattr(self.app.state, _LIMITS_KEY, (None, None))
            n = _batch_records(self._json)
            if limit is not None and n > limit:
                if api_key is not None and not _carries_key(self, api_key):
                    raise HTTPException(401, _KEY_MESSAGE, headers={"WWW-Authenticate": "Bearer"})
                raise HTTPException(413, _too_many(n, limit))
        return self._json


def _batch_records(body: Any) -> int:
    """The number of records of a scoring request's parsed JSON body: the length of its
    ``records``, ``instances`` or ``images`` list, or of its longest ``columns`` list (extra
    columns count too), the largest of them when several are given (validation refuses that
    later: the limit comes first); 0 for what is not such a body."""
    if not isinstance(body, dict):
        return 0
    sizes = [len(body[k]) for k in ("records", "instances", "images")
             if isinstance(body.get(k), list)]
    columns = body.get("columns")
    if isinstance(columns, dict):
        sizes += [len(v) for v in columns.values() if isinstance(v, list)]
    return max(sizes, default=0)


def _too_many(n: int, limit: int) -> str:
    return f"{n} records exceed the limit of {limit} per request (--max-records)"


class _Route(APIRoute):
    """FastAPI's route, handing its endpoint a :class:`_JSONRequest`."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def route_handler(request: Request) -> Response:
            return await handler(_JSONRequest(request.scope, request.receive))

        return route_handler


def _loaded(request: Request) -> dict[str, _Served]:
    """The models the lifespan of the server handling ``request`` loaded (empty: none yet)."""
    return getattr(request.state, _STATE_KEY, None) or {}


_KEY_MESSAGE = ("missing or wrong API key: send it as 'X-API-Key: KEY' or "
                "'Authorization: Bearer KEY'")


def _carries_key(request: Request, api_key: str) -> bool:
    """Whether ``request`` carries ``api_key`` (``X-API-Key`` or ``Authorization: Bearer``)."""
    given = request.headers.get("x-api-key")
    if given is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
    return given is not None and secrets.compare_digest(given.encode(), api_key.encode())


def _problem(status: int, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status)


class _Guard:
    """Pure ASGI middleware: body-size limit (413 before parsing) and request metrics."""

    def __init__(self, app: Any, metrics: _Metrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        limit = self.max_body_bytes

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                length = _content_length(scope)
                too_big = length is not None and length > limit
                if not too_big:
                    body, too_big, receive = await _read_body(receive, limit)
                if too_big:
                    await _problem(413, f"the request body exceeds the limit of {limit} bytes "
                                        "(--max-body-bytes)")(scope, receive, send_status)
                    return
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(scope["method"], _route_path(scope), status,
                                 time.perf_counter() - t0)


_COUNTS = re.compile(r" \(\d+ rows?\)")


def _named_record(detector: Any, rows: Any, exc: DataError, word: str) -> DataError:
    """A mixed-table model's check of a batch (``rows``, a DataFrame) failed with ``exc``, which
    names the column but calls the batch "X": the same error for the first record that has
    the problem (``record 3``), found by bisection over the batch's first rows (the check
    reports the first column, in the model's order, that fails in any row, and its first bad
    value). ``exc`` itself when the check passes (the error came from elsewhere)."""
    from anovae.mixed import check_mixed

    schema = detector.schema_

    def problem(part: Any, what: str = "X") -> str | None:
        try:
            check_mixed(part, schema, what=what)
        except DataError as err:
            return _COUNTS.sub("", str(err))
        return None

    whole = problem(rows)
    if whole is None:
        return exc
    lo, hi = 1, len(rows)  # the shortest prefix of the batch that fails as the batch does
    while lo < hi:
        mid = (lo + hi) // 2
        if problem(rows.iloc[:mid]) == whole:
            hi = mid
        else:
            lo = mid + 1
    i = lo - 1
    if problem(rows.iloc[[i]]) == whole:  # the record alone has it (not one of a batch)
        return DataError(problem(rows.iloc[[i]], f"{word} {i}") or whole)
    return DataError(problem(rows, "the batch") or whole)


def _route_path(scope: dict[str, Any]) -> str:
    """The path template of the route that answered (``/v1/models/{name}/score``), the label
    of the request metrics; ``unmatched`` when none did (a 404). FastAPI's own routes of the
    docs (``/docs``, ``/openapi.json``...) are plain Starlette routes, which leave only their
    endpoint in the scope: their route is looked up by it."""
    path = getattr(scope.get("route"), "path", None)
    if path:
        return str(path)
    endpoint, router = scope.get("endpoint"), scope.get("router")
    if endpoint is not None and router is not None:
        for route in getattr(router, "routes", ()):
            if getattr(route, "endpoint", None) is endpoint:
                return str(route.path)
    return "unmatched"


def _content_length(scope: dict[str, Any]) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _read_body(receive: Any, limit: int) -> tuple[bytes, bool, Any]:
    """Read the whole body (up to ``limit`` bytes): (body, too big, a receive that replays it)."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            chunks = []
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True, receive
        chunks.append(chunk)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, False, replay


# -- the app ---------------------------------------------------------------------------------
def create_app(
    models: Mapping[str, str | os.PathLike | Any] | str | os.PathLike | Any,
    *,
    api_key: str | None = None,
    max_records: int = DEFAULT_MAX_RECORDS,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    top_k: int = 3,
    torch_threads: int | None = None,
    freeze_gc: bool = False,
) -> FastAPI:
    """The scoring service for one or several models.

    Args:
        models: ``{name: model path or fitted detector}``, or one path (named by its file stem)
            or one detector (named ``"default"``). Paths are loaded in the app's lifespan;
            ``/v1/score`` serves the first model.
        api_key: when set, every ``/v1`` request must send it (``X-API-Key`` header or
            ``Authorization: Bearer``); health, readiness, metrics and docs stay open.
        max_records: records per scoring request, at most.
        max_body_bytes: request body size, at most.
        top_k: top features (by excess) per record, unless a request asks otherwise.
        torch_threads: torch's intra-op threads for this process (``None``: leave torch's
            setting; 1 suits small networks, one worker per core).
        freeze_gc: after loading the models, move every object alive to the garbage
            collector's permanent generation (:func:`gc.freeze`), so that the full collections
            a scoring request triggers no longer walk the ~400,000 objects of torch, pandas and
            the models (tens to hundreds of ms each; docs/benchmarks.md). Process-wide: for a
            server process (``anovae serve`` sets it), not for an app inside a test process.

    Returns:
        The FastAPI app; run it with uvicorn, or in tests with ``fastapi.testclient.TestClient``
        (as a context manager, so the lifespan loads the models).
    """
    if not isinstance(models, Mapping):
        if isinstance(models, (str, os.PathLike)):
            models = {Path(models).stem: models}
        else:
            models = {"default": models}
    if not models:
        raise ValueError("create_app needs at least one model")
    for name in models:
        check_model_name(name)
    if max_records < 1 or max_body_bytes < 1:
        raise ValueError("max_records and max_body_bytes must be positive")
    sources = dict(models)
    default_name = next(iter(sources))
    metrics = _Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # The loaded models live in the lifespan's state (each request gets it in
        # ``request.state``), not in the app: a server that runs the lifespan serves what that
        # lifespan loaded, and a second lifespan of the same app (a test harness beside a
        # TestClient) cannot unload the first one's models when it shuts down.
        if torch_threads is not None:
            import torch

            torch.set_num_threads(int(torch_threads))
        loaded: dict[str, _Served] = {}
        for name, source in sources.items():
            det = load(source) if isinstance(source, (str, os.PathLike)) else source
            det._check_fitted()
            served = _served(name, det, max_records, max_body_bytes, top_k)
            try:  # warm up (the first forward pass is slow); zeros may not be valid input
                served.detector.decision_function(np.zeros((1, *served.scorer.shape)))
            except DataError:
                pass
            loaded[name] = served
            logger.info("serving model %r (%s, score %s)", name, served.info.estimator,
                        served.info.score_type)
        if freeze_gc:
            gc.collect()
            gc.freeze()
        yield {_STATE_KEY: loaded}

    app = FastAPI(
        title="anovae scoring service",
        version=__version__,
        summary="Anomaly scores from variational autoencoders: higher = more anomalous.",
        lifespan=lifespan,
    )
    app.router.route_class = _Route
    setattr(app.state, _LIMITS_KEY, (max_records, api_key))  # read by _JSONRequest.json
    app.add_middleware(_Guard, metrics=metrics, max_body_bytes=max_body_bytes)

    header_key = APIKeyHeader(name="X-API-Key", auto_error=False)
    bearer = HTTPBearer(auto_error=False)

    async def check_key(request: Request, key: str | None = Security(header_key),
                        auth: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        # async: a plain ``def`` dependency would cost every request a hop to a thread pool;
        # the two Security parameters declare the schemes in the OpenAPI document
        if api_key is not None and not _carries_key(request, api_key):
            raise HTTPException(401, _KEY_MESSAGE, headers={"WWW-Authenticate": "Bearer"})

    def model_named(request: Request, name: str) -> _Served:
        loaded = _loaded(request)
        served = loaded.get(name)
        if served is None:
            if not loaded:
                raise HTTPException(503, "the models are not loaded yet")
            raise HTTPException(404, f"no model named {quoted(name)}; served: "
                                     f"{sorted(loaded)}")  # (a name as long as the URL was)
        return served

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI validates the body before the key's dependency runs: without the key, say so
        # first (and nothing about the body)
        if api_key is not None and not _carries_key(request, api_key):
            return JSONResponse({"detail": _KEY_MESSAGE}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")}
                  for e in exc.errors()][:20]
        ctype = request.headers.get("content-type", "")
        if "json" not in ctype.lower() and any(  # a body, read as bytes, was sent
                tuple(e.get("loc", ()))[:1] == ("body",) and e.get("input") not in (None, b"", "")
                for e in exc.errors()):
            # curl -d sends a form: the JSON object in it is not read ("a valid dictionary")
            return _problem(415, "send the body as JSON with the header 'Content-Type: "
                                 f"application/json' (got {ctype or 'no Content-Type'!r})")
        if any(e.get("type") == "json_invalid" for e in errors):
            ctx = next((e.get("ctx") or {} for e in exc.errors() if e.get("type") ==
                        "json_invalid"), {})
            return _problem(400, f"malformed JSON: {ctx.get('error', 'cannot be parsed')}",
                            errors=jsonable(errors))
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _problem(422, f"{where}: {first.get('msg')}" if where else str(first.get("msg")),
                        errors=jsonable(errors))

    @app.exception_handler(DataError)
    async def _data_error(request: Request, exc: DataError) -> JSONResponse:
        return _problem(422, str(exc))

    v1 = [Depends(check_key)]

    def score(served: _Served, body: ScoreRequest) -> Response:
        scorer = served.scorer  # (the batch size was checked as the body was parsed)
        if body.records is not None:
            rows = scorer.rows_from_records(body.records)
        elif body.columns is not None:
            rows = scorer.rows_from_columns(body.columns)
        elif body.images is not None:
            rows = scorer.rows_from_images(body.images)
        else:
            rows = scorer.rows_from_instances(body.instances)
        try:
            results = scorer.score(rows, explain=body.explain, top_k=body.top_k)
        except DataError as exc:
            if scorer.kinds is None or not hasattr(rows, "iloc"):  # checked record by record
                raise
            word = "instance" if body.instances is not None else "record"
            raise _named_record(served.detector, rows, exc, word) from None
        n_anom = sum(r["is_anomaly"] for r in results)
        metrics.records[served.name] = metrics.records.get(served.name, 0) + len(results)
        metrics.anomalies[served.name] = metrics.anomalies.get(served.name, 0) + n_anom
        doc = {"model": served.name, "model_version": served.info.model_version,
               "score_type": served.info.score_type,
               "threshold": served.info.threshold, "n_records": len(results),
               "n_anomalies": n_anom, "results": results}
        # pydantic-core's serialiser (shortest round-trip floats, like json.dumps; 5x faster)
        return Response(pydantic_core.to_json(doc), media_type="application/json")

    @app.post("/v1/score", response_model=ScoreResponse, responses=_ERRORS, dependencies=v1,
              tags=["scoring"])
    async def score_default(request: Request, body: ScoreRequest) -> Response:
        """Score a batch of records with the default model (higher score = more anomalous)."""
        return score(model_named(request, default_name), body)

    @app.post("/v1/models/{name}/score", response_model=ScoreResponse, responses=_ERRORS,
              dependencies=v1, tags=["scoring"])
    async def score_named(request: Request, name: str, body: ScoreRequest) -> Response:
        """Score a batch of records with the model called ``name``."""
        return score(model_named(request, name), body)

    @app.get("/v1/model", response_model=ModelInfo, responses=_ERRORS, dependencies=v1,
             tags=["models"])
    async def model_default(request: Request) -> ModelInfo:
        """The default model: schema, threshold, score type, training date, versions."""
        return model_named(request, default_name).info

    @app.get("/v1/models", response_model=list[ModelInfo], responses=_ERRORS, dependencies=v1,
             tags=["models"])
    async def model_list(request: Request) -> list[ModelInfo]:
        """Every served model."""
        return [s.info for s in _loaded(request).values()]

    @app.get("/v1/models/{name}", response_model=ModelInfo, responses=_ERRORS, dependencies=v1,
             tags=["models"])
    async def model_info(request: Request, name: str) -> ModelInfo:
        """The model called ``name``."""
        return model_named(request, name).info

    @app.head("/healthz", include_in_schema=False)  # as some load balancers probe
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers (GET or HEAD)."""
        return {"status": "ok"}

    @app.head("/readyz", include_in_schema=False)
    @app.get("/readyz", tags=["operations"], responses={503: {"model": Problem}})
    async def readyz(request: Request) -> Response:
        """Readiness: every model is loaded and warmed up (503 until then; GET or HEAD)."""
        loaded = _loaded(request)
        if len(loaded) < len(sources):
            return _problem(503, "the models are not loaded yet")
        return JSONResponse({"status": "ready", "models": list(loaded)})

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def prometheus(request: Request) -> PlainTextResponse:
        """Prometheus text format: requests, latency histogram, records scored, anomalies."""
        return PlainTextResponse(metrics.render(_loaded(request)),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    return app


def jsonable(value: Any) -> Any:
    """Tuples to lists and anything else JSON cannot hold to its ``str`` (error details)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if np.isfinite(value) else str(value)
    return str(value)


def app_from_env() -> FastAPI:
    """The app configured by ``ANOVAE_SERVE_CONFIG`` (JSON: ``models`` {name: path} and the
    keywords of :func:`create_app`) and ``ANOVAE_API_KEY``; the factory ``anovae serve`` hands
    to uvicorn, so every worker process builds the same app."""
    raw = os.environ.get(CONFIG_ENV)
    if not raw:
        raise RuntimeError(f"{CONFIG_ENV} is not set; use `anovae serve MODEL` or create_app()")
    config = json.loads(raw)
    models = config.pop("models")
    return create_app(models, api_key=os.environ.get(API_KEY_ENV) or None, **config)
