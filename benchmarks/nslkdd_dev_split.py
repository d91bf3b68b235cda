"""Design checks for mixed tables on NSL-KDD's TRAINING file only (issue 6).

``anovae bench nslkdd`` measures the targets on ``KDDTest+``; design choices are checked here
instead, so they are not tuned on the test file. For each seed: fit ``VAEDetector`` on the
normal rows of ``KDDTrain+`` minus 5,000 held out; evaluate on those 5,000 (normal) plus 5,047
training attacks: every R2L/U2R attack of the file (1,047 rows, the "hard" ones: few, and close
to normal traffic) and 4,000 others drawn at random. The seed draws the split and the model.

One JSON line per seed with the AUROC of every score from the same fit (``elbo``,
``reconstruction_probability``, ``iwae``), the AUROC on normal vs hard attacks (``hard``, for
the default score) and the fit time.

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=os.environ.get(NSLKDD_DIR_ENV) or str(DEFAULT_NSLKDD_DIR),
                    help=f"default: ${NSLKDD_DIR_ENV}, else {DEFAULT_NSLKDD_DIR}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE")
    args = ap.parse_args()
    raw = pd.read_csv(f"{args.data_dir}/KDDTrain+.csv.gz")
    params = parse_set_options(args.sets)
    for seed in (int(s) for s in args.seeds.split(",")):
        fit, ev, y, hard = split(raw, seed)
        det = VAEDetector(**{"random_state": seed, "device": "cpu", **params})
        t0 = time.perf_counter()
        det.fit(fit)
        out: dict = {"seed": seed, "set": args.sets, "fit_s": round(time.perf_counter() - t0, 1),
                     "epochs": det.n_epochs_, "best_epoch": det.best_epoch_}
        keep = (y == 0) | hard
        default = det.score
        for score in ("elbo", "reconstruction_probability", "iwae"):
            det.set_params(score=score)
            s = det.decision_function(ev)
            out[score] = round(100 * roc_auc_score(y, s), 2)
            if score == default:
                out["hard"] = round(100 * roc_auc_score(y[keep], s[keep]), 2)
        det.set_params(score=default)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
