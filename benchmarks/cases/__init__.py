"""One module per case: ``TITLE``, ``DEFAULT_ROWS``, ``ABOUT`` and ``run(ctx) -> dict``."""

CASES = ["ingest", "streaming", "stats", "stats_online", "splits", "loader", "export",
         "interop_ingest", "cluster", "boosting", "dedup", "text", "grow", "shuffle"]
