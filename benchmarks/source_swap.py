"""Does the source of a film's surroundings sway a trained model, lungs and class held fixed?

Usage::

    python benchmarks/source_swap.py                         # phantom_acceptance.py's default --out
    python benchmarks/source_swap.py --out /tmp/acc/out      # every run found there
    python benchmarks/source_swap.py --out /tmp/acc/out --runs seed0_confounded,seed0_clean

A candidate audit channel, measured here before any report adopts it. The
lung swap (:mod:`biomark.analysis.lung_swap`) asks whether a film's
surroundings sway the answer toward *their class*; a source tag outside the
lungs that goes with one class is then mixed with the class's own outside-lung
signs. This asks about the *source* alone: every test film keeps its own lung
fields and gets the surroundings of ``--donors`` other test films of its own
class (:func:`biomark.features.report_inputs.swap_lungs`, the report's 2 %
margin). Lungs and the surroundings' class are then the same whatever the
donor's source, so a difference between the donors of two sources in the
model's probabilities can only come from what differs between the sources
outside the lungs. Per class, the mean effect of the second source's donors
minus the first's (each lung film's mean over its donors removed), against a
permutation null that shuffles the sources between the donors' patients
within fold and class (two-sided), Holm-adjusted over the classes.

The unit is the donor's patient. Two earlier versions raised false alarms on
the clean phantom: a paired Wilcoxon test over the lung films (each film with
3 donors of either source), which counts a donor shared by many films many
times, flagged 1-3 classes on 4 of 5 clean seeds; sources shuffled between
donor films, which splits a patient's two films (one anatomy, one source),
flagged Emphysema on clean seed 1 at Holm p 0.0035.

Reads the runs that ``benchmarks/phantom_acceptance.py`` leaves in its
``--out`` folder (``runs/<name>/scratch/fold_*/model.keras`` and the phantom in
``data/<name>``). On a clean phantom the two sources are drawn alike, so a
flag there is a false alarm; on a confounded one the tag (``site_B``, mostly
COVID-19 films) should raise P(COVID-19) if the model reads it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from biomark.analysis.head import Head
from biomark.analysis.held_out_auc import permuted_between_groups
from biomark.analysis.stats import holm
from biomark.data.labels import order_classes
from biomark.features.report_inputs import open_fold_model, strategy_models, swap_lungs

#: The report's lung-swap margin, as a share of the image side (``ReportSettings.swap_margin``).
MARGIN_SHARE = 0.02


def _donors(labels: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per film, ``k`` other films of its class as surroundings donors (with replacement when the
    class is smaller): the films' positions and a (n_films, k) array of the donors'."""
    rng = np.random.default_rng(seed)
    every = np.arange(labels.size)
    films, donors = [], []
    for i in every:
        pool = every[(labels == labels[i]) & (every != i)]
        if pool.size:
            films.append(i)
            donors.append(rng.choice(pool, size=k, replace=pool.size < k))
    return np.asarray(films, dtype=np.int64), np.asarray(donors, dtype=np.int64).reshape(-1, k)


def _donor_effects(probs: np.ndarray, donors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each donor's mean effect on every class's probability, each lung film's own mean removed.

    Parameters
    ----------
    probs : ndarray of shape (n_films, k, n_classes)
        The model's probabilities for film i with donor ``donors[i, m]``'s surroundings.
    donors : ndarray of shape (n_films, k)

    Returns
    -------
    donor ids (sorted) and their effects, shape (n_donors, n_classes).
    """
    centred = probs - probs.mean(axis=1, keepdims=True)  # the lungs' own answer removed
    ids, inverse = np.unique(donors.reshape(-1), return_inverse=True)
    sums = np.zeros((ids.size, probs.shape[-1]))
    np.add.at(sums, inverse, centred.reshape(-1, probs.shape[-1]))
    counts = np.bincount(inverse, minlength=ids.size)[:, None]
    return ids, sums / counts


def source_swap(
    run: Path, data: Path, *, donors: int, seed: int, n_permutations: int = 2000
) -> pd.DataFrame:
    """Per class: how much P(class) rises when the surroundings come from the second source.

    Every test film keeps its lungs and gets the surroundings of ``donors``
    films of its class. A donor's effect is its composites' probabilities
    with each lung film's mean over its donors removed. The statistic is the
    mean effect of the second source's donors minus the first's; its null
    shuffles the sources between the donors' patients within each fold and
    class, so the patient (not the composite, which shares its donor with
    other composites, nor the film, which shares its anatomy with its
    patient's other films) is the unit, as in the report's source audit.

    Parameters
    ----------
    run : Path
        A run folder with ``folds.csv`` and ``scratch/fold_*/model.keras``.
    data : Path
        Its phantom (``phantom.csv``, ``cache/images.npy``, ``cache/lung_masks.npy``).
    donors : int
        Surroundings donors per film.
    seed : int
        Seeds the donors and the permutations.
    n_permutations : int, default 2000

    Returns
    -------
    DataFrame
        One row per class: ``class, n_donors, shift`` (second source minus
        first, in probability), ``null_q95, p, p_holm``; ``attrs["sources"]``;
        ``attrs["donors"]``: one row per donor film, its effect on each
        class's probability, ``second_source``, ``stratum`` (fold:class) and
        ``patient``.
    """
    index = pd.read_csv(data / "cache" / "index.csv").set_index("image_id")["row"]
    images = np.load(data / "cache" / "images.npy", mmap_mode="r")
    masks = np.load(data / "cache" / "lung_masks.npy", mmap_mode="r")
    table = pd.read_csv(data / "phantom.csv").set_index("image_id")
    folds = pd.read_csv(run / "folds.csv")
    classes = list(order_classes(table["label"]))
    first, second = sorted(table["source"].astype(str).unique())[:2]
    holder = strategy_models()
    effects, is_second, strata, patients = [], [], [], []
    for f in sorted(int(v) for v in folds["fold"].unique()):
        model = open_fold_model(
            run / "scratch" / f"fold_{f:02d}" / "model.keras", models=holder, fold=f
        )
        head = Head.from_arrays(model.head_arrays())
        ids = folds.loc[folds["fold"] == f, "image_id"].astype(str).to_numpy()
        rows = index.loc[ids].to_numpy()
        labels = table.loc[ids, "label"].astype(str).to_numpy()
        sources = table.loc[ids, "source"].astype(str).to_numpy()
        films, pool = _donors(labels, donors, seed + f)
        fold_images, fold_masks = np.asarray(images[rows]), np.asarray(masks[rows])
        # (outside donor, lung donor): the film keeps its lungs, the donor gives the rest
        pairs = np.column_stack([pool.reshape(-1), np.repeat(films, donors)])
        margin = round(MARGIN_SHARE * fold_images.shape[-1])
        composites = swap_lungs(fold_images, fold_masks, pairs, margin=margin)
        gap = np.concatenate(
            [model.forward(composites[s : s + 256])["gap"] for s in range(0, len(composites), 256)]
        )
        probs = head.probs(gap).reshape(films.size, donors, len(classes))
        donor_ids, effect = _donor_effects(probs, pool)
        effects.append(effect)
        is_second.append(sources[donor_ids] == second)
        strata.append(np.char.add(f"{f}:", labels[donor_ids].astype(str)))
        patients.append(table.loc[ids[donor_ids], "patient_id"].astype(str).to_numpy())
    effect, second_src, stratum, patient = (
        np.concatenate(effects),
        np.concatenate(is_second),
        np.concatenate(strata),
        np.concatenate(patients),
    )

    def statistic(flags: np.ndarray) -> np.ndarray:
        return effect[flags].mean(axis=0) - effect[~flags].mean(axis=0)

    observed = statistic(second_src)
    rng = np.random.default_rng(seed)
    # a patient's films share its source and anatomy: sources move between patients, within
    # each fold and class (the source audit's shuffle, stratum by stratum)
    shuffled = np.empty((second_src.size, n_permutations), dtype=bool)
    for s in np.unique(stratum):
        rows = np.flatnonzero(stratum == s)
        shuffled[rows] = permuted_between_groups(
            second_src[rows], patient[rows], n_permutations, rng
        )
    null = np.stack([statistic(shuffled[:, b]) for b in range(n_permutations)])
    # two-sided: a source may lower a class's probability as well as raise it
    p = (1 + (np.abs(null) >= np.abs(observed) - 1e-12).sum(axis=0)) / (1 + n_permutations)
    frame = pd.DataFrame(
        {
            "class": classes,
            "n_donors": effect.shape[0],
            "shift": observed,
            "null_q95": np.quantile(np.abs(null), 0.95, axis=0),
            "p": p,
        }
    )
    frame["p_holm"] = holm(frame["p"].to_numpy())
    frame.attrs["sources"] = (first, second)
    frame.attrs["donors"] = pd.DataFrame(effect, columns=classes).assign(
        second_source=second_src, stratum=stratum, patient=patient
    )
    return frame


def main(argv: list[str] | None = None) -> int:
    """Print the per-class source shifts of every run asked for."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "biomark-acceptance",
        help="phantom_acceptance.py's --out (its default too)",
    )
    parser.add_argument("--runs", default="", help="comma-separated run names (default: all)")
    parser.add_argument("--donors", type=int, default=4, help="surroundings donors per film")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not (args.out / "runs").is_dir():
        print(f"no runs under {args.out}: run benchmarks/phantom_acceptance.py --out {args.out}")
        return 0
    names = [n for n in args.runs.split(",") if n] or sorted(
        p.name for p in (args.out / "runs").iterdir() if (p / "scratch").is_dir()
    )
    for name in names:
        t0 = time.perf_counter()
        frame = source_swap(
            args.out / "runs" / name, args.out / "data" / name, donors=args.donors, seed=args.seed
        )
        first, second = frame.attrs["sources"]
        flagged = frame.loc[frame["p_holm"] < 0.05, "class"].tolist()
        print(
            f"{name}: {int(frame['n_donors'].iloc[0])} donor films, {args.donors} per lung film, "
            f"{time.perf_counter() - t0:.0f} s; flagged (Holm p < 0.05): "
            f"{', '.join(flagged) or 'none'}"
        )
        for row in frame.to_dict("records"):
            print(
                f"  P({row['class']}) with {second} minus {first} surroundings: "
                f"{row['shift']:+.4f} (shuffled sources' 95th percentile of |shift| "
                f"{row['null_q95']:.4f}), p {row['p']:.2g} (Holm {row['p_holm']:.2g})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
