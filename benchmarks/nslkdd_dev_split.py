"""Design checks for mixed tables on NSL-KDD's TRAINING file only (issue 6).

``anovae bench nslkdd`` measures the targets on ``KDDTest+``; design choices are checked here
instead, so they are not tuned on the test file. For each seed: fit ``VAEDetector`` on the
normal rows of ``KDDTrain+`` minus 5,000 held out; evaluate on those 5,000 (normal) plus 5,047
training attacks: every R2L/U2R attack of the file (1,047 rows, the "hard" ones: few, and close
to normal traffic) and 4,000 others drawn at random. The seed draws the split and the model.

One JSON line per seed with the AUROC of every score from the same fit (``elbo``,
``reconstruction_probability``, ``iwae``), the AUROC on normal vs hard attacks (``hard``, for
the default score), two re-weighted views of all the training file's attacks for the default
score (``family_mean``: every attack type weighs the same, see :func:`family_auroc`;
``low_difficulty``: the attacks NSL-KDD's reference learners missed, see
:func:`low_difficulty_auroc`) and the fit time. None of these views predicted the test file for
the configurations checked on both (docs/benchmarks.md, "Dev protocols that weigh the attacks
like the test file").

Usage::

    python benchmarks/nslkdd_dev_split.py --seeds 0,1,2
    python benchmarks/nslkdd_dev_split.py --seeds 0,1,2 --set epochs=50

``--set NAME=VALUE`` passes a ``VAEDetector`` parameter (parsed like the CLI's ``--set``).
Results are in docs/benchmarks.md ("Mixed tables: NSL-KDD").
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from anovae import VAEDetector
from anovae.bench.mixed import DEFAULT_NSLKDD_DIR, NSLKDD_DIR_ENV
from anovae.cli.app import parse_set_options

#: R2L and U2R attack types of the training file (the rare, hard-to-separate ones).
HARD = frozenset({"warezclient", "guess_passwd", "ftp_write", "multihop", "imap", "warezmaster",
                  "phf", "spy", "rootkit", "buffer_overflow", "loadmodule", "perl"})


def split(raw: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray,
                                                 np.ndarray]:
    """``(fit rows, evaluation rows, labels (1 = attack), hard-attack mask)`` for one seed."""
    rng = np.random.default_rng(seed)
    kind = raw["label"].to_numpy()
    normal = rng.permutation(np.flatnonzero(kind == "normal"))
    hard = np.flatnonzero(np.isin(kind, sorted(HARD)))
    other = rng.permutation(np.flatnonzero((kind != "normal") & ~np.isin(kind, sorted(HARD))))
    ev = np.r_[normal[:5000], hard, other[:4000]]
    X = raw.drop(columns=["label", "difficulty"], errors="ignore")
    y = (kind[ev] != "normal").astype(int)
    return X.iloc[normal[5000:]], X.iloc[ev], y, np.isin(kind[ev], sorted(HARD))


def family_auroc(raw: pd.DataFrame, held_out_normal: np.ndarray, score: np.ndarray,
                 min_rows: int = 10) -> dict[str, float]:
    """AUROC of the held-out normal rows against *all* training rows of each attack type.

    ``held_out_normal``: ``(n_normal,)`` scores of the held-out normal rows; ``score``:
    ``(len(raw),)`` scores of every row of the file (only attack rows are read). Types with
    fewer than ``min_rows`` rows are left out. Every type weighs the same in the mean, unlike
    the pooled AUROC, where ``neptune`` and ``satan`` hold most of the attack rows.
    """
    kind = raw["label"].to_numpy()
    types, counts = np.unique(kind[kind != "normal"], return_counts=True)
    out = {}
    for t in types[counts >= min_rows]:
        a = score[kind == t]
        out[str(t)] = roc_auc_score(np.r_[np.zeros(len(held_out_normal)), np.ones(len(a))],
                                    np.r_[held_out_normal, a])
    return out


def low_difficulty_auroc(raw: pd.DataFrame, held_out_normal: np.ndarray, score: np.ndarray,
                         max_difficulty: int = 17) -> float:
    """AUROC of the held-out normal rows against every attack row with ``difficulty <= 17``.

    ``difficulty`` is how many of NSL-KDD's 21 reference learners got the row right. These are
    the attacks the learners missed: 18 % of the training file's attacks, 45 % of the test
    file's. Shapes as in :func:`family_auroc`.
    """
    kind = raw["label"].to_numpy()
    a = score[(kind != "normal") & (raw["difficulty"].to_numpy() <= max_difficulty)]
    return float(roc_auc_score(np.r_[np.zeros(len(held_out_normal)), np.ones(len(a))],
                               np.r_[held_out_normal, a]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get(NSLKDD_DIR_ENV) or str(DEFAULT_NSLKDD_DIR),
                    help=f"default: ${NSLKDD_DIR_ENV}, else {DEFAULT_NSLKDD_DIR}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE")
    args = ap.parse_args()
    raw = pd.read_csv(f"{args.data_dir}/KDDTrain+.csv.gz")
    params = parse_set_options(args.sets)
    X_all = raw.drop(columns=["label", "difficulty"], errors="ignore")
    for seed in (int(s) for s in args.seeds.split(",")):
        fit, ev, y, hard = split(raw, seed)
        det = VAEDetector(**{"random_state": seed, "device": "cpu", **params})
        t0 = time.perf_counter()
        det.fit(fit)
        out: dict = {"seed": seed, "set": args.sets, "fit_s": round(time.perf_counter() - t0, 1),
                     "epochs": det.n_epochs_, "best_epoch": det.best_epoch_}
        keep = (y == 0) | hard
        default = det.score_type
        for score in ("elbo", "reconstruction_probability", "iwae"):
            det.set_params(score_type=score)
            s = det.decision_function(ev)
            out[score] = round(100 * roc_auc_score(y, s), 2)
            if score == default:
                out["hard"] = round(100 * roc_auc_score(y[keep], s[keep]), 2)
                s_all = det.decision_function(X_all)
                fam = family_auroc(raw, s[y == 0], s_all)
                out["family_mean"] = round(100 * float(np.mean(list(fam.values()))), 2)
                out["family_min"] = round(100 * min(fam.values()), 2)
                out["families"] = {k: round(100 * v, 2) for k, v in fam.items()}
                out["low_difficulty"] = round(100 * low_difficulty_auroc(raw, s[y == 0], s_all), 2)
        det.set_params(score_type=default)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
