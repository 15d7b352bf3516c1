"""Training throughput and model FLOP utilisation (MFU) on this machine.

Usage::

    python benchmarks/train.py [--threads 2] [--steps 6] [--dtypes float32 bfloat16]
    python benchmarks/train.py --compile both --dtypes float32 --shapes "tiny recipe (4x128)" "small (4x512)" \
        [--profile]
    python benchmarks/train.py --dtypes float32 --spatial sdpa frame_blocks   # spatial-channel backends

For each model shape it times full training steps of ``core.training.loop``'s step body (forward,
backward, AdamW update), eager and/or with ``train.compile`` (``model.compile(dynamic=False)``
as the loop does; the compile time is the first step minus a steady step), and prints tokens/s
and MFU = model FLOPs per second / peak matmul
FLOPs per second, where the peak is *measured in the same run* with a large square matmul of
the same dtype. Model FLOPs per token count what the step must do, not what kernels happen to do:

* every weight matmul: 2 FLOPs per parameter forward, 2 more backward for the activation
  gradient, and 2 more for the weight gradient of *trainable* weights only (frozen inherited
  weights need no weight gradient — the reason CogVideo's stage training is cheap);
* attention: QK^T and PV, 4 * d FLOPs per visible (query, key) pair and channel forward, x3
  with backward (dense kernels compute masked pairs too; those are not counted).
"""

from __future__ import annotations

import argparse
import time

import torch

from cogframe.core.model.transformer import loss_fn
from cogframe.core.model.presets import build_model

SHAPES = {
    # name: (preset, overrides, batch)
    "tiny recipe (4x128)": ("tiny_stage1", {}, 8),
    "small (4x512)": ("tiny_stage1", {"hidden_size": 512, "num_heads": 8}, 8),
    "medium (6x768)": ("tiny_stage1", {"hidden_size": 768, "num_heads": 12, "num_layers": 6}, 4),
}


def peak_matmul_flops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best-of-N FLOP/s of an n x n x n matmul."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def model_flops_per_step(model, batch: int) -> float:
    """Model FLOPs of one training step (see module docstring)."""
    cfg = model.config
    layout = cfg.layout
    tokens = batch * layout.seq_len
    matmul = [(n, p) for n, p in model.named_parameters() if p.dim() == 2
              and "embeddings" not in n]
    total_w = sum(p.numel() for _, p in matmul)
    trainable_w = sum(p.numel() for _, p in matmul if p.requires_grad)
    head = cfg.image_vocab_size * cfg.hidden_size  # tied output head (frozen or not)
    weight_flops = tokens * (4 * (total_w + head) + 2 * (trainable_w + head * model.word_embeddings.weight.requires_grad))
    pairs = 0
    for layer in model.layers:
        masks = [layer.spatial_mask] + ([layer.temporal_mask] if layer.temporal_mask else [])
        for spec in masks:
            pairs += int(spec.dense()[0].sum())
    attention_flops = batch * pairs * 4 * cfg.hidden_size * 3
    return float(weight_flops + attention_flops)


def bench(name, preset, overrides, batch, dtype_name, steps, compiled=False, profile=False, spatial="sdpa"):
    from cogframe.plugins import get_registries

    torch.manual_seed(0)
    backend = get_registries().build("attention", {"name": spatial})
    model = build_model(preset, overrides=overrides, spatial_attention=backend)
    model.freeze_inherited()
    if compiled:
        model.compile(dynamic=False)
    layout = model.config.layout
    dtype = None if dtype_name == "float32" else getattr(torch, dtype_name)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    text = torch.randint(256, 384, (batch, layout.text_len))
    frames = torch.randint(0, 256, (batch, layout.frames, layout.frame_height, layout.frame_width))
    inp, lab = layout.build_input(text, frames, 300)
    mask = layout.loss_mask(model.config.stage)
    def one_step():
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(model(inp), lab, mask)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        one_step()
        times.append(time.perf_counter() - t)
    first, times = times[0], times[2:]  # the first steps pay for compiling, allocation, lazy init
    step = sorted(times)[len(times) // 2]
    flops = model_flops_per_step(model, batch)
    table = None
    if profile:
        from torch.profiler import profile as torch_profile

        with torch_profile() as prof:
            one_step()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    return {"shape": name, "dtype": dtype_name, "compiled": compiled, "params": model.num_parameters(),
            "trainable": model.num_parameters(True), "tokens_per_s": batch * layout.seq_len / step,
            "model_gflops_per_s": flops / step / 1e9, "step_s": step,
            "compile_s": first - step if compiled else None, "profile": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--compile", choices=("off", "on", "both"), default="off",
                        help="time eager steps, compiled steps (train.compile), or both")
    parser.add_argument("--spatial", nargs="+", default=["sdpa"],
                        help="attention backends of the spatial channel to compare (e.g. sdpa frame_blocks)")
    parser.add_argument("--profile", action="store_true",
                        help="print the top operators of one steady step of each case")
    args = parser.parse_args()
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    torch.set_num_threads(args.threads)
    peaks = {d: peak_matmul_flops(getattr(torch, d)) for d in args.dtypes}
    print(f"threads={args.threads}, torch {torch.__version__}; measured matmul peak: "
          + ", ".join(f"{d} {p / 1e9:.0f} GFLOP/s" for d, p in peaks.items()))
    print()
    print("| model (stage 1, frozen base) | spatial | dtype | compile | params | trainable | tokens/s "
          "| model GFLOP/s | MFU | compile time (s) |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    profiles = []
    for name in args.shapes:
        preset, overrides, batch = SHAPES[name]
        for d, compiled, spatial in ((d, c, sp) for d in args.dtypes for c in modes for sp in args.spatial):
            r = bench(name, preset, overrides, batch, d, args.steps, compiled, args.profile, spatial)
            mfu = r["model_gflops_per_s"] * 1e9 / peaks[d]
            compile_s = "" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
            print(f"| {name} | `{spatial}` | {d} | {'on' if compiled else 'off'} | {r['params']:,} "
                  f"| {r['trainable']:,} | {r['tokens_per_s']:,.0f} | {r['model_gflops_per_s']:.1f} "
                  f"| {mfu:.0%} | {compile_s} |", flush=True)
            if r["profile"]:
                profiles.append((f"{name}, {spatial}, {d}, compile {'on' if compiled else 'off'}", r["profile"]))
    for title, table in profiles:
        print(f"\nprofile of one steady step: {title}\n{table}")


if __name__ == "__main__":
    main()
