"""Images per second for decode + letterbox on the real X-ray sample.

Decodes every PNG/JPEG/DICOM under ``../shared/data`` (or ``--data``) with
:func:`biomark.io.read_image`, letterboxes it to ``--size`` and prints a small
table: serial, then ``--jobs`` worker processes (default: all cores).

Usage::

    python benchmarks/io_decode.py [--data DIR] [--size 200] [--jobs N] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from biomark.io import SUPPORTED_SUFFIXES, letterbox, read_image

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _one(args: tuple[str, int]) -> int:
    path, size = args
    return int(letterbox(read_image(path), size).shape[0])


def _find(root: Path) -> list[str]:
    return sorted(
        str(p) for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES
    )


def _time_serial(paths: list[str], size: int) -> float:
    start = time.perf_counter()
    for path in paths:
        _one((path, size))
    return time.perf_counter() - start


def _time_parallel(paths: list[str], size: int, jobs: int) -> float:
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(_one, [(paths[0], size)] * jobs))  # start workers, import biomark
        start = time.perf_counter()
        list(pool.map(_one, [(p, size) for p in paths], chunksize=max(1, len(paths) // (4 * jobs))))
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder searched recursively")
    parser.add_argument("--size", type=int, default=200, help="letterbox side (default 200)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--repeat", type=int, default=2, help="timings per row; the best is shown")
    args = parser.parse_args(argv)

    if not args.data.is_dir():
        print(f"no data folder at {args.data}: pass --data DIR", file=sys.stderr)
        return 2
    paths = _find(args.data)
    if not paths:
        print(f"no PNG/JPEG/DICOM files under {args.data}", file=sys.stderr)
        return 2
    megapixels = 0.0
    for path in paths:
        height, width = read_image(path).shape
        megapixels += height * width / 1e6  # also warms the file cache

    rows = [("serial", 1, min(_time_serial(paths, args.size) for _ in range(args.repeat)))]
    if args.jobs > 1:
        best = min(_time_parallel(paths, args.size, args.jobs) for _ in range(args.repeat))
        rows.append(("processes", args.jobs, best))

    print(f"{len(paths)} images, {megapixels:.0f} megapixels, letterbox to {args.size}, "
          f"{os.cpu_count()} cores, best of {args.repeat}")
    print(f"{'mode':<10} {'jobs':>4} {'seconds':>8} {'images/s':>9} {'MP/s':>7} {'speed-up':>8}")
    for mode, jobs, seconds in rows:
        print(f"{mode:<10} {jobs:>4} {seconds:>8.2f} {len(paths) / seconds:>9.1f} "
              f"{megapixels / seconds:>7.1f} {rows[0][2] / seconds:>7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
