"""The ``chunkstore`` command line: thin, each command parses its options and calls one public
function.

* :mod:`chunkstore.cli.app` — the top-level parser and :func:`main` (exit codes, one-line
  errors, ``--debug`` tracebacks, a quiet exit on a closed pipe).
* :mod:`chunkstore.cli.commands` — one small ``add_<command>`` per command.
* :mod:`chunkstore.cli.options` — options several commands share (cluster, split set, quiet).
"""

from chunkstore.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
