"""Generating videos from a trained model: ``token_sampling.py`` (the token-sampler interface,
position-keyed noise, the sampling math), ``waves.py`` (parallel-wave schedules derived from the
attention masks), ``decoder.py`` (the KV-cached frame decoder both stages share), ``speculative.py`` (greedy
key frames and in-between frames drafted from the frame before and checked in one pass), ``guidance.py``
(classifier-free guidance), ``prompts.py`` (the text conditions with their frame-rate prefixes),
``interpolation.py`` (stage 2's window split and merge, the pixel
baselines), ``generate.py`` (key frames, then recursive interpolation rounds), ``sliding.py``
(the one-stage baseline: extending a video window by window with the stage-1 model),
``super_resolution.py`` (CogView2's direct super-resolution of every frame in one pass) and ``stages.py``
(the generation-stage protocol: a list of stages that each turn one ``VideoBatch`` into the next).
"""
