"""core/weights."""
