"""chunkstore's benchmarks: ``python -m benchmarks list | run CASE... | render`` (see README.md)."""
