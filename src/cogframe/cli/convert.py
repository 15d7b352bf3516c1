"""``cogframe convert``: SwissArmyTransformer checkpoints <-> cogframe weights folders.

* ``cogframe convert sat SRC_DIR DST [--dtype float32|bfloat16] [--shard-size 2GB]`` reads a released
  SAT folder (CogView2, CogVideo stage 1 or 2, CogView2's direct super-resolution ``cogview2-dsr``;
  which one it is comes from ``model_config.json`` and the tensor names) and writes sharded
  safetensors + ``config.yaml``.
* ``cogframe convert to-sat SRC DST [--dtype ...]`` writes a cogframe weights folder back as a SAT
  folder (bit-exact for a folder converted from SAT).

Problems (missing files, corrupt or code-running pickles, missing/unexpected tensors, wrong shapes)
are :class:`~cogframe.errors.CogframeError`s: the CLI prints them and exits 2.
"""

from __future__ import annotations

import argparse

NAME = "convert"
HELP = ("Convert SwissArmyTransformer (released CogVideo / CogView2 / CogView2-DSR) checkpoints to cogframe "
        "weights and back.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``sat`` and ``to-sat`` directions with their options."""
    directions = parser.add_subparsers(dest="direction", metavar="DIRECTION", required=True)
    sat = directions.add_parser(
        "sat", help="SAT checkpoint folder -> cogframe weights folder",
        description="Convert a SwissArmyTransformer folder (latest, <it>/mp_rank_00_model_states.pt, "
                    "model_config.json) into sharded safetensors + config.yaml.")
    sat.add_argument("src", metavar="SRC_DIR", help="the unzipped SAT folder, e.g. cogvideo-stage1/ or cogview2-dsr/")
    sat.add_argument("dst", metavar="DST", help="the cogframe weights folder to write (new or empty)")
    sat.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                     help="dtype of the written tensors (default float32: fp16 weights widen exactly)")
    sat.add_argument("--shard-size", default="2GB", metavar="SIZE",
                     help="maximum size of one safetensors shard, e.g. 2GB, 500MB (default 2GB)")
    sat.add_argument("--image-vocab-size", type=int, default=None, metavar="N",
                     help="image ids at the start of the vocabulary (default: icetk's 20000)")
    sat.add_argument("--overwrite", action="store_true", help="replace a previous conversion in DST")
    sat.set_defaults(_convert=_run_sat)

    back = directions.add_parser(
        "to-sat", help="cogframe weights folder -> SAT checkpoint folder",
        description="Write a cogframe weights folder as a SwissArmyTransformer folder (latest = 1).")
    back.add_argument("src", metavar="SRC", help="a cogframe weights folder (has config.yaml)")
    back.add_argument("dst", metavar="DST", help="the SAT folder to write (new or empty)")
    back.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                      help="dtype of the SAT tensors (default: that of the original SAT checkpoint)")
    back.add_argument("--overwrite", action="store_true", help="replace an existing SAT checkpoint in DST")
    back.set_defaults(_convert=_run_to_sat)


def _run_sat(args: argparse.Namespace):
    from cogframe.core.weights.convert import sat_to_cogframe

    return sat_to_cogframe(args.src, args.dst, dtype=args.dtype, shard_size=args.shard_size,
                           image_vocab_size=args.image_vocab_size, overwrite=args.overwrite)


def _run_to_sat(args: argparse.Namespace):
    from cogframe.core.weights.convert import cogframe_to_sat

    return cogframe_to_sat(args.src, args.dst, dtype=args.dtype, overwrite=args.overwrite)


def run(args: argparse.Namespace) -> int:
    """Runs the chosen direction and prints a summary."""
    result = args._convert(args)
    preset = f" (same as preset '{result.preset}')" if result.preset else ""
    model = "super-resolution model, " if result.kind == "super_resolution" else ""
    print(f"wrote {result.destination}: {model}{result.tensors} tensors, {result.parameters:,} parameters, "
          f"{result.dtype}{preset}")
    if args.direction == "sat":
        section = "super_resolution.model" if result.kind == "super_resolution" else "model"
        print(f"use it in a recipe with {section}.weights: {result.destination.resolve()}")
    return 0
