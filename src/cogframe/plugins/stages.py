"""Generation stages (kind ``stage``): key frames, stage-2 interpolation, two pixel baselines.

A sample recipe lists its stages in order (:mod:`cogframe.core.generation.stages` runs them)::

    stages:
      - {name: key_frames}                       # stage 1 (model section stage1)
      - {name: interpolation, rounds: 3}         # stage 2 (model section stage2): 5 -> 33 frames
      # or a pixel baseline instead of stage 2:  {name: linear_blend, rounds: 3} / {name: repeat, rounds: 3}

Every stage is built while the recipe is validated, with two runtime keywords the task supplies:
``context`` (the recipe's shared settings, text tokenizer, model configs, and at run time the
loaded models and samplers; see ``plugins/task_sample.py``) and ``fps`` (the frame rate of the
frames it receives, None for the first stage). Building checks everything that needs no weights
(the model section's stage and layout, trained frame rates, prompt lengths), so ``cogframe
validate`` reports it; calling the stage generates. A third-party stage (say super-resolution)
is one more class of this shape, registered like these.

The prompts follow the release (``cogvideo_pipeline.py``): stage 1 reads ``"4.0s" <n> caption``,
plus ``caption_suffix`` (" 视频") only when stage-1 guidance is on; every stage-2 round reads its
duration prefix and the raw caption.

Nothing here imports torch at import time.
"""

from __future__ import annotations

import dataclasses

from cogframe.config.generation import MAX_ROUNDS
from cogframe.errors import ConfigError
from cogframe.hookspecs import hookimpl
from cogframe.registry import component

__all__ = ["Interpolation", "KeyFrames", "LinearBlend", "Repeat", "StageSampler", "prefixed_decode_options"]

_RUNTIME = ("context", "fps")


def _rates(rates) -> str:
    return ", ".join(f"{r:g}" for r in rates)


def _check_rounds(rounds: int) -> None:
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 0 <= rounds <= MAX_ROUNDS:
        raise ConfigError(f"rounds: must be a whole number from 0 to {MAX_ROUNDS}, got {rounds!r}: 3 rounds "
                          "turn 5 key frames into 33, 0 keeps the key frames")


def _check_after_frames(fps, stage: str) -> float:
    if fps is None:
        raise ConfigError(f"the {stage} stage interpolates frames but comes first; list key_frames before it")
    return float(fps)


def _duration(fps: float, frames: int, fmt: str) -> str:
    from cogframe.core.io.frame_rate import duration_prefix

    return duration_prefix(fps, frames, fmt)



class StageSampler:
    """A stage's own ``token_sampler`` option: a sampler section, or None for the recipe's.

    Checked when the stage is built (a section with a registered ``name``), built once on first
    use (the image tokenizer some samplers read is loaded by then).
    """

    def __init__(self, node, context) -> None:
        if node is not None and not (hasattr(node, "get") and node.get("name")):
            raise ConfigError(f"token_sampler: expected a sampler section such as {{name: top_k, k: 3}} or null, "
                              f"got {node!r}")
        if node is not None:
            context.registries.get("token_sampler", node.get("name"))  # unknown names fail here
        self.node, self._built = node, None

    def __call__(self, context):
        """The built sampler (the recipe's ``token_sampler`` when the stage names none)."""
        if self._built is None:
            self._built = context.sampler() if self.node is None else context.build_sampler(self.node)
        return self._built


def prefixed_decode_options(ctx, seed: int, guidance: float, prefix: str, sampler=None):
    """Decode options of a stage-1 model pass after a duration prefix (key frames, sliding window).

    With guidance != 1 the negative branch is the prefix's negative prompt and the text bias is off
    (the release's CFG setting); otherwise the recipe's text bias applies. ``sampler``: the
    stage's own token sampler (None: the recipe's ``token_sampler``).
    """
    from cogframe.core.generation.decoder import DecodeOptions

    s = ctx.settings
    guided = guidance != 1.0
    return DecodeOptions(sampler or ctx.sampler(), seed=seed, guidance=guidance,
                         negative=ctx.negative(prefix) if guided else None,
                         text_bias=0.0 if guided else s.text_bias, parallel=s.parallel, compile=s.compile)

@component("stage", "key_frames", runtime_kwargs=_RUNTIME,
           description="Stage 1: the first frame (base channel), then the key frames with the KV cache.")
class KeyFrames:
    """CogVideo stage 1: frame 0 through the base channel only, then frames 1..T-1.

    Shared settings come from the recipe's top level: ``guidance`` and ``negative_prompt``
    (classifier-free guidance of the key frames), ``text_bias`` (only on passes without guidance:
    the first frame, and the key frames when ``guidance`` is 1), ``parallel``, ``fps``/``duration``,
    ``prefix_format``, ``first_frame_suffix``, ``caption_suffix``, ``frame_rates.<model>``.

    Args:
        model: The recipe section of the key-frame model (default ``stage1``).
        first_frame: ``base``: frame 0 through the base channel with the bare caption, as the
            release does (its base is the inherited text-to-image model); ``both``: through both
            channels with the duration-prefixed caption, as training sees it, for a stage 1
            trained with ``train.first_frame_loss`` (``tiny/stage1``; ``first_frame_suffix`` is
            then unused).
        token_sampler: The sampler of frames 1..T-1 (``{name: greedy}``); None: the recipe's
            ``token_sampler``. Frame 0 always uses the recipe's ``first_frame_sampler`` (or, when
            that is null, its ``token_sampler``): the first frame must be sampled (greedy decoding
            draws no object there), while the later frames follow it, and a colder sampler keeps
            them from drifting sideways (docs/quality.md).
        speculative: Decode frames 1..T-1 with drafts from the frame before, checked in one pass
            (:mod:`cogframe.core.generation.speculative`): the same tokens in fewer passes. Needs
            a deterministic ``token_sampler`` (greedy).
        context: Supplied by the task.
        fps: Supplied by the task (None: this is the first stage).
    """

    name = "key_frames"
    space = "tokens"

    def __init__(self, model: str = "stage1", first_frame: str = "base", token_sampler=None,
                 speculative: bool = False, *, context, fps: float | None = None) -> None:
        self.sampler = StageSampler(token_sampler, context)
        self.speculative = bool(speculative)  # its sampler is checked when built (validate imports no torch)
        if first_frame not in ("base", "both"):
            raise ConfigError(f"first_frame: {first_frame!r} is not a choice; use 'base' (frame 0 through "
                              "the base channel, the release) or 'both' (both channels, as trained)")
        self.first_frame = first_frame
        self.context, self.model = context, model
        self.models = (model,)
        config = context.model_config(model, needed_by=self.name)
        if config.stage.value != "sequential":
            raise ConfigError(f"{model}.model is a '{config.stage.value}' model but the key_frames stage needs "
                              "a sequential (key-frame) model: use a preset such as tiny_stage1")
        s = context.settings
        self.frames = config.layout.frames
        self.output_fps = s.key_fps(self.frames)
        trained = s.trained_rates(model)
        if trained is not None and not any(abs(self.output_fps - r) <= 1e-9 * r for r in trained):
            key = "duration" if s.duration is not None else "fps"
            fmt = s.prefix_format
            raise ConfigError(
                f"{key}: the key frames at {self.output_fps:g} fps (duration "
                f"{_duration(self.output_fps, self.frames, fmt)}) are at a rate the {model} model was not "
                f"trained on (frame_rates.{model}: {_rates(trained)} fps): use one of those rates, or the "
                f"durations {', '.join(_duration(r, self.frames, fmt) for r in trained)}")
        self.guidance = s.guidance
        # The release appends its video suffix only with stage-1 guidance (--use-guidance-stage1).
        self.suffix = s.caption_suffix if self.guidance != 1.0 else ""
        self.prefix = _duration(self.output_fps, self.frames, s.prefix_format)
        context.check_prompts(None, suffix=s.first_frame_suffix)
        context.check_prompts(self.prefix, suffix=self.suffix)
        if self.guidance != 1.0:
            context.check_negative(self.prefix)

    def __call__(self, batch):
        from cogframe.core.generation.decoder import DecodeOptions
        from cogframe.core.generation.generate import generate_key_frames

        ctx, s = self.context, self.context.settings
        sampler = self.sampler(ctx)
        _check_speculative(self.speculative, sampler, "frames 1..T-1")
        options = dataclasses.replace(prefixed_decode_options(ctx, batch.seed, self.guidance, self.prefix, sampler),
                                      speculative=self.speculative)
        first = DecodeOptions(ctx.sampler(first_frame=True), seed=batch.seed, text_bias=s.text_bias,
                              parallel=s.parallel, compile=s.compile)
        both = self.first_frame == "both"
        result = generate_key_frames(
            ctx.model(self.model), ctx.encode(batch.captions, self.prefix, suffix=self.suffix),
            boi_id=ctx.boi_id, options=options, first_options=first, first_frame_temporal=both,
            first_prompt=None if both else ctx.encode(batch.captions, None, suffix=s.first_frame_suffix))
        return batch.advance(self.name, tokens=result.frames, passes=result.passes, fps=self.output_fps)


def _check_speculative(speculative: bool, sampler, frames: str) -> None:
    """``speculative: true`` needs a sampler whose token the logits fix (checked at call time: torch)."""
    from cogframe.core.generation.speculative import is_deterministic

    if speculative and not is_deterministic(sampler):
        raise ConfigError(f"speculative: true needs a deterministic token_sampler for {frames}, such as "
                          "{name: greedy} (a sampled token cannot be checked against a draft exactly); set "
                          "token_sampler: {name: greedy} or speculative: false")


@component("stage", "interpolation", runtime_kwargs=_RUNTIME,
           description="Stage 2: recursive transformer interpolation of token grids (5 -> 9 -> 17 -> 33).")
class Interpolation:
    """CogVideo stage 2: each round fills the frames between neighbours with the interpolation model.

    Each round doubles the frame rate; round ``r`` reads the duration prefix of ``fps * 2**(r+1)``
    (2.0s, 1.0s, 0.5s after 1 fps key frames) and the raw caption. ``parallel`` and ``text_bias``
    (only without guidance) come from the recipe's top level, the rates from
    ``frame_rates.<model>``.

    Args:
        rounds: Interpolation rounds, 0..3 (0 keeps the frames and needs no model).
        guidance: Classifier-free guidance scale of stage 2 against ``negative_prompt`` (the
            release leaves it off: 1).
        window_batch: Windows per forward batch (None: all windows of a round at once); the
            tokens do not depend on it.
        unmasked_prefix: Run the prefix pass over the three given frames with the temporal
            channel unmasked, as the released cache model does; use it to reproduce the release
            with converted weights. False: the training mask in every pass.
        model: The recipe section of the interpolation model (default ``stage2``).
        token_sampler: This stage's own token sampler (``{name: top_k, k: 3}``); None: the
            recipe's ``token_sampler``. Interpolation is far less uncertain than key-frame
            generation (the neighbours fix where the object is), so it may want a colder one.
        speculative: Fill each in-between frame with drafts from the given frame before it,
            checked in one pass (:mod:`cogframe.core.generation.speculative`): the same tokens in
            fewer passes. Needs a deterministic ``token_sampler`` (greedy).
        context: Supplied by the task.
        fps: Supplied by the task: the rate of the incoming frames.
    """

    name = "interpolation"
    space = "tokens"

    def __init__(self, rounds: int = 3, guidance: float = 1.0, window_batch: int | None = None,
                 unmasked_prefix: bool = False, model: str = "stage2", token_sampler=None,
                 speculative: bool = False, *, context, fps: float | None = None) -> None:
        _check_rounds(rounds)
        self.speculative = bool(speculative)  # its sampler is checked when built (validate imports no torch)
        fps = _check_after_frames(fps, self.name)
        self.sampler = StageSampler(token_sampler, context)
        if window_batch is not None and window_batch < 1:
            raise ConfigError(f"window_batch: must be a whole number >= 1 or null, got {window_batch}")
        self.context, self.model, self.rounds = context, model, rounds
        self.guidance, self.window_batch, self.unmasked_prefix = float(guidance), window_batch, unmasked_prefix
        self.output_fps = fps * 2 ** rounds
        self.models = (model,) if rounds else ()
        self.prefixes: list[str] = []
        if not rounds:
            return  # nothing to interpolate: the model need not exist
        config = context.model_config(model, needed_by=self.name)
        if config.stage.value != "interpolation":
            raise ConfigError(f"{model}.model is a '{config.stage.value}' model but the interpolation stage "
                              "needs an interpolation model: use a preset such as tiny_stage2")
        s = context.settings
        wanted = [fps * 2 ** (r + 1) for r in range(rounds)]
        trained = s.trained_rates(model)
        if trained is not None and any(not any(abs(w - r) <= 1e-9 * r for r in trained) for w in wanted):
            raise ConfigError(
                f"rounds: {rounds} round{'s' if rounds > 1 else ''} from {fps:g} fps need the {model} model "
                f"at {_rates(wanted)} fps, but it was trained on {_rates(trained)} fps (frame_rates.{model}): "
                "lower rounds or fps so that every round's rate is a trained one")
        if self.guidance != 1.0 and not (s.negative_prompt or "").strip():
            raise ConfigError(f"guidance is {self.guidance:g} but negative_prompt is not set: set "
                              "negative_prompt (CogVideo: '视频') or guidance=1 for this stage")
        self.prefixes = [_duration(w, config.layout.frames, s.prefix_format) for w in wanted]
        for prefix in self.prefixes:
            context.check_prompts(prefix)
            if self.guidance != 1.0:
                context.check_negative(prefix)

    def __call__(self, batch):
        from cogframe.core.generation.decoder import DecodeOptions
        from cogframe.core.generation.generate import interpolate

        if not self.rounds:
            return batch.advance(self.name, passes=0)
        ctx, s = self.context, self.context.settings
        guided = self.guidance != 1.0
        sampler = self.sampler(ctx)
        _check_speculative(self.speculative, sampler, "the in-between frames")
        options = DecodeOptions(sampler, seed=batch.seed, guidance=self.guidance,
                                text_bias=0.0 if guided else s.text_bias, parallel=s.parallel, compile=s.compile,
                                unmasked_prefix=self.unmasked_prefix, speculative=self.speculative)
        result = interpolate(
            ctx.model(self.model), batch.tokens, [ctx.encode(batch.captions, p) for p in self.prefixes],
            boi_id=ctx.boi_id, options=options, window_batch=self.window_batch, first_round=batch.rounds,
            negatives=[ctx.negative(p) for p in self.prefixes] if guided else None)
        return batch.advance(self.name, tokens=result.frames, passes=result.passes, fps=self.output_fps,
                             rounds=self.rounds)


class _PixelRounds:
    """Shared by the pixel baselines: ``rounds`` rounds on decoded frames, no model."""

    space = "pixels"
    models: tuple[str, ...] = ()

    def __init__(self, rounds: int = 3, *, context=None, fps: float | None = None) -> None:
        _check_rounds(rounds)
        self.rounds = rounds
        self.output_fps = _check_after_frames(fps, self.name) * 2 ** rounds

    def _interpolate(self, pixels, rounds: int):
        raise NotImplementedError

    def __call__(self, batch):
        pixels = self._interpolate(batch.pixels, self.rounds) if self.rounds else batch.pixels
        return batch.advance(self.name, pixels=pixels, passes=0, fps=self.output_fps, rounds=self.rounds)


@component("stage", "repeat", runtime_kwargs=_RUNTIME,
           description="Pixel baseline: each new frame repeats its left neighbour (no new motion).")
class Repeat(_PixelRounds):
    """Pixel baseline: every inserted frame repeats its left neighbour.

    Args:
        rounds: Rounds, 0..3; each doubles the frame rate.
    """

    name = "repeat"

    def _interpolate(self, pixels, rounds: int):
        from cogframe.core.generation.interpolation import repeat_frames

        return repeat_frames(pixels, rounds)


@component("stage", "linear_blend", runtime_kwargs=_RUNTIME,
           description="Pixel baseline: each new frame is the rounded mean of its neighbours (cross-fade).")
class LinearBlend(_PixelRounds):
    """Pixel baseline: every inserted frame is the rounded mean of its two neighbours.

    Args:
        rounds: Rounds, 0..3; each doubles the frame rate.
    """

    name = "linear_blend"

    def _interpolate(self, pixels, rounds: int):
        from cogframe.core.generation.interpolation import blend_frames

        return blend_frames(pixels, rounds)


@hookimpl
def register_components():
    return [KeyFrames, Interpolation, Repeat, LinearBlend]
