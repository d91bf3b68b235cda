"""Rebuild docs/report-screenshot.png: a report on the demo data, shot with headless Chromium.

Usage: ``python docs/make_report_screenshot.py`` (needs Debian's ``chromium`` package). The model
is trained on 250 benign breast-cancer biopsies with ``threshold="fpr"``; the report covers the
other rows, labelled. The screenshot is reduced to a 256-colour palette to stay small.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from anovae import VAEDetector
from anovae.demo import load_demo_data
from anovae.report import build_report

OUT = Path(__file__).resolve().parent / "report-screenshot.png"


def main() -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("needs chromium: apt-get install -y chromium")
    X, y = load_demo_data()
    benign = np.random.default_rng(0).permutation(np.flatnonzero(y == 0))
    train = np.sort(benign[:250])
    test = np.setdiff1d(np.arange(len(y)), train)
    det = VAEDetector(threshold="fpr", threshold_param=0.05, random_state=0, device="cpu")
    det.fit(X.iloc[train])
    with tempfile.TemporaryDirectory() as tmp:
        page = build_report(det, X.iloc[test], y[test], out_path=Path(tmp) / "report.html",
                            top_k=10, data_name="breast_cancer_test.csv")
        shot = Path(tmp) / "shot.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={Path(tmp) / 'profile'}", f"--screenshot={shot}",
                        "--window-size=1280,2000", page.as_uri()],
                       check=True, capture_output=True, timeout=120)
        Image.open(shot).convert("RGB").quantize(256).save(OUT, optimize=True)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
