"""Task ``sample``: text to video as an ordered list of stages, then mp4/gif/png/json per prompt.

Reads top to bottom: :func:`plan_sample` (set up and check everything that needs no weights),
:func:`load` (the weights the stages declared), :func:`generate_batches` (the stages, batch by
batch) and :func:`run_sample` (all three, then write). The Python API (``cogframe.load_pipeline``,
src/cogframe/api.py) calls the same plan, load and batches and keeps the frames instead of
writing them. Recipe keys (complete example:
recipes/tiny/sample.yaml; reference: docs/sampling.md)::

    task: sample
    stages: [{name: key_frames}, {name: interpolation, rounds: 3}]   # kind `stage`, in order
    stage1: {model: {preset, overrides, attention, weights: FILE or converted FOLDER}}
    stage2: {model: {...}}                 # read by the interpolation stage
    text_tokenizer, image_tokenizer, token_sampler, first_frame_sampler (optional)
    prompt: "a red circle moving left"     # or prompts_file: FILE (one prompt per line)
    out: runs/tiny/samples/                # a folder (trailing /) or a file stem; overwrite: false
    fps: 1 | duration: 4.0s                # of the key frames; each interpolation round doubles it
    guidance, negative_prompt, text_bias, parallel, seed, batch_size, display_scale
    frame_rates: {stage1: [...], stage2: [...]}   # the rates the models were trained on

``validate`` builds the plan (settings, prompts, the stages with their checks, the output names)
and hands it to ``run``, which loads the weights the stages declare and generates.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cogframe import __version__
from cogframe.config.generation import SampleSettings, file_problems, read_sample_settings
from cogframe.errors import CogframeError, ConfigError, Problem, problems_error
from cogframe.hookspecs import hookimpl
from cogframe.registry import Registries, component
from cogframe.plugins._run_folder import locks_run_folder, sample_lock_target

__all__ = ["SampleContext", "SamplePlan", "SampleResult", "SampleTask", "generate", "generate_batches", "load",
           "plan_sample", "run_sample", "take_plan"]

_MODEL_SECTIONS = ("stage1", "stage2")
_STAGE_SLOTS = {f"{stage}.model.attention.{channel}": "attention"
                for stage in _MODEL_SECTIONS for channel in ("spatial", "temporal")}
_OUTPUT_SUFFIXES = (".mp4", ".gif", ".png", ".json")  # as core/io/video_outputs.py writes them
_DECODE_CHUNK = 256  # frames per image-tokenizer call (bounds memory for large batches)


def _plain(cfg: DictConfig, key: str) -> Any:
    """``cfg.<key>`` as plain Python (None when absent)."""
    value = OmegaConf.select(cfg, key, default=None)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


# ============================================================================== shared context
class SampleContext:
    """What the stages share: settings, text tokenizer, model configs; at run time models and samplers.

    Built while validating (cheap: no weights); :meth:`load` then builds the image tokenizer and
    samplers and loads the model sections the stages declare. Stages receive it as the runtime
    keyword ``context``.
    """

    def __init__(self, cfg: DictConfig, registries: Registries, settings: SampleSettings,
                 captions: tuple[str, ...]) -> None:
        self.cfg, self.registries, self.settings, self.captions = cfg, registries, settings, captions
        self.text_tokenizer = registries.build("text_tokenizer", cfg.text_tokenizer)
        self.image_tokenizer = None
        self._configs: dict[str, Any] = {}
        self._models: dict[str, Any] = {}
        self._samplers: dict[bool, Any] = {}
        self.device = None

    @property
    def boi_id(self) -> int:
        """The BOI token id of the text tokenizer."""
        return int(self.text_tokenizer.boi_id)

    # ---- checks while planning (no weights) ----------------------------------------------------
    def model_config(self, section: str, *, needed_by: str):
        """The model config of ``<section>.model``; checked against the tokenizer and earlier sections.

        Raises:
            ConfigError: No such section, ids that do not fit, or a layout unlike the other models'.
        """
        if section in self._configs:
            return self._configs[section]
        if OmegaConf.select(self.cfg, f"{section}.model", default=None) is None:
            raise ConfigError(f"{section}: the recipe has no such section but the {needed_by} stage reads its "
                              f"model; add `{section}: {{model: {{preset: ..., weights: FILE}}}}`")
        config = _model_config(self.cfg[section])
        tok = self.text_tokenizer
        if tok.vocab_size > config.vocab_size or tok.id_offset < config.image_vocab_size:
            raise ConfigError(
                f"text_tokenizer ids [{tok.id_offset}, {tok.vocab_size}) do not fit {section}'s vocabulary "
                f"(image ids [0, {config.image_vocab_size}), {config.vocab_size} ids in all); use the text "
                "tokenizer the model was trained with (and its id_offset)")
        for other, known in self._configs.items():
            a, b = known.layout, config.layout
            if (a.text_len, a.frame_height, a.frame_width) != (b.text_len, b.frame_height, b.frame_width):
                raise ConfigError(f"{section}.model has text_len {b.text_len} and {b.frame_height}x{b.frame_width} "
                                  f"frames but {other} has text_len {a.text_len} and {a.frame_height}x"
                                  f"{a.frame_width}: use models of one family")
        self._configs[section] = config
        return config

    @property
    def text_len(self) -> int:
        """Text slots of the models (they agree; see :meth:`model_config`)."""
        return next(iter(self._configs.values())).layout.text_len

    def _check_prompt(self, text: str, prefix: str | None) -> None:
        # A tokenizer's torch-free `prompt_tokens` (same checks as `encode_prompt`) keeps
        # `cogframe validate` free of torch; tokenizers without it are checked by encoding.
        check = getattr(self.text_tokenizer, "prompt_tokens", None) or self.text_tokenizer.encode_prompt
        check(text, self.text_len, prefix=prefix)

    def check_prompts(self, prefix: str | None, *, suffix: str = "") -> None:
        """Every caption (+ ``suffix``) with ``prefix`` must fit the text slots; says which and by how much."""
        for caption in self.captions:
            try:
                self._check_prompt(caption + suffix, prefix)
            except CogframeError as exc:
                raise type(exc)(f"{self.settings.where_prompts()}: {exc}") from None

    def check_negative(self, prefix: str) -> None:
        """The negative prompt with ``prefix`` must fit the text slots."""
        try:
            self._check_prompt(str(self.settings.negative_prompt), prefix)
        except CogframeError as exc:
            raise type(exc)(f"negative_prompt: {exc}") from None

    # ---- run time --------------------------------------------------------------------------------
    def load(self, sections, cache: dict | None = None) -> float:
        """Builds the image tokenizer and samplers, loads ``sections``' models; returns the seconds.

        Args:
            sections: The model sections to load.
            cache: Built image tokenizers and models by their recipe node (and device, dtype),
                reused when the same node comes again: a pipeline that samples many times with
                different settings loads each model once. None: build everything.
        """
        import torch

        s = self.settings
        if s.threads:
            torch.set_num_threads(s.threads)
        start = time.perf_counter()
        cache = {} if cache is None else cache

        def once(key, build):
            if key not in cache:
                cache[key] = build()
            return cache[key]

        self.image_tokenizer = once(("image_tokenizer", OmegaConf.to_yaml(self.cfg.image_tokenizer)),
                                    lambda: self.registries.build("image_tokenizer", self.cfg.image_tokenizer))
        for section in dict.fromkeys(sections):
            node = self.cfg[section]
            self._models[section] = once(("model", OmegaConf.to_yaml(node), s.device, s.dtype),
                                         lambda: _load_model(node, self.registries, s.device, s.dtype))
        self._check_image_tokenizer()
        first = OmegaConf.select(self.cfg, "first_frame_sampler", default=None)
        self._samplers[False] = self._build_sampler(self.cfg.token_sampler)
        self._samplers[True] = self._samplers[False] if first is None else self._build_sampler(first)
        self.device = torch.device(s.device)
        return time.perf_counter() - start

    def model(self, section: str):
        """The loaded model of ``section`` (one the stages declared in ``models``)."""
        if section not in self._models:
            raise ConfigError(f"the model of {section} was not loaded: a stage that runs it must list it in "
                              "its `models` attribute")
        return self._models[section]

    def sampler(self, first_frame: bool = False):
        """The built token sampler (``first_frame_sampler`` for the first frame, if set)."""
        return self._samplers[first_frame]

    def encode(self, captions, prefix: str | None, *, suffix: str = ""):
        """``TextPrompt`` of ``captions`` (+ ``suffix``) with ``prefix``, on the models' device."""
        from cogframe.core.generation.prompts import TextPrompt, encode_prompts

        prompt = encode_prompts(self.text_tokenizer, [c + suffix for c in captions], self.text_len, prefix)
        return TextPrompt(prompt.ids.to(self.device), prompt.mask().to(self.device))

    def negative(self, prefix: str):
        """The negative prompt with ``prefix`` (one row, broadcast over the batch)."""
        return self.encode([str(self.settings.negative_prompt)], prefix)

    def decode(self, tokens):
        """Token grids ``[B, T, h, w]`` -> uint8 frames ``[B, T, H, W, 3]`` (on the CPU)."""
        import torch

        batch, count = tokens.shape[:2]
        flat = tokens.reshape(batch * count, *tokens.shape[2:])
        parts = [self.image_tokenizer.decode(flat[i:i + _DECODE_CHUNK]).float().cpu()
                 for i in range(0, flat.shape[0], _DECODE_CHUNK)]
        pixels = (torch.cat(parts) * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        return pixels.reshape(batch, count, *pixels.shape[1:]).contiguous()

    def build_sampler(self, node):
        """Build a token sampler from a recipe node (``{name: top_k, k: 3}``) after :meth:`load`.

        Stages with their own ``token_sampler`` option use it; samplers that read the image
        tokenizer get the loaded one.
        """
        if self.image_tokenizer is None:
            raise ConfigError("build_sampler needs the image tokenizer: call load() first")
        return self._build_sampler(node)

    def _build_sampler(self, node):
        spec = self.registries.get("token_sampler", node.get("name"))
        runtime = {"image_tokenizer": self.image_tokenizer} if "image_tokenizer" in spec.runtime_kwargs else {}
        return self.registries.build("token_sampler", node, **runtime)

    def _check_image_tokenizer(self) -> None:
        """The tokenizer must decode every image id the models can sample, into an even frame size."""
        size = getattr(self.image_tokenizer, "codebook_size", None)
        for section, config in self._configs.items():
            if size is not None and size < config.image_vocab_size:
                raise ConfigError(f"image_tokenizer has {size} codes but {section} samples image ids up to "
                                  f"{config.image_vocab_size - 1}; use the image tokenizer the models were "
                                  "trained with")
        layout = next(iter(self._configs.values())).layout
        down, scale = int(getattr(self.image_tokenizer, "downsample", 1)), self.settings.display_scale
        height, width = layout.frame_height * down * scale, layout.frame_width * down * scale
        if height % 2 or width % 2:
            raise ConfigError(f"frames of {height}x{width} pixels cannot be written as mp4 (yuv420p needs even "
                              "sides); set display_scale=2")


def _weights_folder(section: DictConfig) -> Path | None:
    """The converted weights folder of a model section (``cogframe convert``), or None for a file."""
    weights = OmegaConf.select(section, "model.weights", default=None)
    path = Path(str(weights)) if weights else None
    return path if path is not None and path.is_dir() else None


def _overrides(section: DictConfig) -> dict:
    """``model.overrides`` of a model section as a plain dict (empty when absent)."""
    node = OmegaConf.select(section, "model.overrides", default=None)
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})


def _model_config(section: DictConfig):
    """The ModelConfig of a ``stage1:``/``stage2:`` section, without loading weights.

    A weights folder written by ``cogframe convert`` carries its own model description (the
    official recipe sets ``preset: null``); otherwise ``model.preset`` + ``model.overrides``.
    """
    from cogframe.config.model import model_config_from_recipe

    folder = _weights_folder(section)
    if folder is not None:
        from cogframe.core.model.presets import model_config
        from cogframe.core.weights.pretrained import read_weights_info

        return model_config(read_weights_info(folder).model, _overrides(section))
    return model_config_from_recipe(section)


def _load_model(section: DictConfig, registries: Registries, device: str, dtype: str):
    """One model section with its weights, in eval mode on ``device``/``dtype``."""
    from cogframe.config.model import build_model_from_recipe
    from cogframe.core.weights.pretrained import load_pretrained, parse_dtype

    folder = _weights_folder(section)
    if folder is not None:
        attention = {ch: registries.build("attention", node) for ch in ("spatial", "temporal")
                     if (node := OmegaConf.select(section, f"model.attention.{ch}", default=None)) is not None}
        return load_pretrained(folder, dtype=dtype, device=device, overrides=_overrides(section),
                               spatial_attention=attention.get("spatial"),
                               temporal_attention=attention.get("temporal"))
    # The backends' capabilities are checked against where the model will run, not the CPU it
    # is built on.
    model = build_model_from_recipe(section, registries, run_device=device, dtype=dtype)
    return model.to(device=device, dtype=parse_dtype(dtype)).eval()


# ============================================================================== plan (validate)
@dataclass
class SamplePlan:
    """Everything checked before loading weights; ``validate`` hands it to ``run``.

    Attributes:
        settings: The typed top-level settings.
        captions: The prompts, in order.
        context: The shared context of the stages.
        stages: The built stages, in recipe order.
        stems: The output file stem of each prompt.
    """

    settings: SampleSettings
    captions: tuple[str, ...]
    context: SampleContext
    stages: list
    stems: list[Path]

    @property
    def fps(self) -> float:
        """Frame rate of the written videos (the last stage's)."""
        return self.stages[-1].output_fps

    def batches(self):
        """``(first index, captions, seed)`` per batch; batch ``k`` uses seed + its first index."""
        size = self.settings.batch_size
        for start in range(0, len(self.captions), size):
            yield start, self.captions[start:start + size], self.settings.seed + start


def _build_stages(cfg: DictConfig, registries: Registries, context: SampleContext) -> list:
    nodes = cfg.stages
    if not OmegaConf.is_list(nodes) or not len(nodes):
        raise ConfigError("stages: must be a non-empty list of stages, e.g. stages: [{name: key_frames}, "
                          "{name: interpolation, rounds: 3}]")
    stages, problems, fps = [], [], None
    for index, node in enumerate(nodes):
        where = f"stages.{index}"
        try:
            spec = registries.get("stage", node.get("name"))
            offered = {"context": context, "fps": fps}
            stage = registries.build("stage", node, **{k: offered[k] for k in spec.runtime_kwargs if k in offered})
        except CogframeError as exc:
            problems.append(Problem(f"{where} ({node.get('name')})", str(exc), ""))
            break  # later stages depend on this one's frame rate
        if stage.space == "tokens" and any(done.space == "pixels" for done in stages):
            problems.append(Problem(f"{where} ({node.get('name')})", "works on token grids but comes after a "
                                    "pixel stage", "list every token stage before the pixel stages"))
            break
        stages.append(stage)
        fps = stage.output_fps
    if problems:
        raise problems_error("the stages are invalid", problems)
    return stages


def _existing_outputs(stems: list[Path]) -> list[Path]:
    return [stem.with_name(stem.name + suffix) for stem in stems for suffix in _OUTPUT_SUFFIXES
            if stem.with_name(stem.name + suffix).exists()]


def plan_sample(cfg: DictConfig, registries: Registries, *, source: str = "the recipe") -> SamplePlan:
    """Checks a sample recipe without loading weights and returns the plan to run.

    Raises:
        ConfigError: Missing files (with their recipe keys), bad settings, stages that do not fit
            (untrained frame rates, missing or wrong models, prompts too long), outputs that exist.
    """
    from cogframe.core.io.video_outputs import output_stems, overwrite_problem

    problems = file_problems(cfg, registries)
    if problems:
        raise problems_error(f"{source} needs files that are not in place", problems)
    settings = read_sample_settings(cfg)
    captions, _ = settings.captions()
    context = SampleContext(cfg, registries, settings, captions)
    stages = _build_stages(cfg, registries, context)
    stems = output_stems(settings.out, captions)
    if not settings.overwrite:
        existing = _existing_outputs(stems)
        if existing:
            raise ConfigError(overwrite_problem(existing))
    return SamplePlan(settings, captions, context, stages, stems)


# Validate's plan, handed to run: the recipe object it was made for (weakly) and its text.
_handed: tuple[weakref.ref, str, int, SamplePlan] | None = None


def _hand_over(cfg: DictConfig, registries: Registries, plan: SamplePlan) -> None:
    global _handed
    _handed = (weakref.ref(cfg), OmegaConf.to_yaml(cfg), id(registries), plan)


def take_plan(cfg: DictConfig, registries: Registries, source: str) -> SamplePlan:
    """Validate's plan of this very recipe object (used once), else a fresh one."""
    global _handed
    handed, _handed = _handed, None
    if handed is not None:
        ref, text, regs, plan = handed
        if ref() is cfg and regs == id(registries) and text == OmegaConf.to_yaml(cfg):
            return plan
    return plan_sample(cfg, registries, source=source)


# ============================================================================== run
@dataclass
class SampleResult:
    """What a sample run wrote.

    Attributes:
        outputs: One ``{"mp4", "gif", "png", "json"} -> path`` mapping per prompt, in prompt order.
        seconds: Wall-clock time: ``load`` (weights), ``generate`` (all batches), ``write``, ``total``.
    """

    outputs: list[dict[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def generate(plan: SamplePlan, captions, seed: int):
    """Runs the plan's stages on one batch of captions (after ``plan.context.load``); a VideoBatch."""
    from cogframe.core.generation.stages import VideoBatch, run_stages

    return run_stages(plan.stages, VideoBatch(tuple(captions), seed), decode=plan.context.decode)


def load(plan: SamplePlan, cache: dict | None = None) -> float:
    """Loads what the plan's stages declared (reusing ``cache``, see SampleContext.load); the seconds."""
    return plan.context.load([section for stage in plan.stages for section in stage.models], cache)


def generate_batches(plan: SamplePlan):
    """Runs the stages on every batch of the plan (after :func:`load`), in prompt order.

    Yields:
        ``(first prompt index, VideoBatch, seconds)`` per batch; a batch is sampled with the
        seed plus its first prompt index (its rows are separate random streams).
    """
    for first, captions, seed in plan.batches():
        clock = time.perf_counter()
        batch = generate(plan, captions, seed)
        yield first, batch, time.perf_counter() - clock


def _record(cfg: DictConfig, plan: SamplePlan, batch, row: int, index: int, load_seconds: float) -> dict:
    """The JSON of one video: what was asked, how it was generated, what it cost."""
    s = plan.settings
    frames = batch.pixels[row]
    key_fps = plan.stages[0].output_fps
    return {
        "prompt": batch.captions[row], "index": index, "seed": batch.seed, "batch_row": row,
        "batch_size": batch.size, "fps": batch.fps, "key_fps": key_fps, "rounds": batch.rounds,
        "duration_prefix": s.prefix_format.format((batch.key_frames - 1) / key_fps),
        "frames": int(frames.shape[0]), "key_frames": batch.key_frames,
        "size": [int(frames.shape[1]), int(frames.shape[2])], "display_scale": s.display_scale,
        "passes": batch.passes,
        # Stage and decode timings cover the whole batch (batch_size videos generated together).
        "timings_s": {"load": round(load_seconds, 4), **{k: round(v, 4) for k, v in batch.seconds.items()}},
        "sampling": {"guidance": s.guidance, "negative_prompt": s.negative_prompt, "text_bias": s.text_bias,
                     "parallel": s.parallel, "token_sampler": _plain(cfg, "token_sampler"),
                     "first_frame_sampler": _plain(cfg, "first_frame_sampler") or _plain(cfg, "token_sampler"),
                     "stages": _plain(cfg, "stages")},
        "models": {section: _plain(cfg, f"{section}.model.weights") for section in _MODEL_SECTIONS}
                  | {"image_tokenizer": _plain(cfg, "image_tokenizer"), "text_tokenizer": _plain(cfg, "text_tokenizer")},
        "cogframe": __version__,
    }


def run_sample(cfg: DictConfig, registries: Registries, *, source: str = "the recipe",
               echo=print) -> SampleResult:
    """Plan (or take validate's plan), load, run the stages batch by batch, write each video's files.

    Args:
        cfg: The resolved sample recipe.
        registries: Component registries.
        source: How to name the recipe in error messages.
        echo: Progress printer (``print``; pass ``lambda *a: None`` for silence).

    Raises:
        CogframeError: A recipe problem (raised before the first output is written) or a failure
            while generating or writing (each video's files are written together or not at all).
    """
    from cogframe.core.io.video_outputs import write_generated_video

    start = time.perf_counter()
    plan = take_plan(cfg, registries, source)
    s = plan.settings
    result = SampleResult(seconds={"load": load(plan), "generate": 0.0, "write": 0.0})
    for first, batch, seconds in generate_batches(plan):
        result.seconds["generate"] += seconds
        clock = time.perf_counter()
        pixels, captions = batch.pixels.numpy(), batch.captions
        for row in range(len(captions)):
            record = _record(cfg, plan, batch, row, first + row, result.seconds["load"])
            paths = write_generated_video(plan.stems[first + row], pixels[row], batch.fps, record,
                                 scale=s.display_scale, overwrite=s.overwrite)
            result.outputs.append(paths)
            echo(f"[{first + row + 1}/{len(plan.captions)}] {captions[row]!r}: {pixels.shape[1]} frames at "
                 f"{batch.fps:g} fps -> {Path(paths['mp4']).with_suffix('')}.{{mp4,gif,png,json}}")
        result.seconds["write"] += time.perf_counter() - clock
    result.seconds["total"] = time.perf_counter() - start
    return result


@component("task", "sample", description="Text to video: a list of stages (key frames, interpolation), mp4/gif/png/json.")
class SampleTask:
    """Generate videos from prompts with trained stage-1/stage-2 models."""

    slots = {**_STAGE_SLOTS, "stages": "stage", "text_tokenizer": "text_tokenizer",
             "image_tokenizer": "image_tokenizer", "token_sampler": "token_sampler",
             "first_frame_sampler": "token_sampler"}
    # Keys beyond the slots; validation refuses any other top-level key (a typo'd `promt:`).
    # super_resolution: the model section of the super_resolution stage (plugins/stage_super_resolution.py).
    recipe_keys = (*SampleSettings.__dataclass_fields__, *_MODEL_SECTIONS, "rounds", "weights_dir",
                   "super_resolution")

    @staticmethod
    def capability_needs(cfg: DictConfig) -> dict:
        """Every stage's attention backends run forward only, on ``device`` in ``dtype``."""
        from cogframe.config.model import attention_needs

        device = OmegaConf.select(cfg, "device", default=None)
        dtype = OmegaConf.select(cfg, "dtype", default=None)
        return {path: need for section in _MODEL_SECTIONS
                for path, need in attention_needs(device=device, dtype=dtype, prefix=f"{section}.").items()}

    def validate(self, cfg: DictConfig, registries: Registries) -> None:
        """Files, settings, stages (frame rates, models, prompt lengths), outputs; no weights loaded."""
        _hand_over(cfg, registries, plan_sample(cfg, registries))

    @locks_run_folder(sample_lock_target)
    def run(self, cfg: DictConfig, registries: Registries) -> None:
        """Generate and write every prompt's video; print where they went."""
        result = run_sample(cfg, registries)
        print(f"wrote {len(result.outputs)} video(s) in {result.seconds['total']:.1f} s "
              f"(loading {result.seconds['load']:.1f} s, generating {result.seconds['generate']:.1f} s)")


@hookimpl
def register_components():
    return [SampleTask]
