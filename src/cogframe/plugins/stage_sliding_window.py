"""Generation stage ``sliding_window``: the one-stage baseline of CogVideo's hierarchy ablation.

CogVideo (arXiv 2205.15868) generates key frames at a low frame rate and interpolates them; its
ablation compares that with "1-stage" generation, where the stage-1 (sequential) model makes
every frame at the final rate, sliding forward over the frames it made with ``N_overlap`` frames
of overlap. This stage is that baseline::

    fps: 8                                                   # key frames at the final rate ("0.5s")
    stages:
      - {name: key_frames}                                   # 5 frames at 8 fps
      - {name: sliding_window, num_frames: 33}               # 4 given, 1 new per window: 33 frames
    stage2: null                                             # no interpolation model

Each window gives the last ``context_frames`` frames as the model's frames ``0..context_frames-1``
and generates the next ``stride`` frames (:func:`cogframe.core.generation.sliding.extend_frames`),
with the key frames' prompt (the duration prefix of the incoming frame rate, ``caption_suffix``
under guidance), the recipe's ``token_sampler``, ``guidance``/``negative_prompt``, ``text_bias``
and ``parallel``. ``recipes/tiny/sample_one_stage.yaml`` is the tiny ablation recipe.

Nothing here imports torch at import time, nor while the stage is built (``cogframe validate``).
"""

from __future__ import annotations

from cogframe.errors import ConfigError
from cogframe.hookspecs import hookimpl
from cogframe.plugins.stages import StageSampler, _duration, _rates
from cogframe.registry import component

__all__ = ["SlidingWindow"]


@component("stage", "sliding_window", runtime_kwargs=("context", "fps"),
           description="One-stage baseline: the stage-1 model extends the frames window by window (no stage 2).")
class SlidingWindow:
    """Extends the incoming frames to ``num_frames`` with the stage-1 model alone, at their frame rate.

    The frame rate stays the incoming one (the stage adds frames, not rate), and must be one the
    model was trained on (``frame_rates.<model>``). Shared settings come from the recipe's top level
    as for ``key_frames``: ``guidance``, ``negative_prompt``, ``text_bias`` (only without guidance),
    ``parallel``, ``prefix_format``, ``caption_suffix``.

    Args:
        num_frames: Frames of the finished video (33: the length of three interpolation rounds
            from 5 key frames). The incoming frames are kept unchanged as its first frames.
        context_frames: Frames of the video given to each window, the paper's ``N_overlap``
            (None: the layout's frames - 1, i.e. 4 of CogVideo's 5).
        stride: Frames each window generates after its context (None: the rest of the layout,
            ``frames - context_frames``).
        model: The recipe section of the sequential model (default ``stage1``).
        token_sampler: The sampler of the frames this stage adds (``{name: greedy}``); None: the
            recipe's ``token_sampler``. As for ``key_frames`` and ``interpolation``.
        context: Supplied by the task (the sample task's shared context).
        fps: Supplied by the task: the rate of the incoming frames.
    """

    name = "sliding_window"
    space = "tokens"

    def __init__(self, num_frames: int = 33, context_frames: int | None = None, stride: int | None = None,
                 model: str = "stage1", token_sampler=None, *, context, fps: float | None = None) -> None:
        from cogframe.core.generation.sliding import check_window

        self.sampler = StageSampler(token_sampler, context)
        if fps is None:
            raise ConfigError("the sliding_window stage extends frames but comes first; list key_frames before it "
                              "(e.g. stages: [{name: key_frames}, {name: sliding_window, num_frames: 33}])")
        fps = float(fps)
        config = context.model_config(model, needed_by=self.name)
        if config.stage.value != "sequential":
            raise ConfigError(f"{model}.model is a '{config.stage.value}' model but the sliding_window stage needs "
                              "a sequential (key-frame) model: use a preset such as tiny_stage1")
        self.context, self.model, self.num_frames = context, model, num_frames
        self.context_frames, self.stride = check_window(config.layout.frames, context_frames, stride, num_frames)
        self.models = (model,)
        self.output_fps = fps
        s = context.settings
        fmt = s.prefix_format
        frames = config.layout.frames
        trained = s.trained_rates(model)
        if trained is not None and not any(abs(fps - r) <= 1e-9 * r for r in trained):
            raise ConfigError(
                f"the sliding_window stage continues frames at {fps:g} fps (duration {_duration(fps, frames, fmt)}), "
                f"a rate the {model} model was not trained on (frame_rates.{model}: {_rates(trained)} fps): make "
                f"the frames before it at one of those rates (fps or duration of the key frames)")
        self.guidance = s.guidance
        self.suffix = s.caption_suffix if self.guidance != 1.0 else ""  # as key_frames: the release's rule
        self.prefix = _duration(fps, frames, fmt)
        context.check_prompts(self.prefix, suffix=self.suffix)
        if self.guidance != 1.0:
            context.check_negative(self.prefix)

    def __call__(self, batch):
        from cogframe.core.generation.sliding import extend_frames
        from cogframe.plugins.stages import prefixed_decode_options

        ctx = self.context
        options = prefixed_decode_options(ctx, batch.seed, self.guidance, self.prefix, self.sampler(ctx))
        result = extend_frames(ctx.model(self.model), batch.tokens,
                               ctx.encode(batch.captions, self.prefix, suffix=self.suffix), boi_id=ctx.boi_id,
                               options=options, num_frames=self.num_frames, context=self.context_frames,
                               stride=self.stride)
        return batch.advance(self.name, tokens=result.frames, passes=result.passes, fps=self.output_fps)


@hookimpl
def register_components():
    return [SlidingWindow]
