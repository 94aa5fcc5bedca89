"""``python -m roost`` is the ``roost`` command."""

import sys

from roost.cli import main

sys.exit(main())
