"""``cogframe demo``: the whole tiny pipeline from the shipped models, prompt to mp4/gif/png.

It runs the ``tiny/sample_sr`` recipe: 5 key frames of 8x8 tokens, 3 interpolation rounds -> 33
frames at 8 fps (the KV cache, parallel waves and all stage-2 windows of a round in one batch),
then CogView2-style direct super-resolution of every frame to 24x24 tokens (96x96 px); a few
seconds on a CPU. ``--no-sr`` runs ``tiny/sample`` instead (the same pipeline without the
super-resolution stage: 32x32 px frames). With ``--recipe``, super-resolution is on when the
recipe lists the ``super_resolution`` stage and ``--no-sr`` removes it. When a shipped model is
missing it names the file and the training recipe that produces it, and exits with status 2; so
does an earlier video of the same prompt in ``--out`` (``--overwrite`` replaces it).
"""

from __future__ import annotations

import argparse
import time

NAME = "demo"
HELP = ("Generate a super-resolved video with the shipped tiny models (recipe tiny/sample_sr; --no-sr: "
        "tiny/sample) and say where it went.")
RECIPE = "tiny/sample"          # the pipeline without super-resolution (--no-sr)
SR_RECIPE = "tiny/sample_sr"    # the default: the same pipeline plus its super-resolution stage
DEFAULT_PROMPT = "a red circle moving left"
SR_STAGE = "super_resolution"  # the stage --no-sr removes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--prompt``, ``--out``, ``--seed``, ``--rounds``, ``--overwrite``, ``--parallel``, ``--sr``,
    ``--recipe`` and overrides."""
    parser.add_argument("--prompt", default=DEFAULT_PROMPT,
                        help=f"what the video shows (default: {DEFAULT_PROMPT!r}); the tiny models know "
                             "'a {red|green|blue|yellow|magenta|cyan|white} {circle|square|triangle} "
                             "moving {left|right|up|down}'")
    parser.add_argument("--out", default="demo_out", metavar="DIR",
                        help="output folder (default: demo_out/)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed, 0 .. 2**63 - 1 (default: 0)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interpolation rounds 0..3 (default: the recipe's 3, i.e. 33 frames at 8 fps)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier video of the same prompt in --out (default: refuse)")
    parser.add_argument("--parallel", action=argparse.BooleanOptionalAction, default=True,
                        help="parallel-wave decoding (default: on; --no-parallel decodes one token per "
                             "pass and gives the same video in float32, the tiny recipe's dtype; in "
                             "bfloat16/float16 the rounding differs and so may some tokens)")
    parser.add_argument("--sr", action=argparse.BooleanOptionalAction, default=None,
                        help=f"super-resolution (default: on, recipe {SR_RECIPE}: 96x96 px frames); --no-sr "
                             f"skips it (recipe {RECIPE}: 32x32 px); with --recipe, on when the recipe lists "
                             "the super_resolution stage")
    parser.add_argument("--recipe", default=None,
                        help=f"the sampling recipe (default: {SR_RECIPE}, or {RECIPE} with --no-sr)")
    parser.add_argument("overrides", metavar="KEY=VALUE", nargs="*",
                        help="extra overrides of the recipe, e.g. rounds=2 guidance=1")


def run(args: argparse.Namespace) -> int:
    """Loads the recipe with the options, checks the assets, generates and prints the outputs."""
    from cogframe.plugins import get_registries
    from cogframe.plugins.task_sample import run_sample
    from cogframe.config.recipes import load_recipe, validate_recipe
    from cogframe.errors import ConfigError

    start = time.perf_counter()
    registries = get_registries()
    # rounds is a recipe variable the stages read, so it must be set before interpolations resolve.
    rounds = [] if args.rounds is None else [f"rounds={args.rounds}"]
    recipe = args.recipe
    if recipe is None:
        recipe = RECIPE if args.sr is False else SR_RECIPE
    elif args.sr and recipe == RECIPE:
        recipe = SR_RECIPE  # the shipped pipeline plus its super-resolution stage
    cfg = load_recipe(recipe, [*args.overrides, *rounds])
    listed = [i for i, node in enumerate(cfg.get("stages") or []) if node.get("name") == SR_STAGE]
    if args.sr is False and listed:
        cfg.stages = [node for i, node in enumerate(cfg.stages) if i not in listed]
    elif args.sr and not listed:
        raise ConfigError(f"--sr was given but recipe {recipe} lists no {SR_STAGE} stage; use --recipe "
                          "tiny/sample_sr (after `cogframe run tiny/sr`, docs/sampling.md) or drop --sr")
    # Set after loading rather than as override strings: a prompt is free text, not YAML.
    cfg.prompt, cfg.prompts_file = args.prompt, None
    cfg.out, cfg.seed, cfg.parallel = str(args.out).rstrip("/") + "/", args.seed, args.parallel
    cfg.overwrite = bool(args.overwrite or cfg.get("overwrite", False))
    source = f"cogframe demo (recipe {recipe})"
    validate_recipe(cfg, registries, source=source)
    result = run_sample(cfg, registries, source=source, echo=lambda *_: None)
    paths = result.outputs[0]
    print(f"prompt:        {args.prompt!r} (seed {args.seed})"
          + ("; super-resolved" if listed and args.sr is not False else ""))
    print(f"video:         {paths['mp4']}")
    print(f"gif:           {paths['gif']}")
    print(f"contact sheet: {paths['png']}")
    print(f"details:       {paths['json']}")
    seconds = result.seconds
    print(f"done in {time.perf_counter() - start:.1f} s (loading {seconds['load']:.1f} s, generating "
          f"{seconds['generate']:.1f} s, writing {seconds['write']:.1f} s)")
    return 0
