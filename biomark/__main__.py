"""``python -m biomark`` runs the command line."""

import sys

from biomark.cli import main

sys.exit(main())
