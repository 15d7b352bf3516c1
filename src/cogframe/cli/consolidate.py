"""``cogframe consolidate CHECKPOINT OUT.safetensors``: sharded FSDP2 checkpoint -> one file."""

from __future__ import annotations

import argparse

NAME = "consolidate"
HELP = "Merge a sharded (torch.distributed.checkpoint) training checkpoint into one safetensors file."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """CHECKPOINT folder and OUT file."""
    parser.add_argument("checkpoint", help="a checkpoint folder, e.g. runs/x/checkpoints/step_00001000")
    parser.add_argument("out", help="the safetensors file to write")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")


def run(args: argparse.Namespace) -> int:
    """Consolidate and report the tensor count."""
    from pathlib import Path

    from cogframe.core.training.distributed import consolidate_checkpoint
    from cogframe.errors import ConfigError

    out = Path(args.out)
    if out.is_dir() or args.out.endswith(("/", "\\")):
        raise ConfigError(f"{args.out} is a folder; give the file to write, e.g. {out / 'model.safetensors'}.")
    if out.exists() and not args.force:
        raise ConfigError(f"{args.out} already exists; pass --force to overwrite it or pick another path.")
    count = consolidate_checkpoint(args.checkpoint, args.out)
    print(f"wrote {count} tensors to {args.out}")
    return 0
