"""The networks: ``layout.py`` (the typed token layout: slots, positions, inference order),
``masks.py`` (CogVideo's attention masks as predicates), ``attention.py`` (the interface every
attention backend implements, and the dense default), ``transformer.py`` (the dual-channel
transformer and its KV cache, top to bottom), ``presets.py`` (named sizes, ``build_model``),
``inherit.py`` (CogView2 -> CogVideo inheritance and freezing), ``vqvae.py`` (the small
convolutional VQ-VAE network), ``vector_quantizer.py`` (its ``EMACodebook``, trained by EMA with
dead-code restart) and ``icetk_vqvae.py`` (icetk's hierarchical VQ-VAE network and its frozen
``IcetkCodebook``, with icetk's checkpoint names).
"""
