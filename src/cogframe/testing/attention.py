"""Conformance of an attention backend: every declared mask, forward and backward, against naive.

What :func:`check_attention_backend` verifies (the guarantees the model relies on when it calls a
backend, see ``core/model/attention.py``):

* **Masks.** Hypothesis draws small token layouts and masks of every rule the backend declares
  (``Capabilities.masks``; None means all four): temporal rules with and without a 3D window
  (ragged edges, shifts, both layer parities, temporal extents), the spatial rules, text padding
  (none, shared, per sample, and a prompt that is *all* padding), text bias and scale, and every
  call shape the model makes (all slots, frame queries only, KV-cache tails, whole-frame cache
  steps, the stage-2 inference order and its given-frame prefix).
* **Forward and backward against naive.** Each case's output, and the gradients of q, k and v
  where the backend declares backward on that device, must equal the ``naive`` backend's run in
  float64 on the same inputs (fp32 tolerance 1e-5). The output must have q's shape (with v's
  head size), dtype and device, and the inputs must come back unmodified.
* **Rows with a single allowed key.** A text query of an all-padding prompt sees only itself, and
  so may the first slot of a frame: the tightest rows the mask library produces (it guarantees
  none is empty). The output of such a row must be exactly that key's value.
* **Declared dtypes and devices.** One fixed case per (device present here, declared dtype):
  the output keeps the dtype and device and is close to the float64 reference within the
  dtype's tolerance, and so are the gradients where backward is declared. Devices that are not
  present, and float16 on CPU (cogframe never runs it), are reported as skipped.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import torch

from cogframe.core.model.layout import Stage, TokenLayout
from cogframe.core.model.masks import FrameRule, MaskSpec, TemporalConfig, spatial_mask, temporal_mask
from cogframe.registry import Capabilities, Registries
from cogframe.testing._common import ConformanceError, ConformanceReport, finish, phases, require_hypothesis, resolve

__all__ = ["ALL_RULES", "QUERY_MODES", "TOLERANCES", "attention_cases", "check_attention_backend"]

ALL_RULES: tuple[str, ...] = tuple(rule.value for rule in FrameRule)
QUERY_MODES = ("all", "frames", "tail", "frame_tail", "inference", "prefix")
# (atol, rtol) against the float64 reference, by the dtype the backend computes in. The reference
# is naive, whose softmax runs in float32 whatever the inputs: so float64 cannot be held tighter
# than ~1e-6. bf16 keeps 8 mantissa bits: at these sizes its outputs are within a few 1e-2.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-6, 1e-6), "float32": (1e-5, 1e-5), "bfloat16": (6e-2, 6e-2), "float16": (5e-3, 5e-3)}
_SPATIAL = {FrameRule.OWN_FRAME_CAUSAL.value: Stage.SEQUENTIAL, FrameRule.OWN_FRAME_INTERPOLATION.value: Stage.INTERPOLATION}
_TEMPORAL = {FrameRule.SEQUENTIAL.value: Stage.SEQUENTIAL, FrameRule.INTERPOLATION.value: Stage.INTERPOLATION}


def _mask_for(draw, st, layout: TokenLayout, rule: str) -> MaskSpec:
    if rule in _SPATIAL:
        return spatial_mask(layout, _SPATIAL[rule])
    window = shift = None
    if draw(st.integers(0, 5)):
        window = (draw(st.integers(1, layout.frame_height)), draw(st.integers(1, layout.frame_width)))
        if draw(st.booleans()):
            shift = (draw(st.integers(0, window[0] - 1)), draw(st.integers(0, window[1] - 1)))
    extent = draw(st.one_of(st.none(), st.integers(0, 3)))
    return temporal_mask(layout, _TEMPORAL[rule], draw(st.integers(0, 3)), TemporalConfig(window, shift, extent))


def _query_slots(draw, st, layout: TokenLayout, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q_slots, k_slots)`` of one call shape the model makes."""
    all_slots = layout.all_slots()
    if mode == "all":
        return all_slots, all_slots
    if mode == "frames":
        return all_slots[layout.text_len:], all_slots
    if mode == "tail":  # token-by-token KV-cached decoding: the newest slots against the cache
        end = draw(st.integers(1, layout.seq_len))
        n = draw(st.integers(1, min(end, 7)))
        return all_slots[end - n:end], all_slots[:end]
    if mode == "frame_tail":  # a whole frame against the cache before it
        frame = layout.frame_range(draw(st.integers(0, layout.frames - 1)))
        return all_slots[frame.start:frame.stop], all_slots[:frame.stop]
    order = layout.inference_slots(Stage.INTERPOLATION)
    if mode == "inference":
        return order, order
    prefix = layout.text_len + len(layout.prefix_frames(Stage.INTERPOLATION)) * layout.tokens_per_frame
    return order[:prefix], order[:prefix]  # stage-2 prefix pass over the given frames


def _text_valid(draw, st, text_len: int) -> torch.Tensor | None:
    padding = draw(st.sampled_from(["none", "shared", "per_sample", "all_padding"]))
    if padding == "none":
        return None
    pads = [draw(st.integers(0, text_len)) for _ in range(2)]
    if padding == "shared":
        pads = pads[:1]
    elif padding == "all_padding":
        pads[0] = text_len  # sample 0's prompt is nothing but padding
    return torch.tensor([[i >= p for i in range(text_len)] for p in pads], dtype=torch.bool).reshape(len(pads), text_len)


def attention_cases(rules: Iterable[str] = ALL_RULES):
    """A hypothesis strategy of backend calls: ``(mask, q_slots, k_slots, text_valid, options, seed)``.

    Args:
        rules: The mask rules to draw from (``FrameRule`` values).
    """
    hypothesis = require_hypothesis()
    st = hypothesis.strategies
    rules = tuple(rules)

    @st.composite
    def cases(draw):
        text_len = draw(st.integers(0, 6))
        frames = draw(st.integers(1, 4))
        h, w = draw(st.integers(2, 5)), draw(st.integers(2, 5))
        layout = TokenLayout(text_len, frames, h, w, text_len, text_len + h * w, (frames - 1) * h * w)
        mask = _mask_for(draw, st, layout, draw(st.sampled_from(rules)))
        text_valid = _text_valid(draw, st, text_len)
        q_slots, k_slots = _query_slots(draw, st, layout, draw(st.sampled_from(QUERY_MODES)))
        options = {"text_bias": draw(st.sampled_from([0.0, 1.4])), "scale": draw(st.sampled_from([None, 0.3]))}
        return mask, q_slots, k_slots, text_valid, options, draw(st.integers(0, 2**31 - 1))

    return cases()


def _inputs(q_slots, k_slots, seed, *, batch=2, heads=2, dim=4):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, q_slots.numel(), dim, generator=gen, dtype=torch.float64)
    k = torch.randn(batch, heads, k_slots.numel(), dim, generator=gen, dtype=torch.float64)
    v = torch.randn(batch, heads, k_slots.numel(), dim, generator=gen, dtype=torch.float64)
    grad = torch.randn(batch, heads, q_slots.numel(), dim, generator=gen, dtype=torch.float64)
    return q, k, v, grad


class _Runner:
    """Calls one backend and the float64 naive reference on the same inputs and compares them."""

    def __init__(self, backend: Any, label: str, capabilities: Capabilities) -> None:
        from cogframe.plugins.attention_naive import NaiveAttention

        self.backend, self.label, self.capabilities = backend, label, capabilities
        self.naive = NaiveAttention()

    def call(self, fn, q, k, v, mask, q_slots, k_slots, text_valid, options, grad, *, who: str):
        inputs = [t.clone().requires_grad_(grad is not None) for t in (q, k, v)]
        kept = [t.detach().clone() for t in inputs]
        try:
            if grad is None:
                with torch.no_grad():
                    out = fn(*inputs, mask, q_slots, k_slots, text_valid, **options)
            else:
                out = fn(*inputs, mask, q_slots, k_slots, text_valid, **options)
        except Exception as exc:
            raise ConformanceError(f"{who} raised {type(exc).__name__}: {exc} ({_describe(mask, q_slots, k_slots, text_valid, options, q.dtype)})") from exc
        where = _describe(mask, q_slots, k_slots, text_valid, options, q.dtype)
        if not isinstance(out, torch.Tensor):
            raise ConformanceError(f"{who} returned {type(out).__name__}, not a tensor ({where})")
        want_shape = (*q.shape[:3], v.shape[-1])
        if tuple(out.shape) != want_shape:
            raise ConformanceError(f"{who} returned shape {tuple(out.shape)}, expected [batch, heads, Sq, head_dim] "
                                   f"= {want_shape} ({where})")
        if out.dtype != q.dtype or out.device != q.device:
            raise ConformanceError(f"{who} returned {out.dtype} on {out.device} for {q.dtype} inputs on {q.device}: "
                                   f"return the inputs' dtype and device ({where})")
        for name, before, after in zip("qkv", kept, inputs):
            if not torch.equal(before, after.detach()):
                raise ConformanceError(f"{who} modified its input {name} in place ({where}): work on a copy")
        if grad is None:
            return out.detach(), None
        if not out.requires_grad:
            raise ConformanceError(f"{who} returned an output that does not require grad although its inputs do: "
                                   f"gradients do not flow through it, but it declares backward on {q.device.type} "
                                   f"({where}); declare backward=False (or the devices where it works) or keep the graph")
        grads = torch.autograd.grad(out, inputs, grad.to(out.dtype), allow_unused=True)
        for name, g in zip("qkv", grads):
            if g is None:
                raise ConformanceError(f"{who}: no gradient reaches {name} ({where})")
        return out.detach(), grads

    def compare(self, q, k, v, mask, q_slots, k_slots, text_valid, options, grad, *, dtype: torch.dtype,
                device: torch.device, tolerance: tuple[float, float], backward: bool) -> None:
        where = _describe(mask, q_slots, k_slots, text_valid, options, dtype)
        q_slots, k_slots = q_slots.to(device), k_slots.to(device)
        text_valid = None if text_valid is None else text_valid.to(device)
        # The reference sees exactly the (rounded) values the backend sees, in float64.
        cast = [t.to(device=device, dtype=dtype) for t in (q, k, v, grad)]
        ref_out, ref_grads = self.call(self.naive, *(t.double() for t in cast[:3]), mask, q_slots, k_slots,
                                       text_valid, options, cast[3].double() if backward else None, who="naive")
        out, grads = self.call(self.backend, *cast[:3], mask, q_slots, k_slots, text_valid, options,
                               cast[3] if backward else None, who=self.label)
        atol, rtol = tolerance
        _close(out, ref_out, atol, rtol, f"{self.label}: output differs from naive ({where})")
        if backward:
            for name, got, want in zip("qkv", grads, ref_grads):
                _close(got, want, atol, rtol, f"{self.label}: gradient of {name} differs from naive ({where})")
        _single_key_rows(out, cast[2], mask, q_slots, k_slots, text_valid, atol, rtol, self.label, where)


def _close(got, want, atol, rtol, message):
    got = got.double()
    if not torch.isfinite(got).all():
        raise ConformanceError(f"{message}: it has non-finite values at {torch.nonzero(~torch.isfinite(got))[:4].tolist()}")
    try:
        torch.testing.assert_close(got, want.to(got.device), atol=atol, rtol=rtol)
    except AssertionError as exc:
        raise ConformanceError(f"{message}: {exc}") from None


def _single_key_rows(out, v, mask, q_slots, k_slots, text_valid, atol, rtol, label, where):
    """A row whose mask allows exactly one key must return that key's value."""
    allowed = mask.dense(q_slots, k_slots, text_valid)  # [B or 1, Sq, Sk]
    allowed = allowed.expand(out.shape[0], -1, -1)
    single = allowed.sum(-1) == 1
    if not single.any():
        return
    key = allowed.float().argmax(-1)  # [B, Sq]
    want = torch.gather(v, 2, key[:, None, :, None].expand(-1, v.shape[1], -1, v.shape[-1]))
    rows = single[:, None, :, None].expand_as(out)
    _close(out[rows], want[rows].double(), atol, rtol,
           f"{label}: a row whose mask allows a single key must return that key's value ({where})")


def _describe(mask, q_slots, k_slots, text_valid, options, dtype) -> str:
    layout = mask.layout
    pads = "no padding" if text_valid is None else f"text_valid {text_valid.int().tolist()}"
    return (f"mask {mask.describe()}, layout text_len={layout.text_len} frames={layout.frames} "
            f"grid={layout.frame_height}x{layout.frame_width}, q_slots {q_slots.tolist()}, "
            f"{k_slots.numel()} keys, {pads}, {options}, {str(dtype).removeprefix('torch.')}")


def _devices_here(capabilities: Capabilities, devices: Iterable[str] | None, report: ConformanceReport) -> list[str]:
    declared = tuple(devices) if devices is not None else (capabilities.devices or ("cpu",))
    here = []
    for device in declared:
        if device == "cpu":
            here.append(device)
        elif device == "cuda" and torch.cuda.is_available():
            here.append(device)
        elif device == "mps" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            here.append(device)
        else:
            report.skipped.append(f"device {device}: declared, but none is present on this machine")
    return here


def _directed_cases():
    """Fixed cases with rows that allow a single key: all-padding prompts under every rule."""
    layout = TokenLayout(3, 3, 2, 3, 3, 9, 12)
    slots = layout.all_slots()
    text_valid = torch.tensor([[False, False, False], [False, True, True]])
    for rule in ALL_RULES:
        if rule in _SPATIAL:
            mask = spatial_mask(layout, _SPATIAL[rule])
        else:
            mask = temporal_mask(layout, _TEMPORAL[rule], 1, TemporalConfig((1, 2), None, None))
        yield rule, mask, slots, slots, text_valid, {"text_bias": 0.0, "scale": None}


def check_attention_backend(
    backend: Any,
    *,
    registries: Registries | None = None,
    kwargs: Mapping[str, Any] | None = None,
    capabilities: Capabilities | None = None,
    max_examples: int = 60,
    derandomize: bool = True,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    devices: Iterable[str] | None = None,
    dtypes: Iterable[str] | None = None,
    shrink: bool = False,
    unavailable: str = "skip",
) -> ConformanceReport:
    """Checks that an attention backend computes exactly what ``naive`` does, for what it declares.

    Args:
        backend: Its registered name (``"chunked"``), its ``@component`` class, or an instance.
        registries: Where a name is looked up (default: every loaded plugin).
        kwargs: Recipe keywords to build it with (``{"chunk_size": 8}``).
        capabilities: What to hold it to instead of its declaration (for an undecorated instance).
        max_examples: Hypothesis examples of the mask/layout property (the fp32 comparison).
        derandomize: Draw the same examples on every run (reproducible CI); False explores more.
        atol: Absolute tolerance of the fp32 comparison.
        rtol: Relative tolerance of the fp32 comparison.
        devices: Devices to check (default: those it declares; absent ones are skipped).
        dtypes: Dtypes to check (default: those it declares, else float32).
        shrink: Let hypothesis shrink a failing case to a minimal one (clearer, can take minutes);
            off, the first failing case is reported as drawn.
        unavailable: When it cannot run here at all: ``"skip"`` the calling test (pytest),
            ``"fail"``, or ``"report"`` (return the report).

    Returns:
        What held and what was skipped.

    Raises:
        ConformanceError: A guarantee does not hold; the message names the check and the case
            (hypothesis adds the shrunk falsifying example).
    """
    resolved = resolve("attention", backend, registries=registries, kwargs=kwargs, capabilities=capabilities)
    report = ConformanceReport(resolved.label, unavailable=resolved.unavailable)
    if resolved.unavailable:
        return finish(report, unavailable)
    caps = resolved.capabilities
    rules = caps.masks if caps.masks is not None else ALL_RULES
    for rule in rules:
        if rule not in ALL_RULES:  # e.g. a mask family the kit draws no cases of (super-resolution)
            report.skipped.append(f"mask {rule}: the kit draws cases of the video rules only "
                                  f"({', '.join(ALL_RULES)}); test this one with your own cases")
    rules = tuple(rule for rule in rules if rule in ALL_RULES)
    if not rules:
        report.skipped.append("masks: it declares none the kit can draw")
        return finish(report, unavailable)
    runner = _Runner(resolved.obj, resolved.label, caps)
    here = _devices_here(caps, devices, report)
    wanted = tuple(dtypes) if dtypes is not None else (caps.dtypes or ("float32",))
    if not here:
        return finish(report, unavailable)
    device = "cpu" if "cpu" in here else here[0]
    main_dtype = "float32" if "float32" in wanted else next((d for d in wanted if d != "float16"), wanted[0])
    tolerance = (atol, rtol) if main_dtype == "float32" else TOLERANCES[main_dtype]
    backward = caps.backward_on(device)
    _property(runner, rules, device, getattr(torch, main_dtype), tolerance, backward, max_examples, derandomize,
              shrink)
    report.passed.append(f"{max_examples} hypothesis cases of masks {', '.join(rules)} on {device} in {main_dtype}: "
                         f"forward{' and backward' if backward else ''} equal naive (atol {tolerance[0]:g})")
    if not backward:
        report.skipped.append(f"backward on {device}: not declared")
    for dev in here:
        for name in wanted:
            if name == "float16" and dev == "cpu":
                report.skipped.append("float16 on cpu: cogframe never runs float16 on a CPU")
                continue
            dtype = getattr(torch, name, None)
            if not isinstance(dtype, torch.dtype) or name not in TOLERANCES:
                report.skipped.append(f"dtype {name}: the kit has no tolerance for it")
                continue
            back = caps.backward_on(dev)
            for rule, mask, q_slots, k_slots, text_valid, options in _directed_cases():
                if rule in rules:
                    q, k, v, grad = _inputs(q_slots, k_slots, seed=23)
                    runner.compare(q, k, v, mask, q_slots, k_slots, text_valid, {**options, "text_bias": 0.7}, grad,
                                   dtype=dtype, device=torch.device(dev), tolerance=TOLERANCES[name], backward=back)
            report.passed.append(f"{name} on {dev}: dtype and device kept, forward{' and backward' if back else ''} "
                                 f"within {TOLERANCES[name][0]:g} of the float64 reference; rows with a single "
                                 "allowed key (all-padding prompts) return that key's value")
    return report


def _property(runner, rules, device, dtype, tolerance, backward, max_examples, derandomize, shrink) -> None:
    hypothesis = require_hypothesis()

    @hypothesis.settings(max_examples=max_examples, deadline=None, database=None, derandomize=derandomize,
                         suppress_health_check=list(hypothesis.HealthCheck), print_blob=False,
                         report_multiple_bugs=False, phases=phases(hypothesis, shrink))
    @hypothesis.given(attention_cases(rules))
    def masks_match_naive(case):
        mask, q_slots, k_slots, text_valid, options, seed = case
        q, k, v, grad = _inputs(q_slots, k_slots, seed)
        runner.compare(q, k, v, mask, q_slots, k_slots, text_valid, options, grad, dtype=dtype,
                       device=torch.device(device), tolerance=tolerance, backward=backward)

    masks_match_naive()
