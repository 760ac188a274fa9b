"""Where work runs and what it reports: Dask clients, memory, messages, fault injection."""
