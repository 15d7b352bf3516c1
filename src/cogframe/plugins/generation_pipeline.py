"""A ``sample`` recipe turned into a ready pipeline: prompts in, decoded uint8 videos out.

Used by the ``sample`` task, ``cogframe demo`` and ``cogframe eval``. Two steps, so that every
mistake is reported before anything slow happens:

1. :func:`plan_sample` (cheap: no weights loaded) reads the settings, checks that every file
   exists, builds the text tokenizer and encodes every prompt (too long -> the token counts), and
   checks that both stage models agree on the layout and that the frame rates were trained.
2. :meth:`SamplePipeline.build` loads the models, the image tokenizer and the samplers and checks
   that they agree with each other; :meth:`SamplePipeline.generate` then runs stage 1 (key frames),
   the interpolation rounds and the decoding.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from cogframe.core.generation.decoder import DecodeOptions
from cogframe.core.model.layout import Stage
from cogframe.core.generation.prompts import TextPrompt, VideoPrompts, video_prompts
from cogframe.errors import CogframeError, ConfigError, Problem, problems_error
from cogframe.registry import Registries
from cogframe.config.generation import SampleSettings, file_problems

__all__ = ["SampleBatch", "SamplePipeline", "SamplePlan", "plan_sample", "stage_config"]

# Decode at most this many frames per image-tokenizer call (bounds memory for large batches).
_DECODE_CHUNK = 256


def _node(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def _weights_folder(section: DictConfig) -> Path | None:
    """The converted weights folder of a stage section (``cogframe convert``), or None for a file."""
    weights = OmegaConf.select(section, "model.weights", default=None)
    path = Path(str(weights)) if weights else None
    return path if path is not None and path.is_dir() else None


def _overrides(section: DictConfig) -> dict:
    """``model.overrides`` of a stage section as a plain dict (empty when absent)."""
    node = OmegaConf.select(section, "model.overrides", default=None)
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})


def stage_config(section: DictConfig):
    """The ModelConfig of a ``stage1:``/``stage2:`` section, without loading weights.

    A weights folder written by ``cogframe convert`` carries its own model description (the
    official recipe sets ``preset: null``); otherwise ``model.preset`` + ``model.overrides``.
    """
    from cogframe.core.model.presets import model_config
    from cogframe.core.weights.pretrained import read_weights_info
    from cogframe.config.model import model_config_from_recipe

    folder = _weights_folder(section)
    if folder is not None:
        return model_config(read_weights_info(folder).model, _overrides(section))
    return model_config_from_recipe(section)


def _load_stage(section: DictConfig, registries: Registries, device: str, dtype: str):
    """Build one stage model with its weights, in eval mode on ``device``/``dtype``."""
    from cogframe.core.weights.pretrained import load_pretrained, parse_dtype
    from cogframe.config.model import build_model_from_recipe

    folder = _weights_folder(section)
    if folder is not None:
        attention = {ch: registries.build("attention", node) for ch in ("spatial", "temporal")
                     if (node := OmegaConf.select(section, f"model.attention.{ch}", default=None)) is not None}
        return load_pretrained(folder, dtype=dtype, device=device, overrides=_overrides(section),
                               spatial_attention=attention.get("spatial"),
                               temporal_attention=attention.get("temporal"))
    model = build_model_from_recipe(section, registries)
    return model.to(device=device, dtype=parse_dtype(dtype)).eval()


@dataclass
class SamplePlan:
    """Everything checked before loading weights.

    Attributes:
        settings: The scalar settings.
        stage1 / stage2: Model configs (``stage2`` None without a stage-2 model).
        text_tokenizer: The built text tokenizer.
        interpolator_node: The interpolator node to build (None: key frames only).
        interpolator_space: ``"tokens"`` or ``"pixels"`` (None without an interpolator).
    """

    settings: SampleSettings
    stage1: Any
    stage2: Any
    text_tokenizer: Any
    interpolator_node: dict | None
    interpolator_space: str | None


def _interpolator_node(cfg: DictConfig, registries: Registries) -> tuple[dict | None, Any]:
    """The interpolator node (default ``transformer`` when a stage-2 model is given) and its spec."""
    node = _node(cfg, "interpolator")
    if node is None:
        if _node(cfg, "stage2") is None:
            return None, None
        node = {"name": "transformer"}
    elif isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=True)
    spec = registries.get("interpolator", node.get("name"))
    if "model" in spec.runtime_kwargs and _node(cfg, "stage2") is None:
        raise ConfigError(f"interpolator {spec.name!r} needs the stage-2 model: add a stage2: section "
                          "(a model with weights), or use a pixel interpolator (repeat, linear_blend)")
    return node, spec


def _fill_defaults(node: dict, spec, settings: SampleSettings) -> dict:
    """The recipe's top-level parallel/text_bias/window_batch, for keywords the node leaves unset."""
    accepted = inspect.signature(spec.obj).parameters
    defaults = {"parallel": settings.parallel, "text_bias": settings.text_bias,
                "window_batch": settings.window_batch}
    return {**{k: v for k, v in defaults.items() if k in accepted}, **node}


def _encode_prompts(tokenizer, settings: SampleSettings, text_len: int, frames: int,
                    negative: bool) -> VideoPrompts:
    """All prompts of a batch; a prompt that does not fit says which one, and by how much."""
    try:
        return video_prompts(
            tokenizer, list(settings.captions), text_len, key_fps=settings.key_fps,
            rounds=settings.rounds, frames=frames, prefix_format=settings.prefix_format,
            first_frame_suffix=settings.first_frame_suffix, video_suffix=settings.caption_suffix,
            negative_caption=settings.negative_prompt if negative else None)
    except CogframeError as exc:
        where = "prompt" if settings.prompt_source == "prompt" else f"prompts_file {settings.prompt_source}"
        raise type(exc)(f"{where}: {exc}") from None


def plan_sample(cfg: DictConfig, registries: Registries, *, source: str = "the recipe") -> SamplePlan:
    """Check a sample recipe without loading weights (see the module docstring, step 1).

    Raises:
        ConfigError: Missing files (with their recipe keys), bad settings, prompts that do not fit,
            disagreeing models or untrained frame rates; every problem of one step at once.
    """
    problems = file_problems(cfg)
    if problems:
        raise problems_error(f"{source} needs files that are not in place", problems)
    stage1 = stage_config(cfg.stage1)
    stage2 = stage_config(cfg.stage2) if _node(cfg, "stage2") is not None else None
    _check_stages(stage1, stage2)
    node, spec = _interpolator_node(cfg, registries)
    space = getattr(spec.obj, "space", None) if spec is not None else None
    settings = SampleSettings.from_recipe(cfg, key_frames=stage1.layout.frames,
                                          token_stage2=space == "tokens", interpolates=node is not None)
    if node is not None:
        node = _fill_defaults(node, spec, settings)
        if float(node.get("guidance", 1.0)) != 1.0 and settings.negative_prompt is None:
            raise ConfigError(f"interpolator.guidance is {node['guidance']} but negative_prompt is not set; "
                              "set negative_prompt (CogVideo: 'video') or interpolator.guidance=1")
    tokenizer = registries.build("text_tokenizer", cfg.text_tokenizer)
    _check_vocab(tokenizer, stage1, "stage1")
    if stage2 is not None:
        _check_vocab(tokenizer, stage2, "stage2")
    _encode_prompts(tokenizer, settings, stage1.layout.text_len, stage1.layout.frames,
                    negative=settings.negative_prompt is not None)
    return SamplePlan(settings, stage1, stage2, tokenizer, node, space)


def _check_stages(stage1, stage2) -> None:
    problems = []
    if stage1.stage is not Stage.SEQUENTIAL:
        problems.append(Problem("stage1.model", f"is a '{stage1.stage.value}' model",
                                "use a sequential (key-frame) preset such as tiny_stage1"))
    if stage2 is not None:
        if stage2.stage is not Stage.INTERPOLATION:
            problems.append(Problem("stage2.model", f"is a '{stage2.stage.value}' model",
                                    "use an interpolation preset such as tiny_stage2"))
        a, b = stage1.layout, stage2.layout
        if (a.text_len, a.frame_height, a.frame_width) != (b.text_len, b.frame_height, b.frame_width):
            problems.append(Problem("stage2.model", f"has text_len {b.text_len} and {b.frame_height}x"
                                    f"{b.frame_width} frames but stage 1 has text_len {a.text_len} and "
                                    f"{a.frame_height}x{a.frame_width}", "use two models of one family"))
    if problems:
        raise problems_error("the models do not fit together", problems)


def _check_vocab(tokenizer, config, where: str) -> None:
    if tokenizer.vocab_size > config.vocab_size or tokenizer.id_offset < config.image_vocab_size:
        raise ConfigError(
            f"text_tokenizer ids [{tokenizer.id_offset}, {tokenizer.vocab_size}) do not fit {where}'s "
            f"vocabulary (image ids [0, {config.image_vocab_size}), {config.vocab_size} ids in all); use "
            "the text tokenizer the model was trained with (and its id_offset)")


@dataclass
class SampleBatch:
    """One batch of generated videos.

    Attributes:
        captions: The prompts.
        seed: The sampling seed of the batch (rows are separate random streams).
        frames: uint8 ``[B, T, H, W, 3]`` final frames.
        key_frames: uint8 ``[B, K, H, W, 3]`` decoded key frames.
        passes: Forward passes per branch: ``stage1`` and ``stage2`` (None when unknown).
        seconds: Wall-clock time of ``stage1``, ``stage2`` and ``decode``.
    """

    captions: list[str]
    seed: int
    frames: np.ndarray
    key_frames: np.ndarray
    passes: dict[str, int | None] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _prompts_to(prompts: VideoPrompts, device: torch.device) -> VideoPrompts:
    def move(p: TextPrompt | None) -> TextPrompt | None:
        return None if p is None else TextPrompt(p.ids.to(device), p.mask().to(device))

    return VideoPrompts(move(prompts.first_frame), move(prompts.key_frames),
                        tuple(move(p) for p in prompts.rounds), move(prompts.negative_key_frames),
                        tuple(move(p) for p in prompts.negative_rounds) if prompts.negative_rounds else None)


class SamplePipeline:
    """Built components of a sample recipe; :meth:`generate` turns prompts into videos."""

    def __init__(self, plan: SamplePlan, *, stage1, stage2, image_tokenizer, sampler, first_sampler,
                 interpolator, load_seconds: float) -> None:
        self.plan = plan
        self.settings = plan.settings
        self.text_tokenizer = plan.text_tokenizer
        self.stage1, self.stage2 = stage1, stage2
        self.image_tokenizer = image_tokenizer
        self.sampler, self.first_sampler = sampler, first_sampler
        self.interpolator = interpolator
        self.load_seconds = load_seconds

    @classmethod
    def build(cls, cfg: DictConfig, registries: Registries, *, source: str = "the recipe",
              plan: SamplePlan | None = None) -> "SamplePipeline":
        """Check the recipe (:func:`plan_sample`), then load every component and check them."""
        plan = plan or plan_sample(cfg, registries, source=source)
        settings = plan.settings
        if settings.threads:
            torch.set_num_threads(settings.threads)
        start = time.perf_counter()
        image_tokenizer = registries.build("image_tokenizer", cfg.image_tokenizer)
        _check_image_tokenizer(image_tokenizer, plan.stage1, settings.display_scale)
        sampler = _build_sampler(registries, cfg.token_sampler, image_tokenizer)
        first_node = _node(cfg, "first_frame_sampler")
        first = sampler if first_node is None else _build_sampler(registries, first_node, image_tokenizer)
        stage1 = _load_stage(cfg.stage1, registries, settings.device, settings.dtype)
        spec = (registries.get("interpolator", plan.interpolator_node["name"])
                if plan.interpolator_node is not None else None)
        # Only a model-driven interpolator reads the stage-2 model; the pixel baselines do not.
        stage2 = (_load_stage(cfg.stage2, registries, settings.device, settings.dtype)
                  if plan.stage2 is not None and spec is not None and "model" in spec.runtime_kwargs else None)
        interpolator = None
        if spec is not None:
            offered = {"model": stage2, "sampler": sampler, "boi_id": plan.text_tokenizer.boi_id,
                       "image_tokenizer": image_tokenizer}
            interpolator = registries.build("interpolator", plan.interpolator_node,
                                            **{k: offered[k] for k in spec.runtime_kwargs if k in offered})
        return cls(plan, stage1=stage1, stage2=stage2, image_tokenizer=image_tokenizer, sampler=sampler,
                   first_sampler=first, interpolator=interpolator,
                   load_seconds=time.perf_counter() - start)

    # ---- prompts ---------------------------------------------------------------------------------
    def _stage2_guidance(self) -> float:
        return float(getattr(self.interpolator, "guidance", 1.0)) if self.interpolator is not None else 1.0

    def video_prompts(self, captions: list[str]) -> VideoPrompts:
        """Encode a batch of captions with the recipe's frame rate, suffixes and negative prompt."""
        s = self.settings
        negative = s.negative_prompt is not None and (s.guidance != 1.0 or self._stage2_guidance() != 1.0)
        layout = self.stage1.config.layout
        prompts = _encode_prompts(self.text_tokenizer, dataclasses.replace(s, captions=tuple(captions)),
                                  layout.text_len, layout.frames, negative=negative)
        # A branch whose guidance is 1 would only double the work: drop its negative prompts.
        if s.guidance == 1.0:
            prompts = dataclasses.replace(prompts, negative_key_frames=None)
        if self._stage2_guidance() == 1.0:
            prompts = dataclasses.replace(prompts, negative_rounds=None)
        return _prompts_to(prompts, next(self.stage1.parameters()).device)

    def batches(self) -> Iterator[tuple[int, list[str], int]]:
        """``(first index, captions, seed)`` per batch; batch ``k`` uses seed + its first index."""
        s = self.settings
        for start in range(0, len(s.captions), s.batch_size):
            yield start, list(s.captions[start:start + s.batch_size]), s.seed + start

    # ---- generation ------------------------------------------------------------------------------
    def generate(self, captions: list[str], seed: int) -> SampleBatch:
        """Key frames, interpolation rounds and decoding of one batch of captions."""
        from cogframe.core.generation.generate import generate_video

        s = self.settings
        prompts = self.video_prompts(captions)
        boi = self.text_tokenizer.boi_id
        # CogVideo: the text bias (1.4) applies only to passes without guidance (spec §7).
        options = DecodeOptions(self.sampler, seed=seed, guidance=s.guidance, parallel=s.parallel,
                                text_bias=s.text_bias if s.guidance == 1.0 else 0.0)
        first = DecodeOptions(self.first_sampler, seed=seed, text_bias=s.text_bias, parallel=s.parallel)
        clock = time.perf_counter()
        key = generate_video(self.stage1, None, prompts, boi_id=boi, options=options, first_options=first)
        seconds = {"stage1": time.perf_counter() - clock, "stage2": 0.0}
        passes: dict[str, int | None] = {"stage1": key.passes, "stage2": 0}
        tokens = key.frames
        if s.rounds and self.plan.interpolator_space == "tokens":
            clock = time.perf_counter()
            tokens, passes["stage2"] = self._interpolate_tokens(key.frames, prompts, seed)
            seconds["stage2"] = time.perf_counter() - clock
        clock = time.perf_counter()
        key_pixels = self.decode(key.frames)
        frames = key_pixels if tokens is key.frames else self.decode(tokens)
        seconds["decode"] = time.perf_counter() - clock
        if s.rounds and self.plan.interpolator_space == "pixels":
            clock = time.perf_counter()
            frames = self.interpolator(torch.from_numpy(key_pixels), rounds=s.rounds, seed=seed).numpy()
            seconds["stage2"] = time.perf_counter() - clock
        return SampleBatch(list(captions), seed, frames, key_pixels, passes, seconds)

    def _interpolate_tokens(self, key_frames: torch.Tensor, prompts: VideoPrompts, seed: int):
        """Stage-2 rounds on token grids; the pass count when the interpolator is the transformer."""
        from cogframe.core.generation.generate import interpolate
        from cogframe.plugins.interpolators import TransformerInterpolator

        interp, s = self.interpolator, self.settings
        negatives = list(prompts.negative_rounds) if prompts.negative_rounds else None
        rounds = list(prompts.rounds)
        if isinstance(interp, TransformerInterpolator):
            # The same call the component makes, kept here to report its forward passes.
            options = DecodeOptions(interp.sampler, seed=seed, guidance=interp.guidance,
                                    text_bias=interp.text_bias, parallel=interp.parallel)
            result = interpolate(interp.model, key_frames, rounds, boi_id=interp.boi_id, options=options,
                                 negatives=negatives, window_batch=interp.window_batch)
            return result.frames, result.passes
        return interp(key_frames, rounds=s.rounds, prompts=rounds, negatives=negatives, seed=seed), None

    def decode(self, tokens: torch.Tensor) -> np.ndarray:
        """Token grids ``[B, T, h, w]`` -> uint8 frames ``[B, T, H, W, 3]``."""
        batch, count = tokens.shape[:2]
        flat = tokens.reshape(batch * count, *tokens.shape[2:])
        parts = [self.image_tokenizer.decode(flat[i:i + _DECODE_CHUNK]).float().cpu()
                 for i in range(0, flat.shape[0], _DECODE_CHUNK)]
        pixels = (torch.cat(parts) * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        return pixels.reshape(batch, count, *pixels.shape[1:]).contiguous().numpy()


def _build_sampler(registries: Registries, node, image_tokenizer):
    spec = registries.get("token_sampler", node.get("name"))
    runtime = {"image_tokenizer": image_tokenizer} if "image_tokenizer" in spec.runtime_kwargs else {}
    return registries.build("token_sampler", node, **runtime)


def _check_image_tokenizer(tokenizer, config, scale: int) -> None:
    """The tokenizer must decode every image id the model can sample, into an even frame size."""
    size = getattr(tokenizer, "codebook_size", None)
    if size is not None and size < config.image_vocab_size:
        raise ConfigError(
            f"image_tokenizer has {size} codes but the models sample image ids up to "
            f"{config.image_vocab_size - 1}; use the image tokenizer the models were trained with")
    down = int(getattr(tokenizer, "downsample", 1))
    height, width = config.layout.frame_height * down * scale, config.layout.frame_width * down * scale
    if height % 2 or width % 2:
        raise ConfigError(f"frames of {height}x{width} pixels cannot be written as mp4 (yuv420p needs even "
                          "sides); set display_scale=2")
