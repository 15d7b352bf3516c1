"""The networks: ``layout.py`` (the typed token layout: slots, positions, inference order),
``masks.py`` (CogVideo's attention masks as predicates), ``attention.py`` (the interface every
attention backend implements, and the dense default), ``transformer.py`` (the dual-channel
transformer and its KV cache, top to bottom), ``config.py``
(``ModelConfig`` and the named presets, without torch), ``presets.py`` (``build_model``),
``inherit.py`` (CogView2 -> CogVideo inheritance and freezing), ``vqvae.py`` (the small
convolutional VQ-VAE network), ``vector_quantizer.py`` (its ``EMACodebook``, trained by EMA with
dead-code restart), ``icetk_vqvae.py`` (icetk's hierarchical VQ-VAE network and its frozen
``IcetkCodebook``, with icetk's checkpoint names) and ``lora.py`` (LoRA adapters on Linear layers:
inject, merge/unmerge, adapter files), and CogView2's direct super-resolution model:
``sr_layout.py`` (its ``[text][low-res][high-res]`` layout), ``sr_masks.py`` (its local-window
mask as a predicate), ``sr_config.py`` (``SuperResolutionConfig`` from the SR presets, without
torch) and ``super_resolution.py`` (the model, its builder and text-to-image inheritance).
"""
