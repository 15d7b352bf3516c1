"""The ``sample`` recipe read and checked without building anything heavy.

Everything a user can get wrong is found here, before a model is loaded or a frame generated:
empty or missing prompts, an unknown frame rate or duration, an impossible number of rounds,
guidance without a negative prompt, and missing checkpoint files (named with their recipe key and
the recipe that produces them). The keys are documented in docs/sampling.md, "The sample recipe".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cogframe.errors import ConfigError, Problem, problems_error
from cogframe.config.recipes import assets_root

__all__ = [
    "ASSET_SOURCES",
    "MAX_ROUNDS",
    "SampleSettings",
    "file_problems",
    "parse_duration",
    "read_captions",
]

MAX_ROUNDS = 3  # CogVideo's recursion depth (spec §2.3): 5 -> 9 -> 17 -> 33 frames

# Shipped assets (relative to the assets folder) -> (the recipe that trains it, where it writes it).
ASSET_SOURCES: dict[str, tuple[str, str]] = {
    "tiny/text_tokenizer.model": ("tiny/text_tokenizer", "runs/tiny/text_tokenizer/tokenizer.model"),
    "tiny/vqvae": ("tiny/vqvae", "runs/tiny/vqvae/model"),
    "tiny/stage1.safetensors": ("tiny/stage1", "runs/tiny/stage1/model.safetensors"),
    "tiny/stage2.safetensors": ("tiny/stage2", "runs/tiny/stage2/model.safetensors"),
}

# Recipe keys holding files the task reads: (key, required, what it is).
_FILE_KEYS = (
    ("stage1.model.weights", True, "the stage-1 (key-frame) model weights"),
    ("stage2.model.weights", True, "the stage-2 (interpolation) model weights"),
    ("text_tokenizer.model_path", True, "the text tokenizer model"),
    ("image_tokenizer.path", True, "the trained image tokenizer"),
    ("token_sampler.clusters", False, "the token clusters"),
    ("first_frame_sampler.clusters", False, "the token clusters"),
)


# Sections the task cannot run without, with an example for the error message.
_SECTIONS = (
    ("stage1.model", "{preset: tiny_stage1, weights: FILE}"),
    ("text_tokenizer", "{name: sentencepiece, model_path: FILE, id_offset: 256}"),
    ("image_tokenizer", "{name: vqvae, path: FOLDER}"),
    ("token_sampler", "{name: top_k, k: 10}"),
)


def _select(cfg: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(cfg, key, default=default)


def read_captions(cfg: DictConfig) -> tuple[tuple[str, ...], str]:
    """The prompts to sample and where they came from (``prompt`` or the prompts file's path).

    ``prompts_file`` (one prompt per line; blank lines are skipped) replaces ``prompt`` when set.

    Raises:
        ConfigError: No prompt, an empty prompt, an unreadable or empty prompts file.
    """
    path = _select(cfg, "prompts_file")
    if path not in (None, ""):
        file = Path(str(path)).expanduser()
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise ConfigError(f"prompts_file: {file} does not exist; give a UTF-8 text file with one "
                              "prompt per line, or drop prompts_file and set prompt=\"...\"") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"prompts_file: cannot read {file} ({exc}); give a UTF-8 text file with "
                              "one prompt per line") from None
        captions = tuple(line.strip() for line in lines if line.strip())
        if not captions:
            raise ConfigError(f"prompts_file: {file} holds no prompt (only blank lines); write one "
                              "prompt per line")
        return captions, str(file)
    prompt = _select(cfg, "prompt")
    if prompt is None:
        raise ConfigError('no prompt: set prompt="a red circle moving left" or prompts_file=FILE '
                          "(one prompt per line)")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"prompt is empty ({prompt!r}): describe the video, e.g. "
                          'prompt="a red circle moving left"')
    return (prompt.strip(),), "prompt"


def parse_duration(value: Any) -> float:
    """Seconds from ``4``, ``4.0``, ``"4.0s"`` or ``"4.0秒"`` (the duration prefix of the key frames).

    Raises:
        ConfigError: Not a positive number of seconds.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|sec|秒)?\s*", str(value))
        seconds = float(match.group(1)) if match else float("nan")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"duration {value!r} is not a positive number of seconds; write e.g. "
                          "duration=4.0 or duration=4.0s (the span of the key frames, 4.0s = 1 fps)")
    return seconds


def _rates(cfg: DictConfig, key: str) -> tuple[float, ...] | None:
    rates = _select(cfg, key)
    if rates is None:
        return None
    try:
        return tuple(sorted(float(r) for r in rates))
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a list of frame rates such as [1, 2, 4, 8], got {rates!r}") from None


def _fmt(rates) -> str:
    return ", ".join(f"{r:g}" for r in rates)


@dataclass(frozen=True)
class SampleSettings:
    """The scalar settings of a sample recipe (see docs/sampling.md, "The sample recipe").

    Attributes:
        captions: The prompts, in order.
        prompt_source: ``"prompt"`` or the prompts file they were read from.
        key_fps: Frame rate of the key frames (1 fps: duration prefix ``4.0s``).
        rounds: Interpolation rounds (0..3); the final frame rate is ``key_fps * 2**rounds``.
        guidance: Classifier-free guidance scale of the key frames (1: off).
        negative_prompt: Caption of the guidance branch, or None.
        seed: Sampling seed (batch ``k`` uses ``seed`` + the index of its first prompt).
        parallel: Decode in parallel waves (exact, fewer passes).
        text_bias: Query->text attention bias of every pass that runs without guidance.
        batch_size: Prompts generated together.
        window_batch: Stage-2 windows per forward batch (None: all at once).
        display_scale: Nearest-neighbour upscaling of the written files (not of the JSON data).
        prefix_format: Duration prefix format, e.g. ``"{:.1f}s"``.
        first_frame_suffix: Appended to the caption of the first frame (CogVideo: " 高清摄影").
        caption_suffix: Appended to the captions of the video passes (CogVideo: " 视频").
        stage1_rates / stage2_rates: Frame rates the models were trained on (None: unchecked).
        out: Output folder (ends with ``/`` or exists) or file stem.
        device / dtype / threads: Where and how the models run.
    """

    captions: tuple[str, ...]
    prompt_source: str
    key_fps: float
    rounds: int
    guidance: float
    negative_prompt: str | None
    seed: int
    parallel: bool
    text_bias: float
    batch_size: int
    window_batch: int | None
    display_scale: int
    prefix_format: str
    first_frame_suffix: str
    caption_suffix: str
    stage1_rates: tuple[float, ...] | None
    stage2_rates: tuple[float, ...] | None
    out: str
    device: str
    dtype: str
    threads: int | None

    @property
    def fps(self) -> float:
        """Frame rate of the final frames: ``key_fps * 2**rounds`` (1 fps, 3 rounds -> 8 fps)."""
        return self.key_fps * 2 ** self.rounds

    @classmethod
    def from_recipe(cls, cfg: DictConfig, *, key_frames: int, token_stage2: bool,
                    interpolates: bool) -> "SampleSettings":
        """Reads and checks the settings; reports every problem at once.

        Args:
            cfg: The resolved recipe.
            key_frames: Frames of the stage-1 model (5): a duration spans ``key_frames - 1`` gaps.
            token_stage2: Whether rounds run through a model trained on ``stage2_rates``.
            interpolates: Whether anything can interpolate (a stage-2 model or an interpolator).

        Raises:
            ConfigError: Listing every problem with its key and fix.
        """
        problems: list[Problem] = []

        def check(fn):
            try:
                return fn()
            except ConfigError as exc:
                problems.append(Problem("", str(exc), ""))
                return None

        captions = check(lambda: read_captions(cfg)) or ((), "prompt")
        key_fps = check(lambda: _key_fps(cfg, key_frames))
        rounds = _select(cfg, "rounds", 0)
        if not isinstance(rounds, int) or isinstance(rounds, bool) or not 0 <= rounds <= MAX_ROUNDS:
            problems.append(Problem("rounds", f"must be a whole number from 0 to {MAX_ROUNDS}, got "
                                    f"{rounds!r}", f"3 rounds turn {key_frames} key frames into "
                                    f"{(key_frames - 1) * 8 + 1}; 0 keeps the key frames"))
            rounds = None
        elif rounds and not interpolates:
            problems.append(Problem("rounds", f"is {rounds} but the recipe has no stage2 model and no "
                                    "interpolator", "add a stage2: section or an interpolator "
                                    "(repeat, linear_blend), or set rounds=0"))
        stage1_rates = check(lambda: _rates(cfg, "frame_rates.stage1"))
        stage2_rates = check(lambda: _rates(cfg, "frame_rates.stage2"))
        if key_fps is not None and rounds is not None:
            key = "duration" if _select(cfg, "duration") is not None else "fps"
            problems += _rate_problems(key, key_fps, rounds, key_frames, stage1_rates,
                                       stage2_rates if token_stage2 else None,
                                       str(_select(cfg, "prefix_format", "{:.1f}s")))
        guidance = check(lambda: _number(cfg, "guidance", 1.0, float))
        text_bias = check(lambda: _number(cfg, "text_bias", 0.0, float))
        seed = check(lambda: _number(cfg, "seed", 0, int))
        threads = check(lambda: _number(cfg, "threads", None, int))
        window_batch = check(lambda: _number(cfg, "window_batch", None, int))
        negative = _select(cfg, "negative_prompt")
        if guidance not in (None, 1.0) and (negative is None or not str(negative).strip()):
            problems.append(Problem("negative_prompt", f"is empty but guidance is {guidance:g}",
                                    "set negative_prompt (CogVideo uses 'video') or guidance=1"))
        for key, low in (("batch_size", 1), ("display_scale", 1)):
            value = _select(cfg, key, 1)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                problems.append(Problem(key, f"must be a whole number >= {low}, got {value!r}", ""))
        if not str(_select(cfg, "out") or "").strip():
            problems.append(Problem("out", "is not set", "name an output folder (ending in /) or a "
                                    "file stem, e.g. out=runs/tiny/samples/red_circle"))
        if problems:
            raise problems_error("the sample settings are invalid", problems)
        return cls(
            captions=captions[0], prompt_source=captions[1], key_fps=key_fps, rounds=rounds,
            guidance=guidance, negative_prompt=str(negative) if negative is not None else None,
            seed=seed, parallel=bool(_select(cfg, "parallel", True)), text_bias=text_bias,
            batch_size=int(_select(cfg, "batch_size", 1)), window_batch=window_batch,
            display_scale=int(_select(cfg, "display_scale", 1)),
            prefix_format=str(_select(cfg, "prefix_format", "{:.1f}s")),
            first_frame_suffix=str(_select(cfg, "first_frame_suffix", "") or ""),
            caption_suffix=str(_select(cfg, "caption_suffix", "") or ""),
            stage1_rates=stage1_rates, stage2_rates=stage2_rates, out=str(_select(cfg, "out")),
            device=str(_select(cfg, "device", "cpu")), dtype=str(_select(cfg, "dtype", "float32")),
            threads=threads,
        )


def _number(cfg: DictConfig, key: str, default, kind: type):
    """``cfg.<key>`` as an int or float (``default`` when null); ConfigError for anything else."""
    value = _select(cfg, key, default)
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or (kind is int and value != int(value)) or not math.isfinite(value):
        raise ConfigError(f"{key} must be {'a whole number' if kind is int else 'a number'}, got {value!r}")
    return kind(value)


def _key_fps(cfg: DictConfig, key_frames: int) -> float:
    fps, duration = _select(cfg, "fps"), _select(cfg, "duration")
    if fps is not None and duration is not None:
        raise ConfigError(f"both fps ({fps}) and duration ({duration}) are set; they say the same thing "
                          f"(duration = {key_frames - 1} / fps): keep one and set the other to null")
    if duration is not None:
        return (key_frames - 1) / parse_duration(duration)
    if fps is None:
        return 1.0
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ConfigError(f"fps {fps!r} is not a positive frame rate; write e.g. fps=1 (key frames "
                          "1 s apart, duration prefix 4.0s)")
    return float(fps)


def _rate_problems(key, key_fps, rounds, frames, stage1_rates, stage2_rates, prefix_format) -> list[Problem]:
    """Frame rates the models never saw; the stage-2 ones only once the key-frame rate is right."""
    def duration(rate: float) -> str:
        return prefix_format.format((frames - 1) / rate)

    if stage1_rates is not None and not any(math.isclose(key_fps, r) for r in stage1_rates):
        return [Problem(
            key, f"the key frames at {key_fps:g} fps (duration {duration(key_fps)}) are at a rate the "
            f"stage-1 model was not trained on (frame_rates.stage1: {_fmt(stage1_rates)} fps)",
            f"use one of those rates, or the durations {', '.join(duration(r) for r in stage1_rates)}")]
    wanted = [key_fps * 2 ** (r + 1) for r in range(rounds)]
    if stage2_rates is not None and any(not any(math.isclose(w, r) for r in stage2_rates) for w in wanted):
        return [Problem(
            "rounds", f"{rounds} round{'s' if rounds > 1 else ''} from {key_fps:g} fps need the stage-2 "
            f"model at {_fmt(wanted)} fps, but it was trained on {_fmt(stage2_rates)} fps "
            "(frame_rates.stage2)", "lower rounds or fps so that every round's rate is a trained one")]
    return []


def _asset_hint(path: Path) -> str | None:
    try:
        rel = path.resolve().relative_to(assets_root().resolve()).as_posix().rstrip("/")
    except ValueError:
        return None
    source = ASSET_SOURCES.get(rel)
    if source is None:
        return (f"it is a shipped asset ({rel} in the assets folder {assets_root()}, or "
                "$COGFRAME_ASSETS); put the file there or point the key at another file")
    recipe, output = source
    return (f"it is a shipped asset of the tiny pipeline: produce it with `cogframe run {recipe}` (after "
            f"the recipes it builds on, see docs/data.md) and copy {output} to {path}, or set "
            "COGFRAME_ASSETS to a folder that holds the tiny assets")


def file_problems(cfg: DictConfig) -> list[Problem]:
    """Every file the recipe needs that is missing, with its recipe key and how to produce it."""
    problems = [Problem(key, "the recipe has no such section", f"add it, e.g. {key}: {example}")
                for key, example in _SECTIONS if _select(cfg, key) is None]
    problems += _official_problems(cfg)
    reported = {p.where for p in problems}
    for key, required, what in _FILE_KEYS:
        if _select(cfg, key.rsplit(".", 1)[0]) is None or key in reported:
            continue
        value = _select(cfg, key)
        if value in (None, ""):
            if required:
                problems.append(Problem(key, f"is not set ({what})", f"set {key} to the file"))
            continue
        path = Path(str(value)).expanduser()
        if path.exists():
            continue
        hint = _asset_hint(path) or ("train or download it (`cogframe ls` lists the training recipes), "
                                     "or fix the path")
        problems.append(Problem(key, f"{what} {path} does not exist", hint))
    return problems


def _official_problems(cfg: DictConfig) -> list[Problem]:
    """The converted-weights and icetk checks of :mod:`cogframe.config.official_weights`.

    Those expect weights FOLDERS (``cogframe convert``); a single ``.safetensors`` file (the
    tiny models) is checked by :func:`file_problems` and the loader, so its entries are left out.
    """
    from cogframe.config.official_weights import check_official_files

    files = {stage for stage in ("stage1", "stage2")
             if Path(str(_select(cfg, f"{stage}.model.weights") or "")).suffix == ".safetensors"}
    return [p for p in check_official_files(cfg) if p.where.split(".")[0] not in files]
