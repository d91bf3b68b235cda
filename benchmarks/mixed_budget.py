"""How many updates does a mixed table need? Synthetic tables with planted anomalies.

``VAEDetector``'s default budget is ``TARGET_UPDATES`` updates (``epochs=None``), for mixed
tables as for numeric ones. This script fits the same tables with other budgets (the update
target patched for the run, every other default kept) and reports the AUROC of the planted
anomalies against the normal test rows, on clean training data and with anomalies in it.

Tables (one per seed; the seed draws the table and the model):

- ``transactions`` (3,000 training rows, 500 test rows, 30 of them broken): ``segment`` sets
  ``country`` and the log-normal ``amount``; ``channel`` sets ``in_person`` (yes exactly for
  the store); a weekend flag, a 0/1 ``vip`` (the corporate segment), an item count; 5 % gaps in
  ``amount`` and ``country``. Breaks, 10 rows each: a corporate row in Italy (``country``), an
  amount of a million or more, ``in_person`` yes on the web (``flag``: the dependency).
- ``cities`` (800 training rows, 200 normal test rows, 60 broken): the city sets the mean of
  ``amount``, a ``zone`` (text) and a ``vip`` flag; ``count`` is noise. Breaks: ``amount`` 40
  off, the zone swapped, the flag flipped.

``--contamination C`` adds that share of broken rows (of the same kinds) to the training rows.

Usage::

    python benchmarks/mixed_budget.py --seeds 0,1,2 --updates 700,1400,2800
    python benchmarks/mixed_budget.py --seeds 0,1,2 --contamination 0.05

One JSON line per table, seed and budget. Results are in docs/benchmarks.md ("Mixed tables: the
update budget").
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from tabular_budget import fit_with_updates  # this folder's script (on sys.path when run)


def transactions(n: int, rng: np.random.Generator) -> pd.DataFrame:
    seg = rng.choice(["retail", "corporate", "student"], n, p=[0.6, 0.3, 0.1])
    corporate = seg == "corporate"
    country = np.where(corporate, rng.choice(["DE", "FR"], n), rng.choice(["FR", "ES", "IT"], n))
    channel = rng.choice(["web", "store", "app"], n)
    df = pd.DataFrame({
        "amount": np.where(corporate, rng.lognormal(6, 0.3, n), rng.lognormal(3, 0.4, n)),
        "country": country, "segment": seg, "channel": pd.Categorical(channel),
        "is_weekend": rng.random(n) < 0.3, "in_person": np.where(channel == "store", "yes", "no"),
        "vip": corporate.astype(int), "n_items": rng.integers(1, 5, n)})
    df.loc[rng.random(n) < 0.05, "amount"] = np.nan
    df.loc[rng.random(n) < 0.05, "country"] = None
    return df


def break_transactions(df: pd.DataFrame, kinds: np.ndarray) -> pd.DataFrame:
    out = df.copy()
    for i, kind in enumerate(kinds):
        if kind == 0:
            out.loc[i, ["segment", "country", "vip"]] = ["corporate", "IT", 1]
            out.loc[i, "amount"] = 400.0
        elif kind == 1:
            out.loc[i, "amount"] = 1e6 * (1 + i % 7)
        else:
            out.loc[i, ["channel", "in_person"]] = ["web", "yes"]
    return out


CITIES = np.array(["paris", "oslo", "rome", "lima"])
ZONES = {"paris": "warm", "oslo": "cold", "rome": "warm", "lima": "cold"}
VIP = {"paris": True, "oslo": False, "rome": False, "lima": True}


def cities(n: int, rng: np.random.Generator) -> pd.DataFrame:
    idx = rng.integers(0, 4, n)
    city = CITIES[idx]
    return pd.DataFrame({"amount": 5.0 * idx + rng.normal(size=n),
                         "city": pd.Categorical(city, categories=list(CITIES)),
                         "zone": [ZONES[c] for c in city], "vip": [VIP[c] for c in city],
                         "count": rng.poisson(3.0, n)})


def break_cities(df: pd.DataFrame, kinds: np.ndarray) -> pd.DataFrame:
    out = df.copy()
    for i, kind in enumerate(kinds):
        if kind == 0:
            out.loc[i, "amount"] += 40.0
        elif kind == 1:
            out.loc[i, "zone"] = "warm" if out.loc[i, "zone"] == "cold" else "cold"
        else:
            out.loc[i, "vip"] = not out.loc[i, "vip"]
    return out


TABLES = {"transactions": (transactions, break_transactions, 3000, 470, 30),
          "cities": (cities, break_cities, 800, 200, 60)}


def run(table: str, seed: int, updates: int, contamination: float) -> dict[str, object]:
    make, broken, n_train, n_normal, n_bad = TABLES[table]
    rng = np.random.default_rng(seed)
    train = make(n_train, rng)
    n_dirty = int(round(contamination * n_train))
    if n_dirty:
        train = pd.concat([broken(train.iloc[:n_dirty].reset_index(drop=True),
                                  rng.integers(0, 3, n_dirty)), train.iloc[n_dirty:]],
                          ignore_index=True)
    normal = make(n_normal, rng)
    kinds = np.arange(n_bad) % 3
    bad = broken(make(n_bad, rng), kinds)
    X = pd.concat([normal, bad], ignore_index=True)
    y = np.r_[np.zeros(n_normal), np.ones(n_bad)]
    det, seconds = fit_with_updates(train, seed, updates)
    s = det.decision_function(X)
    per_kind = {}
    for k in range(3):
        keep = np.r_[np.ones(n_normal, bool), kinds == k]
        per_kind[f"break_{k}"] = round(100 * roc_auc_score(y[keep], s[keep]), 2)
    return {"table": table, "seed": seed, "updates": updates, "contamination": contamination,
            "auroc": round(100 * roc_auc_score(y, s), 2), **per_kind,
            "epochs": det.n_epochs_, "best_epoch": det.best_epoch_, "fit_s": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--updates", default="700,1400,2800")
    ap.add_argument("--tables", default=",".join(TABLES))
    ap.add_argument("--contamination", type=float, default=0.0)
    args = ap.parse_args()
    for table in args.tables.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for updates in (int(u) for u in args.updates.split(",")):
                print(json.dumps(run(table, seed, updates, args.contamination)), flush=True)


if __name__ == "__main__":
    main()
