"""Figure for docs/benchmarks.md (issue 4): reconstructions and anomaly maps of a one-class VAE.

Trains :class:`anovae.ImageVAEDetector` (default network and likelihood) on the training images
of one class of an MNIST-layout data set, then writes a PNG whose rows are test images (normal
ones first, then anomalies), their reconstructions and their anomaly maps (one colour scale,
brighter = more anomalous).

Usage::

    python benchmarks/images_figure.py --dataset mnist --normal 7 --out docs/images-mnist.png
    python benchmarks/images_figure.py --dataset fashion-mnist --normal 7 --epochs 3 \
        --out docs/images-fashion-mnist.png
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from anovae import ImageVAEDetector
from anovae.bench.images import load_image_dataset, make_figure, resolve_image_data_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--normal", type=int, default=7, help="The normal class.")
    ap.add_argument("--epochs", type=int, default=None, help="Default: the detector's budget.")
    ap.add_argument("--n", type=int, default=10, help="Images in the figure (half anomalies).")
    ap.add_argument("--out", default="docs/images-mnist.png")
    args = ap.parse_args()
    Xtr, ytr, Xte, yte = load_image_dataset(resolve_image_data_dir(args.data_dir) / args.dataset)
    t0 = time.perf_counter()
    det = ImageVAEDetector(epochs=args.epochs, random_state=0).fit(Xtr[ytr == args.normal])
    rng = np.random.default_rng(0)
    half = args.n // 2
    normal = rng.choice(np.flatnonzero(yte == args.normal), half, replace=False)
    others = rng.choice(np.flatnonzero(yte != args.normal), args.n - half, replace=False)
    pick = np.r_[normal, others]
    make_figure(det, Xte[pick], args.out, n=args.n)
    scores = det.decision_function(Xte[pick])
    print(f"{args.out}: trained {det.n_epochs_} epochs in {time.perf_counter() - t0:.0f}s; "
          f"scores of the normal images {np.round(scores[:half], 0).tolist()}, of the "
          f"anomalies {np.round(scores[half:], 0).tolist()}; classes {yte[pick].tolist()}")


if __name__ == "__main__":
    main()
