"""Ingest: the coordinator, write tasks, streaming placement and executors."""
