"""The Python API: sample, build models, run recipes and list components from a notebook or script.

Everything here goes through the code the command line uses: recipes are loaded and validated by
``config/`` exactly as ``cogframe run`` does, a pipeline runs the ``sample`` task's own plan, load
and stages (``plugins/task_sample.py``), and :func:`run` hands a recipe to its task. Only the
last step differs: a pipeline returns the frames instead of writing files (``.save`` writes them
with the same writers, ``core/io/video.py``)::

    import cogframe
    pipe = cogframe.load_pipeline("tiny/sample")                  # loads the models once
    video = pipe("a red circle moving left", seed=0)              # frames uint8 [33, 32, 32, 3]
    video.save("red.mp4")                                          # or .gif / .png (contact sheet)
    videos = pipe(["a red circle moving left", "a blue square moving up"], rounds=2)

    cogframe.run("tiny/stage1_lora", ["train.steps=50"])          # any recipe's task
    model = cogframe.build_model("tiny_stage1", weights="stage1.safetensors")
    [c.name for c in cogframe.list_components("attention")]

Examples (doctests; tests/test_python_api.py runs them):

>>> import cogframe
>>> "sdpa" in [c.name for c in cogframe.list_components("attention")]
True
>>> model = cogframe.build_model("tiny_t2i", num_layers=1, hidden_size=32, num_heads=2)
>>> model.config.num_layers, model.training
(1, False)
>>> cogframe.load_pipeline("tiny/no_such_recipe")
Traceback (most recent call last):
...
cogframe.errors.ConfigError: ...
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from cogframe.errors import ConfigError

__all__ = ["Pipeline", "SampleOutput", "build_model", "list_components", "load_pipeline", "run"]

# Keys a call sets itself: the prompts are arguments, and a pipeline writes nothing to `out`.
_CALL_KEYS = ("prompt", "prompts_file", "out", "overwrite", "seed")


def _override_strings(overrides: Sequence[str] | Mapping[str, Any] | None, what: str = "overrides") -> list[str]:
    """``["k=v", ...]`` from a list of such strings or a ``{key: value}`` dict (values as YAML)."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        # JSON is YAML: numbers, booleans, null, quoted strings, lists and mappings parse back as given.
        return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    if isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"{what} must be a list of 'key=value' strings or a dict, got {overrides!r}; e.g. "
                          "['rounds=2'] or {'rounds': 2}")
    return list(overrides)


def _registries():
    from cogframe.plugins import get_registries

    return get_registries()


# ============================================================================== results
@dataclass
class SampleOutput:
    """What a pipeline call returns: the frames and tokens of one prompt, or of several.

    Attributes:
        prompts: The prompts, in order.
        seed: The seed of the call (prompt ``i`` of a batch starting at ``first`` is sampled with
            ``seed + first`` on row ``i - first``, as ``cogframe run`` does).
        fps: Frame rate of the frames.
        videos: ``uint8 [T, H, W, 3]`` numpy frames per prompt.
        token_grids: ``int64 [T, h, w]`` numpy token grids per prompt (None after a pixel stage
            that has no tokens).
        timings: Seconds: ``load`` (0 when the models were loaded already), each stage,
            ``decode`` and ``total``.
        display_scale: The recipe's upscaling of written files (``save`` default).
        single: Whether the call was given one prompt (``frames``/``tokens`` are then arrays).
    """

    prompts: list[str]
    seed: int
    fps: float
    videos: list[Any]
    token_grids: list[Any]
    timings: dict[str, float] = field(default_factory=dict)
    display_scale: int = 1
    single: bool = True

    @property
    def frames(self):
        """``uint8 [T, H, W, 3]`` for one prompt, a list of them for several."""
        return self.videos[0] if self.single else list(self.videos)

    @property
    def tokens(self):
        """``int64 [T, h, w]`` token grids for one prompt, a list of them for several."""
        return self.token_grids[0] if self.single else list(self.token_grids)

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index: int) -> "SampleOutput":
        """The result of prompt ``index`` alone."""
        return SampleOutput([self.prompts[index]], self.seed, self.fps, [self.videos[index]],
                            [self.token_grids[index]], dict(self.timings), self.display_scale, True)

    def save(self, path: str | Path, *, scale: int | None = None) -> list[Path]:
        """Writes the video(s) by suffix: ``.mp4``/``.webm``/``.gif`` (video) or ``.png`` (contact sheet).

        Several prompts go to ``NAME_000.mp4``, ``NAME_001.mp4``, ... (as ``cogframe run``
        names them). Each file is written atomically.

        Args:
            path: Destination; its suffix picks the format.
            scale: Nearest-neighbour upscaling (default: the recipe's ``display_scale``).

        Returns:
            The written paths.

        Raises:
            ConfigError: An unsupported suffix.
        """
        from cogframe.core.io.video import VIDEO_EXTENSIONS, contact_sheet, write_video
        from cogframe.core.io.video_outputs import output_stems, upscale

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (*VIDEO_EXTENSIONS, ".png"):
            raise ConfigError(f"cannot save {path}: the suffix picks the format; use one of "
                              f"{', '.join((*VIDEO_EXTENSIONS, '.png'))}")
        scale = self.display_scale if scale is None else int(scale)
        stems = output_stems(path.with_suffix(""), self.prompts)
        written = []
        for stem, frames in zip(stems, self.videos):
            target = stem.with_name(stem.name + suffix)
            shown = upscale(frames, scale)
            written.append(contact_sheet(shown, target) if suffix == ".png" else write_video(target, shown, self.fps))
        return written


# ============================================================================== pipeline
class Pipeline:
    """A sample recipe, validated, with its models loaded once; call it to generate.

    Build it with :func:`load_pipeline`. Each call re-reads the recipe with the call's options
    and validates it as ``cogframe run`` would (cheap: no weights), then runs the sample task's
    stages; models and the image tokenizer are loaded on the first call that needs them and
    reused while their recipe sections stay the same.
    """

    def __init__(self, recipe: str | Path, overrides: list[str], registries) -> None:
        from cogframe.plugins.task_sample import load

        self.recipe, self.overrides, self.registries = str(recipe), overrides, registries
        self._cache: dict = {}
        # The recipe's own prompt and settings: validated, and the models loaded here, not on the first call.
        load(self._plan(None, None, {}), self._cache)

    def _plan(self, prompts: list[str] | None, seed: int | None, options: Mapping[str, Any]):
        """The recipe with this call's prompts and options, validated and planned as `cogframe run` does."""
        import tempfile

        from cogframe.config.recipes import load_recipe
        from cogframe.config.validation import validate_recipe
        from cogframe.plugins.task_sample import take_plan

        taken = sorted(set(options) & set(_CALL_KEYS))
        if taken:
            raise ConfigError(f"{', '.join(taken)}: set by the call itself (prompts and seed are arguments; a "
                              "pipeline writes no files, use .save(path)); pass other recipe keys such as "
                              "rounds=2 or guidance=3")
        cfg = load_recipe(self.recipe, [*self.overrides, *_override_strings(dict(options), "sample options")])
        if cfg.get("task") != "sample":
            raise ConfigError(f"{self.recipe} runs the task {cfg.get('task')!r}, not 'sample': load_pipeline "
                              "needs a sample recipe (e.g. tiny/sample); run other recipes with cogframe.run")
        if seed is not None:
            cfg.seed = int(seed)
        cfg.overwrite = True  # nothing is written to `out`: earlier files there are no reason to refuse
        with tempfile.TemporaryDirectory(prefix="cogframe-prompts-") as tmp:
            if prompts is not None and len(prompts) == 1:
                # Set after loading, as `cogframe demo` does: a prompt is free text, not YAML.
                cfg.prompt, cfg.prompts_file = prompts[0], None
            elif prompts is not None:
                # Several prompts take the recipe's prompts_file path (one code path for both).
                file = Path(tmp) / "prompts.txt"
                file.write_text("\n".join(prompts) + "\n", encoding="utf-8")
                cfg.prompt, cfg.prompts_file = None, str(file)
            validate_recipe(cfg, self.registries, source=self.recipe)
            return take_plan(cfg, self.registries, self.recipe)

    def __call__(self, prompts: str | Sequence[str], seed: int = 0, **sample_options: Any) -> SampleOutput:
        """Generates one video per prompt.

        Args:
            prompts: A prompt, or a list of prompts (sampled in batches of the recipe's ``batch_size``).
            seed: The sampling seed (``cogframe run ... seed=``).
            **sample_options: Other top-level keys of the sample recipe for this call, e.g.
                ``rounds=2``, ``guidance=3.0``, ``negative_prompt="..."``, ``parallel=False``,
                ``duration="2.0s"``, ``batch_size=4``.

        Returns:
            A :class:`SampleOutput` (``frames`` is one array for one prompt, a list for a list).

        Raises:
            ConfigError: A bad option or prompt (too long for the text slots, empty), named.
        """
        from cogframe.plugins.task_sample import generate_batches, load

        start = time.perf_counter()
        single = isinstance(prompts, str)
        texts = [prompts] if single else list(prompts)
        if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ConfigError(f"prompts must be a non-empty string or a non-empty list of them, got {prompts!r}")
        if any("\n" in t for t in texts):
            raise ConfigError("a prompt must be one line; pass several prompts as a list")
        texts = [t.strip() for t in texts]  # as prompts files are read
        plan = self._plan(texts, seed, sample_options)
        timings = {"load": load(plan, self._cache)}
        videos, grids, fps = [], [], plan.fps
        for _, batch, _ in generate_batches(plan):
            for key, value in batch.seconds.items():
                timings[key] = timings.get(key, 0.0) + value
            pixels = batch.pixels.numpy()
            tokens = None if batch.tokens is None else batch.tokens.cpu().numpy()
            for row in range(batch.size):
                videos.append(pixels[row])
                grids.append(None if tokens is None else tokens[row])
            fps = batch.fps
        timings["total"] = time.perf_counter() - start
        return SampleOutput(texts, int(seed), float(fps), videos, grids, timings,
                            int(plan.settings.display_scale), single)

    def __repr__(self) -> str:
        return f"Pipeline({self.recipe!r}, overrides={self.overrides!r})"


def load_pipeline(recipe: str | Path = "tiny/sample",
                  overrides: Sequence[str] | Mapping[str, Any] | None = None) -> Pipeline:
    """Loads a sample recipe (name or ``.yaml`` path) and its models; returns a callable pipeline.

    Args:
        recipe: A recipe name (``cogframe ls``) or a file.
        overrides: ``["key=value", ...]`` as on the command line, or ``{"key": value}``.

    Raises:
        ConfigError: Unknown recipe, bad overrides, a recipe of another task, missing model files
            (naming the recipe that trains them), all before any weights are read.
    """
    return Pipeline(recipe, _override_strings(overrides), _registries())


# ============================================================================== the rest
def build_model(preset: str, weights: str | Path | None = None, *, spatial_attention: str | None = None,
                temporal_attention: str | None = None, **overrides: Any):
    """A model from a preset name (``cogframe plan --presets``), optionally with its weights, in eval mode.

    Args:
        preset: E.g. ``tiny_stage1`` or ``cogvideo_9b_stage1``.
        weights: A ``model.safetensors`` or a folder from ``cogframe convert``; None: random init.
        spatial_attention: An attention backend name (kind ``attention``); None: dense SDPA.
        temporal_attention: Likewise for the temporal channel.
        **overrides: Preset fields, e.g. ``num_layers=2`` or ``layout={"text_len": 32}``.

    Raises:
        ConfigError: Unknown preset or field; DataError: unreadable or mismatching weights.
    """
    from cogframe.config.model import read_state_dict
    from cogframe.core.model.presets import build_model as build

    backends = {}
    for channel, name in (("spatial", spatial_attention), ("temporal", temporal_attention)):
        if name is not None:
            backends[f"{channel}_attention"] = _registries().build("attention", {"name": name})
    model = build(str(preset), overrides=overrides or None, **backends)
    if weights is not None:
        path = Path(weights)
        if not path.exists():
            raise ConfigError(f"weights {path} does not exist; pass a model.safetensors (a training run's "
                              "output_dir) or a folder written by `cogframe convert`")
        if path.is_dir():
            model.load_state_dict(read_state_dict(path, "weights"))
        else:
            from cogframe.core.training.checkpoint import load_model_weights

            load_model_weights(model, path)
    return model.eval()


def run(recipe: str | Path, overrides: Sequence[str] | Mapping[str, Any] | None = None):
    """Loads, validates and runs a recipe's task in this process, as ``cogframe run RECIPE k=v ...``.

    Args:
        recipe: A recipe name or file (any task: train, prepare, sample, ...).
        overrides: ``["key=value", ...]`` or ``{"key": value}``.

    Returns:
        The resolved recipe (an omegaconf DictConfig) that ran.

    Raises:
        ConfigError: Every problem of the recipe, before anything runs.
    """
    from cogframe.config.recipes import load_recipe
    from cogframe.config.validation import validate_recipe

    registries = _registries()
    cfg = load_recipe(str(recipe), _override_strings(overrides))
    task = validate_recipe(cfg, registries, source=str(recipe))
    # The task the checks built runs it: the same call as cli/run.py's run_task.
    task.run(cfg, registries)
    return cfg


def list_components(kind: str | None = None) -> list:
    """The registered components (built-in and third-party), optionally of one kind.

    Args:
        kind: One of ``cogframe.registry.KINDS`` (``"attention"``, ``"token_sampler"``, ...).

    Returns:
        ``ComponentSpec`` objects (``.kind``, ``.name``, ``.description``, ``.origin``,
        ``.unavailable_reason()``), sorted by kind and name.

    Raises:
        ConfigError: An unknown kind (naming the kinds).
    """
    from cogframe.registry import KINDS

    if kind is not None and kind not in KINDS:
        raise ConfigError(f"unknown component kind {kind!r}; use one of {', '.join(KINDS)}")
    registries = _registries()
    return [spec for k in ((kind,) if kind else KINDS) for spec in registries.specs(k)]
