"""``cogframe demo``: the whole tiny pipeline from the shipped models, prompt to mp4/gif/png.

It runs the ``tiny/sample`` recipe (5 key frames of 8x8 tokens, 3 interpolation rounds -> 33
frames at 8 fps) with the KV cache, parallel waves and all stage-2 windows of a round in one batch;
a few seconds on a CPU. When the recipe lists the ``super_resolution`` stage (``--recipe
tiny/sample_sr``, or tiny/sample once it ships the super-resolution model) the frames come out
super-resolved (3x the key-frame size); ``--no-sr`` skips that stage. When a shipped model is missing it names the file and the training recipe
that produces it, and exits with status 2; so does an earlier video of the same prompt in
``--out`` (``--overwrite`` replaces it).
"""

from __future__ import annotations

import argparse
import time

NAME = "demo"
HELP = "Generate a video with the shipped tiny models (recipe tiny/sample) and say where it went."
RECIPE = "tiny/sample"
DEFAULT_PROMPT = "a red circle moving left"
SR_STAGE = "super_resolution"  # the stage --no-sr removes
# --sr with the default recipe: the same pipeline plus super-resolution. Not the default yet: the
# tiny SR model does not beat bicubic upscaling (docs/sampling.md, "Super-resolution").
SR_RECIPE = "tiny/sample_sr"


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
                        help="super-resolution: --sr adds it (recipe tiny/sample_sr: 96x96 px frames); on by "
                             "default when --recipe lists the super_resolution stage; --no-sr skips it")
    parser.add_argument("--recipe", default=RECIPE, help=f"the sampling recipe (default: {RECIPE})")
    parser.add_argument("overrides", metavar="KEY=VALUE", nargs="*",
                        help=f"extra overrides of the {RECIPE} recipe, e.g. rounds=2 guidance=1")


def run(args: argparse.Namespace) -> int:
    """Loads tiny/sample with the options, checks the assets, generates and prints the outputs."""
    from cogframe.plugins import get_registries
    from cogframe.plugins.task_sample import run_sample
    from cogframe.config.recipes import load_recipe, validate_recipe
    from cogframe.errors import ConfigError

    start = time.perf_counter()
    registries = get_registries()
    # rounds is a recipe variable the stages read, so it must be set before interpolations resolve.
    rounds = [] if args.rounds is None else [f"rounds={args.rounds}"]
    recipe = args.recipe
    if args.sr and recipe == RECIPE:
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
