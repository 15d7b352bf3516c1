"""core/generation."""
