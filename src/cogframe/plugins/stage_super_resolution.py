"""Generation stage ``super_resolution``: CogView2's direct super-resolution after interpolation.

The released CogVideo pipeline ends with CogView2's DSR model: every frame's token grid becomes
a grid ``scale`` times larger in one non-autoregressive pass, and the frames are decoded at that
size (THUDM/CogVideo cogvideo_pipeline.py; THUDM/CogView2 sr_pipeline/direct_sr.py). In a
sample recipe::

    stages:
      - {name: key_frames}
      - {name: interpolation, rounds: 3}
      - {name: super_resolution}                     # 8x8 -> 24x24 tokens: 96 px frames (tiny)
    super_resolution:                                # the stage's model section
      model: {preset: tiny_dsr, weights: ${asset:tiny/sr.safetensors},
              attention: {base: {name: sdpa}, plus: {name: sr_local_window}}}

The stage has its own sampler (default top-k 6 at temperature 0.6: the release's DSR numbers,
cluster top-k 6 and in-cluster temperature 0.6 at 9B, without the cluster file), reads the raw
caption (no duration prefix), batches ``frame_batch`` frames per pass and shares the sampling
noise of a cell across the frames of a video (``shared_noise``; docs/sampling.md measures the
flicker it removes). ``refine_rounds`` adds the optional iterative refinement
(:mod:`cogframe.core.generation.super_resolution`).

Building the stage (``cogframe validate``) checks the section, the preset, the attention
backends, the prompts and that the weights file exists, without torch; the weights load on the
first call and are kept for the next call of the same section in this process.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from cogframe.errors import CogframeError, ConfigError
from cogframe.hookspecs import hookimpl
from cogframe.plugins._super_resolution_models import attention_problems, build_sr_model, sr_config_from_section
from cogframe.registry import component

__all__ = ["DEFAULT_SAMPLER", "SuperResolution"]

DEFAULT_SAMPLER = {"name": "top_k", "k": 6, "temperature": 0.6}
_LOADED: dict[tuple, object] = {}  # built models by (section text, weights stamp, device, dtype)


def _weights_hint(path: Path) -> str:
    return (f"train it: `cogframe run tiny/prepare_sr` then `cogframe run tiny/sr`, and copy "
            f"runs/tiny/sr/model.safetensors to {path} (or point the key at it); or drop the stage "
            "(`cogframe demo --no-sr`, or remove {name: super_resolution} from stages)")


@component("stage", "super_resolution", runtime_kwargs=("context", "fps"),
           description="CogView2 direct super-resolution: every frame's tokens x3 in one pass (frames batched).")
class SuperResolution:
    """Super-resolves every frame of the incoming token grids with a DSR model.

    Args:
        model: The recipe section holding the DSR ``model:`` (default ``super_resolution``).
        sampler: Token sampler node of the high-res cells (default top-k 6, temperature 0.6).
        frame_batch: Frames per forward pass (None: all frames of the batch at once).
        shared_noise: The same sampling noise for the same high-res cell in every frame of a video.
        refine_rounds: Iterative-refinement rounds after the one pass (0: off, the release's DSR).
        refine_fraction: Share of each local block's least confident cells re-predicted per round.
        refine_block: Side, in high-res cells, of the local blocks of the refinement.
        context: Supplied by the task.
        fps: Supplied by the task: the rate of the incoming frames (unchanged).
    """

    name = "super_resolution"
    space = "tokens"
    models: tuple[str, ...] = ()  # its model is not a CogVideo stage model: the stage loads it

    def __init__(self, model: str = "super_resolution", sampler: dict | None = None, frame_batch: int | None = 8,
                 shared_noise: bool = True, refine_rounds: int = 0, refine_fraction: float = 0.25,
                 refine_block: int = 3, *, context, fps: float | None = None) -> None:
        if fps is None:
            raise ConfigError("the super_resolution stage enlarges frames but comes first; list key_frames "
                              "(and interpolation) before it")
        self.context, self.section, self.output_fps = context, model, float(fps)
        if frame_batch is not None and frame_batch < 1:
            raise ConfigError(f"frame_batch: must be a whole number >= 1 or null, got {frame_batch}")
        if refine_rounds < 0 or not 0 < refine_fraction <= 1 or refine_block < 1:
            raise ConfigError(f"refine_rounds >= 0, refine_fraction in (0, 1] and refine_block >= 1 are needed, got "
                              f"{refine_rounds}, {refine_fraction}, {refine_block}")
        self.frame_batch, self.shared_noise = frame_batch, bool(shared_noise)
        self.refine = (int(refine_rounds), float(refine_fraction), int(refine_block))
        self.sampler_node = dict(sampler or DEFAULT_SAMPLER)
        registries, cfg = context.registries, context.cfg
        if "name" not in self.sampler_node:
            raise ConfigError(f"sampler: needs a name, e.g. {DEFAULT_SAMPLER}")
        spec = registries.get("token_sampler", self.sampler_node["name"])
        problems = spec.keyword_problems({k: v for k, v in self.sampler_node.items() if k != "name"},
                                         where="sampler", supplied_later=spec.runtime_kwargs)
        node = OmegaConf.select(cfg, f"{model}.model", default=None)
        if node is None:
            raise ConfigError(f"{model}: the recipe has no such section but the super_resolution stage reads its "
                              f"model; add `{model}: {{model: {{preset: tiny_dsr, weights: FILE}}}}` (recipe "
                              "tiny/sample_sr has one) or drop the stage (`cogframe demo --no-sr`)")
        self.config = sr_config_from_section(node, f"{model}.model")
        problems += attention_problems(node, registries, where=f"{model}.model",
                                       device=context.settings.device, dtype=context.settings.dtype)
        if problems:
            raise ConfigError("; ".join(str(p) for p in problems))
        weights = OmegaConf.select(node, "weights", default=None)
        if not weights:
            raise ConfigError(f"{model}.model.weights is not set: the super_resolution stage needs a trained DSR "
                              "model; " + _weights_hint(Path("FILE")))
        self.weights = Path(str(weights)).expanduser()
        if not self.weights.is_file():
            raise ConfigError(f"{model}.model.weights: the super-resolution model {self.weights} does not exist; "
                              + _weights_hint(self.weights))
        backbone = self.config.backbone
        tok = context.text_tokenizer
        if tok.vocab_size > backbone.vocab_size or tok.id_offset < backbone.image_vocab_size:
            raise ConfigError(f"text_tokenizer ids [{tok.id_offset}, {tok.vocab_size}) do not fit the {model} "
                              f"model's vocabulary ({backbone.vocab_size} ids); use the tokenizer it was trained with")
        self.text_len = self.config.layout.text_len
        check = getattr(tok, "prompt_tokens", None) or tok.encode_prompt
        for caption in context.captions:
            try:
                check(caption, self.text_len, prefix=None)
            except CogframeError as exc:
                raise type(exc)(f"{context.settings.where_prompts()} (super_resolution): {exc}") from None

    # ---- run time ------------------------------------------------------------------------------
    def _model(self):
        import torch

        from cogframe.core.weights.pretrained import parse_dtype

        s = self.context.settings
        stat = self.weights.stat()
        key = (OmegaConf.to_yaml(self.context.cfg[self.section]), stat.st_size, stat.st_mtime_ns, s.device, s.dtype)
        if key not in _LOADED:
            if len(_LOADED) >= 2:  # a process rarely needs more; bounded so models are not kept forever
                _LOADED.clear()
            model = build_sr_model(self.context.cfg[self.section].model, self.context.registries,
                                   where=f"{self.section}.model")
            _LOADED[key] = model.to(device=torch.device(s.device), dtype=parse_dtype(s.dtype)).eval()
        return _LOADED[key]

    def _sampler(self):
        registries = self.context.registries
        spec = registries.get("token_sampler", self.sampler_node["name"])
        runtime = ({"image_tokenizer": self.context.image_tokenizer}
                   if "image_tokenizer" in spec.runtime_kwargs else {})
        return registries.build("token_sampler", self.sampler_node, **runtime)

    def __call__(self, batch):
        from cogframe.core.generation.prompts import TextPrompt, encode_prompts
        from cogframe.core.generation.super_resolution import SuperResolutionOptions, super_resolve

        ctx = self.context
        layout = self.config.layout
        grid = tuple(batch.tokens.shape[2:])
        if grid != (layout.low_height, layout.low_width):
            raise ConfigError(f"the super_resolution stage gets {grid[0]}x{grid[1]} token frames but its model "
                              f"({self.section}.model) enlarges {layout.low_height}x{layout.low_width} ones; use "
                              "a DSR preset whose low-res grid is the key-frame model's")
        model = self._model()
        prompt = encode_prompts(ctx.text_tokenizer, list(batch.captions), self.text_len, None)
        rounds, fraction, block = self.refine
        options = SuperResolutionOptions(self._sampler(), seed=batch.seed, shared_noise=self.shared_noise,
                                         frame_batch=self.frame_batch, refine_rounds=rounds,
                                         refine_fraction=fraction, refine_block=block)
        result = super_resolve(model, batch.tokens, TextPrompt(prompt.ids, prompt.mask()),
                               placeholder_id=ctx.boi_id, options=options)
        return batch.advance(self.name, tokens=result.frames, passes=result.passes)


@hookimpl
def register_components():
    return [SuperResolution]
