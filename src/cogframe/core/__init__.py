"""The library: the CogVideo model and everything that trains, generates and stores it.

Split by concern into subpackages: ``model/`` (token layouts, attention masks, the transformer,
the attention-backend interface, presets, CogView2 inheritance, the VQ-VAE networks),
``generation/`` (token sampling, wave schedules, the KV-cached decoder, guidance, prompts,
interpolation and the generation-stage protocol), ``training/`` (the loop, its typed settings,
batches, checkpoints, distributed execution, the memory plan), ``weights/`` (safe loading,
sharded safetensors, pretrained folders, SwissArmyTransformer conversion, icetk's files), ``io/``
(videos, generated outputs, token shards, dataset contracts, frame-rate choices, atomic writes,
run-folder locks) and ``metrics/`` (the moving-shapes detector and motion scores). Core never
imports ``cogframe.plugins``, ``cogframe.config`` or ``cogframe.cli``: it receives built
components as arguments (tests/test_layering.py). No ``__init__.py`` here imports anything, so
importing one module never pulls in torch through another.
"""
