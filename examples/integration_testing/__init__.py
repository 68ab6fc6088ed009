"""How to test your own projections with the pytest plugin.
``python -m examples.integration_testing``, or ``pytest examples/integration_testing``."""
