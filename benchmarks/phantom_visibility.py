"""How visible is each planted severity in the phantom's films? The ceiling the image itself sets.

The acceptance benchmark (``phantom_acceptance.py``) asks whether a network's
feature tracks each class's planted severity with Spearman |rho| >= 0.5. This
script asks the question before any network: how closely does the *amount* of
the signature a film shows follow its severity? For each case it renders the
same patient twice with the same random draws (the renderer's draws do not
depend on label or severity, :func:`biomark.data.phantom_render.render_phantom_case`),
once with the disease and once as "Normal", and measures the signature as the
summed absolute difference of the two films. Within each class it prints
Spearman's rho between severity and that amount; for Pneumonia also within
each lobe, since the consolidated lobe (drawn at random) sets how much of the
film a given severity fills.

A rho well above 0.5 means the film shows the severity and a feature that
misses it is the network's limit, not the phantom's; a rho near 0.5 means a
single global amount cannot grade the class.

Usage::

    python benchmarks/phantom_visibility.py --n-per-class 200 --size 96 --strengths 1.0,1.5

Figures go to standard output and, with ``--json``, to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats as sps

from biomark.data.phantom_render import render_phantom_case
from biomark.data.phantom_signatures import LOBES, PHANTOM_CLASSES
from biomark.provenance import describe_cpu


def signature_amounts(
    label: str, n: int, *, size: int, strength: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Severities, signature amounts and lobes of ``n`` cases of one class.

    Parameters
    ----------
    label : str
        A diseased class of :data:`PHANTOM_CLASSES`.
    n : int
        Cases, each a new patient with severity drawn uniformly from [0, 1].
    size : int
        Film side in pixels.
    strength : float
        The phantom's ``signature_strength``.
    seed : int

    Returns
    -------
    severity, amount : ndarray of shape (n,)
        ``amount`` is the summed absolute grey-level difference (0-255 scale)
        between the diseased film and the same patient's film as "Normal".
    lobe : ndarray of shape (n,), str
        The consolidated lobe (Pneumonia) or "none".
    """
    rng = np.random.default_rng(seed)
    severity, amount, lobe = np.empty(n), np.empty(n), np.empty(n, dtype=object)
    for i in range(n):
        severity[i] = rng.uniform(0.0, 1.0)
        case_seed = int(rng.integers(0, 2**63 - 1))
        ill = render_phantom_case(
            label,
            float(severity[i]),
            np.random.default_rng(case_seed),
            size=size,
            signature_strength=strength,
        )
        well = render_phantom_case(
            "Normal", 0.0, np.random.default_rng(case_seed), size=size, signature_strength=strength
        )
        amount[i] = np.abs(ill.image.astype(np.int32) - well.image.astype(np.int32)).sum()
        lobe[i] = ill.lobe
    return severity, amount, lobe


def _rho(x: np.ndarray, y: np.ndarray) -> float:
    return float(sps.spearmanr(x, y)[0]) if len(x) > 2 else float("nan")


def visibility(n: int, *, size: int, strength: float, seed: int) -> dict[str, dict[str, float]]:
    """Per diseased class: rho(severity, amount), and for Pneumonia rho within each lobe.

    Returns
    -------
    dict of str to dict of str to float
        ``{class: {"rho": ..., "<lobe>": ...}}``; the lobes only for Pneumonia.
    """
    out: dict[str, dict[str, float]] = {}
    for k, label in enumerate(c for c in PHANTOM_CLASSES if c != "Normal"):
        severity, amount, lobe = signature_amounts(
            label, n, size=size, strength=strength, seed=seed + k
        )
        out[label] = {"rho": _rho(severity, amount)}
        if label == "Pneumonia":
            for name in LOBES:
                on = lobe == name
                out[label][name] = _rho(severity[on], amount[on])
    return out


def main(argv: list[str] | None = None) -> int:
    """Print each class's visibility at each strength."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-per-class", type=int, default=200)
    parser.add_argument("--size", type=int, default=96, help="film side (the demo: 96)")
    parser.add_argument(
        "--strengths", default="1.0,1.5", help="signature strengths (default 1.0, demo 1.5)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    strengths = [float(s) for s in args.strengths.split(",") if s.strip()]
    print(f"# {describe_cpu()}; {args.n_per_class} cases per class at {args.size} px")
    print("rho(severity, amount of signature in the film) within each class")
    results: dict[str, dict[str, dict[str, float]]] = {}
    for strength in strengths:
        start = time.perf_counter()
        found = visibility(args.n_per_class, size=args.size, strength=strength, seed=args.seed)
        results[f"{strength:g}"] = found
        cells = ", ".join(f"{label} {v['rho']:+.2f}" for label, v in found.items())
        lobes = ", ".join(f"{lobe} {found['Pneumonia'][lobe]:+.2f}" for lobe in LOBES)
        print(f"strength {strength:g}: {cells} ({time.perf_counter() - start:.0f} s)")
        print(f"  Pneumonia within one lobe: {lobes}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
