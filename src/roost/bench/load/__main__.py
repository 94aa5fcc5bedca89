"""``python -m roost.bench.load``: run the load generator alone (see roost.bench.load.cli)."""

import sys

from roost.bench.load.cli import main

sys.exit(main())
