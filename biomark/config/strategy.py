"""The learning strategies a plan may list (``strategies:``): their names and their parser."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast, get_args

from biomark.exceptions import ConfigError

StrategyName = Literal["scratch", "frozen", "finetune"]


@dataclass(frozen=True)
class StrategySpec:
    """One learning strategy of the paper.

    Parameters
    ----------
    name : {"scratch", "frozen", "finetune"}
        ``scratch``: random initialisation, every layer trained (the paper's
        best). ``frozen``: ImageNet backbone frozen, only the head trained
        ("off-the-shelf features"). ``finetune``: ImageNet backbone whose top
        ``blocks`` convolutional blocks are trained.
    blocks : int or None
        Number of trainable top blocks for ``finetune`` (1-16), else None. A
        block is one of MobileNetV2's 16 inverted-residual blocks ``block_1`` ...
        ``block_16`` (Keras layer names); ``finetune:N`` trains the final
        ``Conv_1`` stage plus ``block_{17-N}`` ... ``block_16``.

    Examples
    --------
    >>> spec = StrategySpec.parse("finetune_3")  # a folder name or a plan's label
    >>> spec, spec.label, spec.dirname
    (StrategySpec(name='finetune', blocks=3), 'finetune:3', 'finetune_3')
    """

    name: StrategyName
    blocks: int | None = None

    @property
    def label(self) -> str:
        """The strategy as written in plans and folder names (``finetune:3``)."""
        return self.name if self.blocks is None else f"{self.name}:{self.blocks}"

    @property
    def dirname(self) -> str:
        """A file-system-safe name (``finetune_3``)."""
        return self.label.replace(":", "_")

    @classmethod
    def parse(cls, text: str) -> StrategySpec:
        """Parse ``"scratch"``, ``"frozen"``, ``"finetune:N"`` (or ``finetune_N``).

        Raises
        ------
        ConfigError
            If the name is unknown or N is not an integer in 1-16.
        """
        match = re.fullmatch(r"\s*([a-z]+)\s*(?:[:_]\s*(\d+))?\s*", str(text))
        names = get_args(StrategyName)
        if match is None or match.group(1) not in names:
            raise ConfigError(
                f"unknown strategy {text!r}: use one of 'scratch', 'frozen' or "
                "'finetune:N' with N the number of trainable top blocks (1-16)"
            )
        name, blocks = match.group(1), match.group(2)
        if name == "finetune":
            if blocks is None:
                raise ConfigError(
                    f"strategy {text!r} needs the number of trainable blocks, e.g. 'finetune:3'"
                )
            n = int(blocks)
            if not 1 <= n <= 16:
                raise ConfigError(
                    f"strategy {text!r}: N={n} is outside 1-16 (MobileNetV2 has 16 "
                    "inverted-residual blocks block_1..block_16 above its stem)"
                )
            return cls("finetune", n)
        if blocks is not None:
            raise ConfigError(f"strategy {text!r}: only 'finetune' takes a block count")
        return cls(cast(StrategyName, name))
