"""Benchmark the KV cache: preallocated (in place) vs the growing ``torch.cat`` cache.

Workload: stage-1 decoding of frames 1-4 (1600 tokens, one token per pass, sequential) of
CogVideo's 5-frame layout of 20x20 tokens (16 text slots) with a ``--width``-wide model
(default 2 layers, 512 wide, 8 heads, fp32, greedy, 1 thread). Every forward pass is timed;
the table gives the median time per token over the first and the last ``--window`` generation
passes, their ratio (flat decoding: close to 1), passes/s over the whole run, and whether the two
caches produced the same tokens. The two caches run alternately, ``--repeats`` times each, in
one process; the per-pass medians are taken over all repeats.

``ConcatKVCache`` is the cache cogframe had before (``torch.cat`` of every cached key on every
pass); ``KVCache`` writes each pass's keys into buffers sized by the layout.

Usage::

    python benchmarks/kv_cache.py [--width 512] [--layers 2] [--threads 1] [--repeats 1]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time

import torch

from cogframe.core.generation.decoder import DecodeOptions, decode_frames
from cogframe.core.generation.prompts import TextPrompt
from cogframe.core.model.presets import build_model
from cogframe.core.model.transformer import ConcatKVCache, KVCache
from cogframe.plugins.token_samplers import GreedySampler

BOI = 300
TEXT_LEN, GRID, FRAMES = 16, 20, 5


def model_for(width: int, layers: int, heads: int) -> torch.nn.Module:
    """A stage-1 model of the given size on the 5 x 20 x 20 layout (released full-causal mask)."""
    tpf = GRID * GRID
    overrides = {
        "num_layers": layers, "hidden_size": width, "num_heads": heads,
        "layout": {"text_len": TEXT_LEN, "frames": FRAMES, "frame_height": GRID, "frame_width": GRID,
                   "image_position_offset": 2 * TEXT_LEN, "base_position_rows": 2 * TEXT_LEN + tpf,
                   "extra_position_rows": (FRAMES - 1) * tpf},
    }
    torch.manual_seed(0)
    return build_model("tiny_stage1", overrides=overrides).eval()


def timed_decode(model, cache_class, prompt, first) -> tuple[torch.Tensor, list[float], float]:
    """Decode frames 1-4 with ``cache_class``; the tokens, each pass's seconds, the total."""
    model.cache_class = cache_class
    times: list[float] = []
    forward = model.forward

    def timed_forward(*args, **kwargs):
        start = time.perf_counter()
        out = forward(*args, **kwargs)
        times.append(time.perf_counter() - start)
        return out

    model.forward = timed_forward  # instance attribute: nn.Module.__call__ finds it
    try:
        start = time.perf_counter()
        result = decode_frames(model, prompt, boi_id=BOI, options=DecodeOptions(GreedySampler()),
                               given_frames=(0,), generated_frames=(1, 2, 3, 4), given=first)
        total = time.perf_counter() - start
    finally:
        del model.forward
    return result.frames, times[1:], total  # times[0] is the prefix pass


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        name = platform.processor() or platform.machine()
    import os
    return f"{name}, {os.cpu_count()} logical cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--window", type=int, default=100, help="passes at each end (default 100)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = model_for(args.width, args.layers, args.heads)
    layout = model.config.layout
    g = torch.Generator().manual_seed(1)
    prompt = TextPrompt(torch.randint(256, 384, (1, layout.text_len), generator=g))
    first = torch.randint(0, 256, (1, 1, GRID, GRID), generator=g)
    caches = {"torch.cat (before)": ConcatKVCache, "preallocated (KVCache)": KVCache}
    runs: dict[str, dict] = {name: {"first": [], "last": [], "rate": [], "tokens": None} for name in caches}
    for _ in range(args.repeats):
        for name, cls in caches.items():  # alternate, so load changes hit both alike
            tokens, times, total = timed_decode(model, cls, prompt, first)
            run = runs[name]
            run["first"] += times[:args.window]
            run["last"] += times[-args.window:]
            run["rate"].append(len(times) / total)
            run["tokens"] = tokens
    reference = runs["torch.cat (before)"]["tokens"]
    print(f"torch {torch.__version__}, {machine()}, {args.threads} thread(s), fp32, greedy, batch 1; "
          f"model: {args.layers} layers, hidden {args.width}, {args.heads} heads; 16 text + 5 x 20 x 20 "
          f"slots; stage 1, frames 1-4 ({4 * layout.tokens_per_frame} passes); {args.repeats} run(s) each; "
          f"{time.strftime('%Y-%m-%d %H:%M %Z')}\n")
    print(f"| KV cache | first {args.window} passes, ms/token (median) | last {args.window} passes, "
          "ms/token (median) | last / first | passes/s (whole run) | tokens identical to torch.cat |")
    print("|---|---:|---:|---:|---:|---|")
    for name, run in runs.items():
        first_ms = 1e3 * statistics.median(run["first"])
        last_ms = 1e3 * statistics.median(run["last"])
        same = "yes" if torch.equal(run["tokens"], reference) else "NO"
        print(f"| {name} | {first_ms:.2f} | {last_ms:.2f} | {last_ms / first_ms:.2f}x | "
              f"{statistics.median(run['rate']):.0f} | {same} |")


if __name__ == "__main__":
    main()
