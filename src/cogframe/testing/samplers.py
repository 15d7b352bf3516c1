"""Conformance of a token sampler: valid tokens, and position-keyed randomness.

Parallel-wave decoding samples many slots in one forward pass and must produce exactly the tokens
of one-slot-at-a-time decoding (``core/generation/waves.py``). That holds only if a sampler draws
its randomness from the :class:`~cogframe.core.generation.token_sampling.RowNoise` it is given,
row by row: the token of a row may depend on that row's logits, position and noise only.
:func:`check_token_sampler` verifies, on hypothesis-drawn logits (peaked and flat rows, rows with
``-inf`` entries), streams, slots and seeds:

* the result is ``LongTensor[N]`` on the logits' device, every id in ``[0, V)``, never an id
  whose logit is ``-inf``;
* the same call twice gives the same tokens (no hidden generator, no state between calls);
* **same (seed, stream, slot) -> same token regardless of batch and wave composition**: the rows
  sampled all together, in a shuffled order, and split into random waves (each wave its own
  call, as the wave decoder makes them) give each row the same token;
* float32 and float64 logits are both accepted.

It also reports whether the seed changes the tokens (a greedy sampler legitimately ignores it).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from cogframe.core.generation.token_sampling import SlotNoise
from cogframe.registry import Registries
from cogframe.testing._common import ConformanceError, ConformanceReport, finish, phases, require_hypothesis, resolve

__all__ = ["check_token_sampler", "sampler_cases"]


def sampler_cases(vocab_size: int = 64, max_rows: int = 24):
    """A hypothesis strategy of ``(logits [N, V] float64, streams [N], slots [N], seed, waves)``.

    Every (stream, slot) pair is distinct, as in one decoding step; ``waves`` assigns each row a
    wave number.
    """
    hypothesis = require_hypothesis()
    st = hypothesis.strategies

    @st.composite
    def cases(draw):
        n = draw(st.integers(1, max_rows))
        pairs = draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4095)), min_size=n, max_size=n,
                              unique=True))
        gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
        scale = torch.tensor([draw(st.sampled_from([0.1, 1.0, 4.0, 12.0])) for _ in range(n)], dtype=torch.float64)
        logits = torch.randn(n, vocab_size, generator=gen, dtype=torch.float64) * scale[:, None]
        if draw(st.booleans()):  # forbid some ids (as a vocabulary restriction does), never a whole row
            banned = torch.rand(n, vocab_size, generator=gen) < draw(st.sampled_from([0.2, 0.9]))
            banned[torch.arange(n), torch.randint(vocab_size, (n,), generator=gen)] = False
            logits = logits.masked_fill(banned, float("-inf"))
        streams = torch.tensor([p[0] for p in pairs], dtype=torch.long)
        slots = torch.tensor([p[1] for p in pairs], dtype=torch.long)
        waves = torch.tensor(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=torch.long)
        return logits, streams, slots, draw(st.integers(0, 2**40)), waves

    return cases()


def _sample(sampler, label, logits, streams, slots, seed, where) -> torch.Tensor:
    noise = SlotNoise(seed).rows(streams, slots)
    try:
        tokens = sampler(logits, slots.to(logits.device), noise)
    except Exception as exc:
        raise ConformanceError(f"{label} raised {type(exc).__name__}: {exc} ({where})") from exc
    n, vocab = logits.shape
    if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.long or tuple(tokens.shape) != (n,):
        got = f"{tokens.dtype} {tuple(tokens.shape)}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ConformanceError(f"{label} returned {got}; a sampler returns LongTensor[N] = [{n}] ({where})")
    if tokens.device != logits.device:
        raise ConformanceError(f"{label} returned tokens on {tokens.device} for logits on {logits.device} ({where})")
    if n and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
        raise ConformanceError(f"{label} returned ids outside [0, {vocab}): {tokens.tolist()} ({where})")
    picked = logits.gather(1, tokens[:, None]).squeeze(1)
    if torch.isneginf(picked).any():
        rows = torch.nonzero(torch.isneginf(picked)).squeeze(1).tolist()
        raise ConformanceError(f"{label} chose a token whose logit is -inf in rows {rows} ({where})")
    return tokens


def _where(streams, slots, seed) -> str:
    return f"seed {seed}, (stream, slot) rows {list(zip(streams.tolist(), slots.tolist()))}"


def check_token_sampler(
    sampler: Any,
    *,
    registries: Registries | None = None,
    kwargs: Mapping[str, Any] | None = None,
    runtime_kwargs: Mapping[str, Any] | None = None,
    vocab_size: int = 64,
    max_examples: int = 60,
    derandomize: bool = True,
    shrink: bool = False,
    unavailable: str = "skip",
) -> ConformanceReport:
    """Checks that a token sampler returns valid tokens keyed by (seed, stream, slot) only.

    Args:
        sampler: Its registered name (``"min_p"``), its ``@component`` class, or an instance.
        registries: Where a name is looked up (default: every loaded plugin).
        kwargs: Recipe keywords to build it with (``{"p": 0.1}``).
        runtime_kwargs: Keywords the sample task would pass (``image_tokenizer=...``).
        vocab_size: Columns of the drawn logits (the image vocabulary the sampler must handle).
        max_examples: Hypothesis examples.
        derandomize: Draw the same examples on every run (reproducible CI).
        shrink: Let hypothesis shrink a failing case to a minimal one (clearer, can take minutes).
        unavailable: When it cannot run here: ``"skip"`` the calling test, ``"fail"`` or ``"report"``.

    Returns:
        What held; ``passed`` says whether the seed changes its tokens.

    Raises:
        ConformanceError: A guarantee does not hold (hypothesis adds the shrunk example).
    """
    resolved = resolve("token_sampler", sampler, registries=registries, kwargs=kwargs,
                       runtime_kwargs=runtime_kwargs)
    report = ConformanceReport(resolved.label, unavailable=resolved.unavailable)
    if resolved.unavailable:
        return finish(report, unavailable)
    hypothesis = require_hypothesis()
    obj, label = resolved.obj, resolved.label
    seed_matters: list[bool] = []

    @hypothesis.settings(max_examples=max_examples, deadline=None, database=None, derandomize=derandomize,
                         suppress_health_check=list(hypothesis.HealthCheck), print_blob=False,
                         report_multiple_bugs=False, phases=phases(hypothesis, shrink))
    @hypothesis.given(sampler_cases(vocab_size))
    def position_keyed(case):
        logits, streams, slots, seed, waves = case
        where = _where(streams, slots, seed)
        together = _sample(obj, label, logits, streams, slots, seed, where)
        again = _sample(obj, label, logits, streams, slots, seed, where)
        if not torch.equal(together, again):
            raise ConformanceError(f"{label} gave other tokens for the same call made twice ({where}): draw "
                                   "randomness only from the noise argument (noise.uniform(draw)), never from "
                                   "torch's global generator or state kept between calls")
        order = torch.randperm(len(slots), generator=torch.Generator().manual_seed(seed % 2**31))
        shuffled = _sample(obj, label, logits[order], streams[order], slots[order], seed, where)
        if not torch.equal(shuffled, together[order]):
            raise ConformanceError(f"{label}: shuffling the rows changed their tokens ({where}); the token of a "
                                   "row must depend only on its logits, position and noise")
        split = torch.empty_like(together)
        for wave in waves.unique().tolist():
            rows = torch.nonzero(waves == wave).squeeze(1)
            split[rows] = _sample(obj, label, logits[rows], streams[rows], slots[rows], seed, where)
        if not torch.equal(split, together):
            diff = torch.nonzero(split != together).squeeze(1).tolist()
            raise ConformanceError(
                f"{label}: sampling the rows in waves {waves.tolist()} changed the tokens of rows {diff} ({where}); "
                "parallel-wave decoding needs the same (seed, stream, slot) to give the same token whatever else "
                "is sampled in the same call: use noise.uniform(draw) per row")
        single = _sample(obj, label, logits.float(), streams, slots, seed, where)  # float32 logits are accepted
        del single
        other = _sample(obj, label, logits, streams, slots, seed + 1, where)
        seed_matters.append(not torch.equal(other, together))

    position_keyed()
    report.passed.append(f"{max_examples} hypothesis cases: LongTensor[N] ids in [0, {vocab_size}), never a -inf logit")
    report.passed.append("the same call twice gives the same tokens")
    report.passed.append("same (seed, stream, slot) -> same token when rows are shuffled or split into waves")
    report.passed.append("float32 and float64 logits accepted")
    report.passed.append("the seed changes the tokens" if any(seed_matters)
                         else "the seed never changed the tokens (a deterministic sampler)")
    return report
