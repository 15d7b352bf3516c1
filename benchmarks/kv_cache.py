"""Benchmark KV-cached decoding: time per token along the sequence, and passes/s.

Workload: stage-1 decoding of frames 1-4 (1600 tokens, one token per pass, sequential) of
CogVideo's 5-frame layout of 20x20 tokens (16 text slots) with a ``--width``-wide model
(default 2 layers, 512 wide, 8 heads, the ``tiny_stage1`` masks: 4x4 temporal windows, shifted
on odd layers; fp32, greedy, batch 1, 1 thread). Every forward pass is timed; the table gives
the median time per token over the first and the last ``--window`` generation passes, their
ratio (flat decoding: close to 1), passes/s over the whole run, and whether the tokens equal
those of the first row.

Rows (each run is a fresh process, so no case inherits another's warm caches or memory; the
cases run alternately, ``--repeats`` times each, and the per-pass medians are over all repeats):

* ``torch.cat`` cache: ``ConcatKVCache`` of this tree, the cache cogframe had before the
  preallocated one (every cached key copied on every pass).
* preallocated cache, base tree (with ``--base-src DIR``): ``KVCache`` of another checkout's
  ``src`` folder (e.g. the tree before a change), put first on ``PYTHONPATH``.
* preallocated cache, this tree: ``KVCache`` and the decoder of this checkout.

Usage::

    python benchmarks/kv_cache.py [--width 512] [--layers 2] [--repeats 3] [--base-src DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

BOI = 300
TEXT_LEN, GRID, FRAMES = 16, 20, 5
THIS_SRC = Path(__file__).resolve().parents[1] / "src"


def model_for(width: int, layers: int, heads: int):
    """A stage-1 model of the given size on the 5 x 20 x 20 layout (``tiny_stage1`` masks)."""
    import torch

    from cogframe.core.model.presets import build_model

    tpf = GRID * GRID
    overrides = {
        "num_layers": layers, "hidden_size": width, "num_heads": heads,
        "layout": {"text_len": TEXT_LEN, "frames": FRAMES, "frame_height": GRID, "frame_width": GRID,
                   "image_position_offset": 2 * TEXT_LEN, "base_position_rows": 2 * TEXT_LEN + tpf,
                   "extra_position_rows": (FRAMES - 1) * tpf},
    }
    torch.manual_seed(0)
    return build_model("tiny_stage1", overrides=overrides).eval()


def inputs(layout):
    """The prompt and the given first frame (fixed seeds)."""
    import torch

    from cogframe.core.generation.prompts import TextPrompt

    g = torch.Generator().manual_seed(1)
    prompt = TextPrompt(torch.randint(256, 384, (1, layout.text_len), generator=g))
    first = torch.randint(0, 256, (1, 1, GRID, GRID), generator=g)
    return prompt, first


def timed_decode(model, cache_class, prompt, first):
    """Decode frames 1-4 with ``cache_class``; the tokens, each generation pass's seconds, the total."""
    import time as _time

    from cogframe.core.generation.decoder import DecodeOptions, decode_frames
    from cogframe.plugins.token_samplers import GreedySampler

    model.cache_class = cache_class
    times: list[float] = []
    forward = model.forward

    def timed_forward(*args, **kwargs):
        start = _time.perf_counter()
        out = forward(*args, **kwargs)
        times.append(_time.perf_counter() - start)
        return out

    model.forward = timed_forward  # instance attribute: nn.Module.__call__ finds it
    try:
        start = _time.perf_counter()
        result = decode_frames(model, prompt, boi_id=BOI, options=DecodeOptions(GreedySampler()),
                               given_frames=(0,), generated_frames=(1, 2, 3, 4), given=first)
        total = _time.perf_counter() - start
    finally:
        del model.forward
    return result.frames, times[1:], total  # times[0] is the prefix pass


def worker(args) -> None:
    """One decoding run in this process; prints its timings and tokens as one JSON line."""
    import torch

    from cogframe.core.model import transformer

    torch.set_num_threads(args.threads)
    model = model_for(args.width, args.layers, args.heads)
    prompt, first = inputs(model.config.layout)
    cache_class = getattr(transformer, args.worker)
    tokens, times, total = timed_decode(model, cache_class, prompt, first)
    print(json.dumps({"times": times, "total": total, "tokens": tokens.reshape(-1).tolist(),
                      "source": str(Path(transformer.__file__).resolve())}))


def machine() -> str:
    """CPU model name and logical cores (lscpu), for the report."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} logical cores"


def run_case(args, src: Path, cache: str) -> dict:
    """One fresh process decoding with ``cache`` from the tree at ``src``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")])),
               OMP_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, __file__, "--worker", cache, "--width", str(args.width), "--layers",
           str(args.layers), "--heads", str(args.heads), "--threads", str(args.threads)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"worker failed ({src}, {cache}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--window", type=int, default=100, help="passes at each end (default 100)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base-src", type=Path, default=None,
                        help="another checkout's src folder: adds its preallocated cache as a row")
    parser.add_argument("--no-concat", action="store_true", help="leave out the torch.cat row")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    cases: dict[str, tuple[Path, str]] = {}
    if not args.no_concat:
        cases["torch.cat cache (`ConcatKVCache`), this tree"] = (THIS_SRC, "ConcatKVCache")
    if args.base_src is not None:
        cases[f"preallocated (`KVCache`), base tree `{args.base_src}`"] = (args.base_src.resolve(), "KVCache")
    cases["preallocated (`KVCache`), this tree"] = (THIS_SRC, "KVCache")
    runs = {name: {"first": [], "last": [], "rate": [], "tokens": None} for name in cases}
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    load = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for name, (src, cache) in cases.items():  # alternate, so load changes hit every case alike
            result = run_case(args, src, cache)
            times = result["times"]
            run = runs[name]
            run["first"] += times[:args.window]
            run["last"] += times[-args.window:]
            run["rate"].append(len(times) / result["total"])
            run["tokens"] = result["tokens"]
            load.append(os.getloadavg()[0])
    import torch

    reference_name = next(iter(runs))
    reference = runs[reference_name]["tokens"]
    print(f"torch {torch.__version__}, {machine()}, {args.threads} thread(s), fp32, greedy, batch 1; "
          f"model: {args.layers} layers, hidden {args.width}, {args.heads} heads; 16 text + 5 x 20 x 20 "
          f"slots; stage 1, frames 1-4 (1600 passes); {args.repeats} run(s) per case, alternating, one "
          f"process each; started {started}; 1-minute load average {min(load):.1f}-{max(load):.1f}\n")
    print(f"| case | first {args.window} passes, ms/token (median) | last {args.window} passes, "
          f"ms/token (median) | last / first | passes/s (median run) | tokens identical to row 1 |")
    print("|---|---:|---:|---:|---:|---|")
    for name, run in runs.items():
        first_ms = 1e3 * statistics.median(run["first"])
        last_ms = 1e3 * statistics.median(run["last"])
        same = "yes" if run["tokens"] == reference else "NO"
        print(f"| {name} | {first_ms:.2f} | {last_ms:.2f} | {last_ms / first_ms:.2f}x | "
              f"{statistics.median(run['rate']):.0f} | {same} |")


if __name__ == "__main__":
    main()
