"""Exact duplicate rows and split leakage (issue 17): built on ``meta/row_hash``."""
