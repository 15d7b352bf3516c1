"""The prepared GPU check: every CUDA path of cogframe in one command of at most 8 minutes.

Run it on a lent CUDA machine through the wrapper (it puts ``src`` on the path and enforces the
time limit)::

    bash benchmarks/gpu_check.sh --wheels wheels/ --out $OUT

or on a CPU, shrunk so that it finishes in under a minute (``tests/test_gpu_check.py`` runs this
in the default suite, so the script cannot rot where no GPU is lent)::

    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gpu_check

Sections, in order (each one's result, time and details go to ``gpu_check.json`` and
``gpu_check.md`` in ``--out``, rewritten after every section, so a run cut short still leaves
what it measured; the exit status is 1 when a section failed):

1. ``setup``: the distributions ``pyproject.toml`` requires (and pytest, hypothesis, xformers
   when a wheel of it is there) that this Python lacks are installed from ``--wheels DIR``
   (``pip install --no-index --find-links DIR``; nothing is downloaded).
2. ``environment``: torch, CUDA, the device's name and memory.
3. ``peak``: the bf16 matmul peak of this device, measured here (8192^3 on a GPU), the
   denominator of every MFU in the report.
4. ``cuda_tests``: ``tests/test_cuda.py`` (every attention backend on the device against
   ``naive`` in fp32 and bf16, forward and backward; xformers if it loads; compiled flex) in a
   subprocess, with ``COGFRAME_CUDA_TEST_DEVICE`` set; per-test outcomes from its JUnit XML.
5. ``fsdp2_step``: two bf16 FSDP2 training steps (``DistributedContext.prepare_model``, one
   process, NCCL on a GPU, gloo on a CPU) of a 2-layer model at the 9B width and layout
   (``cogvideo_9b_stage1``, inherited weights frozen); the first loss is compared with the
   unsharded fp32 model's on the same batch.
6. ``layer_9b``: forward + backward of one dual-channel layer of the 9B models at the real
   layout (64 text + 5 x 20 x 20 slots, width 3072, 48 heads) in bf16: stage 1 (released full
   causal temporal mask) with ``sdpa``, stage 2 (10x10 windows) with ``sdpa`` and ``swin3d``;
   tokens/s and MFU (model FLOPs as ``benchmarks/train.py`` counts them: 6 per weight and
   token, 12 d per visible query-key pair and channel).
7. ``waves``: exact parallel-wave vs sequential decoding (``core/generation/waves.py``) of a
   2-layer model at the 9B layout, fp32 with TF32 off, greedy: passes, wall time and whether
   the tokens are identical, for stage 1 with 10x10 windows and for stage 2.

``--quick`` shrinks widths and layouts (8x8-token frames, width 64-128) and runs only the
``sdpa``/``swin3d``/``xformers`` CUDA tests; on a CPU, compiled flex needs minutes of inductor
compilation and eager flex has no CPU backward to compare.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # run from a checkout without installing cogframe
    sys.path.insert(0, str(ROOT / "src"))

SECTIONS = ("setup", "environment", "peak", "cuda_tests", "fsdp2_step", "layer_9b", "waves")
BOI = 300

# --quick: the 9B presets shrunk to 8x8-token frames and small widths (same rules and shapes of
# masks, windows scaled with the frame).
QUICK_LAYOUT = {"text_len": 16, "frame_height": 8, "frame_width": 8, "image_position_offset": 32,
                "base_position_rows": 32 + 64, "extra_position_rows": 4 * 64}
QUICK_WINDOW = {"window": [4, 4], "shift": [2, 2]}


# ================================================================================ setup
def requirement_names(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """Distribution names of ``[project] dependencies`` and the ``test`` extra."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: read the two lists with a regex
        text = pyproject.read_text()
        blocks = re.findall(r"^(?:dependencies|test)\s*=\s*\[(.*?)\]", text, re.S | re.M)
        specs = re.findall(r'"([^"]+)"', " ".join(blocks))
    else:
        data = tomllib.loads(pyproject.read_text())
        specs = list(data["project"]["dependencies"]) + list(
            data["project"].get("optional-dependencies", {}).get("test", []))
    return [re.split(r"[<>=!~;\[ ]", s, maxsplit=1)[0].strip() for s in specs]


def missing_distributions(names: list[str]) -> list[str]:
    """The names whose distribution is not installed in this Python."""
    missing = []
    for name in names:
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def _wheel_names(wheels: Path) -> set[str]:
    """Normalised distribution names of the wheels in ``wheels``."""
    return {re.sub(r"[-_.]+", "-", p.name.split("-")[0]).lower() for p in wheels.glob("*.whl")}


def setup(args) -> dict:
    """Install the missing requirements from ``--wheels`` (never from an index)."""
    names = requirement_names()
    missing = missing_distributions(names)
    wanted = list(missing)
    if args.wheels is not None and "xformers" in _wheel_names(args.wheels) and missing_distributions(["xformers"]):
        wanted.append("xformers")  # optional backend: installed only when its wheel is carried
    result = {"required": names, "missing_before": missing, "installed": [], "still_missing": []}
    if not wanted:
        return result
    if args.wheels is None:
        result["still_missing"] = missing
        result["note"] = "no --wheels DIR given: nothing installed"
        return result
    available = _wheel_names(args.wheels)
    for name in wanted:
        if re.sub(r"[-_.]+", "-", name).lower() not in available:
            result["still_missing"].append(name)
            continue
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(args.wheels), name]
        out = subprocess.run(cmd, capture_output=True, text=True)
        (result["installed"] if out.returncode == 0 else result["still_missing"]).append(name)
        if out.returncode:
            result.setdefault("pip_errors", {})[name] = out.stderr[-1500:]
    return result


# ================================================================================ environment
def environment(args) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "device": str(args.device),
            "cuda_available": torch.cuda.is_available(), "cuda_version": torch.version.cuda,
            "machine": platform.machine(), "cpu_count": os.cpu_count(), "quick": args.quick,
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if args.device.type == "cuda":
        props = torch.cuda.get_device_properties(args.device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                    capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count)
    for name in ("xformers", "triton"):
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = None
    return info


# ================================================================================ timing helpers
def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after ``warmup`` calls (device synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def peak(args) -> dict:
    """Best bf16 matmul FLOP/s of an n^3 product on the device."""
    import torch

    n = 512 if args.quick else 8192
    a = torch.randn(n, n, device=args.device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=args.device, dtype=torch.bfloat16)
    times = _timed(lambda: a @ b, args.device, repeats=5 if args.quick else 10, warmup=3)
    flops = 2 * n ** 3 / min(times)
    args.peak_bf16 = flops
    return {"n": n, "bf16_tflops": round(flops / 1e12, 3), "median_tflops": round(2 * n ** 3 / statistics.median(times) / 1e12, 3)}


# ================================================================================ CUDA tests
def cuda_tests(args) -> dict:
    """``tests/test_cuda.py`` in a subprocess; per-test outcomes from its JUnit XML."""
    xml = args.out / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_cuda.py"),
           f"--junitxml={xml}", "-o", "addopts="]
    if args.quick:
        cmd += ["-k", "sdpa or swin3d or xformers"]
    env = dict(os.environ, COGFRAME_CUDA_TEST_DEVICE=args.device.type,
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))
    timeout = max(30.0, min(300.0, args.deadline - time.monotonic() - 120))
    try:
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"pytest did not finish within {timeout:.0f} s", "selection": cmd[-1]}
    tests = []
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            outcome, message = "passed", ""
            for tag in ("failure", "error", "skipped"):
                node = case.find(tag)
                if node is not None:
                    outcome, message = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag], \
                        (node.get("message") or "")[:300]
            tests.append({"name": case.get("name"), "outcome": outcome, "seconds": float(case.get("time", 0)),
                          "message": message})
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    ok = out.returncode == 0 and counts["passed"] > 0
    return {"ok": ok, "returncode": out.returncode, "counts": counts, "tests": tests,
            "selection": "-k 'sdpa or swin3d or xformers'" if args.quick else "all",
            "output_tail": out.stdout[-2000:] if not ok else ""}


# ================================================================================ FSDP2
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nine_b_overrides(args, *, layers: int | None = None, stage2: bool = False, small_width: int = 128) -> dict:
    """Overrides of a 9B preset: ``layers`` layers; --quick: the small layout and width."""
    overrides: dict = {} if layers is None else {"num_layers": layers}
    if args.quick:
        overrides.update(hidden_size=small_width, num_heads=4, vocab_size=512, image_vocab_size=256,
                         layout=dict(QUICK_LAYOUT))
        if stage2:
            overrides["temporal"] = dict(QUICK_WINDOW)
    return overrides


def fsdp2_step(args) -> dict:
    """Two bf16 FSDP2 steps of a 2-layer 9B-width stage-1 model in one process."""
    import torch
    import torch.distributed as dist

    from cogframe.core.model.presets import build_model
    from cogframe.core.model.transformer import loss_fn
    from cogframe.core.training.distributed import DistributedContext

    class OneRankFSDP(DistributedContext):
        """The torchrun context, sharded over a world of one (FSDP2 code paths, no peers)."""

        @property
        def distributed(self) -> bool:
            return True

    preset, overrides = "cogvideo_9b_stage1", _nine_b_overrides(args, layers=2)
    backend = "nccl" if args.device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        full = build_model(preset, overrides=overrides)  # fp32 on the CPU: rank 0's initial state
        full.freeze_inherited()
        layout = full.config.layout
        batch = 2
        g = torch.Generator().manual_seed(0)
        text = torch.randint(full.config.image_vocab_size, full.config.vocab_size, (batch, layout.text_len), generator=g)
        frames = torch.randint(0, full.config.image_vocab_size,
                               (batch, layout.frames, layout.frame_height, layout.frame_width), generator=g)
        inp, lab = layout.build_input(text, frames, BOI)
        loss_mask = layout.loss_mask(full.config.stage)
        inp, lab, loss_mask = inp.to(args.device), lab.to(args.device), loss_mask.to(args.device)
        reference_model = full.to(args.device).eval()
        with torch.no_grad():
            reference = float(loss_fn(reference_model(inp), lab, loss_mask))
        state = {k: v.detach().cpu() for k, v in full.state_dict().items()}
        del full, reference_model
        meta = build_model(preset, overrides=overrides, device="meta")
        meta.freeze_inherited()
        ctx = OneRankFSDP(0, 1, args.device, torch.bfloat16, torch.float32, initial_state=state)
        model = ctx.prepare_model(meta).train()
        for module in model.modules():  # dropout off: the first loss is compared with eval-mode fp32
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        sharded = sum(type(p).__name__ == "DTensor" for p in model.parameters())
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        losses, seconds = [], []
        for _ in range(2):
            start = time.perf_counter()
            loss = loss_fn(model(inp, text_valid=None), lab, loss_mask)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            _sync(args.device)
            seconds.append(time.perf_counter() - start)
        frozen_grads = sum(p.grad is not None for p in model.parameters() if not p.requires_grad)
    finally:
        dist.destroy_process_group()
    rel = abs(losses[0] - reference) / max(abs(reference), 1e-6)
    ok = all(map(lambda x: x == x and abs(x) < float("inf"), losses)) and rel < 2e-2 and sharded > 0 \
        and frozen_grads == 0
    return {"ok": ok, "backend": backend, "preset": preset, "overrides": overrides, "batch": batch,
            "seq_len": layout.seq_len, "losses": losses, "fp32_unsharded_loss": reference,
            "first_loss_relative_difference": rel, "sharded_parameters": sharded,
            "frozen_parameters_with_grad": frozen_grads, "step_seconds": seconds,
            "tokens_per_s_second_step": batch * layout.seq_len / seconds[-1]}


# ================================================================================ one 9B layer
def _layer_flops(config, layer, tokens_batch: int) -> tuple[float, int]:
    """Model FLOPs of a forward+backward of ``layer`` over ``tokens_batch`` samples (all trainable)."""
    layout = config.layout
    weights = sum(p.numel() for p in layer.parameters() if p.dim() == 2)
    slots = layout.all_slots()
    frame_slots = slots[layout.text_len:]
    pairs = int(layer.spatial_mask.dense(slots, slots).sum())
    if layer.temporal_mask is not None:
        pairs += int(layer.temporal_mask.dense(frame_slots, slots).sum())
    tokens = tokens_batch * layout.seq_len
    return float(6 * weights * tokens + 12 * config.hidden_size * pairs * tokens_batch), weights


def layer_9b(args) -> dict:
    """Forward + backward of one 9B dual-channel layer at the real layout, bf16."""
    import torch

    from cogframe.core.model.presets import model_config
    from cogframe.core.model.transformer import TransformerLayer
    from cogframe.plugins import get_registries

    regs = get_registries()
    cases = [("cogvideo_9b_stage1", "sdpa"), ("cogvideo_9b_stage2", "sdpa"), ("cogvideo_9b_stage2", "swin3d")]
    batch = 1 if args.quick else 4
    rows = []
    for preset, backend_name in cases:
        reason = regs.get("attention", backend_name).unavailable_reason()
        if reason:
            rows.append({"preset": preset, "backend": backend_name, "skipped": reason})
            continue
        backend = regs.build("attention", {"name": backend_name})
        config = model_config(preset, _nine_b_overrides(args, stage2=preset.endswith("stage2")))
        torch.manual_seed(0)
        layer = TransformerLayer(config, 1).to(args.device, torch.bfloat16).train()
        layout = config.layout
        x = torch.randn(batch, layout.seq_len, config.hidden_size, device=args.device, dtype=torch.bfloat16,
                        requires_grad=True)
        slots = layout.all_slots(device=args.device)
        upstream = torch.randn_like(x)

        def step():
            out = layer(x, slots, None, backend, backend)
            out.backward(upstream)
            x.grad = None
            for p in layer.parameters():
                p.grad = None

        if args.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(args.device)
        times = _timed(step, args.device, repeats=3 if args.quick else 10, warmup=2)
        flops, weights = _layer_flops(config, layer, batch)
        seconds = statistics.median(times)
        row = {"preset": preset, "backend": backend_name, "hidden": config.hidden_size, "heads": config.num_heads,
               "seq_len": layout.seq_len, "batch": batch, "weights": weights, "step_ms": 1e3 * seconds,
               "tokens_per_s": batch * layout.seq_len / seconds, "model_tflops": flops / seconds / 1e12,
               "mfu": flops / seconds / args.peak_bf16}
        if args.device.type == "cuda":
            row["peak_memory_gib"] = torch.cuda.max_memory_allocated(args.device) / 2 ** 30
        rows.append(row)
        del layer, x, upstream
    ok = all("skipped" in r or r["tokens_per_s"] > 0 for r in rows) and any("skipped" not in r for r in rows)
    return {"ok": ok, "rows": rows, "dtype": "bfloat16", "peak_bf16_tflops": args.peak_bf16 / 1e12}


# ================================================================================ waves
def waves(args) -> dict:
    """Parallel waves vs sequential decoding of a 2-layer model at the 9B layout (fp32, greedy)."""
    import torch

    from cogframe.core.generation.decoder import DecodeOptions, decode_frames, plan_schedule
    from cogframe.core.generation.prompts import TextPrompt
    from cogframe.core.model.presets import build_model
    from cogframe.plugins.token_samplers import GreedySampler

    if args.device.type == "cuda":  # TF32 would round differently per pass shape: exactness needs fp32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    window = QUICK_WINDOW if args.quick else {"window": [10, 10], "shift": [5, 5]}
    cases = [("cogvideo_9b_stage1", (0,), (1, 2, 3, 4), window), ("cogvideo_9b_stage2", (0, 2, 4), (1, 3), None)]
    rows = []
    for preset, given_frames, generated, temporal in cases:
        overrides = _nine_b_overrides(args, layers=2, stage2=preset.endswith("stage2"), small_width=64)
        if temporal is not None:
            overrides["temporal"] = dict(temporal)
        torch.manual_seed(0)
        model = build_model(preset, overrides=overrides, device=args.device).eval()
        layout = model.config.layout
        g = torch.Generator().manual_seed(1)
        prompt = TextPrompt(torch.randint(model.config.image_vocab_size, model.config.vocab_size,
                                          (1, layout.text_len), generator=g).to(args.device))
        given = torch.randint(0, model.config.image_vocab_size,
                              (1, len(given_frames), layout.frame_height, layout.frame_width), generator=g)
        result = {}
        for parallel in (False, True):
            plan_schedule(model, given_frames, generated, parallel=parallel)  # memoised outside the timing
            options = DecodeOptions(GreedySampler(), parallel=parallel)
            _sync(args.device)
            start = time.perf_counter()
            out = decode_frames(model, prompt, boi_id=BOI, options=options, given_frames=given_frames,
                                generated_frames=generated, given=given.to(args.device))
            _sync(args.device)
            result[parallel] = (out, time.perf_counter() - start)
        (seq, seq_s), (par, par_s) = result[False], result[True]
        rows.append({"preset": preset, "overrides": overrides, "generated_tokens": len(generated) * layout.tokens_per_frame,
                     "sequential_passes": seq.passes - 1, "wave_passes": par.passes - 1,
                     "sequential_s": seq_s, "waves_s": par_s, "speedup": seq_s / par_s,
                     "tokens_identical": bool(torch.equal(seq.frames, par.frames))})
        del model
    return {"ok": all(r["tokens_identical"] for r in rows), "rows": rows, "dtype": "float32", "tf32": False}


# ================================================================================ report
def markdown(report: dict) -> str:
    """The report as Markdown (the JSON holds everything; this is the summary)."""
    env = report.get("environment", {})
    lines = [f"# gpu_check report ({'quick, ' if env.get('quick') else ''}{env.get('device', '?')})", "",
             f"Date {env.get('date_utc', '?')}; torch {env.get('torch', '?')}, CUDA {env.get('cuda_version')}, "
             f"Python {env.get('python', '?')}; device: {env.get('gpu', 'CPU, ' + str(env.get('cpu_count')) + ' cores')}"
             f"{', ' + str(env.get('gpu_memory_gib')) + ' GiB' if env.get('gpu_memory_gib') else ''}; "
             f"xformers {env.get('xformers')}, triton {env.get('triton')}.", "",
             "| section | result | seconds |", "|---|---|---:|"]
    for name in SECTIONS:
        sec = report.get(name)
        if sec:
            lines.append(f"| {name} | {sec['status']} | {sec.get('seconds', 0):.1f} |")
    setup_ = report.get("setup", {})
    if setup_.get("installed") or setup_.get("still_missing"):
        lines += ["", f"Installed from wheels: {setup_.get('installed') or 'nothing'}; still missing: "
                  f"{setup_.get('still_missing') or 'nothing'}."]
    if "peak" in report and report["peak"].get("bf16_tflops"):
        lines += ["", f"bf16 matmul peak ({report['peak']['n']}^3, best of the timed products): "
                  f"**{report['peak']['bf16_tflops']:.1f} TFLOP/s**."]
    tests = report.get("cuda_tests", {})
    if tests.get("tests"):
        lines += ["", f"## CUDA tests ({tests.get('selection')})", "", f"Counts: {tests['counts']}.", "",
                  "| test | outcome | seconds | message |", "|---|---|---:|---|"]
        lines += [f"| {t['name']} | {t['outcome']} | {t['seconds']:.2f} | {t['message'][:120]} |" for t in tests["tests"]]
    fsdp = report.get("fsdp2_step", {})
    if "losses" in fsdp:
        lines += ["", "## bf16 FSDP2 training step (one process)", "",
                  f"{fsdp['preset']} {fsdp['overrides']}, batch {fsdp['batch']} x {fsdp['seq_len']} slots, "
                  f"{fsdp['backend']}: losses {', '.join(f'{x:.4f}' for x in fsdp['losses'])}; the unsharded fp32 "
                  f"model's first loss {fsdp['fp32_unsharded_loss']:.4f} (relative difference "
                  f"{fsdp['first_loss_relative_difference']:.2e}); {fsdp['sharded_parameters']} sharded "
                  f"parameters; second step {fsdp['step_seconds'][-1]:.3f} s "
                  f"({fsdp['tokens_per_s_second_step']:,.0f} tokens/s)."]
    layer = report.get("layer_9b", {})
    if layer.get("rows"):
        lines += ["", "## One 9B dual-channel layer, forward + backward, bf16", "",
                  "| preset | backend | hidden | heads | slots | batch | ms/step | tokens/s | model TFLOP/s | MFU |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in layer["rows"]:
            if "skipped" in r:
                lines.append(f"| {r['preset']} | {r['backend']} | skipped: {r['skipped']} | | | | | | | |")
            else:
                lines.append(f"| {r['preset']} | {r['backend']} | {r['hidden']} | {r['heads']} | {r['seq_len']} | "
                             f"{r['batch']} | {r['step_ms']:.1f} | {r['tokens_per_s']:,.0f} | "
                             f"{r['model_tflops']:.3g} | {r['mfu']:.0%} |")
    wav = report.get("waves", {})
    if wav.get("rows"):
        lines += ["", "## Parallel waves vs sequential decoding (2 layers, 9B layout, fp32, TF32 off, greedy)", "",
                  "| preset | generated tokens | sequential passes | wave passes | sequential (s) | waves (s) | "
                  "speed-up | tokens identical |", "|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in wav["rows"]:
            lines.append(f"| {r['preset']} | {r['generated_tokens']} | {r['sequential_passes']} | {r['wave_passes']} | "
                         f"{r['sequential_s']:.2f} | {r['waves_s']:.2f} | {r['speedup']:.2f}x | "
                         f"{'yes' if r['tokens_identical'] else 'NO'} |")
    failed = [n for n in SECTIONS if report.get(n, {}).get("status") == "failed"]
    for name in failed:
        lines += ["", f"### {name} failed", "", "```", str(report[name].get("error", ""))[-3000:], "```"]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(report))


# ================================================================================ main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto (cuda when available)")
    parser.add_argument("--quick", action="store_true", help="small widths and layouts (CPU: under a minute)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_check", help="report folder")
    parser.add_argument("--wheels", type=Path, default=None,
                        help="folder of wheels to install missing requirements from (pip --no-index)")
    parser.add_argument("--budget", type=float, default=470.0,
                        help="seconds for the whole check; sections that would start too late are skipped")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=None, help="run only these sections")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    args.deadline = start + args.budget
    args.peak_bf16 = None
    if args.wheels is not None and not args.wheels.is_dir():
        print(f"error: --wheels {args.wheels} is not a folder; give the folder of carried .whl files",
              file=sys.stderr)
        return 2
    report: dict = {}
    # Setup first and before torch is imported: it may install what the rest imports.
    runners = {"setup": setup, "environment": environment, "peak": peak, "cuda_tests": cuda_tests,
               "fsdp2_step": fsdp2_step, "layer_9b": layer_9b, "waves": waves}
    for name in SECTIONS:
        if args.only and name not in args.only and name not in ("setup", "environment", "peak"):
            continue
        if name == "environment":
            import torch

            requested = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
            requested = "cpu" if requested == "auto" else requested
            if requested.startswith("cuda") and not torch.cuda.is_available():
                print(f"error: --device {args.device}: torch {torch.__version__} sees no CUDA device; run "
                      "on a GPU machine or pass --device cpu --quick", file=sys.stderr)
                return 2
            args.device = torch.device(requested)
            torch.set_num_threads(max(1, min(os.cpu_count() or 1, 8)) if args.device.type == "cuda" else
                                  int(os.environ.get("OMP_NUM_THREADS", "1")))
        left = args.deadline - time.monotonic()
        if left < 20 and name not in ("setup", "environment"):
            report[name] = {"status": "skipped", "reason": f"only {left:.0f} s of the budget left"}
            write_report(report, args.out)
            continue
        t0 = time.monotonic()
        print(f"[gpu_check] {name} ...", flush=True)
        try:
            result = runners[name](args)
            status = "ok" if result.get("ok", True) else "failed"
        except Exception as exc:  # a section's failure is reported; the others still run
            result, status = {"error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-4000:]}"}, "failed"
        result["status"], result["seconds"] = status, time.monotonic() - t0
        report[name] = result
        print(f"[gpu_check] {name}: {status} ({result['seconds']:.1f} s)", flush=True)
        write_report(report, args.out)
    report["total_seconds"] = time.monotonic() - start
    write_report(report, args.out)
    print(markdown(report))
    return 1 if any(v.get("status") == "failed" for v in report.values() if isinstance(v, dict)) else 0


if __name__ == "__main__":
    sys.exit(main())
