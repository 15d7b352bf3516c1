"""Training: ``loop.py`` (the loop shared by text-to-image pretraining and both CogVideo stages),
``settings.py`` (the typed sections of the ``train`` task, readable without torch),
``batches.py`` (deterministic step-indexed batches), ``checkpoint.py`` (atomic safetensors
checkpoints with trainer state), ``distributed.py`` (single process or FSDP2 under torchrun, and
consolidating sharded checkpoints), ``memory_plan.py`` (parameter counts and memory per device
on the meta device, behind ``cogframe plan``) and ``preview.py`` (sample videos during training,
``train.sample_every``).
"""
