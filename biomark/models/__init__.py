"""MobileNetV2 builder, the learning strategies and offline-safe weights.

Importing this package does not import Keras: the names below are loaded on
first use (``from biomark.models import build_model`` imports Keras then).

Modules
-------
:mod:`biomark.models.mobilenet`
    ``build_model``, ``feature_model``, ``GAP_LAYER``, ``BACKBONE_NAME``.
:mod:`biomark.models.strategies`
    ``STRATEGIES``, ``BLOCKS``, ``apply_strategy``, ``block_of``, ... (no Keras).
:mod:`biomark.models.weights`
    ``resolve_backbone_weights``, ``imagenet_cache_path``, ``load_backbone``.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BACKBONE_NAME",
    "BLOCKS",
    "GAP_LAYER",
    "IMAGENET_FILENAME",
    "STRATEGIES",
    "apply_strategy",
    "block_of",
    "build_model",
    "feature_model",
    "imagenet_cache_path",
    "load_backbone",
    "needs_pretrained",
    "resolve_backbone_weights",
    "trainable_backbone_layers",
]

_WHERE = {
    "BACKBONE_NAME": "strategies",
    "BLOCKS": "strategies",
    "STRATEGIES": "strategies",
    "apply_strategy": "strategies",
    "block_of": "strategies",
    "needs_pretrained": "strategies",
    "trainable_backbone_layers": "strategies",
    "GAP_LAYER": "mobilenet",
    "build_model": "mobilenet",
    "feature_model": "mobilenet",
    "IMAGENET_FILENAME": "weights",
    "imagenet_cache_path": "weights",
    "load_backbone": "weights",
    "resolve_backbone_weights": "weights",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'biomark.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"biomark.models.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
