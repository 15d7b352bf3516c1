"""Benchmark the attention backends on the temporal channel of CogVideo's interpolation model.

Workload (the released stage-2 model): ``frames`` frames of 20x20 tokens after 64 text slots (16 of them left
padding), the stage-2 interpolation temporal mask with 10x10 windows on an odd layer (shift 5),
B=1, H=2 heads of dim 64, fp32. Queries are the frame rows and keys every slot, which is how the
model calls its temporal channel. H=2 keeps the dense 33-frame case inside ~8 GB: the naive
backend holds a few ``[H, S, S]`` fp32 score-sized tensors (13,264^2 x 4 B = 0.7 GB per head each).

Each (backend, frames, pass) runs in its own subprocess so that its peak memory can be measured
honestly on CPU: the peak resident set size (``ru_maxrss``) of the process minus the resident set
size just before the first call (inputs allocated, imports done). That delta covers everything the
call allocates (mask, scores, saved activations, gradients) and nothing of other cases. Times are
the median of ``--repeats`` calls after one warm-up call, so backends that cache their mask
(swin3d's window plans, flex's block mask) are timed warm; list ``swin3d:cache_size=0`` to time a
rebuild on every call. "forward" runs under ``torch.no_grad()``; "fwd+bwd" calls ``backward``
with a fixed upstream gradient.

Usage::

    python benchmarks/attention.py --frames 5 9 17 33 --repeats 3 \\
        --backends naive sdpa swin3d swin3d:cache_size=0 flex

Super-resolution workload (``--workload sr``): the high-res rows of one layer of CogView2's direct
super-resolution model, 20x20 low-res -> 60x60 high-res tokens, the release's windows (9x5
high-res, 5x5 low-res, masked borders), B=1, H=4 heads of dim 64 (width 256), fp32: queries are
the 3600 high-res rows and keys the 400 low-res + 3600 high-res rows, as the model calls its plus
channel. Dense ``sdpa`` with the dense mask against the sparse ``sr_local_window`` backend::

    python benchmarks/attention.py --workload sr --backends sdpa sr_local_window --repeats 3

Spatial-channel workload (``--workload spatial``): the base (CogView2) channel of the released
stage-1 model in a training forward, ``frames`` frames of 20x20 tokens after 64 text slots (16 of
them padding), the own-frame causal mask, queries = keys = every slot, B=1, H=2 heads of dim 64.
Dense ``sdpa`` against ``frame_blocks`` (each frame's queries against the text and its own frame)::

    python benchmarks/attention.py --workload spatial --frames 5 9 --backends sdpa frame_blocks
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

TEXT_LEN, TEXT_PAD, GRID, WINDOW, HEADS, HEAD_DIM = 64, 16, 20, 10, 2, 64
SR_TEXT, SR_LOW, SR_SCALE, SR_HIGH_WINDOW, SR_LOW_WINDOW, SR_HEADS = 96, 20, 3, (9, 5), (5, 5), 4


def parse_backend(text: str) -> tuple[str, dict]:
    """``name[:key=value,...]`` -> ``(name, kwargs)``."""
    name, _, options = text.partition(":")
    kwargs = {}
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    return name, kwargs


def sr_inputs(torch):
    """The super-resolution workload: mask, slots and the plus channel's q/k/v shapes."""
    from cogframe.core.model.sr_layout import SuperResolutionLayout
    from cogframe.core.model.sr_masks import LocalWindows, SuperResolutionMask

    layout = SuperResolutionLayout(SR_TEXT, SR_LOW, SR_LOW, SR_SCALE, 512, 1024, 1)
    mask = SuperResolutionMask(layout, LocalWindows(high=SR_HIGH_WINDOW, low=SR_LOW_WINDOW))
    q_slots = torch.arange(layout.high_start, layout.seq_len)
    k_slots = torch.arange(layout.low_start, layout.seq_len)
    return layout, mask, q_slots, k_slots, None, SR_HEADS


def interpolation_inputs(torch, frames: int):
    """The stage-2 temporal-channel workload."""
    from cogframe.core.model.layout import Stage, TokenLayout
    from cogframe.core.model.masks import TemporalConfig, temporal_mask

    tpf = GRID * GRID
    layout = TokenLayout(TEXT_LEN, frames, GRID, GRID, TEXT_LEN, TEXT_LEN + tpf, (frames - 1) * tpf)
    mask = temporal_mask(layout, Stage.INTERPOLATION, layer=1,
                         config=TemporalConfig(window=(WINDOW, WINDOW)))
    k_slots = layout.all_slots()
    q_slots = k_slots[layout.text_len:]
    text_valid = (torch.arange(TEXT_LEN) >= TEXT_PAD).unsqueeze(0)
    return layout, mask, q_slots, k_slots, text_valid, HEADS


def spatial_inputs(torch, frames: int):
    """The spatial-channel workload of a stage-1 training forward."""
    from cogframe.core.model.layout import Stage, TokenLayout
    from cogframe.core.model.masks import spatial_mask

    tpf = GRID * GRID
    layout = TokenLayout(TEXT_LEN, frames, GRID, GRID, TEXT_LEN, TEXT_LEN + tpf, (frames - 1) * tpf)
    slots = layout.all_slots()
    text_valid = (torch.arange(TEXT_LEN) >= TEXT_PAD).unsqueeze(0)
    return layout, spatial_mask(layout, Stage.SEQUENTIAL), slots, slots, text_valid, HEADS


def run_case(backend_text: str, frames: int, mode: str, repeats: int, threads: int,
             workload: str = "interpolation") -> dict:
    """Time and measure one case in this process (called in the child)."""
    import torch

    from cogframe.plugins import get_registries

    torch.set_num_threads(threads)
    name, kwargs = parse_backend(backend_text)
    backend = get_registries().build("attention", {"name": name, **kwargs})
    if workload == "sr":
        layout, mask, q_slots, k_slots, text_valid, heads = sr_inputs(torch)
    elif workload == "spatial":
        layout, mask, q_slots, k_slots, text_valid, heads = spatial_inputs(torch, frames)
    else:
        layout, mask, q_slots, k_slots, text_valid, heads = interpolation_inputs(torch, frames)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, heads, q_slots.numel(), HEAD_DIM, generator=gen)
    k = torch.randn(1, heads, k_slots.numel(), HEAD_DIM, generator=gen)
    v = torch.randn(1, heads, k_slots.numel(), HEAD_DIM, generator=gen)
    grad = torch.randn(1, heads, q_slots.numel(), HEAD_DIM, generator=gen)
    backward = mode == "fwd+bwd"
    for t in (q, k, v):
        t.requires_grad_(backward)

    def call() -> None:
        if backward:
            out = backend(q, k, v, mask, q_slots, k_slots, text_valid)
            out.backward(grad)
            for t in (q, k, v):
                t.grad = None
        else:
            with torch.no_grad():
                backend(q, k, v, mask, q_slots, k_slots, text_valid)

    _prime(torch)
    rss_before = _current_rss_kb()
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        call()
        if i:  # the first call is the warm-up
            times.append(time.perf_counter() - start)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": statistics.median(times), "peak_mb": max(peak_kb - rss_before, 0) / 1024,
            "seq_len": layout.seq_len}


def _prime(torch) -> None:
    """One tiny attention forward+backward, so that one-time process costs (autograd engine
    threads, kernel dispatch tables) land before the baseline and are charged to no backend."""
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    torch.nn.functional.scaled_dot_product_attention(x, x, x, attn_mask=torch.zeros(8, 8)).sum().backward()


def _current_rss_kb() -> int:
    """Resident set size now, from /proc (ru_maxrss is only the high-water mark)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status: this benchmark needs Linux")


def spawn(backend: str, frames: int, mode: str, args: argparse.Namespace) -> dict:
    """Run one case in a fresh interpreter; returns its result or an ``error``."""
    threads, timeout = args.threads, args.timeout
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--_case", backend, str(frames), mode, str(args.repeats),
           str(threads), str(args.memory_limit_gb), args.workload]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout > {timeout:.0f} s"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        if proc.returncode < 0:
            last = f"killed by signal {-proc.returncode} (out of memory?)"
        return {"error": last[:120]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ratio(reference: dict | None, result: dict, key: str) -> str:
    if not reference or "error" in reference or "error" in result or not result[key]:
        return "-"
    return f"{reference[key] / result[key]:.2f}x"


def table(results: dict, backends: list[str], frames: list[int], sr: bool = False) -> str:
    """Markdown table; ratios are sdpa / backend (above 1: better than dense sdpa)."""
    first = "case" if sr else "frames"
    head = (f"| {first} | seq | backend | fwd ms | fwd peak MB | fwd+bwd ms | fwd+bwd peak MB "
            "| fwd speed vs sdpa | fwd mem vs sdpa | fwd+bwd speed vs sdpa | fwd+bwd mem vs sdpa |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for n in frames:
        for b in backends:
            fwd, both = results[(b, n, "forward")], results[(b, n, "fwd+bwd")]
            ref_f, ref_b = results.get(("sdpa", n, "forward")), results.get(("sdpa", n, "fwd+bwd"))
            seq = next((r["seq_len"] for r in (fwd, both) if "seq_len" in r), "")
            cells = ["20x20 -> 60x60" if sr else str(n), str(seq), f"`{b}`"]
            for r in (fwd, both):
                cells += ([r["error"], ""] if "error" in r
                          else [f"{r['seconds'] * 1e3:.0f}", f"{r['peak_mb']:.0f}"])
            cells += [_ratio(ref_f, fwd, "seconds"), _ratio(ref_f, fwd, "peak_mb"),
                      _ratio(ref_b, both, "seconds"), _ratio(ref_b, both, "peak_mb")]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import torch

    return f"{cpu}, {os.cpu_count()} logical cores, Python {platform.python_version()}, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_case":
        backend, frames, mode, repeats, threads, limit_gb, workload = argv[1:8]
        # A case that outgrows the budget fails with MemoryError instead of pushing the shared
        # machine into swap or the OOM killer.
        limit = int(float(limit_gb) * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(run_case(backend, int(frames), mode, int(repeats), int(threads), workload)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[5, 9, 17, 33])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case (median)")
    parser.add_argument("--backends", nargs="+", default=["naive", "sdpa", "swin3d", "flex"],
                        help="registry names, optionally name:key=value,... for keywords")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every case")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per case")
    parser.add_argument("--memory-limit-gb", type=float, default=12,
                        help="address-space limit of each case (it fails cleanly above it)")
    parser.add_argument("--workload", choices=("interpolation", "sr", "spatial"), default="interpolation",
                        help="stage-2 temporal channel (default), super-resolution 20x20 -> 60x60, or the "
                             "stage-1 spatial channel in training")
    args = parser.parse_args(argv)
    modes = ("forward", "fwd+bwd")
    if args.workload == "sr":
        args.frames = [1]  # one fixed size; the table's first column names it
    heads = SR_HEADS if args.workload == "sr" else HEADS
    print(f"<!-- {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {machine()}; workload={args.workload}; "
          f"threads={args.threads}; repeats={args.repeats}; B=1 H={heads} D={HEAD_DIM} fp32 -->",
          flush=True)
    results = {}
    for n in args.frames:
        for b in args.backends:
            for mode in modes:
                if b.startswith("flex") and mode == "fwd+bwd":
                    results[(b, n, mode)] = {"error": "no CPU backward"}
                    continue
                results[(b, n, mode)] = spawn(b, n, mode, args)
                print(f"<!-- {b} frames={n} {mode}: {results[(b, n, mode)]} -->", flush=True)
    print(table(results, args.backends, args.frames, sr=args.workload == "sr"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
