"""Reading for training: the batch stream, the shuffled loader, sequence windows."""
