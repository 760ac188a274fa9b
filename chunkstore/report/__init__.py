"""Looking at a store: ``chunkstore info`` and ``chunkstore report``."""
