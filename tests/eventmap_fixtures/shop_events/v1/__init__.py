"""Version 1 of the order events."""
