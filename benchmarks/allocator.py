"""What keeping freed memory (``biomark.allocator``) does to TensorFlow's forward passes on this machine.

Usage::

    python benchmarks/allocator.py                 # 3 pairs of runs, 2,048 images each
    python benchmarks/allocator.py --pairs 5 --images 4096

Each run is a fresh process (the setting must come before TensorFlow
allocates): it builds the demo's model (MobileNetV2 alpha 0.35 at 96 px,
random weights), saves and opens it as the report does
(:class:`biomark.train.unit_maps.StrategyModels`), runs one warm-up pass,
then times the report's pass (input -> ``out_relu`` maps -> GAP) over
``--images`` random uint8 images, fed as the report and training feed them
(a Keras ``PyDataset``: TensorFlow reads it through its generator dataset,
which sets glibc's trim threshold to 128 kB) in batches of 256 (the report's
batch at 96 px), and prints wall, user and system seconds, minor page
faults and peak resident memory. ``--results benchmarks/RESULTS.md`` writes
the medians into the summary table. Runs alternate between ``BIOMARK_MALLOC_TOP_PAD=0`` (glibc
as TensorFlow leaves it) and the default (256 MiB kept), so a drift of the
machine's speed hits both alike. Wall time on a shared or virtual machine is
noisy; faults and system seconds are the steadier figures.
"""  # noqa: E501

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from biomark.provenance import describe_cpu

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_table import Row, update_results  # noqa: E402

CHILD = r"""
import json, resource, sys, tempfile, time
from pathlib import Path
from biomark.allocator import keep_freed_memory
applied = keep_freed_memory()
import numpy as np
from biomark.config import ModelSettings, StrategySpec
from biomark.models.mobilenet import build_model
from biomark.train.unit_maps import StrategyModels
n_images = int(sys.argv[1])
model = build_model(StrategySpec.parse("scratch"), 7, ModelSettings(image_size=96, alpha=0.35, weights="none"))
path = Path(tempfile.mkdtemp()) / "model.keras"
model.save(path)
fold = StrategyModels().open(0, path)  # the report's pass: input -> out_relu maps, GAP from them
images = np.random.default_rng(0).integers(0, 256, (n_images, 96, 96), dtype=np.uint8)
fold.forward(images[:512])
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
fold.forward(images)
r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
path.unlink()
print(json.dumps({"applied": applied, "wall": wall, "user": r1.ru_utime - r0.ru_utime,
                  "sys": r1.ru_stime - r0.ru_stime, "faults": r1.ru_minflt - r0.ru_minflt,
                  "max_rss_mb": r1.ru_maxrss / 1024}))
"""  # noqa: E501


def one_run(pad: str | None, n_images: int) -> dict:
    """One fresh process; ``pad`` is ``BIOMARK_MALLOC_TOP_PAD`` (None: the default)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("BIOMARK_MALLOC_TOP_PAD", None)
    if pad is not None:
        env["BIOMARK_MALLOC_TOP_PAD"] = pad
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(n_images)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--results", help="rewrite this script's row of RESULTS.md's summary table")
    args = parser.parse_args()
    cpu, load = describe_cpu(), os.getloadavg()[0]
    print(f"python {sys.version.split()[0]}, {cpu}, load average {load:.1f}")
    print(f"{'setting':<22} {'wall s':>7} {'user s':>7} {'sys s':>6} {'faults':>10} {'peak MB':>8}")
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(args.pairs):
        for key, name, pad in (("off", "glibc as TF leaves it", "0"), ("on", "256 MiB kept", None)):
            r = one_run(pad, args.images)
            runs[key].append(r)
            print(
                f"{name:<22} {r['wall']:7.2f} {r['user']:7.2f} {r['sys']:6.2f} {r['faults']:10,d} "
                f"{r['max_rss_mb']:8.0f}"
                + ("" if r["applied"] == (pad is None) else "  (setting not applied)")
            )
    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
    off, on = med["off"], med["on"]
    summary = (
        f"wall {off['wall']:.1f} s -> {on['wall']:.1f} s, system {off['sys']:.1f} s -> "
        f"{on['sys']:.1f} s, page faults {off['faults'] / 1e6:.2f} M -> {on['faults'] / 1e6:.2f} "
        f"M, peak memory {on['max_rss_mb'] - off['max_rss_mb']:+.0f} MB (medians of {args.pairs} "
        f"runs each, alternating; load {load:.1f})"
    )
    print(f"medians: {summary}")
    if args.results:
        update_results(
            args.results,
            "allocator.py",
            [
                Row(
                    "Freed memory kept (`biomark.allocator`, 256 MiB `M_TOP_PAD`): the report's "
                    f"forward pass of {args.images:,} images at 96 px (alpha 0.35, batch 256), "
                    f"{cpu}",
                    summary,
                    "-",
                    "-",
                )
            ],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
