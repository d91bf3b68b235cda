"""Design checks for images on the TRAINING images only (issue 4).

The test set of ``anovae bench images`` measures the targets; design choices are checked here
instead, so they are not tuned on it. For each class c:

- ``--protocol one-class``: fit on the training images of c minus 500 held out, evaluate on
  those 500 (normal) plus 2,000 training images of other classes (anomalies);
- ``--protocol multi-class``: fit on the training images of the other classes minus 2,000 held
  out, evaluate on those 2,000 (normal) plus 500 training images of c (anomalies).

One JSON line per class with the AUROC of each score from the same fit: ``elbo`` and
``reconstruction`` as configured (by default with the latent-density term and the complexity
correction), the same two with neither (``...:raw``), with the correction but no latent term
(``...:no_latent``, the default before the latent term: the slope refitted on the raw score
over 1,024 fitting images drawn here, close to but not the detector's own draw), the latent
term alone (``latent``: the code's negative log-density under the fitted mixture), and for the
VAE the ELBO minus the full PNG code length (``elbo:minus_png``, Serra et al.'s ``b = 1``).

Usage::

    python benchmarks/images_dev_split.py --dataset mnist --classes 2,8 --variant default
    python benchmarks/images_dev_split.py --dataset fashion-mnist --classes 7,9 \
        --protocol multi-class

Variants: ``default``, ``updates3000`` (twice the update budget), ``beta05`` (KL weight 0.5),
``latent32``, ``ae`` (the plain convolutional autoencoder); ``--set NAME=VALUE`` adds a detector
parameter (e.g. ``--set learning_rate=0.001``), and ``--contaminate 0.05`` mixes that share of
anomalous images (never evaluated) into the fitting images. Results are in docs/benchmarks.md
("Latent density", "Step size 2e-3", "Complexity correction" and "Next steps, checked on
training images only").
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
from anovae.cli.app import parse_set_options
from anovae.detectors.image import COMPLEXITY_FIT_IMAGES
from anovae.images import check_images, complexity_slope, png_nats

VARIANTS = ("default", "updates3000", "beta05", "latent32", "ae")


def split(y: np.ndarray, c: int, protocol: str, contaminate: float = 0.0
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices ``(fit, evaluate)`` and the 0/1 labels of the evaluation images.

    ``contaminate``: add anomalies (images of the anomalous classes, none of them evaluated)
    to the fitting images, this share of the result (the unsupervised setting)."""
    rng = np.random.default_rng(c)
    if protocol == "one-class":
        own = rng.permutation(np.flatnonzero(y == c))
        held, fit = own[:500], own[500:]
        others = rng.permutation(np.flatnonzero(y != c))
        anomalies, spare = others[:2000], others[2000:]
    else:
        own = rng.permutation(np.flatnonzero(y != c))
        held, fit = own[:2000], own[2000:]
        others = rng.permutation(np.flatnonzero(y == c))
        anomalies, spare = others[:500], others[500:]
    if contaminate > 0:
        k = min(len(spare), round(len(fit) * contaminate / (1 - contaminate)))
        fit = np.r_[fit, spare[:k]]
    rows = np.r_[held, anomalies]
    return fit, rows, np.r_[np.zeros(len(held)), np.ones(len(anomalies))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--data-dir", default=None, help="default: as `anovae bench images`")
    ap.add_argument("--classes", default="2,8")
    ap.add_argument("--protocol", choices=("one-class", "multi-class"), default="one-class")
    ap.add_argument("--variant", choices=VARIANTS, default="default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--contaminate", type=float, default=0.0,
                    help="share of anomalies mixed into the fitting images (default 0)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                    help="a detector parameter on top of the variant (as the CLI's --set)")
    args = ap.parse_args()
    if not 0.0 <= args.contaminate < 1.0:
        ap.error(f"--contaminate must be in [0, 1), got {args.contaminate}")
    X, y, _, _ = load_image_dataset(resolve_image_data_dir(args.data_dir) / args.dataset)
    params: dict = {"random_state": args.seed, "device": "cpu"}
    if args.variant == "updates3000":
        image_detectors.IMAGE_TARGET_UPDATES = 3000  # read when epochs=None resolves
    elif args.variant == "beta05":
        params["beta"] = 0.5
    elif args.variant == "latent32":
        params["latent_dim"] = 32
    params.update(parse_set_options(args.sets))  # on top of the variant
    for c in (int(v) for v in args.classes.split(",")):
        fit, rows, labels = split(y, c, args.protocol, args.contaminate)
        det = (ImageAEDetector(**params) if args.variant == "ae"
               else ImageVAEDetector(**params))
        t0 = time.perf_counter()
        det.fit(X[fit])
        out = {"dataset": args.dataset, "protocol": args.protocol, "variant": args.variant,
               "set": args.sets, "contaminate": args.contaminate,
               "class": c, "fit_s": round(time.perf_counter() - t0, 1),
               "epochs": det.n_epochs_}

        def auc(scores: np.ndarray, labels: np.ndarray = labels) -> float:
            return round(float(roc_auc_score(labels, scores)), 4)

        if args.variant == "ae":
            out["reconstruction"] = auc(det.decision_function(X[rows]))
            print(json.dumps(out), flush=True)
            continue
        out["slopes"] = {k: round(v, 4) for k, v in det.complexity_slopes_.items()}
        out["latent_weights"] = {k: round(v, 4) for k, v in det.latent_weights_.items()}
        images = check_images(X[rows])[0]  # (n, C, H, W) in [0, 1]
        fit_images = check_images(X[fit[np.random.default_rng(c).permutation(len(fit))[
            :COMPLEXITY_FIT_IMAGES]]])[0]  # for the slope without the latent term
        if det.latent_mixture_ is not None:
            out["latent"] = auc(det.latent_mixture_.neg_log_density(det.transform(X[rows])))
        for score in ("elbo", "reconstruction"):
            det.set_params(score_type=score)
            out[score] = auc(det.decision_function(X[rows]))
            raw = det._score_rows(images, raw=True)[0]  # same network, without either term
            out[score + ":raw"] = auc(raw)
            b = complexity_slope(det._score_rows(fit_images, raw=True)[0], png_nats(fit_images))
            out[score + ":no_latent"] = auc(raw - b * png_nats(images))
            if score == "elbo":
                out["elbo:minus_png"] = auc(raw - png_nats(images))
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
