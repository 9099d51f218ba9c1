"""``python -m delos.bench``: see :mod:`delos.bench`."""

import sys

from delos.bench._cli import main

sys.exit(main())
