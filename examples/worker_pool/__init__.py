"""N partitions of one projection as tasks in one process. ``python -m examples.worker_pool``."""
