"""Where stage 2 puts the in-between object, round by round (a diagnosis of the 33-frame motion).

Stage 2 fills each frame between two neighbours; on a moving_shapes clip the true in-between
object sits halfway along the caption's axis (up to the pixel grid: positions are whole pixels).
This script gives the shipped stage 2 the key frames of ``--n`` validation clips (33 frames spread
evenly over each clip, through the shipped tokenizer; frames 0, 8, ..., 32 are the key frames),
runs the three rounds greedily as ``tiny/sample`` does, and for every generated frame measures its
**placement**: the object's centroid along the axis as a fraction of the way from the earlier
neighbour it was made from to the later one (0: on the earlier, 1: on the later, 0.5: halfway),
for the generated clip and for the real clip through the tokenizer. Per round it prints the share
of frames that copy a neighbour's position (placement within 0.1 of 0 or 1), the share outside the
neighbours (below -0.1 or above 1.1: these make backward steps), the quartiles, and the mean
absolute error of the centroid against the real clip's, in pixels. Frames whose neighbours are
less than 0.5 px apart have no defined placement and are skipped. Needs the shipped assets.

Usage::

    python benchmarks/stage2_placement.py [--n 64] [--seed 7] [--threads 2]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

FRAMES, KEY_STEP = 33, 8
ROUND_OF = {t: (1 if t % 8 == 4 else 2 if t % 4 == 2 else 3) for t in range(1, FRAMES - 1) if t % KEY_STEP}
HALF_GAP = {1: 4, 2: 2, 3: 1}  # frames from a round-r frame to the neighbours it was made from


def _along_axis(frames: np.ndarray, direction: str) -> np.ndarray | None:
    """Centroid along the caption's axis (positive = the caption's way) of each frame, None if one is empty.

    The object and its centroid as ``cogframe eval``'s motion metrics find them (core/metrics/motion.py).
    """
    from cogframe.core.metrics.motion import AXES, _centroids

    path = _centroids(frames.max(-1) >= 100)
    if path is None:
        return None
    axis, sign = AXES[direction]
    return sign * path[:, axis]


def _placements(along: np.ndarray) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {1: [], 2: [], 3: []}
    for t, r in ROUND_OF.items():
        lo, hi = along[t - HALF_GAP[r]], along[t + HALF_GAP[r]]
        if abs(hi - lo) > 0.5:
            out[r].append(float((along[t] - lo) / (hi - lo)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="validation clips (default 64)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the validation clips (default 7)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from cogframe.config.recipes import asset_path
    from cogframe.core.generation.decoder import DecodeOptions
    from cogframe.core.generation.generate import interpolate
    from cogframe.core.generation.prompts import encode_prompts
    from cogframe.core.model.presets import build_model
    from cogframe.core.training.checkpoint import load_model_weights
    from cogframe.plugins.dataset_moving_shapes import MovingShapes
    from cogframe.plugins.token_samplers import GreedySampler
    from cogframe.plugins.tokenizer_sentencepiece import SentencePieceTokenizer
    from cogframe.plugins.vqvae import VQVAE

    model = build_model("tiny_stage2")
    load_model_weights(model, asset_path("tiny/stage2.safetensors"))
    model.eval()
    vqvae = VQVAE.load(asset_path("tiny/vqvae")).eval()
    tokenizer = SentencePieceTokenizer(str(asset_path("tiny/text_tokenizer.model")), id_offset=256)
    text_len = model.config.layout.text_len
    clips = MovingShapes(num_clips=args.n, size=32, split="val", seed=args.seed, min_seconds=4.125, max_seconds=8.0)

    def pixels(tokens: torch.Tensor) -> np.ndarray:
        out = vqvae.decode(tokens.reshape(-1, *tokens.shape[-2:])).permute(0, 2, 3, 1).numpy()
        return (out * 255).round().astype(np.uint8).reshape(*tokens.shape[:2], *out.shape[1:])

    gen: dict[int, list[float]] = {1: [], 2: [], 3: []}
    real: dict[int, list[float]] = {1: [], 2: [], 3: []}
    error: dict[int, list[float]] = {1: [], 2: [], 3: []}
    for start in range(0, args.n, 16):
        batch = [clips[i] for i in range(start, min(args.n, start + 16))]
        frames = np.stack([c.frames[np.linspace(0, len(c.frames) - 1, FRAMES).round().astype(int)] for c in batch])
        tokens = vqvae.encode(torch.from_numpy(frames.reshape(-1, *frames.shape[2:])).permute(0, 3, 1, 2))
        tokens = tokens.reshape(len(batch), FRAMES, *tokens.shape[1:])
        filled = interpolate(model, tokens[:, ::KEY_STEP],
                             [encode_prompts(tokenizer, [c.caption for c in batch], text_len, p)
                              for p in ("2.0s", "1.0s", "0.5s")],
                             boi_id=tokenizer.boi_id, options=DecodeOptions(GreedySampler(), parallel=True)).frames
        for clip, g, r in zip(batch, pixels(filled), pixels(tokens)):
            ga, ra = _along_axis(g, clip.metadata["direction"]), _along_axis(r, clip.metadata["direction"])
            if ga is None or ra is None:
                continue
            for k, v in _placements(ga).items():
                gen[k] += v
            for k, v in _placements(ra).items():
                real[k] += v
            for t, k in ROUND_OF.items():
                error[k].append(abs(float(ga[t] - ra[t])))

    def share(x, rule):
        return f"{100 * float(rule(np.asarray(x)).mean()):.1f} %" if x else "n/a"

    def copies(x):
        return (np.abs(x) < 0.1) | (np.abs(x - 1) < 0.1)

    def outside(x):
        return (x < -0.1) | (x > 1.1)

    print(f"torch {torch.__version__}, {args.threads} thread(s); {args.n} validation clips (seed {args.seed}), greedy stage 2\n")
    print("| round | frames | generated: copy a neighbour | generated: outside the neighbours | generated: placement "
          "quartiles | real: copy | real: outside | real: quartiles | centroid error vs real (px) |")
    print("|---:|---:|---:|---:|---|---:|---:|---|---:|")
    for k in (1, 2, 3):
        q = lambda x: ", ".join(f"{v:.2f}" for v in np.percentile(x, [25, 50, 75])) if x else "n/a"
        print(f"| {k} | {len(gen[k])} | {share(gen[k], copies)} | {share(gen[k], outside)} | {q(gen[k])} | "
              f"{share(real[k], copies)} | {share(real[k], outside)} | {q(real[k])} | {np.mean(error[k]):.2f} |")


if __name__ == "__main__":
    main()
