"""Evaluate the super-resolution stage: PSNR against the true high-res rendering, and flicker.

(a) **PSNR on held-out frames.** ``--frames`` moving_shapes frames of the ``val`` split (clips the
    SR model never trained on; the middle frame of each clip) are rendered at the key-frame size
    (32 px) and at ``scale`` x that size (96 px, ``render_scale``: the same scene). The low-res
    frame goes through the image tokenizer; then

    * ``bicubic``: its decoded frame upscaled ``scale`` x (bicubic), against the true 96 px frame;
    * ``sr``: its tokens super-resolved by the recipe's ``super_resolution`` stage (its model and
      sampler, ``--sampler`` to override), decoded at 96 px, against the true frame;
    * ``vq ceiling``: the true 96 px frame through the tokenizer and back (what SR can reach at most).

    PSNR pools the squared error over all frames (10 log10(1 / MSE), pixels in [0, 1]). ``shape``
    is the share of frames whose shape `cogframe eval`'s detector reads right, each frame scored
    alone, for the true frames, the VQ ceiling, bicubic and SR (and for the squares alone).
(c) **What any super-resolution can reach on this domain** (``--bound N``, no model): moving_shapes
    rasterises a shape at a continuous position by pixel centres, with no anti-aliasing, so a
    low-res frame pins the position down only to the set of positions that give the same low-res
    pixels (about one low-res pixel wide per axis), which at 3x is about three high-res pixels of
    edge. For N held-out frames (the frames of (a)) :func:`position_posterior` finds that set on
    a 1/20-pixel grid, with the shape, colour and size taken as known (more than any model is told),
    and the PSNR against the true high-res frame is reported for bicubic upscaling of the true
    (not tokenised) low-res frame, the sharp shape at the posterior-mean position (the best single
    sharp guess), the sharp shape at a position drawn from the set (what a sampler produces), and
    the posterior-mean image (the MMSE estimate: the most any estimator can reach, and it is soft,
    not sharp). No VQ round trip is applied to any of them, so these are upper bounds for a
    token-based SR, whose output also pays the tokenizer's own loss (the ceiling of (a)).
(b) **Flicker SR adds.** ``--prompts`` videos of the recipe (key frames + interpolation), then
    the stage with ``shared_noise`` on and off on the same low-res tokens; background flicker of
    core/metrics/motion.py (mean |frame-to-frame change| of background pixels, / 255) of the
    low-res video and of both super-resolved ones.

Usage (after ``cogframe run tiny/sr`` and installing the weights as tiny/sr.safetensors, or with
``super_resolution.model.weights=runs/tiny/sr/model.safetensors``)::

    python benchmarks/sr_eval.py [--recipe tiny/sample_sr] [--frames 128] [--prompts 16] [--bound 128] [--json FILE] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F


def _psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def _frames(scale: int, count: int, keywords: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from cogframe.plugins.dataset_moving_shapes import MovingShapes

    low, high = MovingShapes(split="val", num_clips=count, **keywords), \
        MovingShapes(split="val", num_clips=count, render_scale=scale, **keywords)
    lows, highs, captions = [], [], []
    for i in range(count):
        a, b = low[i], high[i]
        lows.append(a.frames[a.num_frames // 2])
        highs.append(b.frames[b.num_frames // 2])
        captions.append(a.caption)
    return np.stack(lows), np.stack(highs), captions


def position_posterior(clip, frame: int, *, reach: float = 1.0, steps: int = 41) -> tuple[np.ndarray, np.ndarray]:
    """The box positions that rasterise to the same low-res pixels as the true one, at one frame.

    Args:
        clip: A low-res moving_shapes clip (its metadata gives the shape, size and path).
        frame: The frame index.
        reach: Search half-width around the true position, in low-res pixels.
        steps: Grid points per axis (41 over +-1 px: 1/20 px).

    Returns:
        ``(true_xy [2], candidates [K, 2])``: the true top-left corner and every grid position
        whose rasterisation equals the true low-res mask (the true one is always among them).
    """
    from cogframe.plugins.dataset_moving_shapes import box_position, render_shape_masks

    meta = clip.metadata
    x, y = box_position(meta, frame)
    size = clip.frames.shape[1]
    truth = render_shape_masks(meta["shape"], size, np.array([x]), np.array([y]), meta["object_size"])[0]
    offsets = np.linspace(-reach, reach, steps)
    grid = np.array([(x + u, y + v) for u in offsets for v in offsets])
    masks = render_shape_masks(meta["shape"], size, grid[:, 0], grid[:, 1], meta["object_size"])
    return np.array([x, y]), grid[(masks == truth).all(axis=(1, 2))]


def bound_section(scale: int, count: int, keywords: dict) -> dict:
    """(c): PSNR of bicubic, sharp guesses and the MMSE estimate, from the position posterior."""
    from cogframe.plugins.dataset_moving_shapes import COLOURS, MovingShapes, render_shape_masks

    low_set = MovingShapes(split="val", num_clips=count, **keywords)
    high_set = MovingShapes(split="val", num_clips=count, render_scale=scale, **keywords)
    rng = np.random.default_rng(0)
    errors = {"bicubic_true_low_res": 0.0, "sharp_posterior_mean_position": 0.0,
              "sharp_sampled_position": 0.0, "mmse_posterior_mean_image": 0.0}
    widths, pixels = [], 0
    for i in range(count):
        low, high = low_set[i], high_set[i]
        t = low.num_frames // 2
        meta = low.metadata
        truth = high.frames[t].astype(np.float64) / 255
        colour = np.asarray(COLOURS[meta["colour"]], dtype=np.float64) / 255
        _, cands = position_posterior(low, t)
        widths.append(float(np.ptp(cands, axis=0).mean()))

        def render(xy: np.ndarray) -> np.ndarray:
            masks = render_shape_masks(meta["shape"], truth.shape[0], scale * xy[:, 0], scale * xy[:, 1],
                                       scale * meta["object_size"])
            return masks.astype(np.float64).mean(0)[..., None] * colour

        low_img = torch.from_numpy(low.frames[t]).permute(2, 0, 1)[None].double() / 255
        bicubic = F.interpolate(low_img, scale_factor=scale, mode="bicubic", align_corners=False)
        estimates = {"bicubic_true_low_res": bicubic.clamp(0, 1)[0].permute(1, 2, 0).numpy(),
                     "sharp_posterior_mean_position": render(cands.mean(0, keepdims=True)),
                     "sharp_sampled_position": render(cands[rng.integers(len(cands))][None]),
                     "mmse_posterior_mean_image": render(cands)}
        for name, image in estimates.items():
            errors[name] += float(((image - truth) ** 2).sum())
        pixels += truth.size
    out = {name: _psnr(total / pixels) for name, total in errors.items()}
    out.update(frames=count, posterior_width_px=float(np.mean(widths)),
               mmse_gain_over_bicubic_db=out["mmse_posterior_mean_image"] - out["bicubic_true_low_res"])
    return out


def _to_float(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


def psnr_section(plan, stage, count: int, keywords: dict) -> dict:
    """(a): pooled PSNR of bicubic, SR and the tokenizer's own round trip at the high-res size."""
    from cogframe.core.generation.stages import VideoBatch

    ctx = plan.context
    tok = ctx.image_tokenizer
    scale = stage.config.layout.scale
    low, high, captions = _frames(scale, count, keywords)
    x_low, x_high = _to_float(low), _to_float(high)
    with torch.no_grad():
        low_tokens = tok.encode(x_low)
        decoded_low = tok.decode(low_tokens).float().clamp(0, 1)
        ceiling = tok.decode(tok.encode(x_high)).float().clamp(0, 1)
    bicubic = F.interpolate(decoded_low, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
    started = time.perf_counter()
    # Each frame is its own one-frame video (its own caption, its own noise stream).
    batch = VideoBatch(tuple(captions), plan.settings.seed, fps=plan.stages[0].output_fps,
                       tokens=low_tokens[:, None])
    sr_tokens = stage(batch).tokens[:, 0]
    seconds = time.perf_counter() - started
    with torch.no_grad():
        sr = tok.decode(sr_tokens).float().clamp(0, 1)
    out = {name: _psnr(float(((img - x_high) ** 2).mean())) for name, img in
           (("bicubic", bicubic), ("sr", sr), ("vq_ceiling", ceiling))}
    out.update(frames=count, size=list(x_high.shape[2:]), sr_seconds=round(seconds, 2),
               gain_db=out["sr"] - out["bicubic"],
               shape=_shape_scores(captions, {"true": high, "vq_ceiling": _to_uint8(ceiling),
                                              "bicubic": _to_uint8(bicubic), "sr": _to_uint8(sr)}))
    return out


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images * 255).round().byte().permute(0, 2, 3, 1).numpy()


def _shape_scores(captions: list[str], sets: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Share of frames whose shape `cogframe eval`'s detector reads right, each frame alone, per set
    (and of the squares alone: the shape super-resolution rounds off)."""
    from cogframe.core.metrics.detector import detect
    from cogframe.plugins.dataset_moving_shapes import COLOURS

    truth = [c.split()[2] for c in captions]
    out = {}
    for name, frames in sets.items():
        read = [detect(f[None], COLOURS).shape for f in frames]
        squares = [r == "square" for r, t in zip(read, truth) if t == "square"]
        out[name] = {"all": float(np.mean([r == t for r, t in zip(read, truth)])),
                     "squares": float(np.mean(squares)) if squares else float("nan")}
    return out


def flicker_section(plan, stage, prompts: list[str]) -> dict:
    """(b): background flicker of the low-res videos and of their super-resolved versions."""
    from cogframe.core.generation.stages import VideoBatch, run_stages
    from cogframe.core.metrics.motion import motion_scores

    ctx = plan.context
    base = run_stages(plan.stages[:-1], VideoBatch(tuple(prompts), plan.settings.seed), decode=ctx.decode)
    directions = [p.split()[-1] for p in prompts]

    def flicker(pixels) -> float:
        values = [motion_scores(pixels[i].numpy(), d).flicker for i, d in enumerate(directions)]
        return float(np.mean(values))

    out = {"videos": len(prompts), "frames": base.frames, "low_res": flicker(base.pixels)}
    keep = stage.shared_noise
    try:
        for shared in (True, False):
            stage.shared_noise = shared
            tokens = stage(base).tokens
            out["sr_shared_noise" if shared else "sr_independent_noise"] = flicker(ctx.decode(tokens))
    finally:
        stage.shared_noise = keep
    return out


def main(argv=None) -> int:
    from cogframe.config.recipes import load_recipe
    from cogframe.plugins import get_registries
    from cogframe.plugins.task_sample import load, plan_sample

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="tiny/sample_sr")
    parser.add_argument("--frames", type=int, default=128, help="held-out frames of (a)")
    parser.add_argument("--prompts", type=int, default=16, help="videos of (b); 0 skips it")
    parser.add_argument("--bound", type=int, default=0, metavar="N",
                        help="(c) the position-posterior bound on N held-out frames (0: skip)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the report here")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    registries = get_registries()
    cfg = load_recipe(args.recipe, args.overrides)
    cfg.overwrite = True
    plan = plan_sample(cfg, registries, source=args.recipe)
    stages = [s for s in plan.stages if getattr(s, "name", None) == "super_resolution"]
    if not stages or plan.stages[-1] is not stages[0]:
        raise SystemExit(f"{args.recipe} must end with the super_resolution stage")
    stage = stages[0]
    load(plan)
    # The dataset keywords of tiny/prepare_sr (the clips the tiny models were trained on).
    keywords = {"size": 32, "seed": 0}
    report = {"recipe": args.recipe, "overrides": args.overrides, "sampler": stage.sampler_node,
              "psnr_db": psnr_section(plan, stage, args.frames, keywords)}
    if args.bound:
        report["bound_psnr_db"] = bound_section(stage.config.layout.scale, args.bound, keywords)
    if args.prompts:
        from cogframe.plugins.dataset_moving_shapes import COLOURS, DIRECTIONS, SHAPES  # the grammar

        rng = np.random.default_rng(0)
        colours, directions = list(COLOURS), list(DIRECTIONS)
        prompts = [f"a {colours[rng.integers(len(colours))]} {SHAPES[rng.integers(len(SHAPES))]} moving "
                   f"{directions[rng.integers(4)]}" for _ in range(args.prompts)]
        report["flicker"] = flicker_section(plan, stage, prompts)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
