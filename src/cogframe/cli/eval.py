"""``cogframe eval``: prompt adherence, motion and a Fréchet distance of a sampling recipe on moving shapes.

Draws ``--n`` captions ``a {colour} {shape} moving {direction}`` (deterministic per ``--seed``),
generates one clip per caption with the recipe, decodes it to pixels and scores it:

* **adherence**: colour, direction and shape read back by :func:`cogframe.core.metrics.detector.detect`;
* **motion** (:mod:`cogframe.core.metrics.motion`): median path straightness R² (0 for a wrong-way
  fit), the share of frame steps the caption's way, median sideways drift (% of the frame side)
  and flicker outside the object;
* **Fréchet distance** (:mod:`cogframe.core.metrics.frechet`) to a reference set of real clips on
  the features of the shipped video classifier (``--classifier``), an offline analogue of FVD.
  Clips at a whole multiple of the classifier's frame size (the 96 px videos of tiny/sample_sr)
  are averaged down to it first, every set alike, as FVD resizes clips to its network's input.

Real clips give every metric's ceiling in the same table. They have exactly the frames of the
generated clips: validation clips for which CogVideo's lowest-frame-rate rule (over the recipe's
``frame_rates.stage1``) picks the recipe's key-frame rate, sampled at that rate (5 key frames at
1 fps for ``--rounds 0``) or at the rate after the interpolation rounds (33 frames at 8 fps for
``--rounds 3``) from the same start, so the 33-frame real clips contain the 5 key frames. A
one-stage recipe (tiny/sample_one_stage: 33 frames at 8 fps from the stage-1 model alone, no
rounds) with ``--rounds 3`` gets the real clips of the hierarchical pipeline at ``--rounds 3``
(:func:`_real_rule`), so the two rows of that ablation share one real set. Two
disjoint sets of ``--n`` such clips are drawn: set A is scored like the generated clips (raw, and
after a round trip through the recipe's image tokenizer); set B is the Fréchet reference, and
A-vs-B is the distance's floor at this N. Shape accuracy is reported only when the detector gets
>= 90 % of the real shapes right in both.

``--json`` writes everything (settings, resolved model files, every table value, per-clip
detections and motion scores), so several runs (e.g. recipe overrides pointing stage1 at other
weights) can be tabulated later: ``cogframe eval --table a.json b.json`` prints them side by side.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

NAME = "eval"
HELP = ("Prompt adherence, motion and Fréchet distance of a sampling recipe on moving shapes; "
        "table + JSON (--table compares JSON reports).")
FIELDS = ("colour", "direction", "shape")
GROUPS = ("generated", "real", "real_tokenized")
RELIABLE = 0.9  # a detector below this on real clips would make its own errors look like the model's
_MOTION_ROWS = (("straightness_median", "straightness (median R²)", "ratio"),
                ("forward_steps", "steps the caption's way", "percent"),
                ("drift_median", "sideways drift (median, % side)", "percent"),
                ("flicker", "flicker outside the object", "ratio3"))
_REAL_SCAN_FACTOR = 8  # validation clips scanned per clip wanted before giving up (about half qualify)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the generation, scoring and output options (see ``cogframe eval --help``)."""
    parser.add_argument("--recipe", default="tiny/sample", help="sampling recipe (default: tiny/sample)")
    parser.add_argument("--n", type=int, default=100, help="prompts and real clips per set (default: 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompts and of sampling (default: 0)")
    parser.add_argument("--rounds", type=int, default=0,
                        help="interpolation rounds before scoring (default: 0, the key frames); a one-stage "
                             "recipe (no interpolation) is scored against the real clips of this many rounds")
    parser.add_argument("--batch", type=int, default=16, help="prompts generated together (default: 16)")
    parser.add_argument("--key-frames", choices=("generated", "real"), default="generated",
                        help="'real': skip the first stage and give the later ones (interpolation, super-resolution) "
                             "the key frames of the scored real clips, through the image tokenizer, to score those "
                             "stages alone; the captions are the real clips' (default: generated)")
    parser.add_argument("--data", default="tiny/prepare", metavar="RECIPE",
                        help="recipe whose `dataset:` node the real clips come from (its val split): the data the "
                             "models were trained on (default: tiny/prepare)")
    parser.add_argument("--classifier", metavar="DIR",
                        help="video classifier of the Fréchet distance (default: the asset tiny/video_classifier)")
    parser.add_argument("--no-frechet", action="store_true", help="skip the Fréchet distance")
    parser.add_argument("--label", help="a name for this run in the JSON and in --table (default: the recipe)")
    parser.add_argument("--json", metavar="FILE", help="also write every metric, setting and per-clip score as JSON")
    parser.add_argument("--sheet", metavar="PNG", help="write the first 16 generated clips as one image")
    parser.add_argument("--table", metavar="JSON", nargs="+",
                        help="print the reports of earlier runs side by side (markdown) and exit")
    parser.add_argument("overrides", metavar="KEY=VALUE", nargs="*", help="overrides of the recipe")


# ============================================================================== real clips
def _lowest_fps_picks(num_frames: int, native_fps: float, key_fps: float, key_frames: int,
                      rates: tuple[float, ...]) -> bool:
    """Whether the lowest-fps rule over ``rates`` samples this clip at ``key_fps``."""
    from cogframe.core.io.frame_rate import supports_rate

    return supports_rate(num_frames, native_fps, key_fps, key_frames) and not any(
        supports_rate(num_frames, native_fps, r, key_frames) for r in rates if r < key_fps * (1 - 1e-9))


def _real_clips(registries, count: int, *, frames: int, fps: float, key_frames: int, key_fps: float,
                rates: tuple[float, ...], size: int, dataset: dict | None = None) -> tuple[np.ndarray, list[dict], dict]:
    """``count`` validation clips as the lowest-fps rule samples them at ``key_fps``, ``frames`` frames at ``fps``.

    Clip ``i``'s start is drawn from ``random.Random(i)``, so the set does not depend on ``frames``:
    the ``fps * 2**r`` clips contain the key-frame clips.

    Raises:
        ConfigError: ``fps`` above the data's frame rate, or too few qualifying clips.
    """
    from cogframe.core.io.frame_rate import frame_indices
    from cogframe.errors import ConfigError

    scan = count * _REAL_SCAN_FACTOR + 64
    node = {"name": "moving_shapes", **(dataset or {})}
    if node["name"] != "moving_shapes":
        raise ConfigError(f"eval scores captions of the moving_shapes domain; --data names a {node['name']!r} dataset. "
                          "Pass a recipe whose dataset is moving_shapes (e.g. --data tiny/prepare).")
    node.update({"split": "val", "num_clips": scan, "size": size})
    data = registries.build("dataset", node)
    native = float(data.fps)
    if fps > native * (1 + 1e-9):
        raise ConfigError(f"the generated clips are at {fps:g} fps but the real moving_shapes clips only at "
                          f"{native:g} fps, so no real clips of the same frames exist; lower --rounds or the "
                          "recipe's fps.")
    clips, targets, sources = [], [], []
    for index in range(scan):
        clip = data[index]
        if not _lowest_fps_picks(clip.num_frames, native, key_fps, key_frames, rates):
            continue
        pick = frame_indices(clip.num_frames, native, fps, frames, random.Random(index))
        clips.append(clip.frames[pick])
        targets.append({k: clip.metadata[k] for k in FIELDS})
        sources.append(index)
        if len(clips) == count:
            break
    if len(clips) < count:
        raise ConfigError(f"only {len(clips)} of {scan} validation clips are sampled at {key_fps:g} fps by the "
                          f"lowest-fps rule over {list(rates)}; lower --n or use a key-frame rate the data has "
                          "(e.g. fps=1).")
    info = {"dataset": node, "split": "val", "rule": "lowest_fps", "rates": list(rates), "key_fps": key_fps, "fps": fps,
            "frames": frames, "native_fps": native, "clip_indices": [sources[0], sources[-1]]}
    return np.stack(clips), targets, info


def _data_node(recipe: str) -> dict:
    """The ``dataset:`` node of ``recipe`` (the data the models were trained on) as plain keywords."""
    from omegaconf import OmegaConf

    from cogframe.config.recipes import load_recipe
    from cogframe.errors import ConfigError

    cfg = load_recipe(recipe, [])
    if OmegaConf.select(cfg, "dataset", default=None) is None:
        raise ConfigError(f"--data {recipe}: that recipe has no `dataset:` node; name the prepare recipe the models "
                          "were trained from (e.g. --data tiny/prepare).")
    return {k: v for k, v in OmegaConf.to_container(cfg.dataset, resolve=True).items() if k not in ("split", "num_clips")}


def _real_rule(key_fps: float, key_frames: int, fps: float, frames: int, rounds_done: int,
               rounds: int) -> tuple[float, int]:
    """Rate and frame count of the lowest-fps rule that picks the real clips: ``(key_fps, key_frames)``.

    A hierarchical recipe (or key frames alone): the rule of its key frames, 5 at 1 fps for
    tiny/sample. A one-stage recipe, whose stages made more frames than its key frames without
    interpolation rounds (the stage-1 model made every frame at the final rate,
    tiny/sample_one_stage), is scored against the real clips of the hierarchical pipeline with
    ``--rounds`` rounds: the rule at ``fps / 2**rounds`` with the same number of key frames, so
    both rows of the ablation share one real set.

    Raises:
        ConfigError: A one-stage recipe whose frame count is not that of ``--rounds`` rounds.
    """
    from cogframe.errors import ConfigError

    if rounds_done or frames == key_frames:
        return key_fps, key_frames
    if rounds and frames - 1 == (key_frames - 1) * 2 ** rounds:
        return fps / 2 ** rounds, key_frames
    raise ConfigError(f"the recipe made {frames} frames from {key_frames} key frames without interpolation rounds (a "
                      f"one-stage recipe), but {key_frames} key frames and --rounds {rounds} make "
                      f"{(key_frames - 1) * 2 ** rounds + 1}; pass the --rounds of the hierarchical videos it stands "
                      f"beside (--rounds 3 for 33 frames from 5 key frames) so that both are scored against the "
                      "same real clips.")


def _real_key_frame_batches(args, plan, registries):
    """``--key-frames real``: the scored real clips' key frames, interpolated by the recipe's later stages.

    Set A of the real clips (the same clips the table scores, drawn by the same rule) is drawn at
    the key frames' resolution; its key frames go through the image tokenizer and every stage after
    the first runs on those token grids, batch by batch, with the batch's seed as usual.

    Returns:
        ``(targets, batches)``: the real clips' targets (captions added) and a generator of
        ``(first index, captions, VideoBatch after the stages)``.

    Raises:
        ConfigError: ``--rounds 0`` (nothing after the key frames to score), or a recipe whose first
            stage does not make model key frames.
    """
    import torch

    from cogframe.core.generation.stages import VideoBatch, run_stages
    from cogframe.core.io.frame_rate import DEFAULT_RATES
    from cogframe.core.metrics.detector import caption_of
    from cogframe.errors import ConfigError

    first_stage, later = plan.stages[0], plan.stages[1:]
    model = getattr(first_stage, "model", None)
    if args.rounds < 1 or not later:
        raise ConfigError("--key-frames real replaces the key frames and scores the stages after them; give "
                          "--rounds >= 1 (e.g. --rounds 3) with a recipe that interpolates.")
    if getattr(first_stage, "space", None) != "tokens" or not isinstance(model, str) or not hasattr(first_stage, "frames"):
        raise ConfigError(f"--key-frames real needs a recipe whose first stage makes model key frames (key_frames); "
                          f"{args.recipe}'s first stage is {first_stage.name!r}.")
    context = plan.context
    layout = context.model_config(model, needed_by="--key-frames real").layout
    key_fps, key_count = float(first_stage.output_fps), int(first_stage.frames)
    frames = (key_count - 1) * 2 ** args.rounds + 1
    size = layout.frame_height * int(getattr(context.image_tokenizer, "downsample", 1))
    rates = plan.settings.trained_rates(model) or DEFAULT_RATES
    both, both_targets, _ = _real_clips(registries, 2 * args.n, frames=frames, fps=key_fps * 2 ** args.rounds,
                                        key_frames=key_count, key_fps=key_fps, rates=tuple(rates), size=size,
                                        dataset=_data_node(args.data))
    keys = both[0::2][:, ::2 ** args.rounds]  # set A, as run() scores it; its frames at the key-frame rate
    targets = [{**t, "caption": caption_of(**t)} for t in both_targets[0::2]]
    pixels = torch.from_numpy(keys.reshape(-1, *keys.shape[2:])).permute(0, 3, 1, 2)
    with torch.no_grad():
        tokens = context.image_tokenizer.encode(pixels).to(context.device)
    tokens = tokens.reshape(args.n, key_count, *tokens.shape[1:])

    def batches():
        for first in range(0, args.n, args.batch):
            rows = slice(first, first + args.batch)
            captions = tuple(t["caption"] for t in targets[rows])
            start = VideoBatch(captions, args.seed + first, fps=key_fps, tokens=tokens[rows], key_frames=key_count)
            yield first, captions, run_stages(later, start, decode=context.decode)

    return targets, batches()


def _round_trip(context, clips: np.ndarray) -> np.ndarray:
    """Real clips encoded and decoded by the recipe's image tokenizer (what generated clips go through)."""
    import torch

    batch, frames = clips.shape[:2]
    pixels = torch.from_numpy(clips.reshape(batch * frames, *clips.shape[2:])).permute(0, 3, 1, 2)
    with torch.no_grad():
        tokens = torch.cat([context.image_tokenizer.encode(pixels[i:i + 256]) for i in range(0, len(pixels), 256)])
        return context.decode(tokens.reshape(batch, frames, *tokens.shape[1:])).numpy()


# ============================================================================== scores
def _frechet(classifier_dir: str, generated: np.ndarray, real: np.ndarray, tokenized: np.ndarray,
             reference: np.ndarray) -> dict[str, float | None]:
    """Fréchet distance of each scored set to the reference set B (None for sets under 2 clips)."""
    from cogframe.core.metrics.frechet import embed_clips, feature_stats, frechet_distance_of_stats, load_video_classifier

    if len(generated) < 2:
        return {key: None for key in GROUPS}
    classifier = load_video_classifier(classifier_dir)
    stats = {key: feature_stats(embed_clips(classifier, _at_size(clips, classifier.size)), name=key)
             for key, clips in (("generated", generated), ("real", real), ("real_tokenized", tokenized),
                                ("reference", reference))}
    return {key: frechet_distance_of_stats(stats[key], stats["reference"]) for key in GROUPS}


def _at_size(clips: np.ndarray, size: int) -> np.ndarray:
    """``[B, T, H, W, 3]`` uint8 clips at the classifier's ``size``: k x k pixel blocks averaged
    when ``H == W == k * size`` (the 96 px videos of the super-resolution stage), as FVD resizes
    every clip to its network's input. Every set (generated and real) goes through the same
    resize, so the distance compares like with like.

    Raises:
        ConfigError: Frames that are not ``size`` or a whole multiple of it.
    """
    from cogframe.errors import ConfigError

    side = clips.shape[2]
    if clips.shape[2:4] == (size, size):
        return clips
    if clips.shape[2] != clips.shape[3] or side % size:
        raise ConfigError(f"the clips are {clips.shape[2]}x{clips.shape[3]} px and the Fréchet classifier reads "
                          f"{size}x{size}; only whole multiples of its size are averaged down to it. Pass a "
                          "classifier trained at this size (--classifier) or skip the distance with --no-frechet.")
    k = side // size
    blocks = clips.reshape(*clips.shape[:2], size, k, size, k, 3).astype(np.float32).mean((3, 5))
    return np.round(blocks).astype(np.uint8)


def _motion(clips: np.ndarray, directions: list[str]) -> list:
    from cogframe.core.metrics.motion import motion_scores

    if clips.shape[1] < 3:
        return []
    return [motion_scores(c, d) for c, d in zip(clips, directions)]


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _cell(value: float | None, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "percent":
        return _percent(value)
    return f"{value:.3f}" if kind == "ratio" else f"{value:.4f}"


def _table(metrics: dict, motion: dict, frechet: dict | None, n: int) -> str:
    rows = [("metric", "generated", "real clips", "real via tokenizer")]
    rows += [(name, *(_percent(metrics[k].get(name)) for k in GROUPS)) for name in (*FIELDS, "all")]
    if motion:
        rows += [(label, *(_cell(motion[k][key], kind) for k in GROUPS)) for key, label, kind in _MOTION_ROWS]
    if frechet is not None:
        rows.append((f"Fréchet distance to {n} other real clips",
                     *("n/a" if frechet[k] is None else f"{frechet[k]:.1f}" for k in GROUPS)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


# ============================================================================== run
def _check_args(args) -> None:
    from cogframe.errors import ConfigError

    for flag, value, low in (("--n", args.n, 1), ("--batch", args.batch, 1), ("--rounds", args.rounds, 0)):
        if value < low:
            raise ConfigError(f"{flag} must be >= {low}, got {value}.")


def _classifier_dir(args) -> str | None:
    from cogframe.config.recipes import asset_path
    from cogframe.errors import ConfigError

    if args.no_frechet:
        return None
    path = args.classifier or asset_path("tiny/video_classifier")
    if not (Path(path) / "config.json").is_file():
        where = "--classifier" if args.classifier else "the asset tiny/video_classifier"
        raise ConfigError(f"{where}: no video classifier at {path} (the Fréchet distance embeds clips with it); "
                          "train one with `cogframe run tiny/video_classifier`, point --classifier at its "
                          "folder, or skip the distance with --no-frechet.")
    return str(path)


def _plan(args, registries, first_caption: str):
    from cogframe.config.recipes import load_recipe, validate_recipe
    from cogframe.errors import ConfigError
    from cogframe.plugins.task_sample import take_plan

    cfg = load_recipe(args.recipe, args.overrides)
    if cfg.get("task") != "sample":
        raise ConfigError(f"{args.recipe} is a '{cfg.get('task')}' recipe; cogframe eval needs a sampling "
                          "recipe (task: sample), e.g. --recipe tiny/sample.")
    if "rounds" not in cfg:
        raise ConfigError(f"{args.recipe} has no top-level `rounds` for --rounds to set; give its interpolation "
                          "stage `rounds: ${{rounds}}` and a top-level `rounds: 3`, as tiny/sample does.")
    # rounds is a recipe variable read by the stages: set it before interpolations are resolved.
    cfg = load_recipe(args.recipe, [*args.overrides, f"rounds={args.rounds}"])
    cfg.prompt, cfg.prompts_file = first_caption, None
    cfg.seed, cfg.batch_size = args.seed, args.batch
    cfg.overwrite = True  # eval writes no videos: an earlier video at the recipe's `out` is no conflict
    validate_recipe(cfg, registries, source=args.recipe)
    return cfg, take_plan(cfg, registries, args.recipe)


def run(args: argparse.Namespace) -> int:
    """Generates, scores, prints the table and writes the JSON (or, with ``--table``, compares reports)."""
    if args.table:
        print(compare_reports(args.table))
        return 0
    from cogframe.core.io.atomic import atomic_write_json
    from cogframe.core.io.frame_rate import DEFAULT_RATES
    from cogframe.core.metrics.detector import accuracy, detect, draw_captions
    from cogframe.core.metrics.motion import motion_table
    from cogframe.plugins import get_registries
    from cogframe.plugins.dataset_moving_shapes import COLOURS, DIRECTIONS, SHAPES
    from cogframe.plugins.task_sample import generate, load

    _check_args(args)
    classifier = _classifier_dir(args)
    start = time.perf_counter()
    registries = get_registries()
    targets = draw_captions(args.n, args.seed, list(COLOURS), SHAPES, DIRECTIONS)
    cfg, plan = _plan(args, registries, targets[0]["caption"])
    load(plan)
    if args.key_frames == "real":
        targets, batches = _real_key_frame_batches(args, plan, registries)
    else:
        batches = ((first, [t["caption"] for t in targets[first:first + args.batch]], None)
                   for first in range(0, args.n, args.batch))
    generated, key_frames, rounds_done = [], None, 0
    for first, captions, keys in batches:
        batch = generate(plan, captions, args.seed + first) if keys is None else keys
        key_frames, rounds_done = batch.key_frames, batch.rounds
        generated.append(batch.pixels.numpy())
        print(f"generated {min(first + args.batch, args.n)}/{args.n}", flush=True)
    gen_seconds = time.perf_counter() - start
    clips = np.concatenate(generated)
    key_fps, rule_frames = _real_rule(float(plan.stages[0].output_fps), int(key_frames), float(plan.fps),
                                      int(clips.shape[1]), rounds_done, args.rounds)
    rates = plan.settings.trained_rates("stage1") or DEFAULT_RATES
    both, both_targets, real_info = _real_clips(
        registries, 2 * args.n, frames=clips.shape[1], fps=float(plan.fps), key_frames=rule_frames,
        key_fps=key_fps, rates=tuple(rates), size=clips.shape[2], dataset=_data_node(args.data))
    # Alternate A/B so both sets see the same mix of the scan (and so of clip lengths).
    real, reference, real_targets = both[0::2], both[1::2], both_targets[0::2]
    if args.key_frames == "real" and [{f: t[f] for f in FIELDS} for t in targets] != real_targets:
        raise RuntimeError("internal error: the real clips whose key frames were interpolated are not the scored ones")
    tokenized = _round_trip(plan.context, real)
    sets = {"generated": (clips, targets), "real": (real, real_targets), "real_tokenized": (tokenized, real_targets)}
    detections = {key: [detect(c, COLOURS) for c in s] for key, (s, _) in sets.items()}
    metrics = {key: accuracy(detections[key], t) for key, (_, t) in sets.items()}
    detector_shape = min(metrics["real"]["shape"], metrics["real_tokenized"]["shape"])
    shape_ok = detector_shape >= RELIABLE
    if not shape_ok:  # an unreliable shape detector would blame the model for its own errors
        metrics = {key: {**accuracy(detections[key], t, fields=FIELDS[:2]), "shape": None}
                   for key, (_, t) in sets.items()}
    scores = {key: _motion(s, [x["direction"] for x in t]) for key, (s, t) in sets.items()}
    motion = motion_table(scores) if scores["generated"] else {}
    frechet = _frechet(classifier, clips, real, tokenized, reference) if classifier else None
    seconds = time.perf_counter() - start
    print(f"\n{args.recipe}: {args.n} prompts (seed {args.seed}), {clips.shape[1]} frames per clip "
          f"(rounds {args.rounds}, {plan.fps:g} fps), {seconds:.1f} s ({gen_seconds:.1f} s generating)"
          + ("; key frames: the scored real clips'" if args.key_frames == "real" else ""))
    print(_table(metrics, motion, frechet, args.n))
    if not shape_ok:
        print(f"shape not reported: the detector gets only {detector_shape:.1%} of the real shapes right "
              f"(needs {RELIABLE:.0%})")
    if args.sheet:
        _sheet(args.sheet, clips[:16])
    if args.json:
        atomic_write_json(args.json, _report(
            args, cfg, plan, metrics=metrics, motion=motion, frechet=frechet, classifier=classifier,
            shape_ok=shape_ok, real_info=real_info, targets=targets, detections=detections["generated"],
            scores=scores["generated"], seconds={"total": round(seconds, 2), "generate": round(gen_seconds, 2)}))
        print(f"wrote {args.json}")
    return 0


def _sheet(path: str, clips: np.ndarray) -> None:
    from cogframe.core.io.video import contact_sheet

    contact_sheet(clips.reshape(-1, *clips.shape[2:]), path, cols=clips.shape[1])


def _plain(cfg, key: str) -> Any:
    from omegaconf import OmegaConf

    value = OmegaConf.select(cfg, key, default=None)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _report(args, cfg, plan, *, metrics, motion, frechet, classifier, shape_ok, real_info, targets, detections,
            scores, seconds) -> dict[str, Any]:
    from cogframe import __version__

    per_clip = [{"caption": t["caption"], "detection": d.to_dict(),
                 "motion": scores[i].to_dict() if scores else None} for i, (t, d) in enumerate(zip(targets, detections))]
    return {
        "label": args.label or args.recipe, "recipe": args.recipe, "overrides": list(args.overrides),
        "n": args.n, "seed": args.seed, "rounds": args.rounds, "batch": args.batch, "key_frames": args.key_frames,
        "frames": int(real_info["frames"]), "fps": real_info["fps"], "key_fps": real_info["key_fps"],
        "seconds": seconds["total"], "seconds_generate": seconds["generate"],
        "metrics": metrics, "motion": motion, "frechet": frechet,
        "frechet_reference": None if frechet is None else
        f"{args.n} other real clips (set B of the same rule; 'real' vs it is the floor)",
        "shape_reported": shape_ok, "reliability_threshold": RELIABLE, "real_clips": real_info,
        "models": {"stage1": _plain(cfg, "stage1.model"), "stage2": _plain(cfg, "stage2.model"),
                   "image_tokenizer": _plain(cfg, "image_tokenizer"), "text_tokenizer": _plain(cfg, "text_tokenizer"),
                   "video_classifier": classifier},
        "sampling": {"stages": _plain(cfg, "stages"), "token_sampler": _plain(cfg, "token_sampler"),
                     "first_frame_sampler": _plain(cfg, "first_frame_sampler"), "guidance": _plain(cfg, "guidance"),
                     "text_bias": _plain(cfg, "text_bias"), "parallel": _plain(cfg, "parallel")},
        "cogframe": __version__,
        "clips": per_clip,
    }


# ============================================================================== --table
_COMPARE = (("direction", lambda r: r["metrics"]["generated"].get("direction"), "percent"),
            ("colour", lambda r: r["metrics"]["generated"].get("colour"), "percent"),
            ("shape", lambda r: r["metrics"]["generated"].get("shape"), "percent"),
            ("straightness", lambda r: (r.get("motion") or {}).get("generated", {}).get("straightness_median"), "ratio"),
            ("forward steps", lambda r: (r.get("motion") or {}).get("generated", {}).get("forward_steps"), "percent"),
            ("drift", lambda r: (r.get("motion") or {}).get("generated", {}).get("drift_median"), "percent"),
            ("Fréchet", lambda r: (r.get("frechet") or {}).get("generated"), "fd"),
            ("Fréchet floor", lambda r: (r.get("frechet") or {}).get("real"), "fd"))


def compare_reports(paths) -> str:
    """A markdown table of ``cogframe eval --json`` reports: one row per run, the generated clips' scores.

    Raises:
        DataError: A file that is missing or not an eval report.
    """
    import json

    from cogframe.errors import DataError

    rows = []
    for path in paths:
        try:
            report = json.loads(Path(path).read_text(encoding="utf-8"))
            cells = [f"{report['label']}", f"{report['n']}", f"{report['frames']}"]
            for _, get, kind in _COMPARE:
                value = get(report)
                cells.append("n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else
                             f"{value:.1f}" if kind == "fd" else _cell(value, kind))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{path} is not a report of this cogframe eval ({type(exc).__name__}: {exc}); write "
                            "one with `cogframe eval --json FILE`.") from None
        rows.append(cells)
    head = ["run", "N", "frames", *(name for name, _, _ in _COMPARE)]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])
