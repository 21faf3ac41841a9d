"""Speed of ``biomark radiomics`` and of the association step.

Prints:

1. images/second of radiomics extraction on the same phantom images (200 px,
   true lung masks, the shipped parameter file): a plain serial pyradiomics
   loop (one extractor, ``execute`` per image) versus biomark on all cores
   (cold cache), and a warm re-run served from the cache; with the ratios;
2. the time of :func:`biomark.analysis.associate.associate` for 4,000 images x
   1,280 deep x 100 radiomic features (synthetic).

Usage: ``python benchmarks/radiomics.py [--images N] [--jobs N]``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# This file is called radiomics.py: keep its folder off the import path so that
# `import radiomics` finds pyradiomics.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def _phantom(n: int) -> tuple[np.ndarray, np.ndarray]:
    from biomark.data.phantom import PHANTOM_CLASSES, render_phantom

    images, masks = [], []
    for i in range(n):
        rng = np.random.default_rng([11, i])
        image, mask = render_phantom(PHANTOM_CLASSES[i % 7], float(rng.uniform(0.15, 1)), rng, size=200)
        images.append(image)
        masks.append(mask)
    return np.stack(images), np.stack(masks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=-1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import os

    os.environ.setdefault("BIOMARK_PROGRESS", "0")
    import SimpleITK as sitk
    import radiomics
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    from biomark.features.radiomics import _make_extractor, extract_features
    from biomark.features.radiomics_params import load_params

    radiomics.setVerbosity(60)
    logging.getLogger("radiomics").setLevel(logging.ERROR)  # no per-image log records in either loop
    params = load_params(ROOT / "analyses" / "radiomics_cxr2d.yaml")
    images, masks = _phantom(args.images)
    ids = [f"i{k}" for k in range(len(images))]
    n = len(images)
    print(f"machine: {os.cpu_count()} cores; {n} phantom images 200x200, Original image type, 102 features")

    extractor = _make_extractor(params.extractor_params())
    assert isinstance(extractor, RadiomicsFeatureExtractor)
    start = time.perf_counter()
    for image, mask in zip(images, masks):
        extractor.execute(sitk.GetImageFromArray(image.astype(np.float32)), sitk.GetImageFromArray(mask), label=1)
    serial = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cold = extract_features(images, masks, ids, params, cache_dir=tmp, jobs=args.jobs)
        parallel = time.perf_counter() - start
        start = time.perf_counter()
        warm = extract_features(images, masks, ids, params, cache_dir=tmp, jobs=args.jobs)
        cached = time.perf_counter() - start
    assert cold.n_computed == n and warm.n_cached == n
    print(f"plain serial pyradiomics loop : {n / serial:8.1f} img/s ({serial:.2f} s)")
    print(f"biomark, all cores, cold      : {n / parallel:8.1f} img/s ({parallel:.2f} s)  x{serial / parallel:.2f} vs serial")
    print(f"biomark, warm re-run (cache)  : {n / cached:8.1f} img/s ({cached:.2f} s)  x{serial / cached:.1f} vs serial")

    from biomark.analysis.associate import associate

    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 1280)).astype(np.float32)
    R = rng.normal(size=(4000, 100))
    start = time.perf_counter()
    result = associate(X, R)
    assoc = time.perf_counter() - start
    start = time.perf_counter()
    result.table()
    tidy = time.perf_counter() - start
    print(f"associate 4000 x 1280 x 100   : {assoc:.2f} s (+ {tidy:.2f} s for the 128,000-row tidy table)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
