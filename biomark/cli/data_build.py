"""``biomark data build``: build a dataset folder (manifest + image cache) from public sources.

Only the standard library is imported at module level so that ``--help``
is instant; the work is imported inside :func:`run`.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser", "run"]

_EPILOG = """\
examples:
  # the paper's 7-class dataset
  biomark data build --recipe data/recipes/apostolopoulos2020.yaml \\
      --cohen covid-chestxray-dataset --cohen Actualmed-COVID-chestxray-dataset \\
      --kermany kermany --nih nih --out data/apostolopoulos2020 --jobs -1

  # every labelled image of a folder-per-class dataset, no recipe
  biomark data build --folder my_xrays --out data/my_xrays

  # re-cache an existing manifest (e.g. the phantom's phantom.csv)
  biomark data build --manifest data/phantom_raw/phantom.csv --out data/phantom

outputs (in --out): manifest.csv, cache/images.npy (+ masks.npy), cache/index.csv,
cache/cache.json, summary.csv, failures.csv, duplicates.csv, build.json.
See data/README.md for where to download each source and the recipe format.

environment:
  BIOMARK_MAX_IMAGE_PIXELS=N  raise Pillow's pixel limit (a guard against decompression
                              bombs; default 89,478,485, refused above twice that) for
                              genuine very large radiographs; 0 removes it. Images 16x the
                              --size and larger are decoded at reduced size.
"""


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--recipe`` and the source folders and manifests (``--cohen`` ... ``--manifest``)."""
    parser.add_argument(
        "--recipe",
        metavar="PATH",
        help="recipe YAML (classes, targets, sources); "
        "without one every labelled image of the sources is taken",
    )
    parser.add_argument(
        "--cohen",
        metavar="DIR",
        action="append",
        default=[],
        help="covid-chestxray-dataset-style folder (metadata.csv + images/); repeatable "
        "(Cohen, Actualmed, Figure1)",
    )
    parser.add_argument(
        "--kermany",
        metavar="DIR",
        action="append",
        default=[],
        help="Kermany pediatric set: folder holding chest_xray/ (or chest_xray/ itself)",
    )
    parser.add_argument(
        "--nih",
        metavar="DIR",
        action="append",
        default=[],
        help="NIH ChestX-ray14: folder with Data_Entry_2017*.csv and images*/",
    )
    parser.add_argument(
        "--folder",
        metavar="DIR",
        action="append",
        default=[],
        help="folder-per-class dataset DIR/<class>/*.png; repeatable",
    )
    parser.add_argument(
        "--manifest",
        metavar="CSV",
        action="append",
        default=[],
        help="existing manifest CSV with path,label (e.g. the phantom's phantom.csv)",
    )


def _add_build_options(parser: argparse.ArgumentParser) -> None:
    """Add the output folder and the build settings (``--out``, ``--size`` ... ``--strict``)."""
    parser.add_argument("--out", metavar="DIR", required=True, help="output dataset folder")
    parser.add_argument(
        "--size", metavar="N", type=int, default=200, help="image side in pixels (default 200)"
    )
    parser.add_argument(
        "--min-contrast",
        metavar="X",
        type=float,
        default=None,
        help="exclude images whose contrast score is below X (default: recipe's, else 0.15)",
    )
    parser.add_argument(
        "--jobs",
        metavar="N",
        type=int,
        default=1,
        help="decoding processes (default 1; -1 all cores)",
    )
    parser.add_argument(
        "--seed", metavar="S", type=int, default=None, help="override the recipe's seed"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first bad row or image instead of recording it in failures.csv",
    )


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``build`` sub-command to ``biomark data``."""
    parser = subparsers.add_parser(
        "build",
        help=(
            "build a dataset (manifest + 200x200 image cache) from Cohen/Kermany/NIH/folders/a "
            "manifest"
        ),
        description=(
            "Parse the given sources, select images per recipe (seeded), decode, drop low-contrast "
            "images, letterbox to SIZE x SIZE, find duplicates, and write a dataset folder. "
            "Bad rows and images go to failures.csv; the previous dataset in --out stays intact "
            "until the new one is complete."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_source_options(parser)
    _add_build_options(parser)
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Build the dataset described by ``args``; print a summary; return 0."""
    from biomark.pipelines.data import build

    sources = {
        name: list(getattr(args, name))
        for name in ("cohen", "kermany", "nih", "folder", "manifest")
    }
    result = build(
        args.out,
        sources,
        recipe=args.recipe,
        image_size=args.size,
        min_contrast=args.min_contrast,
        strict=args.strict,
        jobs=args.jobs,
        seed=args.seed,
    )
    table = result.summary.astype(object).where(result.summary.notna(), "")
    out = sys.stdout
    out.write(table.to_string(index=False) + "\n\n")
    out.write(
        f"{result.n_images} images, {result.n_failures} failures, "
        f"{result.n_duplicate_pairs} duplicate pairs across classes/patients\n"
    )
    root = result.out_dir
    out.write(f"dataset:    {root / 'manifest.csv'}  (+ cache/)\n")
    out.write(f"failures:   {root / 'failures.csv'}\n")
    out.write(f"duplicates: {root / 'duplicates.csv'}\n")
    out.write(f"provenance: {root / 'build.json'}\n")
    return 0
