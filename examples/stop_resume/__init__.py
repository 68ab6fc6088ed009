"""Stop a projection mid-way and resume from its checkpoint. ``python -m examples.stop_resume``."""
