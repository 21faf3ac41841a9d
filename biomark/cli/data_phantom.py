"""``biomark data phantom``: generate the synthetic phantom and build it like a real dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "phantom",
        help="generate the synthetic 7-class phantom with planted biomarkers",
        description=(
            "Generate a synthetic chest-radiograph-like 7-class dataset with planted, "
            "documented class signatures (per-image severity and burden as ground truth), "
            "lung masks, patients with several images and an optional source confounder; then "
            "build it exactly like a real dataset (manifest, letterboxed image cache, summary, "
            "failures, duplicates). See data/PHANTOM.md."
        ),
        epilog=(
            "examples:\n"
            "  biomark data phantom --out data/phantom --n-per-class 40 --seed 0\n"
            "  biomark data phantom --out data/phantom_paper --counts paper            # 3,905 "
            "images\n  biomark data phantom --out data/phantom_paper10 --counts paper --scale 0.1  "
            "# 391, same proportions\n  biomark data phantom --out data/p --counts "
            "455,293,311,315,280,910,1341"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--n-per-class", type=int, default=None, help="images per class (default 40)")
    size.add_argument(
        "--counts",
        default=None,
        metavar="paper|N,N,N,N,N,N,N",
        help=(
            "images per class instead of --n-per-class: 'paper' for the paper's 3,905 "
            "(COVID-19 455, Edema 293, Effusion 311, Emphysema 315, Fibrosis 280, Pneumonia 910, "
            "Normal 1341) or seven comma-separated counts in that class order"
        ),
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help=(
            "multiply the --counts (rounded, at least 1 per class), e.g. 0.1 for a tenth in the "
            "same proportions"
        ),
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; same seed, same files (default 0)"
    )
    parser.add_argument(
        "--raw-size", type=int, default=256, help="side of the generated PNGs (default 256)"
    )
    parser.add_argument(
        "--size",
        type=int,
        default=200,
        help="side of the letterboxed cache (default 200, as in the paper)",
    )
    parser.add_argument(
        "--images-per-patient", type=int, default=2, help="mean images per patient (default 2)"
    )
    parser.add_argument(
        "--confounder",
        action="store_true",
        help="burn a source artifact outside the lungs whose presence correlates with class",
    )
    parser.add_argument(
        "--signature-strength",
        type=float,
        default=1.0,
        help=(
            "multiply every planted signature (default 1: the documented, deliberately hard "
            "phantom; see data/PHANTOM.md)"
        ),
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="processes for drawing and caching (-1: all cores)"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Generate and build the phantom described by ``args``; print where it went; return 0."""
    from biomark.pipelines.data import phantom

    done = phantom(
        args.out,
        n_per_class=args.n_per_class,
        counts=args.counts,
        scale=args.scale,
        seed=args.seed,
        raw_size=args.raw_size,
        image_size=args.size,
        images_per_patient=args.images_per_patient,
        confounder=args.confounder,
        signature_strength=args.signature_strength,
        jobs=args.jobs,
    )
    if done.counts is not None:
        counts = done.counts
        print(
            f"phantom classes: {', '.join(f'{c} {n}' for c, n in counts.items())} "
            f"({sum(counts.values())} images)"
        )
    result = done.build
    print(f"phantom: {result.n_images} images, {result.n_failures} failures -> {result.out_dir}")
    print(f"  manifest: {result.out_dir / 'manifest.csv'}")
    print(f"  cache:    {result.out_dir / 'cache'}")
    return 0
