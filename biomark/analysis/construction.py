"""What two strategies of one run share by construction, before any training.

:func:`shared_by_construction` says which backbone stages two strategies
share (the same pretrained weights, trained by neither), which each trains,
and whether a backbone is a random-features control (``model.weights:
none``); :class:`Construction` words what that means for reading a CKA
between them (:mod:`biomark.report.compare_page`, the biomarker report's
claim verdict).
"""

from __future__ import annotations

from dataclasses import dataclass

from biomark.config import StrategySpec

__all__ = ["Construction", "shared_by_construction"]


@dataclass(frozen=True)
class Construction:
    """What two strategies of one run share before any training (see
    :func:`shared_by_construction`).

    Attributes
    ----------
    a, b : str
        Strategy labels.
    weights : str
        The plan's ``model.weights`` (``none``, ``imagenet`` or a file).
    pretrained : bool
        ``weights`` is not ``none``: ``frozen``/``finetune:N`` start from
        pretrained weights; otherwise from a seeded *random* backbone, a
        random-features control (one per run,
        :func:`biomark.pipelines.extract_job.backbone_seed`).
    controls : tuple of str
        The strategies among ``a, b`` whose backbone is a random-features
        control (non-scratch strategies when ``weights`` is ``none``).
    shared : tuple of str
        Backbone stages identical in both by construction: the same
        pretrained weights, or two controls' one random backbone, trained by
        neither (``stem``, ``block_1`` ...).
    trained_a, trained_b : tuple of str
        Stages each strategy trains (:func:`biomark.models.strategies.trainable_blocks`).
    """

    a: str
    b: str
    weights: str
    pretrained: bool
    controls: tuple[str, ...]
    shared: tuple[str, ...]
    trained_a: tuple[str, ...]
    trained_b: tuple[str, ...]

    @property
    def tests_claim(self) -> bool:
        """Whether a CKA between the two can bear on the paper's claim (pretrained weights only)."""
        return self.pretrained and not self.controls

    @property
    def last_shared_block(self) -> str | None:
        """The deepest shared ``block_k`` (None when no block is shared)."""
        blocks = [s for s in self.shared if s.startswith("block_")]
        return blocks[-1] if blocks else None

    def shared_text(self) -> str:
        """``"the stem and blocks 1–13 of 16"``, or ``""`` when nothing is shared."""
        return _stages_text(self.shared, of_total=True)

    def sentence(self) -> str:
        """What the construction means for reading a CKA between ``a`` and ``b``."""
        if self.controls:
            one = len(self.controls) == 1
            what = "is a random-features control" if one else "are random-features controls"
            start = "its backbone starts" if one else "their backbones start"
            text = (
                f"{' and '.join(self.controls)} {what} here: model.weights is '{self.weights}', so "
                f"{start} from seeded random weights, not from ImageNet. This CKA therefore says "
                "nothing about pretrained features and can neither support nor refute the paper's "
                "claim. Set model.weights to imagenet (or a local .h5 file) and re-run `biomark "
                "extract` for that."
            )
            if self.shared:
                text += (
                    f" Both start from one random backbone and share {self.shared_text()} by "
                    "construction (trained by neither; each control estimates their "
                    "BatchNormalization statistics on the fold's training images), as the "
                    "pretrained pair shares ImageNet's: part of their similarity is built in, and "
                    "the stage-by-stage comparison shows what training the other stages changed."
                )
            return text
        if self.shared:
            differ = _stages_text(tuple(set(self.trained_a) | set(self.trained_b)), of_total=False)
            return (
                f"{self.a} and {self.b} share {self.shared_text()} by construction (the same "
                f"pretrained weights, trained by neither); only {differ} differ. Part of their "
                "similarity is built in: a high CKA is expected whatever the training did, and "
                "only what the trained stages changed speaks to the paper's claim."
            )
        return (
            f"{self.a} and {self.b} share no weights by construction (model.weights "
            f"'{self.weights}'): whatever similarity they show comes from what each backbone "
            "learned or brought, not from shared layers."
        )


def _stages_text(stages: tuple[str, ...], *, of_total: bool) -> str:
    """``("stem", "block_1", "block_2", "top")`` ->
    ``"the stem, blocks 1–2 and the top stage (Conv_1)"``."""
    from biomark.models.strategies import BLOCKS

    ks = sorted(int(s.split("_")[1]) for s in stages if s.startswith("block_"))
    parts = ["the stem"] if "stem" in stages else []
    if ks:
        span = f"blocks {ks[0]}–{ks[-1]}" if len(ks) > 1 else f"block {ks[0]}"
        parts.append(span + (f" of {len(BLOCKS)}" if of_total else ""))
    if "top" in stages:
        parts.append("the top stage (Conv_1)")
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1] if parts else ""


def shared_by_construction(
    a: str, b: str, weights: str | None, *, one_random_backbone: bool = True
) -> Construction:
    """What strategies ``a`` and ``b`` share before training, given the plan's ``model.weights``.

    ``frozen`` and ``finetune:N`` from the same pretrained weights share every
    stage neither of them trains (``finetune:3`` and ``frozen``: the stem and
    blocks 1-13). With ``weights: none`` they are random-features controls
    that start from the run's one seeded random backbone, and share the same
    stages of it; such a comparison cannot bear on the paper's claim.

    Parameters
    ----------
    a, b : str
        Strategy labels (``scratch``, ``frozen``, ``finetune:3`` / ``finetune_3``).
    weights : str or None
        ``run.json`` -> ``plan.model.weights`` (None counts as ``none``).
    one_random_backbone : bool, default True
        Whether two controls were drawn from one backbone, as biomark draws
        them (:func:`biomark.pipelines.extract_job.backbone_seed`); False for
        runs whose controls record different backbone seeds (made when each
        strategy drew its own): they share nothing.

    Returns
    -------
    Construction

    Raises
    ------
    ConfigError
        An unknown strategy name.

    Examples
    --------
    >>> c = shared_by_construction("frozen", "finetune:3", "imagenet")
    >>> c.shared[:2], c.shared[-1], c.tests_claim
    (('stem', 'block_1'), 'block_13', True)
    >>> shared_by_construction("scratch", "frozen", "none").controls
    ('frozen',)
    >>> shared_by_construction("frozen", "finetune:3", "none").shared[-1]
    'block_13'
    """
    from biomark.models.strategies import BLOCKS, needs_pretrained, trainable_blocks

    spec_a, spec_b = StrategySpec.parse(a), StrategySpec.parse(b)
    w = str(weights if weights is not None else "none")
    pretrained = w.strip().lower() not in ("", "none", "null")
    controls = tuple(s.label for s in (spec_a, spec_b) if needs_pretrained(s) and not pretrained)
    ta, tb = trainable_blocks(spec_a), trainable_blocks(spec_b)
    shared: tuple[str, ...] = ()
    same_start = pretrained or one_random_backbone
    if same_start and needs_pretrained(spec_a) and needs_pretrained(spec_b):
        shared = tuple(s for s in ("stem", *BLOCKS, "top") if s not in ta and s not in tb)
    return Construction(
        a=spec_a.label,
        b=spec_b.label,
        weights=w,
        pretrained=pretrained,
        controls=controls,
        shared=shared,
        trained_a=ta,
        trained_b=tb,
    )
