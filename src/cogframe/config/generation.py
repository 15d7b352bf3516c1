"""The ``sample`` recipe's settings, typed and checked without building anything heavy.

:class:`SampleSettings` is the one typed-settings dataclass of a sample recipe's top-level keys
(read with :func:`cogframe.config.settings.read_section`, the checker components use): types,
unknown-free defaults and value checks (``problems()``) in one place. :func:`file_problems` names
every missing file with its recipe key and how to produce it. The keys are documented in
docs/sampling.md, "The sample recipe". Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cogframe.errors import ConfigError, Problem, problems_error
from cogframe.config.recipes import assets_root
from cogframe.config.settings import read_section, section_problems

__all__ = [
    "ASSET_SOURCES",
    "MAX_ROUNDS",
    "MAX_SEED",
    "SampleSettings",
    "file_problems",
    "parse_duration",
    "read_sample_settings",
]

MAX_ROUNDS = 3  # CogVideo's recursion depth (arXiv 2205.15868): 5 -> 9 -> 17 -> 33 frames
# Seeds feed a 64-bit signed hash (core/generation/token_sampling.py); batch k adds its first index.
MAX_SEED = 2 ** 63 - 1

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
    ("stages", "[{name: key_frames}, {name: interpolation, rounds: 3}]"),
    ("text_tokenizer", "{name: sentencepiece, model_path: FILE, id_offset: 256}"),
    ("image_tokenizer", "{name: vqvae, path: FOLDER}"),
    ("token_sampler", "{name: top_k, k: 10}"),
)


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


def _whole(value: int, low: int, key: str, example: str) -> list[Problem]:
    return [] if value >= low else [Problem(key, f"must be a whole number >= {low}, got {value!r}", example)]


@dataclass(frozen=True)
class SampleSettings:
    """The top-level settings of a sample recipe (docs/sampling.md, "The sample recipe").

    Stage-specific settings (interpolation rounds, stage-2 guidance, ``window_batch``) are
    keywords of the stages in ``stages:``; these are shared by all stages or by the task.

    Attributes:
        prompt: One prompt (ignored when ``prompts_file`` is set).
        prompts_file: A UTF-8 file with one prompt per line (blank lines skipped).
        out: Output folder (ends with ``/`` or exists) or file stem.
        overwrite: Replace the files of an earlier video of the same name (default: refuse).
        seed: Sampling seed, 0 .. 2**63 - 1 (batch ``k`` uses ``seed`` + the index of its first prompt).
        fps: Frame rate of the key frames (null with ``duration`` null: 1 fps, "4.0s").
        duration: The span of the key frames instead of ``fps`` (``4.0``, ``"4.0s"``, ``"4.0秒"``).
        guidance: Classifier-free guidance scale of the key frames (1: off).
        negative_prompt: Caption of every guidance branch (CogVideo: "视频"), or None.
        text_bias: Query->text attention bias of every pass that runs without guidance.
        parallel: Decode in parallel waves (same tokens in fp32/fp64; docs/sampling.md).
        compile: ``torch.compile`` the decode step (``DecodeOptions.compile``: inductor, C++ on the
            CPU, which needs a C++ compiler). Off by default: on the CPU it costs a compilation of
            tens of seconds and decodes no faster (docs/benchmarks.md, "Compiled decoding").
        batch_size: Prompts generated together.
        display_scale: Nearest-neighbour upscaling of the written files (not of the JSON data).
        prefix_format: Duration prefix format, e.g. ``"{:.1f}s"``.
        first_frame_suffix: Appended to the caption of the first frame (CogVideo: " 高清摄影").
        caption_suffix: Appended to the stage-1 caption when stage-1 guidance is on (CogVideo:
            " 视频"); the stage-2 rounds always read the raw caption, as the release does.
        frame_rates: Rates each model section was trained on, e.g. ``{stage1: [1, 2], stage2:
            [2, 4, 8]}`` (a section left out or null: unchecked).
        device / dtype / threads: Where and how the models run.
    """

    prompt: str | None = None
    prompts_file: str | None = None
    out: str | None = None
    overwrite: bool = False
    seed: int = 0
    fps: float | None = None
    duration: float | str | None = None
    guidance: float = 1.0
    negative_prompt: str | None = None
    text_bias: float = 0.0
    parallel: bool = True
    compile: bool = False
    batch_size: int = 1
    display_scale: int = 1
    prefix_format: str = "{:.1f}s"
    first_frame_suffix: str = ""
    caption_suffix: str = ""
    frame_rates: dict | None = None
    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = None

    def problems(self) -> list[Problem]:
        """Value checks (types are checked by the shared keyword checker first)."""
        problems: list[Problem] = []
        try:
            captions, _ = self.captions()
        except ConfigError as exc:
            problems.append(Problem("", str(exc), ""))
            captions = ()
        if not 0 <= self.seed <= MAX_SEED - max(len(captions) - 1, 0):
            problems.append(Problem("seed", f"must be a whole number from 0 to 2**63 - 1 = {MAX_SEED}"
                                    f"{' minus the number of prompts' if len(captions) > 1 else ''}, got "
                                    f"{self.seed}", "pick a smaller non-negative seed, e.g. seed=0"))
        if self.fps is not None and self.duration is not None:
            problems.append(Problem("", f"both fps ({self.fps:g}) and duration ({self.duration}) are set; they "
                                    "say the same thing (duration = (key frames - 1) / fps): keep one and "
                                    "set the other to null", ""))
        elif self.duration is not None:
            try:
                parse_duration(self.duration)
            except ConfigError as exc:
                problems.append(Problem("", str(exc), ""))
        elif self.fps is not None and (not math.isfinite(self.fps) or self.fps <= 0):
            problems.append(Problem("", f"fps {self.fps:g} is not a positive frame rate; write e.g. fps=1 "
                                    "(key frames 1 s apart, duration prefix 4.0s)", ""))
        for key in ("guidance", "text_bias"):
            if not math.isfinite(getattr(self, key)):
                problems.append(Problem(key, f"must be a finite number, got {getattr(self, key)}", ""))
        if self.guidance != 1.0 and not (self.negative_prompt or "").strip():
            problems.append(Problem("negative_prompt", f"is empty but guidance is {self.guidance:g}",
                                    "set negative_prompt (CogVideo uses '视频', 'video') or guidance=1"))
        problems += _whole(self.batch_size, 1, "batch_size", "e.g. batch_size=8")
        if self.compile and not str(self.device).startswith("cuda"):
            compiler = os.environ.get("CXX", "g++")
            if shutil.which(compiler) is None:
                problems.append(Problem("compile", f"is true but the C++ compiler torch.compile needs on the "
                                        f"CPU ({compiler!r}, from $CXX or g++) is not on PATH",
                                        "install one (e.g. `apt-get install g++`) or point $CXX at it, "
                                        "or set compile=false"))
        problems += _whole(self.display_scale, 1, "display_scale", "e.g. display_scale=4")
        if self.threads is not None:
            problems += _whole(self.threads, 1, "threads", "or null for torch's default")
        if not (self.out or "").strip():
            problems.append(Problem("out", "is not set", "name an output folder (ending in /) or a file "
                                    "stem, e.g. out=runs/tiny/samples/red_circle"))
        try:
            self.prefix_format.format(4.0)
        except (ValueError, IndexError, KeyError) as exc:
            problems.append(Problem("prefix_format", f"{self.prefix_format!r} cannot format a duration ({exc})",
                                    "write e.g. '{:.1f}s' or '{:.1f}秒'"))
        for section, rates in (self.frame_rates or {}).items():
            if rates is not None and (not isinstance(rates, (list, tuple)) or not rates or any(
                    isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0 for r in rates)):
                problems.append(Problem(f"frame_rates.{section}", f"must be a list of positive frame rates "
                                        f"such as [1, 2, 4, 8], got {rates!r}", "or null (unchecked)"))
        return problems

    def captions(self) -> tuple[tuple[str, ...], str]:
        """The prompts to sample and where they came from (``"prompt"`` or the prompts file's path).

        Raises:
            ConfigError: No prompt, an empty prompt, an unreadable or empty prompts file.
        """
        if self.prompts_file not in (None, ""):
            file = Path(str(self.prompts_file)).expanduser()
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
        if self.prompt is None:
            raise ConfigError('no prompt: set prompt="a red circle moving left" or prompts_file=FILE '
                              "(one prompt per line)")
        if not self.prompt.strip():
            raise ConfigError(f"prompt is empty ({self.prompt!r}): describe the video, e.g. "
                              'prompt="a red circle moving left"')
        return (self.prompt.strip(),), "prompt"

    def key_fps(self, key_frames: int) -> float:
        """Frame rate of the key frames; a ``duration`` spans ``key_frames - 1`` gaps."""
        if self.duration is not None:
            return (key_frames - 1) / parse_duration(self.duration)
        return 1.0 if self.fps is None else float(self.fps)

    def trained_rates(self, section: str) -> tuple[float, ...] | None:
        """The rates ``frame_rates.<section>`` lists (sorted), or None when unchecked."""
        rates = (self.frame_rates or {}).get(section)
        return None if rates is None else tuple(sorted(float(r) for r in rates))

    def where_prompts(self) -> str:
        """How errors name the prompts (``prompt`` or ``prompts_file FILE``)."""
        return "prompt" if self.prompts_file in (None, "") else f"prompts_file {self.prompts_file}"


def read_sample_settings(cfg: DictConfig) -> SampleSettings:
    """Reads and checks the top-level settings of a sample recipe (every problem at once).

    Only the keys :class:`SampleSettings` declares are read; stage nodes, component sections and
    recipe variables (``rounds``, ``weights_dir``) are checked elsewhere or not at all.

    Raises:
        ConfigError: Listing every problem with its key and fix.
    """
    names = {f.name for f in dataclasses.fields(SampleSettings)}
    node = {key: OmegaConf.select(cfg, key) for key in cfg.keys() if key in names}
    for key in ("frame_rates",):  # mappings come back as plain dicts
        if OmegaConf.is_config(node.get(key)):
            node[key] = OmegaConf.to_container(node[key], resolve=True)
    problems = section_problems(SampleSettings, node, where="")
    if problems:
        raise problems_error("the sample settings are invalid", problems)
    return read_section(SampleSettings, node, where="")


def _select(cfg: DictConfig, key: str, default: Any = None) -> Any:
    return OmegaConf.select(cfg, key, default=default)


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


def file_problems(cfg: DictConfig, registries=None) -> list[Problem]:
    """Every file the recipe needs that is missing, with its recipe key and how to produce it.

    Args:
        cfg: The resolved recipe.
        registries: The registries the components' declared files are read from (default: the
            loaded plugins').
    """
    problems = [Problem(key, "the recipe has no such section", f"add it, e.g. {key}: {example}")
                for key, example in _SECTIONS if _select(cfg, key) is None]
    problems += _official_problems(cfg, registries)
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


def _official_problems(cfg: DictConfig, registries) -> list[Problem]:
    """The converted-weights and declared-file checks of :mod:`cogframe.config.official_weights`.

    Those expect weights FOLDERS (``cogframe convert``); a single ``.safetensors`` file (the
    tiny models) is checked by :func:`file_problems` and the loader, so its entries are left out.
    """
    from cogframe.config.official_weights import check_official_files

    files = {stage for stage in ("stage1", "stage2", "super_resolution")
             if Path(str(_select(cfg, f"{stage}.model.weights") or "")).suffix == ".safetensors"}
    return [p for p in check_official_files(cfg, registries) if p.where.split(".")[0] not in files]
