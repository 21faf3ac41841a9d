"""Map raw findings and folder names to the dataset's canonical classes.

The seven classes of Apostolopoulos et al. (2020), in the paper's order, are
:data:`CANONICAL_CLASSES`; ``Emphysema`` stands for the paper's COPD class.

:func:`map_finding` is the one label normaliser every source uses (Cohen
findings, Kermany and folder-per-class folder names, manifest labels). Text is
compared case-insensitively with spaces, ``_`` and ``-`` ignored, so
``covid``, ``COVID19``, ``covid-19`` and ``COVID_19`` are the same key. Rules,
first match wins:

1. the recipe's ``finding_map`` (an exact key after the normalisation above);
2. a canonical class name or a known alias (``covid``, ``sars-cov-2``,
   ``no finding``, ``copd``, ``pleural effusion``, ...);
3. Cohen's hierarchical findings (``Pneumonia/Viral/COVID-19``) and
   comma lists (``COVID-19, ARDS``): any part naming COVID-19 gives
   ``COVID-19``; otherwise a ``Pneumonia/...`` path or a known pneumonia
   pathogen (SARS, MERS, Streptococcus, Klebsiella, Pneumocystis, Legionella,
   ...) or any finding containing the word "pneumonia" gives ``Pneumonia``;
4. anything else (``todo``, ``Unknown``, ``Tuberculosis``, ``ARDS``, an empty
   finding) is unmapped: ``""``.

NIH ChestX-ray14 labels use their own small table (:data:`NIH_FINDINGS`) so
that NIH's own "Pneumonia" label does not silently join the Kermany
Pneumonia class; add it through ``finding_map`` if you want it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = [
    "CANONICAL_CLASSES",
    "NIH_FINDINGS",
    "label_key",
    "map_finding",
    "map_nih_finding",
    "order_classes",
]

#: The paper's classes in the paper's order (Emphysema = COPD).
CANONICAL_CLASSES: tuple[str, ...] = (
    "COVID-19",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Pneumonia",
    "Normal",
)

_ALIASES: dict[str, str] = {
    "covid19": "COVID-19",
    "covid": "COVID-19",
    "sarscov2": "COVID-19",
    "2019ncov": "COVID-19",
    "edema": "Edema",
    "oedema": "Edema",
    "pulmonaryedema": "Edema",
    "effusion": "Effusion",
    "pleuraleffusion": "Effusion",
    "emphysema": "Emphysema",
    "copd": "Emphysema",
    "fibrosis": "Fibrosis",
    "pulmonaryfibrosis": "Fibrosis",
    "pneumonia": "Pneumonia",
    "normal": "Normal",
    "nofinding": "Normal",
    "nofindings": "Normal",
    "healthy": "Normal",
}

# Pathogens / kinds that the Cohen set lists as a bare finding and that are
# pneumonias (they became "Pneumonia/<kind>/<name>" in later versions).
_PNEUMONIA_KINDS: frozenset[str] = frozenset(
    {
        "sars",
        "mers",
        "merscov",
        "streptococcus",
        "klebsiella",
        "pneumocystis",
        "legionella",
        "chlamydophila",
        "ecoli",
        "e.coli",
        "staphylococcus",
        "mycoplasma",
        "influenza",
        "h1n1",
        "varicella",
        "nocardia",
        "lipoid",
        "aspergillosis",
        "bacterial",
        "viral",
        "fungal",
        "bacteria",
        "virus",
    }
)

#: NIH ChestX-ray14 finding -> class (only the paper's classes).
NIH_FINDINGS: dict[str, str] = {
    "Edema": "Edema",
    "Effusion": "Effusion",
    "Emphysema": "Emphysema",
    "Fibrosis": "Fibrosis",
    "No Finding": "Normal",
}


def label_key(text: object) -> str:
    """Comparison key of a finding: case-folded, without spaces, ``_`` and ``-``.

    Examples
    --------
    >>> label_key(" COVID_19 ")
    'covid19'
    """
    return re.sub(r"[\s_\-]+", "", str(text).casefold())


def _user_lookup(finding: str, finding_map: Mapping[str, str] | None) -> str | None:
    if not finding_map:
        return None
    key = label_key(finding)
    for raw, label in finding_map.items():
        if label_key(raw) == key:
            return str(label)
    return None


def map_finding(finding: object, finding_map: Mapping[str, str] | None = None) -> str:
    """The class of a raw finding, or ``""`` when it maps to none.

    Parameters
    ----------
    finding : str
        Raw text: a Cohen ``finding`` (``"Pneumonia/Viral/COVID-19"``), a class
        folder name (``"covid"``), a manifest label.
    finding_map : mapping of str to str, optional
        Extra mappings from the recipe, checked first.

    Returns
    -------
    str
        A canonical class (or a ``finding_map`` target), else ``""``.

    Examples
    --------
    >>> map_finding("COVID-19, ARDS"), map_finding("No finding"), map_finding("SARS")
    ('COVID-19', 'Normal', 'Pneumonia')
    >>> map_finding("todo")
    ''
    """
    text = "" if finding is None else str(finding).strip()
    if not text or text.casefold() == "nan":
        return ""
    user = _user_lookup(text, finding_map)
    if user is not None:
        return user
    key = label_key(text)
    if key in _ALIASES:
        return _ALIASES[key]
    parts = [p for p in re.split(r"[/,;|]", text) if p.strip()]
    part_keys = [label_key(p) for p in parts]
    if any(_ALIASES.get(k) == "COVID-19" for k in part_keys):
        return "COVID-19"
    if part_keys and part_keys[0] == "pneumonia":
        return "Pneumonia"
    if any(k in _PNEUMONIA_KINDS or "pneumonia" in k for k in part_keys):
        return "Pneumonia"
    return ""


def map_nih_finding(finding: str, finding_map: Mapping[str, str] | None = None) -> str:
    """The class of one NIH finding label (``"Effusion"``), or ``""``.

    ``finding_map`` entries are checked first, then :data:`NIH_FINDINGS`.
    """
    user = _user_lookup(finding, finding_map)
    if user is not None:
        return user
    return NIH_FINDINGS.get(str(finding).strip(), "")


def order_classes(labels: Iterable[object]) -> tuple[str, ...]:
    """Distinct labels: canonical ones in the paper's order, then the rest sorted.

    Examples
    --------
    >>> order_classes(["Normal", "Tuberculosis", "COVID-19", "Normal"])
    ('COVID-19', 'Normal', 'Tuberculosis')
    """
    present = {str(x) for x in labels if str(x)}
    canonical = [c for c in CANONICAL_CLASSES if c in present]
    return tuple(canonical + sorted(present - set(canonical)))
