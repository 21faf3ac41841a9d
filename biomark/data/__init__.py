"""Datasets: source parsers, recipes, manifests, the image cache, the phantom, folds."""
