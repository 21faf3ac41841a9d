"""biomark: do the features a CNN learns from chest X-rays behave like biomarkers?

The package is layered; a module imports only from layers to its left::

    exceptions/config ← io ← data ← models ← train ← features ← analysis ← report ← cli

Importing :mod:`biomark` is cheap: heavy dependencies (Keras, pyradiomics, shap)
are imported only inside the modules that use them.
"""

from __future__ import annotations

import logging

__all__ = ["__version__"]

__version__ = "0.1.0"

# The library never configures logging itself: the CLI (or the user) does.
logging.getLogger(__name__).addHandler(logging.NullHandler())
