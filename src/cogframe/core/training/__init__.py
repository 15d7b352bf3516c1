"""core/training."""
