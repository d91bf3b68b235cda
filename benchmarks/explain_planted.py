"""Do explanations name the broken column? Planted single-column breaks in synthetic tables.

Each test row is copied and broken in one known column; the share of broken rows whose top
explained feature is that column is reported for two rankings of the same per-feature scores:
``raw`` (the largest contribution, anovae < 0.4) and ``excess`` (the contribution minus the
column's median over the training rows, :func:`anovae.scores.rank_features`, what ``explain``
does now).

Tables (one per seed; fit on 2,000 normal rows, 400 rows broken per kind of break):

- ``mixed``: a ``segment`` (6 categories) sets the mean of ``amount`` (1 spread of noise), the
  rate of ``items`` (Poisson), the usual ``channel`` (90 %) and ``flag`` (boolean); ``duration``
  (log-normal) and ``colour`` (5 categories) are independent noise. Breaks: ``amount`` 5 spreads
  off, ``channel`` changed to one its segment never uses, ``flag`` flipped, ``items`` + 8.
- ``numeric``: 8 columns from 3 latent factors, the noise rising from 0.1 to 2 (geometric) across
  the columns; breaks: one column shifted by 4 or 8 times its own noise.
- ``redundant``: three copies of one factor (``a``, ``a`` plus and minus 0.1 of noise) and two
  independent standard normal columns; break: the second copy + 0.5 (5 of its noise sd, half a
  spread of the column).

Usage::

    python benchmarks/explain_planted.py --seeds 0,1,2,3,4

Results are in docs/benchmarks.md ("Explanations: ranking by excess").
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd

from anovae import VAEDetector

CHANNELS = np.array(["web", "store", "phone", "partner"])
USUAL = np.array([0, 0, 1, 1, 2, 2])  # the usual channel of each segment
FLAGGED = np.array([True, True, True, False, False, False])


def mixed_table(n: int, rng: np.random.Generator) -> pd.DataFrame:
    seg = rng.integers(0, 6, n)
    usual = rng.random(n) < 0.9
    channel = np.where(usual, USUAL[seg], (USUAL[seg] + rng.integers(1, 3, n)) % 3)
    return pd.DataFrame({
        "segment": [f"s{s}" for s in seg],
        "amount": 4.0 * seg + rng.normal(size=n),
        "items": rng.poisson(1.0 + seg),
        "channel": CHANNELS[channel],
        "flag": FLAGGED[seg],
        "duration": rng.lognormal(0.0, 1.0, n).round(2),
        "colour": rng.choice(["red", "green", "blue", "grey", "black"], n),
    })


def break_mixed(rows: pd.DataFrame, kind: str) -> pd.DataFrame:
    out = rows.copy()
    if kind == "amount":
        out["amount"] += 5.0
    elif kind == "channel":
        out["channel"] = "partner"  # no segment uses it
    elif kind == "flag":
        out["flag"] = ~out["flag"]
    else:
        out["items"] += 8
    return out


def hits(det: VAEDetector, broken, column: np.ndarray) -> dict[str, float]:
    """Share of rows whose top feature is ``column`` ``(n,)``, by raw contribution and by
    :meth:`~anovae.VAEDetector.explain` (the excess)."""
    contrib = det.feature_scores(broken)  # (n, D)
    top = det.explain(broken, k=1)["feature"].to_numpy()
    names = (np.asarray(broken.columns, dtype=object) if isinstance(broken, pd.DataFrame)
             else np.asarray([f"x{j}" for j in range(contrib.shape[1])], dtype=object))
    return {"raw": float(np.mean(contrib.argmax(1) == column)),
            "excess": float(np.mean(top == names[column]))}


def run_mixed(seed: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    train, test = mixed_table(2000, rng), mixed_table(400, rng)
    det = VAEDetector(random_state=seed, device="cpu").fit(train)
    cols = list(train.columns)
    return {f"mixed/{kind}": hits(det, break_mixed(test, kind),
                                  np.full(len(test), cols.index(kind)))
            for kind in ("amount", "channel", "flag", "items")}


def run_numeric(seed: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    d = 8
    weights, noise = rng.normal(size=(3, d)), np.geomspace(0.1, 2.0, d)

    def draw(n: int) -> np.ndarray:
        return rng.normal(size=(n, 3)) @ weights + rng.normal(size=(n, d)) * noise

    train, test = draw(2000), draw(400)
    det = VAEDetector(random_state=seed, device="cpu").fit(train)
    column = np.arange(len(test)) % d
    out = {}
    for k in (4, 8):
        broken = test.copy()
        broken[np.arange(len(test)), column] += k * noise[column]
        out[f"numeric/shift {k} noise sd"] = hits(det, broken, column)
    return out


def run_redundant(seed: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)

    def draw(n: int) -> np.ndarray:
        a = rng.normal(size=n)
        return np.column_stack([a, a + 0.1 * rng.normal(size=n), a - 0.1 * rng.normal(size=n),
                                rng.normal(size=n), rng.normal(size=n)])

    train, test = draw(2000), draw(400)
    det = VAEDetector(random_state=seed, device="cpu").fit(train)
    broken = test.copy()
    broken[:, 1] += 0.5
    return {"redundant/copy + 5 noise sd": hits(det, broken, np.ones(len(test), dtype=int))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    args = ap.parse_args()
    table: dict[str, dict[str, list[float]]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        for case, res in {**run_mixed(seed), **run_numeric(seed), **run_redundant(seed)}.items():
            for ranking, value in res.items():
                table.setdefault(case, {}).setdefault(ranking, []).append(value)
    for case, res in table.items():
        print(json.dumps({"case": case, **{k: round(float(np.mean(v)), 3) for k, v in res.items()},
                          "excess_per_seed": [round(v, 3) for v in res["excess"]],
                          "raw_per_seed": [round(v, 3) for v in res["raw"]]}), flush=True)


if __name__ == "__main__":
    main()
