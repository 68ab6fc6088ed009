"""Version 3 of the order events."""
