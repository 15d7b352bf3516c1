"""Task ``sample``: text to video with a stage-1 model, then stage-2 (or pixel) interpolation.

Recipe keys (complete example: recipes/tiny/sample.yaml; reference: docs/sampling.md)::

    task: sample
    stage1: {model: {preset, overrides, attention, weights: FILE or converted FOLDER}}
    stage2: {model: {...}}                 # optional; enables the default `transformer` interpolator
    interpolator: {name: transformer}      # or repeat / linear_blend (pixels); optional
    text_tokenizer, image_tokenizer, token_sampler, first_frame_sampler (optional)
    prompt: "a red circle moving left"     # or prompts_file: FILE (one prompt per line)
    out: runs/tiny/samples/                # a folder (trailing /) or a file stem
    fps: 1 | duration: 4.0s                # of the key frames; final fps = fps * 2**rounds
    rounds: 3
    guidance: 1, negative_prompt, text_bias, parallel, seed, batch_size, display_scale
    frame_rates: {stage1: [...], stage2: [...]}   # the rates the models were trained on

``validate`` checks everything that does not need the weights (files, settings, prompt lengths,
frame rates); ``run`` also checks the loaded components before generating anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cogframe import __version__
from cogframe.hookspecs import hookimpl
from cogframe.registry import Registries, component

__all__ = ["SampleResult", "SampleTask", "run_sample"]

_STAGE_SLOTS = {f"{stage}.model.attention.{channel}": "attention"
                for stage in ("stage1", "stage2") for channel in ("spatial", "temporal")}


@dataclass
class SampleResult:
    """What a sample run wrote.

    Attributes:
        outputs: One ``{"mp4", "gif", "png", "json"} -> path`` mapping per prompt, in prompt order.
        seconds: Wall-clock time: ``load`` (weights), ``generate`` (all batches), ``write``, ``total``.
    """

    outputs: list[dict[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def _plain(cfg: DictConfig, key: str):
    """``cfg.<key>`` as plain Python (None when absent)."""
    value = OmegaConf.select(cfg, key, default=None)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _record(cfg: DictConfig, pipeline, batch, row: int, index: int) -> dict:
    """The JSON of one video: what was asked, how it was sampled, what it cost."""
    s = pipeline.settings
    frames = batch.frames[row]
    return {
        "prompt": batch.captions[row], "index": index, "seed": batch.seed, "batch_row": row,
        "batch_size": len(batch.captions), "fps": s.fps, "key_fps": s.key_fps, "rounds": s.rounds,
        "duration_prefix": s.prefix_format.format((pipeline.stage1.config.layout.frames - 1) / s.key_fps),
        "frames": int(frames.shape[0]), "key_frames": int(batch.key_frames.shape[1]),
        "size": [int(frames.shape[1]), int(frames.shape[2])], "display_scale": s.display_scale,
        "passes": batch.passes,
        # stage1/stage2/decode cover the whole batch (batch_size videos generated together).
        "timings_s": {"load": round(pipeline.load_seconds, 4), **{k: round(v, 4) for k, v in batch.seconds.items()}},
        "sampling": {"guidance": s.guidance, "negative_prompt": s.negative_prompt, "text_bias": s.text_bias,
                     "parallel": s.parallel, "token_sampler": _plain(cfg, "token_sampler"),
                     "first_frame_sampler": _plain(cfg, "first_frame_sampler") or _plain(cfg, "token_sampler"),
                     "interpolator": pipeline.plan.interpolator_node},
        "models": {"stage1": _plain(cfg, "stage1.model.weights"), "stage2": _plain(cfg, "stage2.model.weights"),
                   "image_tokenizer": _plain(cfg, "image_tokenizer"), "text_tokenizer": _plain(cfg, "text_tokenizer")},
        "cogframe": __version__,
    }


def run_sample(cfg: DictConfig, registries: Registries, *, source: str = "the recipe",
               echo=print) -> SampleResult:
    """Check, build, generate every prompt of the recipe in batches, write each video's files.

    Args:
        cfg: The resolved sample recipe.
        registries: Component registries.
        source: How to name the recipe in error messages.
        echo: Progress printer (``print``; pass ``lambda *a: None`` for silence).

    Raises:
        CogframeError: A recipe problem (raised before the first output is written) or a failure
            while generating or writing (each video's files are written together or not at all).
    """
    from cogframe.core.io.video_outputs import output_stems, write_sample
    from cogframe.plugins.generation_pipeline import SamplePipeline

    start = time.perf_counter()
    pipeline = SamplePipeline.build(cfg, registries, source=source)
    s = pipeline.settings
    stems = output_stems(s.out, s.captions)
    result = SampleResult(seconds={"load": pipeline.load_seconds, "generate": 0.0, "write": 0.0})
    for first, captions, seed in pipeline.batches():
        clock = time.perf_counter()
        batch = pipeline.generate(captions, seed)
        result.seconds["generate"] += time.perf_counter() - clock
        clock = time.perf_counter()
        for row in range(len(captions)):
            paths = write_sample(stems[first + row], batch.frames[row], s.fps,
                                 _record(cfg, pipeline, batch, row, first + row), scale=s.display_scale)
            result.outputs.append(paths)
            echo(f"[{first + row + 1}/{len(s.captions)}] {captions[row]!r}: "
                 f"{batch.frames.shape[1]} frames at {s.fps:g} fps -> {Path(paths['mp4']).with_suffix('')}"
                 ".{mp4,gif,png,json}")
        result.seconds["write"] += time.perf_counter() - clock
    result.seconds["total"] = time.perf_counter() - start
    return result


@component("task", "sample", description="Text to video: key frames (stage 1), interpolation, mp4/gif/png/json.")
class SampleTask:
    """Generate videos from prompts with trained stage-1/stage-2 models."""

    slots = {**_STAGE_SLOTS, "text_tokenizer": "text_tokenizer", "image_tokenizer": "image_tokenizer",
             "token_sampler": "token_sampler", "first_frame_sampler": "token_sampler",
             "interpolator": "interpolator"}

    def validate(self, cfg: DictConfig, registries: Registries) -> None:
        """Files, settings, prompt lengths, frame rates and model agreement (no weights loaded)."""
        from cogframe.plugins.generation_pipeline import plan_sample

        plan_sample(cfg, registries)

    def run(self, cfg: DictConfig, registries: Registries) -> None:
        """Generate and write every prompt's video; print where they went."""
        result = run_sample(cfg, registries)
        print(f"wrote {len(result.outputs)} video(s) in {result.seconds['total']:.1f} s "
              f"(loading {result.seconds['load']:.1f} s, generating {result.seconds['generate']:.1f} s)")


@hookimpl
def register_components():
    return [SampleTask]
