"""The chunkstore error tree.

Every error is a :class:`ChunkstoreError` and also subclasses the matching builtin, so callers
can catch either. Messages say what was expected, what was found, where, and how to fix it.
Constructors take only the message, which keeps the errors picklable across worker processes.
"""

from __future__ import annotations


class ChunkstoreError(Exception):
    """Base class of every error chunkstore raises on purpose."""


class ConfigError(ChunkstoreError, ValueError):
    """The YAML config is malformed: unknown key, wrong type, missing field, bad value."""


class SourceError(ChunkstoreError, ValueError):
    """Input data is unreadable or does not match the schema (names file, item and row)."""


class PlanError(ChunkstoreError, RuntimeError):
    """A write plan would break an invariant (gap, overlap, shared chunk)."""


class StoreExistsError(ChunkstoreError, FileExistsError):
    """The store exists and was built from a different config (use --overwrite)."""


class NotAStoreError(ChunkstoreError, FileNotFoundError):
    """The path holds no chunkstore store."""


class StoreLockedError(ChunkstoreError, RuntimeError):
    """Another live ingest holds the store's lock."""


class IngestError(ChunkstoreError, RuntimeError):
    """A write task failed; completed tasks are kept and a rerun resumes."""


class ExportError(ChunkstoreError, ValueError):
    """An export cannot be done as asked (unknown format or split, incomplete store, output
    exists without --overwrite); nothing was written."""


class SplitError(ChunkstoreError, ValueError):
    """A split request is invalid for this store (fractions, names, heads, missing meta/group,
    an existing split without --overwrite); nothing was written."""


class ReadError(ChunkstoreError, ValueError):
    """Reading for training failed: a bad loader/window argument, a missing split or
    statistics array, or a chunk whose checksum does not match."""


class SplitLookupError(SplitError, ReadError, ExportError):
    """A split array or part asked for does not exist, or its writer did not finish.

    One class for one rule (:mod:`chunkstore.store.membership`); it is also a ReadError and an
    ExportError, so code that catches the error family of the command it called catches it.
    """


class MissingDependencyError(ChunkstoreError, ImportError):
    """An optional dependency (one of chunkstore's extras) is not installed; the message gives
    the ``pip install`` command that adds it."""


class ReportError(MissingDependencyError):
    """The report cannot be drawn: matplotlib (the ``report`` extra) is not installed."""


class UsageError(ChunkstoreError, ValueError):
    """Command-line options that do not go together, e.g. ``--workers`` with ``--scheduler``
    (the cluster has its own workers). The CLI exits 2 for it, as for any usage error."""


class DedupError(ChunkstoreError, ValueError):
    """Duplicate detection cannot run as asked (incomplete store, unknown ``by``, an existing
    ``meta/duplicate_of`` that no longer covers the store's rows); nothing was written."""


class IntegrityError(ChunkstoreError, ValueError):
    """A store's bytes or attrs are not what chunkstore wrote: an edited ``zarr.json`` (names
    the key), a chunk that is missing or fails its checksum, a journal record that does not
    decode. ``chunkstore verify`` lists every such problem; ``chunkstore repair`` fixes them."""


class ValueCountsError(ChunkstoreError, ValueError):
    """Value counts cannot be taken: float features, no ``vocab_size``, or a stored value
    outside ``[0, vocab_size)`` (the message names the row range and the value)."""


class AppendError(ChunkstoreError, ValueError):
    """Rows cannot be appended (or a head added): the store is incomplete, its schema differs
    from the config's (the message names the difference), another append is in progress, or
    the same source was appended already. Nothing in the store was changed."""


class VersionError(ChunkstoreError, LookupError):
    """A version id or tag that the store's log does not hold, or a tag name already in use."""


class ChunkstoreWarning(UserWarning):
    """Base class of every warning chunkstore emits."""


class IncompleteStoreWarning(ChunkstoreWarning):
    """The store's ingest has not finished: some rows still read as fill values."""


__all__ = [
    "AppendError",
    "ChunkstoreError",
    "ChunkstoreWarning",
    "ConfigError",
    "DedupError",
    "ExportError",
    "IncompleteStoreWarning",
    "IngestError",
    "IntegrityError",
    "MissingDependencyError",
    "NotAStoreError",
    "PlanError",
    "ReadError",
    "ReportError",
    "SourceError",
    "SplitError",
    "SplitLookupError",
    "StoreExistsError",
    "StoreLockedError",
    "UsageError",
    "ValueCountsError",
    "VersionError",
]
