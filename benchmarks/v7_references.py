"""Human lung masks for the real films in a sources folder, from V7's COVID-19 X-ray annotations.

V7 Labs published pixel-level lung masks for 6,500 chest X-rays, the Kermany
(pediatric pneumonia) set and Cohen's COVID-19 collection among them
(github.com/v7labs/covid-19-xray-dataset, CC BY 4.0, folder
``annotations/all-images-semantic-masks``: one PNG per image, 255 lung,
127 "Ignore" (devices over the lung), 0 background). The masks are named by
V7's numeric ids; the file that maps ids to image names is not in the
repository. But each mask has its image's full resolution, so a film is
matched to the masks of exactly its width and height. Where several masks
share that size, the one whose lung is darkest against the rest of the film
(lungs hold air) is taken; the script prints how many films needed that, and
``--sheet`` writes every film with its matched outline to look at.

The output is a reference folder for ``benchmarks/lung_masks.py``:
``OUT/images/<source>__<name>`` (a copy of the film) and
``OUT/masks/<source>__<stem>.png`` (lung and Ignore joined, as 0/255).

Mind the convention: V7's lungs include the region behind the heart down to
the lowest visible lung, so they are larger than Shenzhen/JSRT-style masks,
which stop at the heart border. Dice against them is lower for that reason
alone; read it as a check of gross failures (a mask in the neck, half a
lung), not of the outline.

Usage::

    git -C MIRROR archive HEAD annotations/all-images-semantic-masks | tar -x -C V7 --strip-components=2
    python benchmarks/v7_references.py V7 ../shared/data /tmp/v7ref --sheet /tmp/v7ref.png
    python benchmarks/lung_masks.py /tmp/v7ref
"""  # noqa: E501

from __future__ import annotations

import argparse
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

_SOURCES = (
    "kermany",
    "cohen",
)  # the two of our sources V7 annotated; NIH films would match its 1024 px masks by size alone
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def masks_by_size(folder: Path) -> dict[tuple[int, int], list[Path]]:
    """Index V7's mask PNGs by (width, height), reading only their headers."""
    index: dict[tuple[int, int], list[Path]] = defaultdict(list)
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as mask:
            index[mask.size].append(path)
    if not index:
        raise SystemExit(
            f"{folder}: no mask PNGs; extract annotations/all-images-semantic-masks there first"
        )
    return index


def lung_darkness(film: np.ndarray, lung: np.ndarray) -> float:
    """Mean grey outside the lung minus inside it, in the film's own 0-1 range (higher: darker
    lungs)."""
    if not lung.any() or lung.all():
        return -np.inf
    grey = film.astype(float) / max(float(film.max()), 1.0)
    return float(grey[~lung].mean() - grey[lung].mean())


def read_lung(path: Path) -> np.ndarray:
    """V7 semantic mask as a boolean lung mask (Lung 255 and Ignore 127 joined)."""
    return np.asarray(Image.open(path).convert("L")) > 0


def match_films(
    sources: Path, index: dict[tuple[int, int], list[Path]]
) -> list[tuple[Path, Path, int]]:
    """(film, matched mask, number of candidates) for every film of a V7 size with lungs drawn.

    Films of no V7 size, and films whose best mask is empty (laterals, CT slices), are left out.
    """
    matches = []
    for source in _SOURCES:
        for film_path in sorted((sources / source).rglob("*")):
            if film_path.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            with Image.open(film_path) as film_image:
                candidates = index.get(film_image.size, [])
                if not candidates:
                    continue
                film = np.asarray(film_image.convert("L"))
            best = max(candidates, key=lambda c: lung_darkness(film, read_lung(c)))
            if read_lung(best).any():  # V7 drew no lungs on lateral films and CT slices
                matches.append((film_path, best, len(candidates)))
    return matches


def write_references(matches: list[tuple[Path, Path, int]], sources: Path, out: Path) -> None:
    """Copy each film and write its mask as 0/255 under ``out/images`` and ``out/masks``."""
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    for film_path, mask_path, _ in matches:
        name = f"{film_path.relative_to(sources).parts[0]}__{film_path.name}"
        shutil.copyfile(film_path, out / "images" / name)
        Image.fromarray(read_lung(mask_path).astype(np.uint8) * 255).save(
            out / "masks" / f"{Path(name).stem}.png"
        )


def write_sheet(matches: list[tuple[Path, Path, int]], path: Path, tile: int = 160) -> None:
    """A contact sheet: every film at ``tile`` px with its matched lung outline in red."""
    from scipy import ndimage

    columns = 10
    rows = -(-len(matches) // columns)
    sheet = Image.new("RGB", (columns * tile, rows * tile))
    for k, (film_path, mask_path, _) in enumerate(matches):
        film = Image.open(film_path).convert("L").resize((tile, tile))
        lung = (
            np.asarray(Image.open(mask_path).convert("L").resize((tile, tile), Image.NEAREST)) > 0
        )
        rgb = np.stack([np.asarray(film)] * 3, axis=-1).copy()
        rgb[lung & ~ndimage.binary_erosion(lung)] = (255, 0, 0)
        sheet.paste(Image.fromarray(rgb), ((k % columns) * tile, (k // columns) * tile))
    sheet.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("masks", type=Path, help="folder of V7's semantic mask PNGs")
    parser.add_argument("sources", type=Path, help="sources folder (e.g. ../shared/data)")
    parser.add_argument("out", type=Path, help="reference folder to write (images/ and masks/)")
    parser.add_argument(
        "--sheet", type=Path, default=None, help="write a contact sheet PNG of the matches"
    )
    args = parser.parse_args()
    matches = match_films(args.sources, masks_by_size(args.masks))
    write_references(matches, args.sources, args.out)
    ties = sum(n > 1 for _, _, n in matches)
    per_source = defaultdict(int)
    for film_path, _, _ in matches:
        per_source[film_path.relative_to(args.sources).parts[0]] += 1
    print(
        f"{len(matches)} films matched by size ({dict(per_source)}); {ties} had several candidate "
        "masks, the darkest lung taken"
    )
    if args.sheet:
        write_sheet(matches, args.sheet)
        print(f"contact sheet: {args.sheet}")


if __name__ == "__main__":
    main()
