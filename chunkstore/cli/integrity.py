"""``chunkstore`` commands of the integrity area (one ``add_<command>`` each)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

COMMANDS: tuple[Callable[[Any], None], ...] = ()
