"""``biomark data masks``: compute (or import) a dataset's lung masks once and report their checks.

Only the standard library is imported at module level so that ``--help``
is instant; the work is imported inside :func:`run`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]

_EPILOG = """\
examples:
  # segment every film once; radiomics, report and the blackout then reuse the masks
  biomark data masks --data data/apostolopoulos2020 --jobs -1

  # use your own masks (one image per film, named like the film's image_id or file stem,
  # or <stem>_mask as in the Shenzhen set); films without one are segmented
  biomark data masks --data data/my_xrays --masks path/to/lung_masks

  # segment the films that have no mask with a learned model (biomark data mask-model)
  biomark data masks --data data/my_xrays --model lung_unet.keras

outputs (in DATA_DIR): cache/lung_masks.npy, cache/lung_masks.csv (source, checks, flags per
film), cache/lung_masks.json; imported mask files go to DATA_DIR/masks/.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "masks",
        help=(
            "compute or import the lung masks of a dataset (stored with it, reused by every "
            "command)"
        ),
        description=(
            "Lung masks for every film of a dataset: your own mask files (--masks, or "
            "DATA_DIR/masks/), the dataset's cache/masks.npy (the phantom, a manifest's "
            "mask_path), else the shape-template segmenter. Every mask is checked (area, two "
            "lungs, symmetry, vertical extent, top edge, beyond the ribcage, irregular outline, "
            "holes, contrast, template fit); flagged masks are listed and left out of lung-region "
            "analyses. radiomics and report compute the same masks on first use; this command does "
            "it up front and prints the checks."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data", required=True, type=Path, help="dataset folder (biomark data build/phantom)"
    )
    parser.add_argument(
        "--masks",
        type=Path,
        default=None,
        help="folder of mask images to copy into DATA_DIR/masks/",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help=(
            "a lung model (.keras, from `biomark data mask-model`) to segment the films that have "
            "no mask"
        ),
    )
    parser.add_argument(
        "--jobs", type=int, default=-1, help="processes for segmenting (-1: all cores; default -1)"
    )
    parser.add_argument(
        "--refresh", action="store_true", help="recompute even when the stored masks are current"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Compute (and optionally import) the dataset's lung masks; print their checks; return 0."""
    from biomark.pipelines.data import lung_masks

    done = lung_masks(
        args.data, masks=args.masks, model=args.model, jobs=args.jobs, refresh=args.refresh
    )
    if done.copied is not None:
        print(
            f"masks: copied {done.copied} mask file(s) from {args.masks} into {args.data / 'masks'}"
        )
    if done.model is not None:
        print(
            f"masks: {args.model} segmented {done.model.written} film(s) into {done.model.folder} "
            f"({done.model.kept} already had a mask)"
        )
    table, usable = done.masks.table, done.masks.usable
    print(
        f"masks: {int(usable.sum())} of {len(table)} plausible ({usable.mean():.1%}); source: "
        f"{done.masks.source}"
    )
    for source, group in table.groupby(table["mask_source"]):
        print(f"  {source}: {int(group['plausible'].sum())} of {len(group)} plausible")
    flags = table.loc[~usable, "flags"].str.split(";").explode().value_counts()
    if len(flags):
        print("  flags: " + ", ".join(f"{name} {int(count)}" for name, count in flags.items()))
    for name, path in done.paths.items():
        print(f"  {name}: {path}")
    return 0
