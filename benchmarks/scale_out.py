"""Scaling out (issue 8): Dask batch scoring with 1 and 2 workers, DDP training with 1 and 2
processes. Results go to docs/benchmarks.md ("Scaling out").

Usage (data are generated under /tmp, never in the repository)::

    python benchmarks/scale_out.py dask --rows 20000000 --workers 1 2
    python benchmarks/scale_out.py ddp --rows 100000 --epochs 2 --procs 1 2
    python benchmarks/scale_out.py ddp --rows 400000 --epochs 2 --procs 1 2 --batch-size 4096

``dask``: writes ``rows`` x 29 float32 Parquet files (1,000,000 rows each, row groups of
250,000), fits a default ``VAEDetector`` (ELBO score, 16 Monte-Carlo samples) on 50,000 of the
rows, then scores the whole folder with ``anovae.dask.score`` on a LocalCluster of ``w`` worker
processes x 1 thread and writes the scores as Parquet; reports rows/s and the peak resident
memory of each worker process (``ru_maxrss``).

``ddp``: ``torchrun --nproc-per-node p`` runs this script's ``ddp-worker`` mode, which fits a
``VAEDetector`` on the same in-memory rows (every rank holds them; each global batch of
``--batch-size`` rows is split across the ranks) and reports the training loop's seconds per
epoch (wall clock, and rank 0's CPU seconds: the machine is shared).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

D = 29
ROOT = Path(tempfile.gettempdir()) / "anovae-scale-out"


def _load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"


def make_rows(n: int, seed: int, start: int = 0) -> np.ndarray:
    """``n`` rows of a 29-feature table with low-rank structure (float32)."""
    mix = np.random.default_rng(12345).normal(size=(4, D))
    rng = np.random.default_rng([seed, start])
    return (rng.normal(size=(n, 4)) @ mix + 0.3 * rng.normal(size=(n, D))).astype(np.float32)


def make_folder(rows: int) -> Path:
    import pandas as pd

    folder = ROOT / f"data-{rows}"
    if (folder / "_done").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    per_file = 1_000_000
    for i, start in enumerate(range(0, rows, per_file)):
        n = min(per_file, rows - start)
        df = pd.DataFrame(make_rows(n, 0, start), columns=[f"f{j}" for j in range(D)])
        df.to_parquet(folder / f"part-{i:04d}.parquet", row_group_size=250_000)
    (folder / "_done").write_text("")
    return folder


def _usage() -> tuple[float, float]:
    """(peak resident memory in MiB, CPU seconds) of this process."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_maxrss / 1024.0, u.ru_utime + u.ru_stime


def bench_dask(rows: int, workers: list[int]) -> list[dict]:
    import distributed

    import anovae.dask as adask
    from anovae import VAEDetector

    folder = make_folder(rows)
    model = ROOT / "model.safetensors"
    if not model.exists():
        import pandas as pd

        X = pd.DataFrame(make_rows(50_000, 1), columns=[f"f{j}" for j in range(D)])
        VAEDetector(epochs=5, device="cpu", random_state=0).fit(X).save(model)
    results = []
    for w in workers:
        load_before = _load()
        with distributed.LocalCluster(n_workers=w, threads_per_worker=1, processes=True,
                                      dashboard_address=None, memory_limit=None) as cluster, \
                distributed.Client(cluster) as client:
            out = ROOT / f"scores-{w}"
            cpu0 = sum(c for _, c in client.run(_usage).values())
            t0 = time.perf_counter()
            ddf = adask.read_parquet(folder, partition_rows=250_000)
            adask.score(str(model), ddf, top_k=0, client=client).to_parquet(
                str(out), write_index=False, overwrite=True)
            seconds = time.perf_counter() - t0
            usage = list(client.run(_usage).values())
            cpu = sum(c for _, c in usage) - cpu0
        # rows per CPU-second of the workers: what the scaling would be on idle cores
        results.append({"workers": w, "rows": rows, "seconds": round(seconds, 1),
                        "rows_per_s": round(rows / seconds), "worker_cpu_s": round(cpu, 1),
                        "rows_per_cpu_s": round(rows / cpu),
                        "peak_rss_mib": sorted(round(m) for m, _ in usage),
                        "load_before": load_before, "load_after": _load()})
        print(json.dumps(results[-1]), flush=True)
    return results


def ddp_worker(rows: int, epochs: int, batch_size: int) -> None:
    import anovae.detectors.base as base
    from anovae import VAEDetector
    from anovae.distributed import is_main_process, process_group

    timing = {}
    train = base.train

    def timed(*args, **kwargs):  # the training loop alone (not scaling, not scoring)
        t0, c0 = time.perf_counter(), time.process_time()
        result = train(*args, **kwargs)
        timing["train_s"] = time.perf_counter() - t0
        timing["cpu_s"] = time.process_time() - c0
        return result

    base.train = timed
    X = make_rows(rows, 2)
    with process_group() if "RANK" in os.environ else contextlib.nullcontext():
        det = VAEDetector(epochs=epochs, patience=0, batch_size=batch_size, device="cpu",
                          random_state=0).fit(X)
        if is_main_process():  # rank 0's CPU seconds per epoch (each rank does the same work)
            print(json.dumps({"epochs": det.n_epochs_,
                              "s_per_epoch": round(timing["train_s"] / det.n_epochs_, 2),
                              "cpu_s_per_epoch_rank0": round(timing["cpu_s"] / det.n_epochs_,
                                                             2)}), flush=True)


def bench_ddp(rows: int, epochs: int, procs: list[int], batch_size: int) -> list[dict]:
    results = []
    for p in procs:
        load_before = _load()
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(p), __file__, "ddp-worker", "--rows", str(rows),
               "--epochs", str(epochs), "--batch-size", str(batch_size)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        line = [x for x in res.stdout.splitlines() if x.startswith("{")][-1]
        out = {"procs": p, "rows": rows, "batch_size": batch_size, **json.loads(line),
               "load_before": load_before,
               "load_after": _load()}
        results.append(out)
        print(json.dumps(out), flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["dask", "ddp", "ddp-worker"])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=256, help="global rows per update (ddp)")
    args = ap.parse_args()
    if args.mode == "ddp-worker":
        ddp_worker(args.rows, args.epochs, args.batch_size)
        return
    ROOT.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    print(f"# {platform.node()} {os.cpu_count()} CPUs, {now} UTC, load {_load()}", flush=True)
    if args.mode == "dask":
        bench_dask(args.rows, args.workers)
    else:
        bench_ddp(args.rows, args.epochs, args.procs, args.batch_size)


if __name__ == "__main__":
    main()
