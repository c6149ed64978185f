"""``python -m million``: the same command line as ``million``."""

import sys

from .cli import main

sys.exit(main())
