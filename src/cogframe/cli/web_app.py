"""The browser demo behind ``cogframe web``: a Gradio page over the ``sample`` task.

:func:`generate` is the whole generation, free of Gradio: it loads the sampling recipe
(``tiny/sample`` unless told otherwise) with the page's settings as overrides, validates it and
runs :func:`cogframe.plugins.task_sample.run_sample`, the code path of ``cogframe run tiny/sample``
and ``cogframe demo``. :func:`build_app` puts a page around it: prompt, seed, key-frame rate,
interpolation rounds, guidance, token sampler and super-resolution in; the video, its contact
sheet and the timings out, with a progress bar while it works and any error as a message in the
page (``gradio.Error``). Super-resolution is offered only when a ``stage`` component named
``super_resolution`` is registered and the recipe has its model section (``super_resolution:``,
as recipes/tiny/sample_sr.yaml); otherwise the switch is shown disabled, saying why. It starts
checked when the recipe lists the stage; unchecking removes the stage, checking appends it.
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cogframe.errors import CogframeError, ConfigError

__all__ = ["SR_STAGE", "WebSettings", "build_app", "generate", "options"]

SR_STAGE = "super_resolution"
"""The ``stage`` component the super-resolution switch appends to the recipe's stages."""

# Token samplers that need files of their own (k-means clusters) are left out of the menu.
_SAMPLERS_WITH_FILES = ("cluster",)


@dataclass(frozen=True)
class WebSettings:
    """One request of the page.

    Attributes:
        prompt: What the video shows.
        seed: Sampling seed.
        fps: Key-frame rate (frames per second of the 5 key frames); None: the recipe's.
        rounds: Interpolation rounds (0: key frames only); None: the recipe's.
        guidance: Classifier-free guidance of the key frames (1: off).
        negative_prompt: The guidance branch's caption (needed when ``guidance != 1``).
        sampler: Token sampler name (its default keywords); None: the recipe's sampler.
        super_resolution: True: run the ``super_resolution`` stage (appended when the recipe does
            not list it); False: drop it; None: the recipe's stages as they are.
    """

    prompt: str
    seed: int = 0
    fps: float | None = None
    rounds: int | None = None
    guidance: float = 1.0
    negative_prompt: str | None = None
    sampler: str | None = None
    super_resolution: bool | None = None


@dataclass
class WebResult:
    """What :func:`generate` wrote: the files and the seconds each part took."""

    video: str
    contact_sheet: str
    details: str
    seconds: dict[str, float] = field(default_factory=dict)
    frames: int = 0
    fps: float = 0.0


def options(recipe: str = "tiny/sample", overrides: tuple[str, ...] = ()) -> dict[str, Any]:
    """What the page offers: the recipe's trained key-frame rates, its defaults, the token samplers
    and whether a super-resolution stage is registered."""
    from cogframe.config.recipes import load_recipe
    from cogframe.plugins import get_registries

    registries = get_registries()
    cfg = load_recipe(recipe, list(overrides))
    rates = [float(r) for r in (cfg.get("frame_rates") or {}).get("stage1") or [1.0]]
    samplers = [n for n in registries.names("token_sampler") if n not in _SAMPLERS_WITH_FILES]
    default_sampler = str(cfg.token_sampler.name) if cfg.get("token_sampler") else samplers[0]
    return {
        "rates": rates, "fps": float(cfg.fps) if cfg.get("fps") is not None else 1.0,
        "rounds": int(cfg.get("rounds", 3)), "guidance": float(cfg.get("guidance", 1.0)),
        "samplers": samplers, "sampler": default_sampler,
        "super_resolution": SR_STAGE in registries.names("stage") and cfg.get(SR_STAGE) is not None,
        "super_resolution_on": any(node.get("name") == SR_STAGE for node in (cfg.get("stages") or [])),
    }


def generate(settings: WebSettings, out_root: str | Path, *, recipe: str = "tiny/sample",
             overrides: tuple[str, ...] = (), progress: Callable[[float, str], None] = lambda *_: None) -> WebResult:
    """Generates one video with the sampling recipe and the page's settings.

    Args:
        settings: The request.
        out_root: Folder under which each request gets its own output folder.
        recipe: The sampling recipe (name or file).
        overrides: Extra ``key=value`` overrides given to ``cogframe web``.
        progress: Called with (fraction done, what is happening).

    Returns:
        The written files and the timings.

    Raises:
        CogframeError: A bad setting or recipe problem (message names the fix), or a failure.
    """
    from cogframe.config.recipes import load_recipe, validate_recipe
    from cogframe.plugins import get_registries
    from cogframe.plugins.task_sample import run_sample

    prompt = (settings.prompt or "").strip()
    if not prompt:
        raise ConfigError("the prompt is empty: type what the video should show, e.g. 'a red circle moving left'.")
    progress(0.05, "checking the settings")
    registries = get_registries()
    extra = list(overrides)
    # rounds is a recipe variable the stages read: it must be set before interpolations resolve.
    if settings.rounds is not None:
        extra.append(f"rounds={int(settings.rounds)}")
    if settings.sampler:
        extra.append(f"token_sampler={settings.sampler}")
    cfg = load_recipe(recipe, extra)
    # Free text and numbers are set on the loaded recipe, not as override strings (not YAML).
    cfg.prompt, cfg.prompts_file = prompt, None
    cfg.seed = int(settings.seed)
    if settings.fps is not None:
        cfg.fps, cfg.duration = float(settings.fps), None
    cfg.guidance = float(settings.guidance)
    if settings.negative_prompt is not None and settings.negative_prompt.strip():
        cfg.negative_prompt = settings.negative_prompt.strip()
    listed = any(node.get("name") == SR_STAGE for node in (cfg.get("stages") or []))
    if settings.super_resolution and not listed:
        if SR_STAGE not in registries.names("stage"):
            raise ConfigError(f"super-resolution was asked for but no '{SR_STAGE}' stage is registered here; "
                              "switch it off (`cogframe plugins --kind stage` lists the stages).")
        if cfg.get(SR_STAGE) is None:
            raise ConfigError(f"super-resolution was asked for but recipe {recipe} has no '{SR_STAGE}:' model "
                              "section; start the page with a recipe that has one (`cogframe web --recipe "
                              "tiny/sample_sr`) or switch it off.")
        cfg.stages.append({"name": SR_STAGE})
    elif settings.super_resolution is False and listed:
        cfg.stages = [node for node in cfg.stages if node.get("name") != SR_STAGE]
    out = Path(tempfile.mkdtemp(prefix="request-", dir=out_root))
    cfg.out, cfg.overwrite = f"{out}/", True
    source = f"cogframe web (recipe {recipe})"
    validate_recipe(cfg, registries, source=source)
    progress(0.2, "loading the models and generating")
    result = run_sample(cfg, registries, source=source, echo=lambda *_: None)
    progress(0.95, "writing the video")
    paths = result.outputs[0]
    import json

    record = json.loads(Path(paths["json"]).read_text(encoding="utf-8"))
    return WebResult(video=paths["mp4"], contact_sheet=paths["png"], details=paths["json"],
                     seconds=dict(result.seconds), frames=int(record.get("frames", 0)),
                     fps=float(record.get("fps", 0.0)))


def _timings_markdown(settings: WebSettings, result: WebResult) -> str:
    s = result.seconds
    return (f"**{result.frames} frames at {result.fps:g} fps**, seed {settings.seed}  \n"
            f"loading {s.get('load', 0):.2f} s · generating {s.get('generate', 0):.2f} s · "
            f"writing {s.get('write', 0):.2f} s · total {s.get('total', 0):.2f} s")


def build_app(recipe: str = "tiny/sample", overrides: tuple[str, ...] = (), out_root: str | Path | None = None):
    """The Gradio page (a ``gradio.Blocks``); ``cogframe web`` launches it.

    Raises:
        CogframeError: Gradio is not installed (the fix: ``pip install 'cogframe[web]'``), or the
            recipe does not load.
    """
    try:
        import gradio as gr
    except ImportError as exc:
        raise CogframeError("cogframe web needs Gradio, which is not installed: pip install 'cogframe[web]' "
                            f"(or pip install gradio). ({exc})") from exc
    opts = options(recipe, overrides)
    out_root = Path(out_root or tempfile.mkdtemp(prefix="cogframe-web-"))
    out_root.mkdir(parents=True, exist_ok=True)
    # The tiny models run one request at a time; a lock keeps two tabs from interleaving torch work.
    lock = threading.Lock()

    def on_generate(prompt, seed, fps, rounds, guidance, negative_prompt, sampler, super_resolution,
                    progress=gr.Progress()):
        settings = WebSettings(prompt=prompt, seed=int(seed or 0), fps=float(fps), rounds=int(rounds),
                               guidance=float(guidance), negative_prompt=negative_prompt or None,
                               sampler=sampler or None, super_resolution=bool(super_resolution))
        try:
            with lock:
                result = generate(settings, out_root, recipe=recipe, overrides=overrides,
                                  progress=lambda f, what: progress(f, desc=what))
        except CogframeError as exc:
            raise gr.Error(str(exc), duration=None) from exc
        return result.video, result.contact_sheet, _timings_markdown(settings, result)

    sr_info = ("3x larger frames (the super_resolution stage)" if opts["super_resolution"] else
               f"needs a registered '{SR_STAGE}' stage and the recipe's {SR_STAGE}: model section "
               "(recipe tiny/sample_sr)")
    with gr.Blocks(title="cogframe: text to video") as app:
        gr.Markdown(f"# cogframe text-to-video\nRecipe `{recipe}`: 5 key frames (stage 1), then interpolation "
                    "rounds (stage 2), each doubling the frame rate. The shipped tiny models know "
                    "'a {red|green|blue|yellow|magenta|cyan|white} {circle|square|triangle} moving "
                    "{left|right|up|down}'.")
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", value="a red circle moving left", elem_id="prompt")
                with gr.Row():
                    seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, elem_id="seed")
                    fps = gr.Dropdown(label="Key-frame rate (fps)", choices=opts["rates"], value=opts["fps"],
                                      elem_id="fps")
                rounds = gr.Slider(label="Interpolation rounds", minimum=0, maximum=3, step=1,
                                   value=opts["rounds"], elem_id="rounds")
                with gr.Row():
                    guidance = gr.Number(label="Guidance (1: off)", value=opts["guidance"], elem_id="guidance")
                    negative = gr.Textbox(label="Negative prompt (for guidance != 1)", value="",
                                          elem_id="negative")
                sampler = gr.Dropdown(label="Token sampler", choices=opts["samplers"], value=opts["sampler"],
                                      elem_id="sampler")
                sr = gr.Checkbox(label="Super-resolution", value=opts["super_resolution_on"], info=sr_info,
                                 interactive=opts["super_resolution"], elem_id="super_resolution")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                video = gr.Video(label="Video", elem_id="video", autoplay=True, loop=True, interactive=False, height=360)
                sheet = gr.Image(label="Contact sheet", elem_id="sheet", interactive=False, height=360)
                timings = gr.Markdown(elem_id="timings")
        inputs = [prompt, seed, fps, rounds, guidance, negative, sampler, sr]
        button.click(on_generate, inputs=inputs, outputs=[video, sheet, timings], concurrency_limit=1)
    app.cogframe_out_root = out_root  # where the launcher lets Gradio serve files from
    return app
