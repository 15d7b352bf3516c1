"""Weights on disk: ``safe_load.py`` (torch pickles loaded without running their code),
``sharded_safetensors.py`` (``model-0000k-of-0000N.safetensors`` plus its index),
``pretrained.py`` (cogframe's pretrained-weights folder: shards + ``config.yaml``),
``model_kinds.py`` (the models a weights folder can hold: CogVideo/CogView2 or the DSR model),
``sat_mapping.py`` (SwissArmyTransformer parameter names and configs <-> cogframe's),
``sat_sr_config.py`` (SAT ``DsrModel`` configs <-> super-resolution presets; which model a SAT
folder holds), ``sat_files.py`` (reading and writing SAT checkpoint folders), ``convert.py``
(released SAT checkpoints -> cogframe weights and back) and ``icetk_files.py`` (the icetk files
the released models need and where to get them).
"""
