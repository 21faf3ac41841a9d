"""What one radiomics batch costs to send to a Dask worker: pixels vs row references.

``biomark radiomics --scheduler`` sends image batches to workers. By value, a
batch carries each image and its mask; by reference (the default when the
workers see the dataset folder, :class:`biomark.features.radiomics.RowSource`)
it carries ``(file, row)`` pairs and the worker reads the rows from the shared
image cache and ``masks.npy``. This script measures the serialised size of a
batch both ways with Dask's own serialisation (``distributed.protocol``), the
time to serialise it, and extrapolates to NIH ChestX-ray14 (112,120 images),
with and without the two negative controls.

Usage: ``python benchmarks/cluster_transfer.py [--size 200] [--batch 32]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

NIH_IMAGES = 112_120


def batch_bytes(items: list, repeats: int = 5) -> tuple[int, float]:
    """Serialised bytes of one batch (as Dask sends task arguments) and seconds per
    serialisation."""
    from distributed.protocol import serialize_bytes

    start = time.perf_counter()
    for _ in range(repeats):
        payload = serialize_bytes(items)
    return len(payload), (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", type=int, default=200, help="image side in pixels (default 200, the paper's)"
    )
    parser.add_argument(
        "--batch", type=int, default=32, help="images per batch (biomark's upper bound, 32)"
    )
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, args.size, args.size), dtype=np.uint8)
    masks = (rng.random((args.batch, args.size, args.size)) > 0.5).astype(np.uint8)
    key = "ab" * 32
    by_value = [(key, f"img{i:06d}", images[i], masks[i]) for i in range(args.batch)]
    files = ("/shared/data/nih/cache/images.npy", "/shared/data/nih/radiomics/cxr2d_lung/masks.npy")
    by_reference = [
        (key, f"img{i:06d}", (files[0], 100_000 + i), (files[1], 100_000 + i))
        for i in range(args.batch)
    ]
    one_side = [(key, f"img{i:06d}", images[i], (files[1], 100_000 + i)) for i in range(args.batch)]

    rows = []
    for name, items in (
        ("by value", by_value),
        ("by reference", by_reference),
        ("control (one side sent)", one_side),
    ):
        size, seconds = batch_bytes(items)
        rows.append((name, size, seconds))
    print(f"radiomics batch of {args.batch} images at {args.size} px, serialised as Dask sends it")
    print(f"{'batch':<26}{'bytes/batch':>14}{'bytes/image':>14}{'serialise ms':>14}")
    for name, size, seconds in rows:
        print(f"{name:<26}{size:>14,}{size / args.batch:>14,.0f}{seconds * 1e3:>14.2f}")
    value, ref, side = (r[1] / args.batch for r in rows)
    gib = 2**30
    print(f"\nNIH ChestX-ray14 ({NIH_IMAGES:,} images), lung region only:")
    print(
        f"  by value {value * NIH_IMAGES / gib:.2f} GiB through the scheduler, by reference "
        f"{ref * NIH_IMAGES / 2**20:.1f} MiB ({value / ref:.0f}x less)"
    )
    print("with the two negative controls (each sends its computed side):")
    print(
        f"  by value {3 * value * NIH_IMAGES / gib:.2f} GiB, by reference "
        f"{(ref + 2 * side) * NIH_IMAGES / gib:.2f} GiB ({3 * value / (ref + 2 * side):.1f}x less)"
    )


if __name__ == "__main__":
    main()
