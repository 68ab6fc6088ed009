"""Version 2 of the order events."""
