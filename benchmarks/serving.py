"""Serving benchmark (issue 7): latency at a steady request rate, batch throughput, and a mixed
valid/malformed run, against ``anovae serve`` on loopback.

Load generators (Python, asyncio; the client and the server share the machine's cores, so the
client is kept as light as possible):

- steady rate and batches: a minimal HTTP/1.1 client on raw asyncio sockets (:class:`RawClient`:
  keep-alive connections, request bytes built once, responses read by ``Content-Length``), about
  ten times less client CPU per request than httpx. The steady rate is an open loop: each
  request is due at its scheduled time whatever the previous ones did, and its latency is
  counted from that time (waiting for a free connection included), so a slow server cannot hide
  its queueing;
- the mixed valid / malformed run: an async ``httpx`` client (a full HTTP implementation that
  reports every dropped connection).

The server runs in a subprocess started with the real CLI (``anovae serve``: uvicorn +
httptools).

    python benchmarks/serving.py              # the full runs (about 2 minutes)
    python benchmarks/serving.py --quick      # short runs, to check the script

Prints markdown tables (results go to docs/benchmarks.md, "## Serving (issue 7)").
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"{os.cpu_count()} cores ({cpu}), load average {load[0]:.1f} at start, "
            f"Python {platform.python_version()}, torch {torch.__version__}, "
            f"{dt.date.today().isoformat()}")


def fit_models(folder: Path) -> dict[str, Path]:
    """Two VAEs on scikit-learn's breast-cancer table (30 features): the default ELBO score
    (16 Monte-Carlo samples) and the reconstruction score."""
    from sklearn.datasets import load_breast_cancer

    from anovae import VAEDetector

    X = load_breast_cancer(as_frame=True).data
    X.columns = [c.replace(" ", "_") for c in X.columns]
    out = {}
    for score in ("elbo", "reconstruction"):
        det = VAEDetector(score_type=score, epochs=30, device="cpu", random_state=0).fit(X)
        out[score] = det.save(folder / f"{score}.safetensors")
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


@contextmanager
def server(models: dict[str, Path], *args: str) -> Any:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    specs = [f"{name}={path}" for name, path in models.items()]
    proc = subprocess.Popen([sys.executable, "-m", "anovae", "serve", *specs, "--port",
                             str(port), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def rows() -> tuple[list[str], np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True).data
    return [c.replace(" ", "_") for c in data.columns], data.to_numpy()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1e3


def load_average() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


class RawClient:
    """Keep-alive HTTP/1.1 connections to one server, ``POST`` of prebuilt bodies, statuses."""

    def __init__(self, url: str, n_connections: int) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port, self.n = host, int(port), n_connections
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue())

    async def __aenter__(self) -> RawClient:
        for _ in range(self.n):
            self.idle.put_nowait(await asyncio.open_connection(self.host, self.port))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        while not self.idle.empty():
            self.idle.get_nowait()[1].close()

    def request(self, path: str, body: bytes) -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json"
                f"\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body

    async def send(self, raw: bytes) -> int:
        """Send one prebuilt request on a free connection; its status (the body is read)."""
        reader, writer = await self.idle.get()
        try:
            writer.write(raw)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
        except Exception:
            writer.close()
            self.idle.put_nowait(await asyncio.open_connection(self.host, self.port))
            raise
        self.idle.put_nowait((reader, writer))
        return int(head[9:12])


# -- 1. steady rate, single records ----------------------------------------------------------
async def steady(url: str, bodies: list[bytes], rate: float, seconds: float) -> dict[str, Any]:
    n = int(rate * seconds)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    async with RawClient(url, 16) as client:
        raws = [client.request("/v1/score", b) for b in bodies]
        for raw in raws[:50]:  # warm up
            await client.send(raw)
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.1

        async def one(i: int) -> None:
            nonlocal errors
            due = t0 + i / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            try:
                status = await client.send(raws[i % len(raws)])
            except (OSError, asyncio.IncompleteReadError):
                errors += 1
                return
            latencies.append(loop.time() - due)
            statuses[status] = statuses.get(status, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - start
    return {"requests": n, "achieved_rps": n / wall, "p50_ms": pct(latencies, 50),
            "p90_ms": pct(latencies, 90), "p99_ms": pct(latencies, 99),
            "max_ms": max(latencies) * 1e3, "statuses": statuses, "transport_errors": errors}


def server_quantiles(url: str, route: str = "/v1/score") -> dict[str, float]:
    """p50 and p99 (ms) of the server's own latency histogram (``/metrics``), as Prometheus'
    ``histogram_quantile`` would read them: the upper bound of the bucket holding the quantile.
    Server-side time starts when uvicorn hands the request to the app, so it leaves out the
    client and the time the request waited in the socket."""
    buckets: list[tuple[float, int]] = []
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith(f'anovae_http_request_duration_seconds_bucket{{route="{route}",'):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), int(line.split()[-1])))
    total = buckets[-1][1]
    return {f"p{q}": next(b for b, c in buckets if c >= q / 100 * total) * 1e3 for q in (50, 99)}


# -- 2. batches, closed loop -----------------------------------------------------------------
async def batches(url: str, path: str, body: bytes, n_records: int, concurrency: int,
                  seconds: float) -> dict[str, Any]:
    done = 0
    bad = 0
    times: list[float] = []
    async with RawClient(url, concurrency) as client:
        raw = client.request(path, body)
        for _ in range(3):
            await client.send(raw)
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done, bad
            while time.perf_counter() < stop:
                t = time.perf_counter()
                status = await client.send(raw)
                times.append(time.perf_counter() - t)
                if status == 200:
                    done += 1
                else:
                    bad += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"batches": done, "records_per_s": done * n_records / wall,
            "p50_ms": pct(times, 50), "p99_ms": pct(times, 99), "non_200": bad}


# -- 4. server CPU per request, in process ---------------------------------------------------
async def _asgi_post(app: Any, state: dict[str, Any], body: bytes) -> int:
    """One ``POST /v1/score`` straight through the ASGI app (no socket, no client)."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the app never asks twice
        return {"type": "http.disconnect"}

    status = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
               "method": "POST", "path": "/v1/score", "raw_path": b"/v1/score",
               "root_path": "", "scheme": "http", "query_string": b"", "headers": headers,
               "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
               "state": dict(state)}, receive, send)
    return status


def server_cpu(model: Path, bodies: dict[str, bytes], repeats: dict[str, int]
               ) -> dict[str, tuple[float, float]]:
    """Per body: median CPU ms (``thread_time``: time on a core, not time waiting for one) and
    median wall ms of a request through the app, in this process, with one torch thread and the
    garbage collector frozen as ``anovae serve`` does."""
    import gc

    import torch

    from anovae.service import create_app

    torch.set_num_threads(1)
    app = create_app({"m": model}, freeze_gc=True)

    async def run() -> dict[str, tuple[float, float]]:
        state: dict[str, Any] = {}
        to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await to_app.put({"type": "lifespan.startup"})
        task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"},
                                        "state": state}, to_app.get, from_app.put))
        assert (await from_app.get())["type"] == "lifespan.startup.complete"
        out = {}
        for label, body in bodies.items():
            for _ in range(5):
                assert await _asgi_post(app, state, body) == 200
            cpu, wall = [], []
            for _ in range(repeats[label]):
                c0, w0 = time.thread_time(), time.perf_counter()
                await _asgi_post(app, state, body)
                cpu.append(time.thread_time() - c0)
                wall.append(time.perf_counter() - w0)
            out[label] = (float(np.median(cpu)) * 1e3, float(np.median(wall)) * 1e3)
        await to_app.put({"type": "lifespan.shutdown"})
        await task
        return out

    try:
        return asyncio.run(run())
    finally:
        gc.unfreeze()


# -- 3. mixed valid and malformed ------------------------------------------------------------
def mixed_bodies(names: list[str], X: np.ndarray, max_body: int) -> list[tuple[str, bytes]]:
    good = [dict(zip(names, map(float, row), strict=True)) for row in X[:10]]
    missing = {k: v for k, v in good[0].items() if k != names[3]}
    return [
        ("valid 1", json.dumps({"records": good[:1]}).encode()),
        ("valid 10", json.dumps({"records": good}).encode()),
        ("valid columns", json.dumps({"columns": {n: X[:5, j].tolist()
                                                  for j, n in enumerate(names)}}).encode()),
        ("malformed JSON", b'{"records": [{"a": 1'),
        ("not JSON at all", b"\x00\xff garbage"),
        ("missing column", json.dumps({"records": [missing]}).encode()),
        ("NaN", json.dumps({"records": [{**good[0], names[0]: float("nan")}]}).encode()),
        ("string", json.dumps({"records": [{**good[0], names[1]: "abc"}]}).encode()),
        ("null", json.dumps({"records": [{**good[0], names[2]: None}]}).encode()),
        ("wrong shape", json.dumps({"instances": [[1.0, 2.0]]}).encode()),
        ("empty", b'{"records": []}'),
        ("wrong form", b'{"rows": [1, 2, 3]}'),
        ("deep nesting", b"[" * 30_000 + b"]" * 30_000),  # under the body limit
        ("oversized", b'{"records": [], "pad": "' + b"x" * (max_body + 1000) + b'"}'),
    ]


async def mixed(url: str, pid: int, kinds: list[tuple[str, bytes]], n: int,
                concurrency: int) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    statuses: dict[str, dict[int, int]] = {k: {} for k, _ in kinds}
    dropped = 0
    rss: list[int] = []
    counter = iter(range(n))
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def worker() -> None:
            nonlocal dropped
            for i in counter:
                kind, body = kinds[i % len(kinds)]
                try:
                    r = await client.post("/v1/score", content=body, headers=headers)
                    s = statuses[kind]
                    s[r.status_code] = s.get(r.status_code, 0) + 1
                except httpx.TransportError:
                    dropped += 1
                if i % 1000 == 0:
                    rss.append(rss_kib(pid))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    rss.append(rss_kib(pid))
    five = sum(c for s in statuses.values() for code, c in s.items() if code >= 500)
    return {"requests": n, "seconds": wall, "5xx": five, "dropped": dropped,
            "rss_mib": [round(r / 1024, 1) for r in rss], "statuses": statuses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--sections", default="steady,batches,mixed,cpu",
                    help="comma-separated: steady, batches, mixed, cpu")
    ap.add_argument("--models", default="elbo,reconstruction",
                    help="comma-separated: elbo, reconstruction")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    seconds = 3.0 if args.quick else args.seconds
    batch_seconds = 2.0 if args.quick else 10.0
    n_mixed = 1000 if args.quick else 10_000

    print(f"machine: {machine()}\n", flush=True)
    names, X = rows()
    with tempfile.TemporaryDirectory() as tmp:
        fitted = fit_models(Path(tmp))
        models = {k: fitted[k] for k in args.models.split(",")}

        # 1. steady single-record rate, each model alone, one worker, one torch thread
        if "steady" in sections:
            print("| model (score) | requests | achieved req/s | p50 ms | p90 ms | p99 ms | "
                  "max ms | non-200 | dropped | server-side p50 / p99 ms (bucket) | "
                  "load 1/5/15 min after |")
            print("|---|---|---|---|---|---|---|---|---|---|---|")
        singles = [json.dumps({"records": [dict(zip(names, map(float, r), strict=True))]}
                              ).encode() for r in X[:100]]
        for name, path in models.items() if "steady" in sections else ():
            with server({name: path}, "--threads", "1") as (url, _):
                res = asyncio.run(steady(url, singles, args.rate, seconds))
                side = server_quantiles(url)
            non200 = sum(c for k, c in res["statuses"].items() if k != 200)
            print(f"| {name} | {res['requests']} | {res['achieved_rps']:.0f} | "
                  f"{res['p50_ms']:.2f} | {res['p90_ms']:.2f} | {res['p99_ms']:.2f} | "
                  f"{res['max_ms']:.1f} | {non200} | {res['transport_errors']} | "
                  f"<= {side['p50']:g} / <= {side['p99']:g} | {load_average()} |", flush=True)

        # 2. 1,000-record batches
        if "batches" in sections:
            print("\n| model (score) | body form | workers x threads | concurrency | batches | "
                  "records/s | p50 ms/batch | p99 ms/batch | load 1/5/15 min after |")
            print("|---|---|---|---|---|---|---|---|---|")
        Xb = np.resize(X, (1000, X.shape[1]))
        forms = {
            "records": json.dumps({"records": [dict(zip(names, map(float, r), strict=True))
                                               for r in Xb]}).encode(),
            "columns": json.dumps({"columns": {n: Xb[:, j].tolist()
                                               for j, n in enumerate(names)}}).encode(),
            "columns, top_k=0": json.dumps({"columns": {n: Xb[:, j].tolist()
                                                        for j, n in enumerate(names)},
                                            "top_k": 0}).encode(),
        }
        for name, path in models.items() if "batches" in sections else ():
            for workers, threads, conc in [(1, 1, 2), (2, 1, 4)]:
                with server({name: path}, "--workers", str(workers), "--threads",
                            str(threads)) as (url, _):
                    for form, body in forms.items():
                        res = asyncio.run(batches(url, "/v1/score", body, 1000, conc,
                                                  batch_seconds))
                        print(f"| {name} | {form} | {workers} x {threads} | {conc} | "
                              f"{res['batches']} | {res['records_per_s']:,.0f} | "
                              f"{res['p50_ms']:.1f} | {res['p99_ms']:.1f} | "
                              f"{load_average()} |", flush=True)

        # 4. server CPU per request (in process: no client, no sockets)
        if "cpu" in sections:
            print("\n| model (score) | request | server CPU ms (median) | wall ms (median) | "
                  "records/s per core (CPU) | load 1/5/15 min after |")
            print("|---|---|---|---|---|---|")
            single = {"1 record": singles[0]}
            bodies = {**single, **{f"1,000 {k}": v for k, v in forms.items()}}
            repeats = {k: (1000 if k == "1 record" else 50) for k in bodies}
            for name, path in models.items():
                for label, (cpu, wall) in server_cpu(path, bodies, repeats).items():
                    n = 1 if label == "1 record" else 1000
                    print(f"| {name} | {label} | {cpu:.2f} | {wall:.2f} | "
                          f"{n / cpu * 1e3:,.0f} | {load_average()} |", flush=True)

        # 3. mixed valid / malformed requests
        if "mixed" not in sections:
            return
        max_body = 65536
        kinds = mixed_bodies(names, X, max_body)
        with server({"elbo": models["elbo"]}, "--threads", "1", "--max-body-bytes",
                    str(max_body)) as (url, pid):
            res = asyncio.run(mixed(url, pid, kinds, n_mixed, 8))
        print(f"\nmixed run: {res['requests']} requests in {res['seconds']:.1f}s, "
              f"5xx: {res['5xx']}, dropped connections: {res['dropped']}, "
              f"server RSS (MiB, every 1000 requests): {res['rss_mib']}, "
              f"load 1/5/15 min after: {load_average()}")
        print("\n| request kind | statuses |")
        print("|---|---|")
        for kind, st in res["statuses"].items():
            print(f"| {kind} | {', '.join(f'{k}: {v}' for k, v in sorted(st.items()))} |")


if __name__ == "__main__":
    main()
