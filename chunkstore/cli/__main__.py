"""``python -m chunkstore.cli``: the same as the ``chunkstore`` console script."""

import sys

from chunkstore.cli.app import main

sys.exit(main())
