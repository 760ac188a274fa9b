"""Peak memory of this process, as ingest summaries and benchmarks report it."""

from __future__ import annotations

import resource


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
