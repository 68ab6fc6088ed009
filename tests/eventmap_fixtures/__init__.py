"""Input packages and golden output for the event-mapping generator tests."""
