"""Speed of anovae on tabular data (issue 2): training and scoring throughput, CLI memory.

Measures, on this machine, for d = 29 features (the width of the credit-card fraud table):

1. training throughput (rows/s per epoch) of ``VAEDetector()`` vs PyOD's ``VAE()``, both with
   their defaults, same epochs, side by side in one run; and of ``VAEDetector`` with PyOD's
   default layer sizes (128-64-32, latent 2), the same arithmetic per row (see
   :func:`bench_training`);
2. scoring throughput of ``decision_function`` with ``score_type="reconstruction"`` (default
   architecture) vs a bare torch forward pass of the same network (the floor), interleaved
   repeats, medians;
3. ``anovae score`` on a 10,000,000-row Parquet file: wall time and peak RSS of the process.

Usage::

    python benchmarks/speed_tabular.py                  # everything, writes docs/speed.json
    python benchmarks/speed_tabular.py --skip-cli       # without the 10M-row file
    python benchmarks/speed_tabular.py --train-rows 50000 --epochs 3

Results are printed as Markdown; copy them into docs/benchmarks.md with the machine and date.
"""

from __future__ import annotations

import argparse
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
import torch

from anovae import VAEDetector

D = 29


def make_data(n: int, seed: int = 0) -> np.ndarray:
    """Correlated Gaussian rows with a few heavy-tailed columns (like PCA'd transactions)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(D, D)) / np.sqrt(D)
    x = rng.normal(size=(n, D)) @ a
    x[:, -1] = np.exp(rng.normal(3.0, 1.0, size=n))  # an "amount" column
    return x


def bench_training(n: int, epochs: int, repeats: int = 3) -> dict:
    """PyOD's ``VAE()`` and ours, on the same rows for the same number of epochs.

    Two of ours: ``VAEDetector()`` with its defaults (the target's comparison: each library's
    default MLP VAE; ours sizes the layers from the number of features and the batch from the
    number of rows) and ``VAEDetector`` with PyOD's default layer sizes (128-64-32, latent 2:
    the same arithmetic per row). Each gets a one-epoch warm-up fit first (one-time costs:
    imports, thread pools, kernel caches), then ``repeats`` interleaved fits. Reported
    (medians): rows/s of the training epochs (PyOD's ``train`` method timed around its epoch
    loop; ours from ``history_["seconds"]``) and rows/s of the whole ``fit``, which adds
    preprocessing and scoring every training row for ``decision_scores_`` (one pass for PyOD,
    16 Monte-Carlo draws for our default ELBO score).
    """
    from pyod.models.vae import VAE

    X = make_data(n)
    out: dict = {"rows": n, "epochs": epochs}

    def pyod_vae(ep: int) -> VAE:
        return VAE(epoch_num=ep, verbose=0, random_state=0, device="cpu")

    def ours(ep: int, **arch: object) -> VAEDetector:
        return VAEDetector(epochs=ep, patience=0, validation_fraction=0.0, warmup_epochs=1,
                           device="cpu", random_state=0, **arch)  # type: ignore[arg-type]

    def fit_pyod() -> tuple[float, float]:
        pyod = pyod_vae(epochs)
        epoch_s: list[float] = []
        inner_train = pyod.train

        def timed_train(loader: object) -> None:
            t0 = time.perf_counter()
            inner_train(loader)
            epoch_s.append(time.perf_counter() - t0)

        pyod.train = timed_train  # type: ignore[method-assign]
        t0 = time.perf_counter()
        pyod.fit(X)
        return time.perf_counter() - t0, epoch_s[0]

    def fit_ours(**arch: object) -> tuple[float, float]:
        det = ours(epochs, **arch)
        t0 = time.perf_counter()
        det.fit(X)
        cfg = det.net_config_
        out[f"anovae{'_pyod_arch' if arch else ''}_net"] = {
            "hidden_dims": list(cfg.hidden_dims), "latent_dim": cfg.latent_dim,
            "batch_size": det.batch_size_}
        return time.perf_counter() - t0, float(sum(det.history_["seconds"]))

    runs = {"pyod": fit_pyod, "anovae": fit_ours,
            "anovae_pyod_arch": lambda: fit_ours(hidden_dims=(128, 64, 32), latent_dim=2)}
    pyod_vae(1).fit(X)  # warm-up on the same shapes: one epoch each
    ours(1).fit(X)
    ours(1, hidden_dims=(128, 64, 32), latent_dim=2).fit(X)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in runs}
    for _ in range(repeats):  # interleaved, medians
        for who, run in runs.items():
            times[who].append(run())
    fit_s = {k: float(np.median([t[0] for t in v])) for k, v in times.items()}
    epochs_s = {k: float(np.median([t[1] for t in v])) for k, v in times.items()}
    out["repeats"] = repeats
    for who in fit_s:
        out[f"{who}_fit_s"], out[f"{who}_epochs_s"] = fit_s[who], epochs_s[who]
        out[f"{who}_rows_per_s"] = n * epochs / epochs_s[who]
        out[f"{who}_fit_rows_per_s"] = n * epochs / fit_s[who]
        if who != "pyod":
            out[f"{who}_speedup"] = out[f"{who}_rows_per_s"] / out["pyod_rows_per_s"]
            out[f"{who}_fit_speedup"] = out[f"{who}_fit_rows_per_s"] / out["pyod_fit_rows_per_s"]
    return out


def bench_scoring(n: int, repeats: int = 11) -> dict:
    X = make_data(n, seed=1)
    det = VAEDetector(score_type="reconstruction", epochs=3, device="cpu", random_state=0)
    det.fit(X[:20000])
    xt = torch.from_numpy(det.scaler_.transform(X))
    net = det.net_
    chunk = 65536
    ours, bare = [], []
    det.decision_function(X[:chunk])  # warm-up
    for _ in range(repeats):
        t = time.perf_counter()
        det.decision_function(X)
        ours.append(time.perf_counter() - t)
        with torch.inference_mode():
            t = time.perf_counter()
            for i in range(0, n, chunk):
                net(xt[i:i + chunk])
            bare.append(time.perf_counter() - t)
    o, b = float(np.median(ours)), float(np.median(bare))
    return {"rows": n, "architecture": det.net_config_.to_dict(),
            "anovae_rows_per_s": n / o, "bare_forward_rows_per_s": n / b, "ratio": o / b}


def bench_cli(n: int, tmp: Path) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    model = tmp / "model.safetensors"
    VAEDetector(score_type="reconstruction", epochs=3, device="cpu", random_state=0).fit(
        make_data(20000)).save(model)
    data = tmp / "big.parquet"
    names = [f"x{i}" for i in range(D)]
    writer = None
    for start in range(0, n, 1_000_000):
        block = make_data(min(1_000_000, n - start), seed=start).astype(np.float32)
        table = pa.table({k: block[:, i] for i, k in enumerate(names)})
        writer = writer or pq.ParquetWriter(data, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()
    out = tmp / "scores.parquet"
    cmd = [sys.executable, "-m", "anovae", "score", str(model), str(data), "-o", str(out)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"rows": n, "seconds": wall, "rows_per_s": n / wall,
            "peak_rss_mib": peak_kb / 1024, "input_mib": data.stat().st_size / 2**20,
            "output_mib": out.stat().st_size / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-rows", type=int, default=50_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3, help="training fits per detector")
    ap.add_argument("--score-rows", type=int, default=1_000_000)
    ap.add_argument("--cli-rows", type=int, default=10_000_000)
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--json", type=Path, default=Path("docs/speed.json"))
    args = ap.parse_args()
    res: dict = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
                            f"torch {torch.__version__}, {torch.get_num_threads()} threads",
                 "date": time.strftime("%Y-%m-%d")}
    res["training"] = bench_training(args.train_rows, args.epochs, args.repeats)
    res["scoring"] = bench_scoring(args.score_rows)
    if not args.skip_cli:
        with tempfile.TemporaryDirectory() as d:
            res["cli"] = bench_cli(args.cli_rows, Path(d))
    tr, sc = res["training"], res["scoring"]
    print(f"machine: {res['machine']}; date {res['date']}\n")
    print("| measure | anovae | reference | ratio |\n|---|---|---|---|")
    for who, label in (("anovae", "`VAEDetector()` defaults"),
                       ("anovae_pyod_arch", "`VAEDetector` with PyOD's 128-64-32, latent 2")):
        net = tr[f"{who}_net"]
        print(f"| training rows/s per epoch, {label} ({net['hidden_dims']}, latent "
              f"{net['latent_dim']}, batch {net['batch_size']}; {tr['rows']} rows x "
              f"{tr['epochs']} epochs) | {tr[f'{who}_rows_per_s']:,.0f} | PyOD `VAE()` "
              f"{tr['pyod_rows_per_s']:,.0f} | {tr[f'{who}_speedup']:.1f}x faster |")
        print(f"| whole fit rows/s, {label} (+ scaling, + scoring the training rows) | "
              f"{tr[f'{who}_fit_rows_per_s']:,.0f} | PyOD `VAE()` "
              f"{tr['pyod_fit_rows_per_s']:,.0f} | {tr[f'{who}_fit_speedup']:.1f}x faster |")
    print(f"| scoring rows/s, score_type=reconstruction ({sc['rows']:,} rows) | "
          f"{sc['anovae_rows_per_s']:,.0f} | bare torch forward "
          f"{sc['bare_forward_rows_per_s']:,.0f} | {sc['ratio']:.2f}x the floor |")
    if "cli" in res:
        c = res["cli"]
        print(f"| `anovae score` on {c['rows']:,} Parquet rows | {c['seconds']:.1f} s, "
              f"{c['rows_per_s']:,.0f} rows/s | peak RSS {c['peak_rss_mib']:.0f} MiB | input "
              f"{c['input_mib']:.0f} MiB |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
