"""The paper's learning strategies as trainable-layer rules on MobileNetV2.

A *block* is defined against the layer names of Keras's
``keras.applications.MobileNetV2`` (Keras 3), in network order:

``stem``
    ``Conv1``, ``bn_Conv1``, ``Conv1_relu`` and the first bottleneck, whose
    layers are named ``expanded_conv_*`` (Keras's "block 0", which has no
    expansion convolution). The backbone's input layer also belongs here.
``block_1`` ... ``block_16``
    The 16 inverted-residual blocks: ``block_k`` is every layer whose name
    starts with ``block_{k}_`` (``block_k_expand``, ``..._expand_BN``,
    ``..._expand_relu``, ``..._pad``, ``..._depthwise``, ``..._depthwise_BN``,
    ``..._depthwise_relu``, ``..._project``, ``..._project_BN`` and, when the
    block is residual, ``..._add``).
``top``
    ``Conv_1``, ``Conv_1_bn``, ``out_relu`` and the backbone's global pooling
    layer (``global_average_pooling2d*``).

Strategies (``biomark.config.StrategySpec``):

``scratch``
    Random initialisation (no pretrained weights); every layer trains.
``frozen``
    Pretrained backbone, every backbone layer frozen ("off-the-shelf
    features"); only the head trains.
``finetune:N`` (N in 1..16)
    Pretrained backbone; the ``top`` stage and blocks ``block_{17-N}`` ...
    ``block_16`` train, the stem and every lower block stay frozen.
    ``finetune:16`` therefore trains everything but the stem.

The classification head (everything outside the nested backbone) always
trains. A frozen BatchNormalization layer runs in inference mode: in Keras 3
a ``BatchNormalization`` with ``trainable=False`` uses (and does not update)
its moving statistics even when the model is called with ``training=True``.

This module does not import Keras; it only sets ``.trainable`` flags on the
layer objects it is given. Set the flags *before* compiling the model (Keras
reads them at compile time).

Examples
--------
>>> from biomark.config import StrategySpec
>>> block_of("block_12_depthwise_BN"), block_of("Conv1"), block_of("out_relu")
('block_12', 'stem', 'top')
>>> trainable_blocks(StrategySpec("finetune", 3))
('block_14', 'block_15', 'block_16', 'top')
>>> needs_pretrained(StrategySpec("scratch"))
False
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from biomark.config import StrategySpec

if TYPE_CHECKING:  # pragma: no cover - typing only
    import keras

__all__ = [
    "BACKBONE_NAME",
    "BLOCKS",
    "STRATEGIES",
    "apply_strategy",
    "block_of",
    "get_backbone",
    "is_random_control",
    "needs_pretrained",
    "trainable_backbone_layers",
    "trainable_blocks",
]

logger = logging.getLogger(__name__)

#: Name of the nested MobileNetV2 layer inside a biomark model.
BACKBONE_NAME = "mobilenetv2"

#: The 16 inverted-residual blocks, in network order (input side first).
BLOCKS: tuple[str, ...] = tuple(f"block_{k}" for k in range(1, 17))

_STEM_NAMES = frozenset({"Conv1", "bn_Conv1", "Conv1_relu"})
_TOP_NAMES = frozenset({"Conv_1", "Conv_1_bn", "out_relu"})
_BLOCK_RE = re.compile(r"block_(\d+)_")


def block_of(layer_name: str) -> str:
    """The block a MobileNetV2 layer belongs to.

    Parameters
    ----------
    layer_name : str
        A layer name of Keras's MobileNetV2.

    Returns
    -------
    str
        ``"stem"``, ``"block_1"`` ... ``"block_16"`` or ``"top"`` (see the
        module docstring for the exact rule).

    Raises
    ------
    ValueError
        If the name is not a MobileNetV2 layer name.

    Examples
    --------
    >>> block_of("block_3_expand_relu"), block_of("expanded_conv_project")
    ('block_3', 'stem')
    >>> block_of("global_average_pooling2d")
    'top'
    >>> block_of("head_dense")  # a head layer is not part of the backbone
    Traceback (most recent call last):
    ...
    ValueError: layer 'head_dense' is not a layer of Keras's MobileNetV2 (expected ...)
    """
    if layer_name in _STEM_NAMES or layer_name.startswith("expanded_conv_"):
        return "stem"
    if layer_name.startswith("input"):
        return "stem"
    if layer_name in _TOP_NAMES or layer_name.startswith(
        ("global_average_pooling", "global_max_pooling")
    ):
        return "top"
    match = _BLOCK_RE.match(layer_name)
    if match is not None and 1 <= int(match.group(1)) <= 16:
        return f"block_{int(match.group(1))}"
    raise ValueError(
        f"layer {layer_name!r} is not a layer of Keras's MobileNetV2 (expected "
        "Conv1/bn_Conv1/Conv1_relu, expanded_conv_*, block_1_* .. block_16_*, "
        "Conv_1/Conv_1_bn/out_relu or the global pooling layer)"
    )


def trainable_blocks(strategy: StrategySpec) -> tuple[str, ...]:
    """The backbone blocks (``stem``, ``block_k``, ``top``) a strategy trains.

    Parameters
    ----------
    strategy : StrategySpec

    Returns
    -------
    tuple of str
        In network order; empty for ``frozen``.

    Raises
    ------
    ValueError
        For ``finetune`` without a block count in 1-16.

    Examples
    --------
    >>> trainable_blocks(StrategySpec("frozen"))
    ()
    >>> scratch = trainable_blocks(StrategySpec("scratch"))
    >>> len(scratch), scratch[:2], scratch[-2:]
    (18, ('stem', 'block_1'), ('block_16', 'top'))
    >>> "stem" in trainable_blocks(StrategySpec("finetune", 16))
    False
    """
    if strategy.name == "scratch":
        return ("stem", *BLOCKS, "top")
    if strategy.name == "frozen":
        return ()
    n = _finetune_blocks(strategy)
    return (*BLOCKS[len(BLOCKS) - n :], "top")


def needs_pretrained(strategy: StrategySpec) -> bool:
    """Whether the strategy starts from pretrained (ImageNet) backbone weights.

    Examples
    --------
    >>> [needs_pretrained(StrategySpec.parse(s)) for s in ("scratch", "frozen", "finetune:3")]
    [False, True, True]
    """
    return strategy.name != "scratch"


def is_random_control(strategy: StrategySpec, weights: str) -> bool:
    """Whether a pretrained strategy runs on a seeded random backbone (``model.weights: none``).

    Such a run is a random-features control, not the paper's strategy: a
    frozen random backbone is not expected to separate the classes.

    Examples
    --------
    >>> is_random_control(StrategySpec("frozen"), "none")
    True
    >>> is_random_control(StrategySpec("scratch"), "none")
    False
    >>> is_random_control(StrategySpec("finetune", 3), "imagenet")
    False
    """
    return needs_pretrained(strategy) and str(weights).strip().lower() == "none"


def get_backbone(model: keras.Model) -> Any:
    """The nested MobileNetV2 of a model built by :func:`build_model`.

    Raises
    ------
    ValueError
        If the model has no layer named ``"mobilenetv2"``.

    Examples
    --------
    >>> from types import SimpleNamespace as Layer
    >>> get_backbone(Layer(name="plain", layers=[Layer(name="probs")]))
    Traceback (most recent call last):
    ...
    ValueError: model 'plain' has no nested layer named 'mobilenetv2'; build it with ...
    """
    for layer in model.layers:
        if layer.name == BACKBONE_NAME:
            return layer
    raise ValueError(
        f"model {model.name!r} has no nested layer named {BACKBONE_NAME!r}; build it "
        "with biomark.models.build_model"
    )


def _set_blocks_trainable(backbone: Any, blocks: tuple[str, ...]) -> None:
    wanted = set(blocks)
    backbone.trainable = bool(wanted)
    if not wanted:
        return
    for layer in backbone.layers:
        layer.trainable = block_of(layer.name) in wanted


def _scratch(backbone: Any, strategy: StrategySpec) -> None:
    _set_blocks_trainable(backbone, trainable_blocks(strategy))


def _frozen(backbone: Any, strategy: StrategySpec) -> None:
    _set_blocks_trainable(backbone, ())


def _finetune(backbone: Any, strategy: StrategySpec) -> None:
    _set_blocks_trainable(backbone, trainable_blocks(strategy))


def _finetune_blocks(strategy: StrategySpec) -> int:
    n = strategy.blocks
    if n is None or not 1 <= n <= len(BLOCKS):
        raise ValueError(
            f"strategy {strategy.label!r}: finetune needs a block count in 1-{len(BLOCKS)}, "
            "e.g. StrategySpec('finetune', 3)"
        )
    return n


#: Strategy name -> function ``(backbone, strategy) -> None`` that sets the
#: ``.trainable`` flags of the backbone's layers.
STRATEGIES: dict[str, Callable[[Any, StrategySpec], None]] = {
    "scratch": _scratch,
    "frozen": _frozen,
    "finetune": _finetune,
}


def apply_strategy(model: keras.Model, strategy: StrategySpec) -> None:
    """Set the ``.trainable`` flags of a model's backbone for a strategy.

    The head (every layer outside the nested backbone) is made trainable.
    Call before ``model.compile``.

    Parameters
    ----------
    model : keras.Model
        A model from :func:`biomark.models.build_model`.
    strategy : StrategySpec

    Raises
    ------
    ValueError
        If the model has no MobileNetV2 backbone or the strategy is unknown.

    Examples
    --------
    The rule of each strategy is looked up in :data:`STRATEGIES`:

    >>> sorted(STRATEGIES)
    ['finetune', 'frozen', 'scratch']

    Only the layers' names and ``trainable`` flags are used, so stand-ins
    show the rule without building MobileNetV2:

    >>> from types import SimpleNamespace as Layer
    >>> names = ["Conv1", "block_15_project", "block_16_project", "Conv_1"]
    >>> layers = [Layer(name=n, trainable=True, trainable_weights=[0]) for n in names]
    >>> backbone = Layer(name="mobilenetv2", trainable=True, layers=layers)
    >>> head = Layer(name="probs", trainable=False)
    >>> model = Layer(name="toy", trainable=True, layers=[backbone, head])
    >>> apply_strategy(model, StrategySpec("finetune", 1))
    >>> trainable_backbone_layers(model), head.trainable
    (['block_16_project', 'Conv_1'], True)
    >>> apply_strategy(model, StrategySpec("frozen"))
    >>> trainable_backbone_layers(model), backbone.trainable
    ([], False)
    """
    rule = STRATEGIES.get(strategy.name)
    if rule is None:
        raise ValueError(f"unknown strategy {strategy.name!r}: use one of {', '.join(STRATEGIES)}")
    backbone = get_backbone(model)
    model.trainable = True
    for layer in model.layers:
        if layer is not backbone:
            layer.trainable = True
    rule(backbone, strategy)
    logger.debug(
        "strategy %s: %d backbone layers with weights train",
        strategy.label,
        len(trainable_backbone_layers(model)),
    )


def trainable_backbone_layers(model: keras.Model) -> list[str]:
    """Names of backbone layers that have weights and will train.

    Parameters
    ----------
    model : keras.Model
        A model from :func:`biomark.models.build_model`.

    Returns
    -------
    list of str
        In network order.
    """
    backbone = get_backbone(model)
    if not backbone.trainable:
        return []
    return [layer.name for layer in backbone.layers if layer.trainable and layer.trainable_weights]
