"""``python -m engine`` runs the ``condiff-engine`` command line."""

import sys

from engine.cli import main

sys.exit(main())
