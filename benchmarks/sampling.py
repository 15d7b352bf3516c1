"""Benchmark sampling: KV cache vs full recompute, parallel waves vs sequential decoding.

Workload: CogVideo's 5-frame layout of 20x20 tokens (16 text slots) with a small-width model
(2 layers, hidden 64, 4 heads, fp32, greedy decoding, 1 thread by default), so the numbers
measure the decoding algorithms rather than the 9B model's matmuls.

(a) **KV cache vs full recompute** for stage-1 frames 1-4 (1600 generated tokens after the text
    and the given frame 0). The cached decoder runs in full; full recompute (one forward over
    the whole prefix per generated token) is timed on ``--recompute-samples`` evenly spaced
    steps and its total is extrapolated from their mean (the cost grows with the prefix, so
    evenly spaced steps estimate the mean per-token time).
(b) **Parallel waves vs sequential** for stage 1 with windowed temporal attention (windows 10
    and 5, shift window/2) and stage 2 (the interpolation masks with the same windows): forward
    passes and wall time of each decoder, and whether their tokens are identical.
(c) The mask-only wave schedules of the 48-layer 9B presets (no model is built).
(d) **Where "the same tokens" holds**: waves vs sequential for a batch of 8 prompts (stage 1,
    10x10 windows, greedy) in float32 and bfloat16. Waves feed many queries per pass, so
    matmuls are blocked differently; in fp32/fp64 the logits then differ by ~1e-7 and greedy
    tokens agree, in bf16 (8 mantissa bits) an argmax can flip and the rest of a sample follows.
    Reports, per dtype, how many samples differ and by how many tokens.
(e) ``--only e``: **the demo's stage timings** on the shipped tiny models, median of
    ``--demo-runs`` fresh ``cogframe demo`` processes, optionally side by side with an older
    checkout (``--base-src /tmp/kv_base/src``); not in the default set (it runs the full demo).
(f) ``--only f``: **compiled decoding** (``DecodeOptions.compile``, the sample recipe's ``compile``)
    vs eager on ``tiny_stage1``-shaped models 4x128 and 4x512: passes/s, cold compile time (not in the
    default set).
(g) ``--only g``: **speculative key frames** (``core/generation/speculative.py``) vs plain decoding
    on the shipped tiny stage 1 (fp32): key frames 1-4 after a top-k frame 0, batches of 1, 4 and
    16 prompts, passes and seconds (median of ``--spec-runs``), and whether the tokens are identical
    (not in the default set: it needs the shipped assets).

(h) ``--only h``: **speculative in-between frames** vs parallel waves on the shipped tiny stage 2
    (fp32, greedy): three rounds (5 -> 33 frames) from the key frames of validation clips through
    the shipped tokenizer, captions with their duration prefixes, 1, 2 and 4 prompts; passes and
    seconds (median of ``--spec-runs``) and whether the frames are identical (not in the default
    set: it needs the shipped assets).

Usage::

    python benchmarks/sampling.py [--threads 1] [--recompute-samples 8] [--only a b c d]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from cogframe.core.generation.decoder import DecodeOptions, decode_frames, plan_schedule
from cogframe.core.model.presets import PRESETS, build_model, model_config
from cogframe.core.generation.prompts import TextPrompt
from cogframe.core.generation.waves import config_layer_masks, wave_schedule
from cogframe.plugins.token_samplers import GreedySampler

BOI = 300
TEXT_LEN, GRID, FRAMES = 16, 20, 5


def small_model(stage: str, window: int | None) -> torch.nn.Module:
    """A 2-layer, hidden-64 model on the 5 x 20 x 20 layout."""
    tpf = GRID * GRID
    overrides = {
        "num_layers": 2, "hidden_size": 64, "num_heads": 4,
        "layout": {"text_len": TEXT_LEN, "frames": FRAMES, "frame_height": GRID, "frame_width": GRID,
                   "image_position_offset": 2 * TEXT_LEN, "base_position_rows": 2 * TEXT_LEN + tpf,
                   "extra_position_rows": (FRAMES - 1) * tpf},
        "temporal": {"window": None if window is None else [window, window],
                     "shift": None if window is None else [window // 2, window // 2]},
    }
    torch.manual_seed(0)
    return build_model(f"tiny_{stage}", overrides=overrides).eval()


def prompt_for(model, batch: int = 1) -> TextPrompt:
    g = torch.Generator().manual_seed(1)
    return TextPrompt(torch.randint(256, 384, (batch, model.config.layout.text_len), generator=g))


def frames_for(model, count: int, batch: int = 1) -> torch.Tensor:
    layout = model.config.layout
    g = torch.Generator().manual_seed(2)
    return torch.randint(0, 256, (batch, count, layout.frame_height, layout.frame_width), generator=g)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def kv_cache_vs_recompute(samples: int) -> list[str]:
    """Section (a)."""
    model = small_model("stage1", None)
    layout = model.config.layout
    prompt, first = prompt_for(model), frames_for(model, 1)
    options = DecodeOptions(GreedySampler())
    result, cached_s = timed(lambda: decode_frames(model, prompt, boi_id=BOI, options=options,
                                                   given_frames=(0,), generated_frames=(1, 2, 3, 4),
                                                   given=first))
    generated = 4 * layout.tokens_per_frame
    inputs, _ = layout.build_input(prompt.ids, result.frames, boi_id=BOI)
    start = layout.frame_range(1).start
    steps = torch.linspace(start, layout.seq_len - 1, samples).round().long().tolist()
    times = []
    with torch.no_grad():
        for step in steps:  # full recompute of step s: one forward over slots 0..s
            _, seconds = timed(lambda: model(inputs[:, :step + 1], text_valid=prompt.valid))
            times.append(seconds)
    per_token_full = sum(times) / len(times)
    per_token_cached = cached_s / generated
    return [
        "| decoder | generated tokens | time per token (ms) | total (s) |",
        "|---|---:|---:|---:|",
        f"| KV cache (measured, all steps) | {generated} | {1e3 * per_token_cached:.2f} | {cached_s:.1f} |",
        f"| full recompute (mean of {samples} evenly spaced steps, total extrapolated) | {generated} | "
        f"{1e3 * per_token_full:.2f} | {per_token_full * generated:.1f} |",
        f"| full recompute, last step alone (prefix {layout.seq_len} slots) | 1 | {1e3 * times[-1]:.2f} | |",
        "",
        f"Speed-up of the KV cache: **{per_token_full / per_token_cached:.1f}x** per generated token "
        f"({times[-1] / per_token_cached:.1f}x at the last step).",
    ]


def waves_vs_sequential() -> list[str]:
    """Section (b)."""
    lines = [
        "| stage | window | generated tokens | sequential passes | wave passes | fewer passes | "
        "sequential (s) | waves (s) | wall-time speed-up | tokens identical |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    cases = [("stage1", (0,), (1, 2, 3, 4)), ("stage2", (0, 2, 4), (1, 3))]
    for window in (10, 5):
        for stage, given_frames, generated in cases:
            model = small_model(stage, window)
            prompt, given = prompt_for(model), frames_for(model, len(given_frames))
            runs = {}
            for parallel in (False, True):
                # Compute (and memoise) the schedule outside the timing.
                plan_schedule(model, given_frames, generated, parallel=parallel)
                options = DecodeOptions(GreedySampler(), parallel=parallel)
                runs[parallel] = timed(lambda: decode_frames(
                    model, prompt, boi_id=BOI, options=options, given_frames=given_frames,
                    generated_frames=generated, given=given))
            (seq, seq_s), (par, par_s) = runs[False], runs[True]
            tokens = len(generated) * model.config.layout.tokens_per_frame
            lines.append(
                f"| {stage} | {window}x{window} | {tokens} | {seq.passes - 1} | {par.passes - 1} | "
                f"{(seq.passes - 1) / (par.passes - 1):.3f}x | {seq_s:.1f} | {par_s:.1f} | "
                f"{seq_s / par_s:.2f}x | "
                f"{'yes' if torch.equal(seq.frames, par.frames) else 'NO'} |"
            )
    return lines


def nine_b_schedules() -> list[str]:
    """Section (c)."""
    lines = [
        "| 9B preset (48 layers) | temporal window | generated tokens | wave passes | fewer passes | "
        "schedule time (s) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    cases = [
        ("cogvideo_9b_stage1", None, (0,), (1, 2, 3, 4)),
        ("cogvideo_9b_stage1", 10, (0,), (1, 2, 3, 4)),
        ("cogvideo_9b_stage1", 5, (0,), (1, 2, 3, 4)),
        ("cogvideo_9b_stage2", 10, (0, 2, 4), (1, 3)),
        ("cogvideo_9b_stage2", 5, (0, 2, 4), (1, 3)),
    ]
    for preset, window, given_frames, generated in cases:
        overrides = {} if window is None else {"temporal": {"window": [window, window]}}
        if window is not None and "shift" in PRESETS[preset].get("temporal", {}):
            overrides["temporal"]["shift"] = [window // 2, window // 2]
        config = model_config(preset, overrides)
        schedule, seconds = timed(lambda: wave_schedule(
            config.layout, config_layer_masks(config), given_frames=given_frames,
            generated_frames=generated))
        tokens = schedule.generated_tokens
        label = "full causal (released)" if window is None else f"{window}x{window}, shift {window // 2}"
        lines.append(f"| {preset} | {label} | {tokens} | {schedule.generation_passes} | "
                     f"{tokens / schedule.generation_passes:.3f}x | {seconds:.2f} |")
    return lines


def waves_by_dtype(samples: int = 8) -> list[str]:
    """Section (d)."""
    lines = [
        "| dtype | samples | samples whose tokens differ (waves vs sequential) | differing tokens per differing sample (min-max, of 1600) |",
        "|---|---:|---:|---|",
    ]
    for dtype in (torch.float32, torch.bfloat16):
        model = small_model("stage1", 10).to(dtype)
        prompt, first = prompt_for(model, samples), frames_for(model, 1, samples)
        runs = [decode_frames(model, prompt, boi_id=BOI, options=DecodeOptions(GreedySampler(), parallel=p),
                              given_frames=(0,), generated_frames=(1, 2, 3, 4), given=first).frames
                for p in (False, True)]
        diff = (runs[0] != runs[1]).flatten(1).sum(1)
        bad = diff[diff > 0].tolist()
        spread = f"{min(bad)}-{max(bad)}" if bad else "-"
        lines.append(f"| {str(dtype).removeprefix('torch.')} | {samples} | {len(bad)} | {spread} |")
    return lines


def demo_side_by_side(runs: int, base_src: str | None) -> list[str]:
    """Section (e): ``cogframe demo`` on the shipped models, this tree and (optionally) another.

    Each run is a fresh ``python -m cogframe demo`` process (its own output folder; ``--no-sr`` for
    this tree, whose demo super-resolves by default, so every tree runs the same stages); the stage
    timings come from the written ``.json`` (``timings_s``), user+system CPU seconds of the
    process from ``getrusage``. The trees alternate run by run, so load changes hit both alike.
    ``base_src`` is the ``src`` folder of an older checkout (e.g. ``git worktree add /tmp/kv_base
    d6ef43d``), put first on ``PYTHONPATH``; its stage keys ``stage1``/``stage2`` are the key
    frames and the interpolation.
    """
    import json
    import os
    import resource
    import statistics
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    trees = {"this tree": None}
    if base_src:
        trees[f"base ({base_src})"] = base_src
    rows: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    for _ in range(runs):
        for name, src in trees.items():
            env = dict(os.environ)
            if src:
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
            with tempfile.TemporaryDirectory() as out:
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                start = time.perf_counter()
                # This tree's demo super-resolves by default; the older trees' demos did not, so
                # the stage is left out here to time the same pipeline.
                extra = ["--no-sr"] if src is None else []
                subprocess.run([sys.executable, "-m", "cogframe", "demo", "--out", out, *extra], env=env,
                               check=True, capture_output=True, cwd=tempfile.gettempdir())
                wall = time.perf_counter() - start
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                timings = json.loads(next(Path(out).glob("*.json")).read_text())["timings_s"]
            key_frames = timings.get("key_frames", timings.get("stage1"))
            interpolation = timings.get("interpolation", timings.get("stage2"))
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            for label, value in (("key frames", key_frames), ("interpolation", interpolation),
                                 ("generate", key_frames + interpolation), ("process wall", wall),
                                 ("process cpu", cpu)):
                rows[name].setdefault(label, []).append(value)
    lines = ["| tree | key frames (s) | interpolation (s) | generation (s) | whole process, wall (s) | "
             "whole process, CPU (s) |", "|---|---:|---:|---:|---:|---:|"]
    med = {name: {k: statistics.median(v) for k, v in cols.items()} for name, cols in rows.items()}
    for name, m in med.items():
        lines.append(f"| {name} | {m['key frames']:.2f} | {m['interpolation']:.2f} | {m['generate']:.2f} | "
                     f"{m['process wall']:.2f} | {m['process cpu']:.2f} |")
    if base_src:
        base, new = med[f"base ({base_src})"], med["this tree"]
        lines += ["", f"Generation speed-up over the base: **{base['generate'] / new['generate']:.2f}x** "
                      f"(medians of {runs} runs each, alternating, one process per run)."]
    return lines


COMPILE_SHAPES = {  # name: overrides of the tiny_stage1 preset (its own 16 + 5 x 8 x 8 layout)
    "tiny recipe (4x128)": {},
    "small (4x512)": {"hidden_size": 512, "num_heads": 8},
}


def compiled_decoding(runs: int) -> list[str]:
    """Section (f): ``DecodeOptions.compile`` (the sample recipe's ``compile``) vs eager.

    Stage-1 key frames 1-4 of a ``tiny_stage1``-shaped model (randomly initialised, greedy,
    parallel waves as the demo decodes), in one process: ``runs`` eager runs, then the first
    compiled run (compile time = its time minus the median eager run; inductor's on-disk cache
    is cleared before, so it is a cold compile) and ``runs`` more compiled runs. passes/s are
    medians over runs.
    """
    import shutil
    import statistics
    import tempfile

    lines = [
        "| model | eager passes/s | compiled passes/s | compiled / eager | compile time, cold (s) | "
        "tokens identical | max logit difference |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    cache_dir = tempfile.mkdtemp(prefix="cogframe_inductor_")
    import os

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir  # a cold compile, not one cached by a past run
    try:
        for name, overrides in COMPILE_SHAPES.items():
            torch.manual_seed(0)
            model = build_model("tiny_stage1", overrides=overrides).eval()
            layout = model.config.layout
            g = torch.Generator().manual_seed(1)
            prompt = TextPrompt(torch.randint(256, 384, (1, layout.text_len), generator=g))
            first = torch.randint(0, 256, (1, 1, layout.frame_height, layout.frame_width), generator=g)
            plan_schedule(model, (0,), (1, 2, 3, 4), parallel=True)

            def run(compiled):
                return timed(lambda: decode_frames(
                    model, prompt, boi_id=BOI, given_frames=(0,), generated_frames=(1, 2, 3, 4), given=first,
                    options=DecodeOptions(GreedySampler(), parallel=True, compile=compiled), return_logits=True))

            eager = [run(False) for _ in range(runs)]
            cold = run(True)
            warm = [run(True) for _ in range(runs)]
            passes = eager[0][0].passes - 1
            eager_s = statistics.median(t for _, t in eager)
            warm_s = statistics.median(t for _, t in warm)
            same = torch.equal(eager[0][0].frames, warm[0][0].frames)
            diff = float((eager[0][0].logits - warm[0][0].logits).abs().max())
            lines.append(f"| {name} | {passes / eager_s:.0f} | {passes / warm_s:.0f} | {eager_s / warm_s:.2f}x | "
                         f"{cold[1] - eager_s:.1f} | {'yes' if same else 'NO'} | {diff:.1e} |")
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return lines


def speculative_key_frames(runs: int) -> list[str]:
    """Section (g): speculative vs plain key frames 1-4 on the shipped stage 1, by batch size."""
    import statistics

    from cogframe.config.recipes import asset_path
    from cogframe.core.generation.decoder import DecodeOptions, decode_frames
    from cogframe.core.generation.prompts import TextPrompt
    from cogframe.core.generation.speculative import decode_frames_speculative, draft_length
    from cogframe.core.model.presets import build_model
    from cogframe.core.training.checkpoint import load_model_weights
    from cogframe.plugins.token_samplers import GreedySampler, TopKSampler

    model = build_model("tiny_stage1", overrides={"temporal": {"window": None, "shift": None}})
    load_model_weights(model, asset_path("tiny/stage1.safetensors"))
    model.eval()
    layout = model.config.layout
    lines = ["| prompts | slots drafted a pass | plain: passes | plain (s) | speculative: passes | speculative (s) | "
             "speed-up | same tokens |", "|---:|---:|---:|---:|---:|---:|---:|---|"]
    for batch in (1, 4, 16):
        g = torch.Generator().manual_seed(batch)
        prompt = TextPrompt(torch.randint(256, 384, (batch, layout.text_len), generator=g),
                            torch.ones(batch, layout.text_len, dtype=torch.bool))
        first = decode_frames(model, prompt, boi_id=BOI, options=DecodeOptions(TopKSampler(k=10), seed=batch),
                              generated_frames=(0,)).frames[:, :1]
        frames = dict(given_frames=(0,), generated_frames=tuple(range(1, layout.frames)), given=first)
        options = DecodeOptions(GreedySampler())
        k = max(2, draft_length(batch))  # batch 16 drafts 1 slot in the stage; force 2 here to show why
        times = {"plain": [], "spec": []}
        for _ in range(runs):  # alternating
            t = time.perf_counter()
            plain = decode_frames(model, prompt, boi_id=BOI, options=options, **frames)
            times["plain"].append(time.perf_counter() - t)
            t = time.perf_counter()
            spec = decode_frames_speculative(model, prompt, boi_id=BOI, options=options, max_draft=k, **frames)
            times["spec"].append(time.perf_counter() - t)
        a, b = statistics.median(times["plain"]), statistics.median(times["spec"])
        lines.append(f"| {batch} | {k} | {plain.passes} | {a:.3f} | {spec.passes} | {b:.3f} | {a / b:.2f}x | "
                     f"{torch.equal(plain.frames, spec.frames)} |")
    return lines


def speculative_in_between_frames(runs: int) -> list[str]:
    """Section (h): speculative vs parallel-wave stage 2 on the shipped models, three rounds, by batch."""
    import statistics

    from cogframe.config.recipes import asset_path
    from cogframe.core.generation.generate import interpolate
    from cogframe.core.generation.prompts import encode_prompts
    from cogframe.core.generation.speculative import draft_length
    from cogframe.core.training.checkpoint import load_model_weights
    from cogframe.plugins.dataset_moving_shapes import MovingShapes
    from cogframe.plugins.tokenizer_sentencepiece import SentencePieceTokenizer
    from cogframe.plugins.vqvae import VQVAE

    model = build_model("tiny_stage2")
    load_model_weights(model, asset_path("tiny/stage2.safetensors"))
    model.eval()
    text_len = model.config.layout.text_len
    vqvae = VQVAE.load(asset_path("tiny/vqvae")).eval()
    tokenizer = SentencePieceTokenizer(str(asset_path("tiny/text_tokenizer.model")), id_offset=256)
    # Clips of 33 frames at 8 fps (4.125 s of whole frames): frames 0, 8, ..., 32 are key frames at 1 fps.
    clips = MovingShapes(num_clips=4, size=32, split="val", min_seconds=4.125, max_seconds=4.125)

    lines = ["| prompts | slots drafted a pass (rounds 1-3) | waves: passes | waves (s) | speculative: passes | "
             "speculative (s) | speed-up | same frames |", "|---:|---|---:|---:|---:|---:|---:|---|"]
    for batch in (1, 2, 4):
        picked = [clips[i] for i in range(batch)]
        pixels = torch.stack([torch.from_numpy(c.frames[0:33:8]) for c in picked])  # [B, 5, H, W, 3]
        key = vqvae.encode(pixels.flatten(0, 1).permute(0, 3, 1, 2)).reshape(batch, 5, *vqvae.grid_size(32, 32))
        prompts = [encode_prompts(tokenizer, [c.caption for c in picked], text_len, p) for p in ("2.0s", "1.0s", "0.5s")]
        drafts = ", ".join(str(draft_length(batch * (2 << r))) for r in range(3))
        times = {False: [], True: []}
        out = {}
        for _ in range(runs):  # alternating
            for spec in (False, True):
                options = DecodeOptions(GreedySampler(), parallel=True, speculative=spec)
                t = time.perf_counter()
                out[spec] = interpolate(model, key, prompts, boi_id=tokenizer.boi_id, options=options)
                times[spec].append(time.perf_counter() - t)
        a, b = statistics.median(times[False]), statistics.median(times[True])
        lines.append(f"| {batch} | {drafts} | {out[False].passes} | {a:.3f} | {out[True].passes} | {b:.3f} | "
                     f"{a / b:.2f}x | {torch.equal(out[False].frames, out[True].frames)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--recompute-samples", type=int, default=8,
                        help="full-recompute steps to time (default 8)")
    parser.add_argument("--only", nargs="+", choices=("a", "b", "c", "d", "e", "f", "g", "h"), default=("a", "b", "c", "d"),
                        help="sections to run (default: all)")
    parser.add_argument("--demo-runs", type=int, default=5, help="section e: demo runs per tree (default 5)")
    parser.add_argument("--compile-runs", type=int, default=3, help="section f: timed runs per mode (default 3)")
    parser.add_argument("--spec-runs", type=int, default=5, help="sections g, h: timed runs per decoder (default 5)")
    parser.add_argument("--base-src", default=None,
                        help="section e: src/ of an older checkout to time side by side (default: none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {cpu}, {args.threads} thread(s), "
          "fp32, greedy, batch 1; model: 2 layers, hidden 64, 4 heads, 16 text slots + 5 x 20 x 20 frames.\n")
    sections = {
        "a": ("(a) KV cache vs full recompute (stage 1, frames 1-4, full causal temporal channel)",
              lambda: kv_cache_vs_recompute(args.recompute_samples)),
        "b": ("(b) Parallel waves vs sequential decoding (passes after the prefix pass)", waves_vs_sequential),
        "c": ("(c) Wave schedules of the 9B layouts (mask-only)", nine_b_schedules),
        "d": ("(d) Same tokens? Waves vs sequential by dtype (stage 1, 10x10 windows, greedy, batch 8)",
              waves_by_dtype),
        "e": ("(e) `cogframe demo` on the shipped models, stage timings (median of runs)",
              lambda: demo_side_by_side(args.demo_runs, args.base_src)),
        "f": ("(f) Compiled decoding (`compile: true`, torch.compile of the decode step) vs eager",
              lambda: compiled_decoding(args.compile_runs)),
        "g": ("(g) Speculative key frames vs plain decoding (shipped tiny stage 1, frames 1-4, greedy)",
              lambda: speculative_key_frames(args.spec_runs)),
        "h": ("(h) Speculative in-between frames vs parallel waves (shipped tiny stage 2, 3 rounds, greedy)",
              lambda: speculative_in_between_frames(args.spec_runs)),
    }
    for key in args.only:
        title, run = sections[key]
        print(f"### {title}\n")
        print("\n".join(run()) + "\n")


if __name__ == "__main__":
    main()
