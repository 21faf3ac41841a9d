"""Feature dumps: deep (GAP) features of a run, radiomics features of a dataset."""

from biomark.features.deep import load_features

__all__ = ["load_features"]
