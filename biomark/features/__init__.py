"""Feature dumps: deep (GAP) features of a run, radiomics features of a dataset."""

from typing import Any

__all__ = ["load_features"]


def __getattr__(name: str) -> Any:
    # Imported on first use: radiomics worker processes import this package and
    # need neither pandas nor pyarrow (0.4 s of each worker's start-up).
    if name == "load_features":
        from biomark.features.deep import load_features

        return load_features
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
