"""Images per second for decode + letterbox on the real X-ray sample; peak memory for big images.

Decodes every PNG/JPEG/DICOM under ``../shared/data`` (or ``--data``) with
:func:`biomark.io.read_image`, letterboxes it to ``--size`` and prints a small
table: serial, then ``--jobs`` worker processes (default: all cores).

``--big N`` instead writes an ``N x N`` radiograph-like 8-bit PNG and JPEG
(default 12000) and measures, each in a fresh process, the peak memory and time
of letterboxing it to ``--size``: the full decode (``letterbox(read_image)``)
and the reduced decode the build uses (:func:`biomark.io.letterbox.read_letterboxed`),
as megabytes above the process before the call and as a multiple of the
image's 8-bit size (the target is under about 4x).

Usage::

    python benchmarks/io_decode.py [--data DIR] [--size 200] [--jobs N] [--repeat 2]
    python benchmarks/io_decode.py --big [12000] [--size 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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


_MEASURE = """
import json, sys, time
from pathlib import Path
from biomark.io import letterbox, read_image
from biomark.io.letterbox import read_letterboxed

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

path, size, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current size
before = status("VmRSS")
start = time.perf_counter()
out = letterbox(read_image(path), size) if how == "full" else read_letterboxed(path, size)
seconds = time.perf_counter() - start
print(json.dumps({"extra": status("VmHWM") - before, "seconds": seconds, "shape": list(out.shape)}))
"""


def _big_image(side: int, folder: Path) -> list[Path]:
    """An 8-bit ``side x side`` radiograph-like PNG and JPEG, made from a small smooth field
    upsampled."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    small = np.clip(90 + 80 * rng.random((64, 64)).cumsum(0).cumsum(1) / (64 * 64), 0, 255).astype(
        np.uint8
    )
    image = Image.fromarray(small).resize((side, side), Image.Resampling.BILINEAR)
    paths = [folder / f"big{side}.png", folder / f"big{side}.jpg"]
    image.save(paths[0], compress_level=1)
    image.save(paths[1], quality=90)
    return paths


def _big(side: int, size: int) -> int:
    """Peak memory and seconds of letterboxing a ``side x side`` PNG and JPEG, full vs reduced
    decode."""
    if not Path("/proc/self/clear_refs").exists():
        print("--big needs Linux's /proc/self/clear_refs to measure peak memory", file=sys.stderr)
        return 2
    eight_bit = side * side
    env = {
        **os.environ,
        "BIOMARK_MAX_IMAGE_PIXELS": str(eight_bit),
    }  # above Pillow's default warning limit
    print(
        f"{side} x {side} 8-bit image ({eight_bit / 2**20:.0f} MiB decoded), letterboxed to "
        f"{size}; peak memory above the process before the call, in a fresh process each"
    )
    print(f"{'file':<6} {'decode':<8} {'peak MiB':>9} {'x 8-bit':>8} {'seconds':>8}")
    with tempfile.TemporaryDirectory(prefix="biomark-big-") as tmp:
        for path in _big_image(side, Path(tmp)):
            for how in ("full", "reduced"):
                done = subprocess.run(
                    [sys.executable, "-c", _MEASURE, str(path), str(size), how],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                result = json.loads(done.stdout)
                print(
                    f"{path.suffix[1:]:<6} {how:<8} {result['extra'] / 2**20:>9.0f} "
                    f"{result['extra'] / eight_bit:>8.2f} {result['seconds']:>8.2f}"
                )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder searched recursively"
    )
    parser.add_argument("--size", type=int, default=200, help="letterbox side (default 200)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--repeat", type=int, default=2, help="timings per row; the best is shown")
    parser.add_argument(
        "--big",
        type=int,
        nargs="?",
        const=12000,
        metavar="N",
        help="measure peak memory of one N x N image instead (default N 12000)",
    )
    args = parser.parse_args(argv)

    if args.big:
        return _big(args.big, args.size)
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

    print(
        f"{len(paths)} images, {megapixels:.0f} megapixels, letterbox to {args.size}, "
        f"{os.cpu_count()} cores, best of {args.repeat}"
    )
    print(f"{'mode':<10} {'jobs':>4} {'seconds':>8} {'images/s':>9} {'MP/s':>7} {'speed-up':>8}")
    for mode, jobs, seconds in rows:
        print(
            f"{mode:<10} {jobs:>4} {seconds:>8.2f} {len(paths) / seconds:>9.1f} "
            f"{megapixels / seconds:>7.1f} {rows[0][2] / seconds:>7.2f}x"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
