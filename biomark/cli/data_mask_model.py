"""``biomark data mask-model``: train the lung U-Net on reference masks and save it.

Only the standard library is imported at module level so that ``--help``
is instant; Keras is imported inside :func:`run`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]

_EPILOG = """\
reference folders: films in images/ (or CXR_png/), masks in masks/ (or mask/) named like the film
or <stem>_mask, or ManualMask/leftMask + rightMask (Montgomery). Public sets in these layouts:
Montgomery, Shenzhen, JSRT (SCR masks), V7 Labs' COVID-19 X-ray lung masks
(benchmarks/v7_references.py pairs them with your Kermany/Cohen films).

examples:
  # train on two public sets and check the recipe by 5-fold cross-validation first
  biomark data mask-model --references MontgomerySet ShenzhenSet --out lung_unet.keras --cv 5

  # then use it for every film of a dataset that has no mask of its own
  biomark data masks --data data/my_xrays --model lung_unet.keras

outputs: the .keras file and its record (<file>.json: references, settings, versions, Dice).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "mask-model",
        help="train the learned lung segmenter (a small U-Net) on reference masks",
        description=(
            "Train a small U-Net (128 px, about 1.9 M weights) on chest X-rays with hand-drawn "
            "lung masks and save it as a .keras file. `biomark data masks --model FILE` then "
            "segments a dataset's films with it, offline. On 2 CPU cores, 76 films and 60 epochs "
            "take 1.5-2.5 min."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--references", required=True, nargs="+", type=Path, help="reference folders"
    )
    parser.add_argument("--out", required=True, type=Path, help="model file to write (.keras)")
    parser.add_argument("--epochs", type=int, default=60, help="training epochs (default 60)")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of weights, augmentation and folds"
    )
    parser.add_argument(
        "--members",
        type=int,
        default=1,
        help="train this many U-Nets and average them into one model (steadier masks; "
        "that many times the training time; default 1)",
    )
    parser.add_argument(
        "--cv",
        type=int,
        default=0,
        help=(
            "first cross-validate the recipe with this many folds and record the Dice (default: "
            "off)"
        ),
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Train and save the model; print where it went and its cross-validated Dice; return 0."""
    from biomark.exceptions import ConfigError
    from biomark.pipelines.lung_model import train_lung_model

    if args.epochs < 1 or args.members < 1:
        raise ConfigError(f"--epochs {args.epochs}, --members {args.members}: give at least 1 each")
    trained = train_lung_model(
        args.references,
        args.out,
        epochs=args.epochs,
        seed=args.seed,
        cv=args.cv,
        members=args.members,
    )
    counts = ", ".join(f"{name} {n}" for name, n in trained.info["references"].items())
    print(
        f"mask-model: trained on {sum(trained.info['references'].values())} films ({counts}) "
        f"in {trained.info['train_seconds']:.0f} s"
    )
    for name, figures in trained.info.get("cross_validation", {}).get("per_set", {}).items():
        print(
            f"  cross-validated Dice, {name} ({figures['n']} films): median "
            f"{figures['median']:.3f}, mean {figures['mean']:.3f}, min {figures['min']:.3f}"
        )
    print(f"  model: {trained.path}\n  record: {trained.path}.json")
    return 0
