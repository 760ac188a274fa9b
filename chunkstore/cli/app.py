"""``chunkstore``'s entry point: the top-level parser, :func:`main`, and what the user sees
when something goes wrong.

What ``main`` prints and returns:

* success: the command's result on stdout, exit 0;
* a :class:`~chunkstore.errors.ChunkstoreError` (or an OSError naming a file): one line
  ``chunkstore: error: <message>`` on stderr, exit 1 (2 for a usage error);
* a missing optional dependency: the ``pip install`` command that adds it, exit 1;
* Ctrl-C: ``interrupted; rerun the same command to resume``, exit 130;
* stdout closed early (``chunkstore info --json | head -1``): nothing more, exit 1;
* anything else is a bug in chunkstore: one line saying so, exit 2.

``--debug`` (before or after the command) shows the traceback instead of the one line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from chunkstore._version import __version__
from chunkstore.cli import commands, dedup, grow, integrity
from chunkstore.cli.options import debug_option
from chunkstore.errors import ChunkstoreError, UsageError
from chunkstore.runtime.messages import to_stderr

DESCRIPTION = """\
Build ML training datasets straight into one compressed Zarr store: parallel workers write
their samples directly into a preallocated store (no merge step), statistics and train/val/test
splits are computed lazily with Dask, and the result reads with plain zarr.open()."""

EPILOG = """\
examples:
  chunkstore ingest configs/demo.yaml
  chunkstore split data/demo.zarr --method group --seed 0
  chunkstore stats data/demo.zarr --split train
  chunkstore info data/demo.zarr --json

Each command has its own help: chunkstore COMMAND --help. Errors print one line and exit 1
(2 for a bad command line); add --debug for the traceback."""

# optional dependencies whose absence is the user's to fix, by the extra that installs them
EXTRAS = {"h5py": "hdf5", "pyarrow": "parquet", "torch": "torch", "xarray": "xarray",
          "matplotlib": "report", "s3fs": "s3", "blosc2": "fast"}
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    """The ``chunkstore`` argument parser: global options and one subparser per command."""
    parser = argparse.ArgumentParser(
        prog="chunkstore", description=DESCRIPTION, epilog=EPILOG, parents=[debug_option()],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"chunkstore {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command",
                                required=True)
    for add in (*commands.COMMANDS, *grow.COMMANDS, *integrity.COMMANDS, *dedup.COMMANDS):
        add(sub)
    return parser


def _say_error(message: str) -> None:
    try:
        sys.stderr.write(f"chunkstore: error: {message}\n")
        sys.stderr.flush()
    except BrokenPipeError:  # nobody reads stderr either: nothing left to tell
        pass


def _print(text: str) -> None:
    """The command's result on stdout, flushed now so a closed pipe is seen here."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _silence_stdout() -> None:
    """After a broken pipe: point stdout at /dev/null so the interpreter's final flush does
    not fail again (the recipe of Python's signal documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (captured in-process): nothing to do
        pass


def _unexpected(e: BaseException) -> int:
    what = f"{type(e).__name__}: {e}".splitlines()[0]
    if isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] in EXTRAS:
        name = (e.name or "").split(".")[0]
        _say_error(f"this command needs the optional package {name!r}, which is not installed: "
                   f"pip install 'chunkstore[{EXTRAS[name]}]'")
        return EXIT_ERROR
    _say_error(f"unexpected {what} -- this is a bug in chunkstore, please report it; rerun with "
               "--debug for the traceback")
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``chunkstore ARGS``; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    debug = getattr(args, "debug", False)
    to_stderr()
    try:
        _print(args.run(args))
    except BrokenPipeError:
        if debug:
            raise
        _silence_stdout()
        return EXIT_ERROR
    except KeyboardInterrupt:
        if debug:
            raise
        _say_error("interrupted; rerun the same command to resume")
        return EXIT_INTERRUPTED
    except (ChunkstoreError, OSError) as e:
        if debug:
            raise
        _say_error(str(e))
        return EXIT_USAGE if isinstance(e, UsageError) else EXIT_ERROR
    except Exception as e:
        if debug:
            raise
        return _unexpected(e)
    return 0
