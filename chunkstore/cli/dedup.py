"""``chunkstore`` commands of the dedup area; each ``add_<command>`` registers one subcommand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

COMMANDS: tuple[Callable[[Any], None], ...] = ()
