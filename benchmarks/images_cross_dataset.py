"""Cross-data-set check of the image VAE's complexity correction (issue 4).

Fits ``ImageVAEDetector()`` (defaults) on all training images of one MNIST-layout data set and
scores the test images of it (normal) and of another (anomalies); prints one JSON line with the
AUROC of the corrected ELBO (the default) and of the raw ELBO of the same fit. Results of
2026-11-23 are in docs/benchmarks.md ("Across data sets").

Usage::

    python benchmarks/images_cross_dataset.py --normal fashion-mnist --anomalies mnist
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from anovae import ImageVAEDetector
from anovae.bench.images import load_image_dataset, resolve_image_data_dir
from anovae.images import check_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None, help="default: as `anovae bench images`")
    ap.add_argument("--normal", default="fashion-mnist")
    ap.add_argument("--anomalies", default="mnist")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    root = resolve_image_data_dir(args.data_dir)
    X_fit, _, X_normal, _ = load_image_dataset(root / args.normal)
    X_anomalies = load_image_dataset(root / args.anomalies)[2]
    t0 = time.perf_counter()
    det = ImageVAEDetector(random_state=args.seed).fit(X_fit)
    fit_s = time.perf_counter() - t0
    X = np.concatenate([X_normal, X_anomalies])
    y = np.r_[np.zeros(len(X_normal)), np.ones(len(X_anomalies))]
    raw = det._score_rows(check_images(X)[0], raw=True)[0]  # same network, uncorrected
    print(json.dumps({
        "normal": args.normal, "anomalies": args.anomalies, "fit_s": round(fit_s, 1),
        "slope_elbo": round(det.complexity_slopes_["elbo"], 4),
        "elbo_corrected": round(float(roc_auc_score(y, det.decision_function(X))), 4),
        "elbo_raw": round(float(roc_auc_score(y, raw)), 4)}))


if __name__ == "__main__":
    main()
