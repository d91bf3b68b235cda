"""One-class design checks for images on the TRAINING images only (issue 4).

The test set of ``anovae bench images`` measures the targets; design choices are checked here
instead, so they are not tuned on it: for each class c, fit on the training images of c minus
500 held out, and evaluate on those 500 (normal) plus 2,000 training images of other classes
(anomalies). One JSON line per class with the AUROC of each score.

Usage::

    python benchmarks/images_dev_split.py --dataset mnist --classes 2,8 --variant default
    python benchmarks/images_dev_split.py --dataset fashion-mnist --classes 6,8 \
        --variant updates3000

Variants: ``default``, ``updates3000`` (twice the update budget), ``beta05`` (KL weight 0.5),
``latent32``, ``ae`` (the plain convolutional autoencoder). Results of 2026-11-23 are in
docs/benchmarks.md ("Next steps, checked on training images only").
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.metrics import roc_auc_score

import anovae.detectors.image as image_detectors
from anovae import ImageAEDetector, ImageVAEDetector
from anovae.bench.images import load_image_dataset, resolve_image_data_dir

VARIANTS = ("default", "updates3000", "beta05", "latent32", "ae")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--data-dir", default=None, help="default: as `anovae bench images`")
    ap.add_argument("--classes", default="2,8")
    ap.add_argument("--variant", choices=VARIANTS, default="default")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    X, y, _, _ = load_image_dataset(resolve_image_data_dir(args.data_dir) / args.dataset)
    params: dict = {"random_state": args.seed, "device": "cpu"}
    if args.variant == "updates3000":
        image_detectors.IMAGE_TARGET_UPDATES = 3000  # read when epochs=None resolves
    elif args.variant == "beta05":
        params["beta"] = 0.5
    elif args.variant == "latent32":
        params["latent_dim"] = 32
    for c in (int(v) for v in args.classes.split(",")):
        rng = np.random.default_rng(c)
        own = rng.permutation(np.flatnonzero(y == c))
        held, fit = own[:500], own[500:]
        others = rng.permutation(np.flatnonzero(y != c))[:2000]
        rows = np.r_[held, others]
        labels = np.r_[np.zeros(len(held)), np.ones(len(others))]
        det = (ImageAEDetector(**params) if args.variant == "ae"
               else ImageVAEDetector(**params))
        t0 = time.perf_counter()
        det.fit(X[fit])
        out = {"dataset": args.dataset, "variant": args.variant, "class": c,
               "fit_s": round(time.perf_counter() - t0, 1), "epochs": det.n_epochs_}
        scores = ("reconstruction",) if args.variant == "ae" else ("elbo", "reconstruction")
        for score in scores:
            if args.variant != "ae":
                det.set_params(score=score)
            out[score] = round(float(roc_auc_score(labels, det.decision_function(X[rows]))), 4)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
