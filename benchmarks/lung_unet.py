"""The learned lung segmenter against the shape template: cross-validated Dice and real-film checks.

1. **Dice, cross-validated.** The reference folders (``--references``; see
   :mod:`biomark.data.lung_references`) are split into ``--folds`` folds; a
   U-Net (:mod:`biomark.models.lung_unet`) is trained on the others and scored
   on each fold's films. The template segmenter
   (:func:`biomark.data.lungs.segment_lungs`) is scored on the same films.
2. **Real films** (``--sources``, e.g. ``../shared/data``): every frontal film
   is built into a temporary dataset (as ``benchmarks/lung_masks.py`` does) and
   gets a U-Net mask: the out-of-fold mask when the film is one of the
   references (matched by source and file stem: a V7 reference
   ``kermany__person1_x`` is the Kermany film ``person1_x``), else the mask of
   a model trained on every reference. The masks are checked as
   ``biomark data masks --model`` checks them (geometry only, like any
   supplied mask), and for comparison with the template's own checks
   (geometry, contrast and outside air; the template alone has a fit score).
   ``--sheet`` writes every film with both outlines (U-Net red, template
   blue) to judge the masks by eye.

Usage::

    python benchmarks/lung_unet.py --references /tmp/v7ref SHENZHEN JSRT --sources ../shared/data \\
        --sheet /tmp/unet_sheet.png
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from biomark.data.lung_checks import check_mask, content_mask
from biomark.data.lung_references import read_lung_references
from biomark.data.lungs import dice, segment_lungs
from biomark.models.lung_unet import predict_lung_masks, train_lung_unet
from biomark.pipelines.lung_model import out_of_fold_masks


def _summary(scores: np.ndarray) -> str:
    return f"median {np.median(scores):.3f}, mean {scores.mean():.3f}, min {scores.min():.3f}"


def _sheet(
    path: Path, images: np.ndarray, learned: np.ndarray, template: np.ndarray, names: list[str]
) -> None:
    from PIL import Image
    from scipy import ndimage

    columns, side = 10, images.shape[1]
    rows = -(-len(images) // columns)
    sheet = np.zeros((rows * side, columns * side, 3), np.uint8)
    for k, (image, a, b) in enumerate(zip(images, learned, template, strict=True)):
        rgb = np.stack([image] * 3, axis=-1).astype(np.uint8)
        for mask, colour in ((b > 0, (0, 90, 255)), (a > 0, (255, 0, 0))):
            rgb[mask & ~ndimage.binary_erosion(mask)] = colour
        sheet[
            (k // columns) * side : (k // columns + 1) * side,
            (k % columns) * side : (k % columns + 1) * side,
        ] = rgb
    Image.fromarray(sheet).save(path)
    path.with_suffix(".txt").write_text(
        "\n".join(f"{k}: {n}" for k, n in enumerate(names)) + "\n", encoding="utf-8"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--references", nargs="+", type=Path, required=True, help="reference folders"
    )
    parser.add_argument(
        "--sources", type=Path, default=None, help="a sources folder of real films (../shared/data)"
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--members", type=int, default=1, help="U-Nets averaged per model (default 1)"
    )
    parser.add_argument(
        "--sheet", type=Path, default=None, help="contact sheet PNG of the real films"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    refs = read_lung_references(args.references, size=200)
    folders = np.asarray(refs.folders)
    print(
        f"{len(refs)} reference films: "
        + ", ".join(f"{f} {int((folders == f).sum())}" for f in dict.fromkeys(refs.folders))
    )
    start = time.perf_counter()
    out_of_fold = out_of_fold_masks(
        refs.images,
        refs.masks,
        folds=args.folds,
        seed=args.seed,
        epochs=args.epochs,
        members=args.members,
    )
    learned = np.array([dice(p, m) for p, m in zip(out_of_fold, refs.masks, strict=True)])
    template_masks = np.stack([segment_lungs(image)[0] for image in refs.images])
    template = np.array([dice(p, m) for p, m in zip(template_masks, refs.masks, strict=True)])
    print(
        f"Dice against the references ({args.folds}-fold, {args.epochs} epochs, {args.members} "
        f"member(s), {(time.perf_counter() - start) / args.folds:.0f} s per model on this machine):"
    )
    for name in dict.fromkeys(refs.folders):
        chosen = folders == name
        print(
            f"  {name:<10} n={int(chosen.sum()):<3} U-Net {_summary(learned[chosen])} | template "
            f"{_summary(template[chosen])}"
        )
    if args.sources is None:
        return

    import lung_masks as bench  # the sibling benchmark's sources reader

    model = train_lung_unet(
        refs.images, refs.masks, epochs=args.epochs, seed=args.seed, members=args.members
    )
    with tempfile.TemporaryDirectory(prefix="lung-unet-") as scratch:
        images, _, sources, ids = bench._from_sources(args.sources, 200, Path(scratch))
        from biomark.data.dataset import load_dataset

        stems = [
            Path(p).stem
            for p in load_dataset(Path(scratch) / args.sources.name).manifest["path"].astype(str)
        ]
    by_reference = {ref_id.split("/", 1)[1]: k for k, ref_id in enumerate(refs.ids)}
    masks = predict_lung_masks(model, images)
    held_out = 0
    for i, (source, stem) in enumerate(zip(sources, stems, strict=True)):
        k = by_reference.get(f"{source}__{stem}")
        if k is not None:
            masks[i], held_out = out_of_fold[k], held_out + 1
    geometry = [check_mask(m, content_mask(image)) for m, image in zip(masks, images, strict=True)]
    full = [
        check_mask(m, content_mask(image), image=image)
        for m, image in zip(masks, images, strict=True)
    ]
    template_results = [segment_lungs(image) for image in images]
    ok_geometry = np.array([not c.flags for c in geometry])
    ok_full = np.array([not c.flags for c in full])
    ok_template = np.array([not c.flags for _, c in template_results])
    print(
        f"{args.sources}: {len(images)} frontal films ({held_out} masked by the model that never "
        "saw them in training, the rest by the model trained on all references)"
    )
    for label, ok in (
        ("U-Net, geometry checks (as `data masks --model`)", ok_geometry),
        ("U-Net, geometry + contrast + outside-air checks", ok_full),
        ("template, all its checks", ok_template),
    ):
        per_source = ", ".join(
            f"{s} {int(ok[sources == s].sum())}/{int((sources == s).sum())}"
            for s in sorted(set(sources))
        )
        print(f"  {label}: {ok.mean():.1%} ({int(ok.sum())}/{len(ok)}); {per_source}")
    for i in np.flatnonzero(~ok_full):
        print(f"  U-Net flagged: {sources[i]:<10} {ids[i][:50]:<50} {';'.join(full[i].flags)}")
    if args.sheet:
        _sheet(args.sheet, images, masks, np.stack([m for m, _ in template_results]), list(ids))
        print(
            f"contact sheet: {args.sheet} (U-Net red, template blue; names in "
            f"{args.sheet.with_suffix('.txt')})"
        )


if __name__ == "__main__":
    main()
