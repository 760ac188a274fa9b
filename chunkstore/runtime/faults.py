"""The one fault-injection seam, for crash tests.

``CHUNKSTORE_PAUSE_AT=<name>`` makes a process that reaches :func:`pause_point` ``name``
announce itself by creating ``<journal>/paused-<name>`` and sleep, so a test can SIGKILL it at
exactly that point. Unset (always, outside tests), a pause point costs one dict lookup.

Named points: ``start``, ``pack``, ``pack-mid`` (streaming ingest's coordinator).
"""

from __future__ import annotations

import os
import time
from typing import Any

ENV = "CHUNKSTORE_PAUSE_AT"
PAUSE_SECONDS = 600


def pause_point(name: str, journal: Any) -> None:
    """Pause here when ``$CHUNKSTORE_PAUSE_AT`` is ``name``; ``journal`` is a StorePath."""
    if os.environ.get(ENV) == name:
        (journal / f"paused-{name}").touch()
        time.sleep(PAUSE_SECONDS)
