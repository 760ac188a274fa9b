"""User-facing messages of long-running commands, through :mod:`logging`.

Library code calls :func:`say` (progress news, INFO) or :func:`warn` (WARNING). The
``chunkstore`` logger has one handler that prints ``chunkstore: <message>`` on stderr: at
WARNING by default, so a program that embeds chunkstore sees only warnings unless it asks; the
CLI lowers it to INFO (see :func:`to_stderr`). Records also propagate to the root logger.
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


_handler = _Stderr()
_handler.setFormatter(logging.Formatter("chunkstore: %(message)s"))
logger.addHandler(_handler)
logger.setLevel(logging.WARNING)


def to_stderr() -> None:
    """Print INFO messages too (the CLI: dashboard links, split sizes); ``--quiet`` only turns
    off progress bars, never these."""
    logger.setLevel(logging.INFO)
