"""One projection worker that stops gracefully on SIGINT/SIGTERM.
``python -m examples.single_worker``."""
