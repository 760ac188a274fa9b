"""User-facing messages of long-running commands, through :mod:`logging`.

Library code calls :func:`say`; the ``chunkstore`` logger has no handler of its own, so a
program that embeds chunkstore decides where messages go. The CLI installs one handler that
prints ``chunkstore: <message>`` on stderr (see :func:`to_stderr`).
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("chunkstore")


def say(message: str) -> None:
    """Tell the user something about the work in progress (a dashboard link, a stale lock)."""
    logger.info(message)


class _Stderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a message comes (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """Something the user should know even when nothing was configured (shown on stderr by
    logging's last-resort handler when the program set up no logging)."""
    logger.warning(message)


def to_stderr(*, quiet: bool = False) -> None:
    """Print the ``chunkstore`` logger's messages on stderr (INFO, or WARNING when quiet)."""
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("chunkstore: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
