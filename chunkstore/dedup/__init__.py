"""Exact duplicate rows and split leakage (issue 17): built on ``meta/row_hash``.

:func:`dedup` finds groups of identical rows and writes ``meta/duplicate_of``; ``chunkstore
split`` reads that array to report (and, with ``--dedup``, prevent) duplicates across parts.
"""

from chunkstore.dedup.find import BY, DUPLICATE_OF, dedup
from chunkstore.dedup.groups import Conflicts
from chunkstore.dedup.summary import DedupSummary

__all__ = ["BY", "DUPLICATE_OF", "Conflicts", "DedupSummary", "dedup"]
