"""Data layer: volume I/O, dataset sources, preparation, splits, transforms and datasets."""
