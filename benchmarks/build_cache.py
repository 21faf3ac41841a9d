"""Images per second of ``build_dataset`` (decode + contrast + letterbox + hash + cache).

Runs the build serially (``--jobs 1``) and on all cores (``--jobs -1``) on

* the real sample X-rays in ``../shared/data`` (when present: Cohen,
  Actualmed, Kermany, NIH; large JPEG/PNG files, up to 16-bit), and
* a generated phantom (:func:`biomark.data.phantom.generate_phantom`, small
  8-bit PNGs with masks), or a synthetic folder dataset when the phantom
  generator is not available,

and prints one table. Timings include source parsing (the NIH table is
112,120 rows) and writing every output file.

Usage::

    python benchmarks/build_cache.py [--repeat 2] [--phantom-per-class 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def _phantom(root: Path, per_class: int) -> dict[str, list[Path]]:
    try:
        from biomark.data.phantom import generate_phantom
    except ImportError:
        from PIL import Image

        rng = np.random.default_rng(0)
        for label in ("covid", "normal", "pneumonia"):
            for k in range(per_class):
                (root / "folder" / label).mkdir(parents=True, exist_ok=True)
                image = rng.integers(0, 255, (512, 448), dtype=np.uint8)
                Image.fromarray(image).save(root / "folder" / label / f"{k}.png")
        return {"folder": [root / "folder"]}
    return {"manifest": [generate_phantom(root / "phantom", n_per_class=per_class, seed=0)]}


def _time_build(name: str, sources: dict, jobs: int, repeat: int, recipe: object = None) -> dict:
    from biomark.data.build import build_dataset

    best = float("inf")
    n = 0
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = build_dataset(out, sources=sources, recipe=recipe, jobs=jobs)
            best = min(best, time.perf_counter() - start)
            n = result.n_images
    return {"dataset": name, "jobs": jobs, "images": n, "seconds": best, "images_per_s": n / best}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs per setting; the best is shown")
    parser.add_argument(
        "--phantom-per-class", type=int, default=60, help="phantom images per class (7 classes)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("BIOMARK_PROGRESS", "0")
    rows = []
    if SHARED.is_dir():
        shared = {
            "cohen": [SHARED / "cohen", SHARED / "actualmed"],
            "kermany": [SHARED / "kermany"],
            "nih": [SHARED / "nih"],
        }
        for jobs in (1, -1):
            rows.append(_time_build("shared real X-rays", shared, jobs, args.repeat))
    else:
        print(f"(no real sample data at {SHARED}; skipped)", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        phantom = _phantom(Path(tmp), args.phantom_per_class)
        name = "phantom" if "manifest" in phantom else "synthetic folder"
        for jobs in (1, -1):
            rows.append(_time_build(name, phantom, jobs, args.repeat))
    print(f"cores: {os.cpu_count()}")
    print(f"{'dataset':<22}{'jobs':>5}{'images':>8}{'seconds':>10}{'images/s':>10}")
    for row in rows:
        print(
            f"{row['dataset']:<22}{row['jobs']:>5}{row['images']:>8}{row['seconds']:>10.2f}{row['images_per_s']:>10.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
