"""How often do new normal rows exceed a ``threshold="pot"`` threshold set at fit?

``VAEDetector(threshold="pot", threshold_param=q)`` fits the tail of the training rows' scores
(peaks over threshold, extreme-value theory) and promises that a normal row exceeds the
threshold with probability ``q``. The training rows are rows the model learned, so new normal
rows score a little higher: this script measures the realised rate on many new normal rows
(synthetic tables, where they are free), for the threshold set at fit and for the same model's
threshold refitted on held-out normal rows (``refit_threshold(X_held_out, method="pot")``).

Tables (the seed draws the table and the model):

- ``gaussian``: 8 independent standard-normal columns (the README's example);
- ``factors``: 12 columns from 3 latent factors plus noise (correlated columns).

Usage::

    python benchmarks/pot_calibration.py --seeds 0,1,2,3,4 --rows 2000,20000 --q 0.001,0.01

One JSON line per table, training size, seed and q: the realised rates, in units of q, of the
threshold set at fit (``at_fit``) and refitted on as many held-out normal rows as the model
was trained on (``refit``). Results are in docs/benchmarks.md ("The POT threshold").
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np

from anovae import VAEDetector

N_TEST = 200_000


def table(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` normal rows of the table ``name``."""
    if name == "gaussian":
        return rng.normal(size=(n, 8))
    loadings = np.random.default_rng(12345).normal(size=(3, 12))  # fixed structure
    return rng.normal(size=(n, 3)) @ loadings + 0.3 * rng.normal(size=(n, 12))


def run(name: str, n: int, seed: int, qs: list[float]) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    X_fit, X_held, X_test = table(name, n, rng), table(name, n, rng), table(name, N_TEST, rng)
    out = []
    for q in qs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            det = VAEDetector(threshold="pot", threshold_param=q, random_state=seed).fit(X_fit)
            test = det.decision_function(X_test)
            at_fit = float(np.mean(test > det.threshold_))
            det.refit_threshold(X_held, method="pot", param=q)
            refit = float(np.mean(test > det.threshold_))
        out.append({"table": name, "rows": n, "seed": seed, "q": q,
                    "at_fit": round(at_fit / q, 2), "refit": round(refit / q, 2)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default="gaussian,factors")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rows", default="2000,20000")
    parser.add_argument("--q", default="0.001,0.01")
    args = parser.parse_args()
    qs = [float(q) for q in args.q.split(",")]
    for name in args.tables.split(","):
        for n in (int(r) for r in args.rows.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                for line in run(name, n, seed, qs):
                    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
