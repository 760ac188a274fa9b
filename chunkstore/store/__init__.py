"""Store I/O: locations, the layout, the journal, chunk files, read-only views, membership."""
