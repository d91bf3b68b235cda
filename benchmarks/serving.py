"""Serving benchmark (issue 7): latency at a steady request rate, batch throughput, and a mixed
valid/malformed run, against ``anovae serve`` on loopback.

The load generator is an async ``httpx`` client (open loop for the steady rate: each request is
sent at its scheduled time whatever the previous ones did, and its latency is counted from that
time, so a slow server cannot hide its queueing). The server runs in a subprocess started with
the real CLI (uvicorn + httptools); the client and the server share the machine's cores.

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
        det = VAEDetector(score=score, epochs=30, device="cpu", random_state=0).fit(X)
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


# -- 1. steady rate, single records ----------------------------------------------------------
async def steady(url: str, bodies: list[bytes], rate: float, seconds: float) -> dict[str, Any]:
    n = int(rate * seconds)
    latencies: list[float] = []
    service: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        for body in bodies[:20]:  # warm the connections
            await client.post("/v1/score", content=body, headers=headers)
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.1

        async def one(i: int) -> None:
            nonlocal errors
            due = t0 + i / rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            sent = loop.time()
            try:
                r = await client.post("/v1/score", content=bodies[i % len(bodies)],
                                      headers=headers)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            except httpx.TransportError:
                errors += 1
                return
            done = loop.time()
            latencies.append(done - due)
            service.append(done - sent)

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        wall = time.perf_counter() - start
    return {"requests": n, "achieved_rps": n / wall, "p50_ms": pct(latencies, 50),
            "p90_ms": pct(latencies, 90), "p99_ms": pct(latencies, 99),
            "max_ms": max(latencies) * 1e3, "send_p99_ms": pct(service, 99),
            "statuses": statuses, "transport_errors": errors}


# -- 2. batches, closed loop -----------------------------------------------------------------
async def batches(url: str, path: str, body: bytes, n_records: int, concurrency: int,
                  seconds: float) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    done = 0
    bad = 0
    times: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for _ in range(3):
            await client.post(path, content=body, headers=headers)
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done, bad
            while time.perf_counter() < stop:
                t = time.perf_counter()
                r = await client.post(path, content=body, headers=headers)
                times.append(time.perf_counter() - t)
                if r.status_code == 200:
                    done += 1
                else:
                    bad += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {"batches": done, "records_per_s": done * n_records / wall,
            "p50_ms": pct(times, 50), "p99_ms": pct(times, 99), "non_200": bad}


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
        ("deep nesting", b"[" * 50_000 + b"]" * 50_000),
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
    args = ap.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    batch_seconds = 2.0 if args.quick else 10.0
    n_mixed = 1000 if args.quick else 10_000

    print(f"machine: {machine()}\n")
    names, X = rows()
    with tempfile.TemporaryDirectory() as tmp:
        models = fit_models(Path(tmp))

        # 1. steady single-record rate, each model alone, one worker, one torch thread
        print("| model (score) | requests | achieved req/s | p50 ms | p90 ms | p99 ms | max ms "
              "| non-200 | dropped |")
        print("|---|---|---|---|---|---|---|---|---|")
        singles = [json.dumps({"records": [dict(zip(names, map(float, r), strict=True))]}
                              ).encode() for r in X[:100]]
        for name, path in models.items():
            with server({name: path}, "--threads", "1") as (url, _):
                res = asyncio.run(steady(url, singles, args.rate, seconds))
            non200 = sum(c for k, c in res["statuses"].items() if k != 200)
            print(f"| {name} | {res['requests']} | {res['achieved_rps']:.0f} | "
                  f"{res['p50_ms']:.2f} | {res['p90_ms']:.2f} | {res['p99_ms']:.2f} | "
                  f"{res['max_ms']:.1f} | {non200} | {res['transport_errors']} |")

        # 2. 1,000-record batches
        print("\n| model (score) | body form | workers x threads | concurrency | batches | "
              "records/s | p50 ms/batch | p99 ms/batch |")
        print("|---|---|---|---|---|---|---|---|")
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
        for name, path in models.items():
            for workers, threads, conc in [(1, 1, 2), (2, 1, 4)]:
                with server({name: path}, "--workers", str(workers), "--threads",
                            str(threads)) as (url, _):
                    for form, body in forms.items():
                        res = asyncio.run(batches(url, "/v1/score", body, 1000, conc,
                                                  batch_seconds))
                        print(f"| {name} | {form} | {workers} x {threads} | {conc} | "
                              f"{res['batches']} | {res['records_per_s']:,.0f} | "
                              f"{res['p50_ms']:.1f} | {res['p99_ms']:.1f} |")

        # 3. mixed valid / malformed requests
        max_body = 65536
        kinds = mixed_bodies(names, X, max_body)
        with server({"elbo": models["elbo"]}, "--threads", "1", "--max-body-bytes",
                    str(max_body)) as (url, pid):
            res = asyncio.run(mixed(url, pid, kinds, n_mixed, 8))
        print(f"\nmixed run: {res['requests']} requests in {res['seconds']:.1f}s, "
              f"5xx: {res['5xx']}, dropped connections: {res['dropped']}, "
              f"server RSS (MiB, every 1000 requests): {res['rss_mib']}")
        print("\n| request kind | statuses |")
        print("|---|---|")
        for kind, st in res["statuses"].items():
            print(f"| {kind} | {', '.join(f'{k}: {v}' for k, v in sorted(st.items()))} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\nload average at the end: {load:.1f}")


if __name__ == "__main__":
    main()
