"""Checking and repairing a store (issue 16): verify reads every chunk, repair rewrites bad ones."""
