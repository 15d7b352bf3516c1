"""cogframe: a plugin-based toolkit for CogVideo-style text-to-video transformers."""
__version__ = "0.1.0"
