"""One OS process per partition. ``python -m examples.partitioned --partitions 3``."""
