"""``python -m central``: the reference central's command line (see :mod:`central.cli`)."""

import sys

from central.cli import main

sys.exit(main())
