"""Splits: lazy Dask graphs of the pure assignment, the writer and the views."""
