"""Lung segmentation on real films: plausible share, per source, Dice against reference masks.

Each ``PATH`` is one of

* a **dataset folder** (``manifest.csv`` + ``cache/``, from ``biomark data
  build`` or ``biomark data phantom``): every cached image is segmented with
  :func:`biomark.data.lungs.segment_lungs`; ``cache/masks.npy``, when present
  (the phantom's true masks, a manifest's ``mask_path``), is the reference
  for Dice;
* a **sources folder** holding any of ``cohen/``, ``actualmed/``, ``kermany/``,
  ``nih/`` in their download layouts (e.g. ``../shared/data``): every frontal
  X-ray is built into a temporary dataset first (all classes, no recipe
  targets);
* a **reference folder** of images with lung masks: images in ``images/`` or
  ``CXR_png/``; masks in ``masks/`` or ``mask/`` (named like the image, or
  with ``_mask``; Shenzhen, JSRT-derived sets) or
  ``ManualMask/leftMask`` + ``ManualMask/rightMask`` (Montgomery; the two are
  joined). Images and masks are letterboxed to ``--size`` like the cache.

``--phantom N`` adds N phantom films (:func:`biomark.data.phantom.render_phantom`,
seeds 100, 101, ...; the classes in turn) with their true masks.

Prints per input: images, plausible %, plausible % per source, the flag
counts, milliseconds per image, and Dice (median, mean, minimum) where
references exist, then one line per flagged film (source, id, flags, fit
score, contrast, balance, solidity). ``--overlays DIR`` writes each flagged
film beside its mask outline as a PNG, to judge whether the mask or the
check is wrong. ``--gallery FILE.html`` writes the worst-first outline
gallery (:func:`biomark.report.mask_gallery.mask_gallery_html`) of every
input, to look at the masks.

Usage::

    python benchmarks/lung_masks.py ../shared/data --phantom 42
    python benchmarks/lung_masks.py data/phantom some/MontgomerySet --gallery /tmp/masks.html
    python benchmarks/lung_masks.py ../shared/data --overlays /tmp/flagged
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from biomark.data.lungs import dice, segment_lungs

_SOURCES = ("cohen", "actualmed", "kermany", "nih")


def _from_dataset(folder: Path) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, list[str]]:
    from biomark.data.dataset import load_dataset

    dataset = load_dataset(folder)
    refs = None if dataset.masks is None else np.asarray(dataset.masks)
    return (
        np.asarray(dataset.images),
        refs,
        dataset.manifest["source"].astype(str).to_numpy(),
        dataset.manifest["image_id"].astype(str).tolist(),
    )


def _from_sources(
    folder: Path, size: int, scratch: Path
) -> tuple[np.ndarray, None, np.ndarray, list[str]]:
    from biomark.data.build import build_dataset
    from biomark.data.labels import CANONICAL_CLASSES
    from biomark.data.recipe import recipe_from_mapping

    present = {name: folder / name for name in _SOURCES if (folder / name).is_dir()}
    sources: dict[str, list[Path]] = {}
    for name, path in present.items():
        key = "cohen" if name == "actualmed" else name  # Actualmed uses Cohen's layout
        sources.setdefault(key, []).append(path)
    recipe = recipe_from_mapping(
        {
            "name": "every-frontal-film",
            "seed": 0,
            "classes": [{"name": c, "sources": sorted(sources)} for c in CANONICAL_CLASSES],
            "nih": {"multi_label": True},
        }
    )
    out = scratch / folder.name
    build_dataset(out, sources=sources, recipe=recipe, image_size=size, min_contrast=0.0, jobs=1)
    images, _, source, ids = _from_dataset(out)
    return images, None, source, ids


def _from_references(
    folder: Path, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    from biomark.data.lung_references import read_lung_references
    from biomark.exceptions import DataError

    try:
        refs = read_lung_references([folder], size)
    except DataError as err:
        raise SystemExit(f"{err} (see the script's docstring)") from err
    return (
        refs.images,
        refs.masks,
        np.full(len(refs), folder.name),
        [i.split("/", 1)[1] for i in refs.ids],
    )


def _phantom(n: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    from biomark.data.phantom import PHANTOM_CLASSES, render_phantom

    images, refs, labels = [], [], []
    for i in range(n):
        label = PHANTOM_CLASSES[i % len(PHANTOM_CLASSES)]
        rng = np.random.default_rng(100 + i)
        image, mask = render_phantom(label, float(rng.uniform(0.15, 1.0)), rng, size=size)
        images.append(image)
        refs.append(mask)
        labels.append(label)
    return (
        np.stack(images),
        np.stack(refs).astype(np.uint8),
        np.array(labels),
        [f"phantom{i}" for i in range(n)],
    )


def evaluate(
    name: str, images: np.ndarray, refs: np.ndarray | None, source: np.ndarray, ids: list[str]
) -> dict:
    """Segment every image; print and return the figures."""
    start = time.perf_counter()
    results = [segment_lungs(image) for image in images]
    seconds = time.perf_counter() - start
    masks = np.stack([m for m, _ in results])
    table = pd.DataFrame([c.as_dict() for _, c in results])
    table.insert(0, "mask_source", "segmented")
    table.insert(0, "image_id", ids)
    table["source"] = source
    ok = table["plausible"].to_numpy(dtype=bool)
    per_source = ", ".join(
        f"{s} {ok[source == s].mean():.0%} "
        f"({int(ok[source == s].sum())}/{int((source == s).sum())})"
        for s in sorted(set(source))
    )
    flags = Counter(f for f in ";".join(table["flags"]).split(";") if f)
    print(
        f"{name}: {len(ok)} images, plausible {ok.mean():.1%} ({int(ok.sum())}/{len(ok)}); "
        f"{per_source}"
    )
    print(f"  flags {dict(flags.most_common())}; {1000 * seconds / len(ok):.0f} ms/image")
    for row in table[~ok].sort_values(["source", "flags"]).itertuples():
        print(
            f"  flagged: {row.source:<10} {row.image_id[:48]:<48} {row.flags:<28} fit "
            f"{row.fit_score:.3f} contrast {row.contrast:.3f} balance {row.lr_balance:.2f} "
            f"solidity {row.solidity:.2f}"
        )
    figures = {
        "name": name,
        "n": len(ok),
        "plausible": float(ok.mean()),
        "ms_per_image": 1000 * seconds / len(ok),
    }
    if refs is not None:
        scores = np.array([dice(m, r) for m, r in zip(masks, refs, strict=True)])
        table["dice"] = scores
        print(
            f"  Dice median {np.median(scores):.3f}, mean {scores.mean():.3f}, min "
            f"{scores.min():.3f} (plausible only: median "
            f"{np.median(scores[ok]) if ok.any() else float('nan'):.3f})"
        )
        figures.update(
            dice_median=float(np.median(scores)),
            dice_mean=float(scores.mean()),
            dice_min=float(scores.min()),
        )
    figures.update(images=images, masks=masks, table=table)
    return figures


def _write_overlays(
    folder: Path, images: np.ndarray, masks: np.ndarray, table: pd.DataFrame
) -> None:
    """One PNG per flagged film: the film beside it with the mask outline in red, both at twice the
    size."""
    from PIL import Image
    from scipy import ndimage

    folder.mkdir(parents=True, exist_ok=True)
    for i in np.flatnonzero(~table["plausible"].to_numpy(dtype=bool)):
        grey = np.stack([images[i]] * 3, axis=-1)
        outlined = grey.copy()
        mask = masks[i] > 0
        outlined[mask & ~ndimage.binary_erosion(mask)] = (255, 0, 0)
        pair = Image.fromarray(np.concatenate([grey, outlined], axis=1).astype(np.uint8))
        name = (
            f"{i:03d}_{table['image_id'].iloc[i][:60]}_"
            f"{table['flags'].iloc[i].replace(';', '+')}.png"
        )
        pair.resize((pair.width * 2, pair.height * 2), Image.NEAREST).save(
            folder / name.replace("/", "_")
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("paths", nargs="*", type=Path, help="dataset, sources or reference folders")
    parser.add_argument(
        "--phantom", type=int, default=0, help="also N phantom films with true masks"
    )
    parser.add_argument(
        "--size",
        type=int,
        default=200,
        help="image side for sources/reference folders (default 200)",
    )
    parser.add_argument(
        "--gallery", type=Path, default=None, help="write a worst-first outline gallery (HTML)"
    )
    parser.add_argument(
        "--overlays",
        type=Path,
        default=None,
        help=(
            "write image | outline PNGs of every flagged film into this folder (one subfolder per "
            "input)"
        ),
    )
    args = parser.parse_args()
    inputs = []
    with tempfile.TemporaryDirectory(prefix="lung-bench-") as scratch:
        for path in args.paths:
            if (path / "manifest.csv").is_file():
                inputs.append((path.name, *_from_dataset(path)))
            elif any((path / s).is_dir() for s in _SOURCES):
                inputs.append((path.name, *_from_sources(path, args.size, Path(scratch))))
            else:
                inputs.append((path.name, *_from_references(path, args.size)))
    if args.phantom:
        inputs.append(("phantom", *_phantom(args.phantom, args.size)))
    if not inputs:
        parser.error("give at least one folder or --phantom N")
    results = [evaluate(*item) for item in inputs]
    if args.overlays:
        for r in results:
            _write_overlays(args.overlays / r["name"], r["images"], r["masks"], r["table"])
        print(f"overlays of the flagged films: {args.overlays}")
    if args.gallery:
        from biomark.report.mask_gallery import mask_gallery_html

        body = "".join(
            f"<h2>{r['name']}</h2>"
            + mask_gallery_html(r["images"], r["masks"], r["table"], n=len(r["table"]))
            for r in results
        )
        args.gallery.write_text(
            f"<!doctype html><meta charset='utf-8'><title>lung masks</title><body>{body}</body>",
            encoding="utf-8",
        )
        print(f"gallery: {args.gallery}")


if __name__ == "__main__":
    main()
