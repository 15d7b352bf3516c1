"""cogframe-example-plugin: a chunked attention backend and a min-p token sampler for cogframe.

Modules: ``plugin.py`` (the entry point: its hook registers the components without importing
torch), ``attention_chunked.py`` (attention ``chunked``), ``sampler_min_p.py`` (token sampler
``min_p``).
"""

__version__ = "0.1.0"
