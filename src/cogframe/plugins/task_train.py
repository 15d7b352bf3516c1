"""Task ``train``: text-to-image pretraining and CogVideo stage 1 / stage 2 training.

Recipe keys (see recipes/tiny/stage1.yaml for a complete one)::

    task: train
    output_dir: runs/tiny/stage1
    model: {preset, overrides, attention: {spatial, temporal}, init: {from, freeze_inherited}}
    text_tokenizer: {name: sentencepiece, model_path: ..., id_offset: 256}   # for [BOI] and vocab checks
    data: {shards: runs/tiny/shards_video, train_split: train, val_split: val,
           captions: {contains: [triangle]}}   # optional: only samples with such captions
    train: {steps, batch_size, lr, ..., see core.training.settings.TrainSettings}
    distributed: {param_dtype: bfloat16, reduce_dtype: float32}               # FSDP2 under torchrun
    plan: {devices: [1, 8, 64], micro_batch: 4}                               # read by `cogframe plan`
    loggers: [{name: stdout}, {name: jsonl, path: ...}]
    image_tokenizer: {name: vqvae, path: ...}   # only for train.sample_every (sample videos)
    token_sampler: {name: top_k, k: 10}          # optional, of the sample videos (default top-k 10)
    resume: false
    overwrite: false

Each section is a dataclass of core/training/settings.py (torch-free, so validation imports no
torch), checked by the one typed-settings checker (cogframe.config.settings); no other top-level
key is accepted.

Under ``cogframe run --nproc N`` the same task runs in every process: the model is built on the
meta device and sharded with FSDP2; rank 0 provides the initial weights.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cogframe.config.settings import read_section
from cogframe.core.training.settings import (
    DataSettings,
    DistributedSettings,
    PlanSettings,
    TrainRunSettings,
    TrainSettings,
    cuda_device_problem,
)
from cogframe.errors import ConfigError, Problem
from cogframe.hookspecs import hookimpl
from cogframe.config.model import (
    MISSING_WEIGHTS_FIX,
    MODEL_SLOTS,
    attention_needs,
    build_model_from_recipe,
    lora_settings,
    model_config_from_recipe,
)
from cogframe.plugins._task_helpers import check_recipe, task_settings
from cogframe.registry import Registries, component
from cogframe.plugins._run_folder import locks_run_folder

__all__ = ["TrainTask", "train_settings"]


def train_settings(cfg: DictConfig):
    """The recipe's ``train:`` section as a checked TrainSettings (every problem in one error)."""
    return read_section(TrainSettings, cfg.get("train"), where="train")


@component("task", "train", description="Train a text-to-image model or a CogVideo stage from token shards.")
class TrainTask:
    """Train the recipe's model on prepared token shards."""

    slots = {**MODEL_SLOTS, "text_tokenizer": "text_tokenizer", "loggers": "logger",
             # Optional; read only for sample videos during training (train.sample_every).
             "image_tokenizer": "image_tokenizer", "token_sampler": "token_sampler"}
    list_slots = ("loggers",)
    sections = {"": TrainRunSettings, "train": TrainSettings, "data": DataSettings,
                "distributed": DistributedSettings, "plan": PlanSettings}
    recipe_keys = ("model",)

    @staticmethod
    def capability_needs(cfg: DictConfig) -> dict:
        """Both attention backends train: backward on ``train.device`` in ``train.dtype``."""
        return attention_needs(device=OmegaConf.select(cfg, "train.device", default=None),
                               dtype=OmegaConf.select(cfg, "train.dtype", default=None), training=True)

    def validate(self, cfg: DictConfig, registries: Registries) -> None:
        """Checks the whole recipe for this task; raises one ConfigError listing every problem."""
        check_recipe(self, cfg, registries)

    def problems(self, cfg: DictConfig, registries: Registries) -> list[Problem]:
        """The device, the model config, the weights files and the freezing rule (sections and
        slots are checked by validation); keeps the settings for :meth:`run`."""
        found: list[Problem] = []
        if OmegaConf.select(cfg, "text_tokenizer", default=None) is None:
            found.append(Problem("text_tokenizer", "is missing (the tokenizer that wrote the shards' text ids)",
                                 "add e.g. `text_tokenizer: {name: sentencepiece, model_path: FILE, id_offset: 256}`"))
        sections = task_settings(self, cfg)
        if sections is not None:
            problem = cuda_device_problem(sections["train"].device, "train.device")
            found += [problem] if problem is not None else []
        try:
            config = model_config_from_recipe(cfg)
        except ConfigError as exc:
            return found + [Problem("model", str(exc), "")]
        if sections is not None:
            from cogframe.core.training.settings import stage_problems

            found += _sample_problems(cfg, sections, config) + stage_problems(sections["train"], config.stage.value)
        for key in ("model.init.from", "model.weights"):
            path = OmegaConf.select(cfg, key)
            if path and not Path(str(path)).exists():
                found.append(Problem(key, f"is {path}, which does not exist yet", MISSING_WEIGHTS_FIX))
        try:
            lora_settings(cfg)
        except ConfigError as exc:
            found.append(Problem("model.lora", str(exc), ""))
        # A full model.weights (a LoRA fine-tune of a trained stage) is no random backbone either.
        if config.has_temporal_channel and not OmegaConf.select(cfg, "model.init.from") \
                and not OmegaConf.select(cfg, "model.weights") \
                and OmegaConf.select(cfg, "model.init.freeze_inherited", default=True):
            found.append(Problem(
                "model.init.freeze_inherited",
                "is true but model.init.from is empty: a video stage would freeze a random backbone",
                "inherit a text-to-image model (model.init.from=...) or train from scratch with "
                "model.init.freeze_inherited=false"))
        return found

    @locks_run_folder("output_dir")
    def run(self, cfg: DictConfig, registries: Registries) -> None:
        """Build data, model, loggers and context, then call core.train.train."""
        from cogframe.core.training.batches import StepBatches
        from cogframe.core.training.distributed import DistributedContext
        from cogframe.core.io.token_shards import ShardDataset
        from cogframe.core.training.loop import train

        import torch  # here, not at the top: validating a train recipe imports no torch

        # Built once: the settings validation checked (same task instance), else read here.
        sections = task_settings(self, cfg, strict=True)
        settings, data_cfg, dist_cfg = sections["train"], sections["data"], sections["distributed"]
        config = model_config_from_recipe(cfg)
        self._check_output_dir(cfg)
        tokenizer = registries.build("text_tokenizer", cfg.text_tokenizer)
        self._check_agreement(config, tokenizer, cfg)
        ctx = DistributedContext.from_environment(settings.device, dist_cfg.param_dtype, dist_cfg.reduce_dtype)
        if ctx.device.type == "cpu" and settings.threads > 0:
            torch.set_num_threads(settings.threads)
        elif ctx.device.type == "cpu" and "COGFRAME_THREADS" in os.environ:
            torch.set_num_threads(int(os.environ["COGFRAME_THREADS"]))
        torch.manual_seed(settings.seed)
        # The attention backends must declare backward on this device (flex has none on CPU):
        # refused here, before the first step, not midway.
        run_needs = {"run_device": ctx.device.type, "dtype": settings.dtype, "training": True}
        if ctx.distributed:
            # Build the real weights once on rank 0; every rank shards a meta-device copy.
            if ctx.is_main:
                ctx.initial_state = build_model_from_recipe(cfg, registries, **run_needs).state_dict()
            # The meta model is frozen by the same recipe rule as the materialised one.
            model = build_model_from_recipe(cfg, registries, device="meta", **run_needs)
        else:
            model = build_model_from_recipe(cfg, registries, **run_needs)
        shards = Path(data_cfg.shards)
        keep = data_cfg.caption_filter()  # data.captions: both splits, read from shard headers
        data = ShardDataset(shards, data_cfg.train_split, keep=keep)
        self._check_shards(config, data, shards)
        val_split = data_cfg.val_split
        val = None
        if val_split and (settings.eval_every or settings.eval_at_start):
            val_data = ShardDataset(shards, str(val_split), keep=keep)
            val = StepBatches(val_data, settings.batch_size, shuffle=False)
        if keep is not None:
            ctx.print(f"{keep}: {len(data)} of {data.total} {data_cfg.train_split} samples"
                      + (f", {len(val_data)} of {val_data.total} {val_split} samples" if val is not None else ""))
        loggers = [registries.build("logger", node) for node in (cfg.get("loggers") or [])]
        preview = _build_preview(cfg, registries, settings, config, tokenizer, shards, val_split, keep)
        result = train(
            model, settings, StepBatches(data, settings.batch_size, grad_accum=settings.grad_accum,
                                         seed=settings.seed),
            boi_id=tokenizer.boi_id, run_dir=str(cfg.output_dir), val_data=val, loggers=loggers,
            recipe=OmegaConf.to_container(cfg, resolve=True), resume=sections[""].resume,
            ctx=ctx, preview=preview,
        )
        lora = lora_settings(cfg)
        if lora is not None and ctx.is_main:
            from cogframe.core.model.lora import split_lora_weights

            # model.safetensors becomes the merged plain model; the adapter goes beside it.
            adapter = split_lora_weights(Path(str(cfg.output_dir)) / "model.safetensors", lora.spec())
            ctx.print(f"LoRA adapter in {adapter} (model.safetensors holds the merged weights)")
        ctx.print(f"finished at step {result.step}: train loss {result.train_loss:.4f}"
                  + (f", val loss {result.val_loss:.4f}" if result.val_loss is not None else "")
                  + f"; weights in {Path(str(cfg.output_dir)) / 'model.safetensors'}")

    @staticmethod
    def _check_output_dir(cfg: DictConfig) -> None:
        """Never mix a fresh run into an earlier run's checkpoints without being told to."""
        import shutil

        from cogframe.core.training.checkpoint import list_checkpoints

        ckpt_dir = Path(str(cfg.output_dir)) / "checkpoints"
        if not list_checkpoints(ckpt_dir) or cfg.get("resume", False):
            return
        if not cfg.get("overwrite", False):
            raise ConfigError(
                f"{ckpt_dir} already holds checkpoints of an earlier run. Continue it with "
                "resume=true, start over with overwrite=true (deletes them), or choose another "
                "output_dir.")
        if int(os.environ.get("RANK", "0")) == 0:
            shutil.rmtree(ckpt_dir)

    @staticmethod
    def _check_agreement(config, tokenizer, cfg) -> None:
        if tokenizer.vocab_size > config.vocab_size:
            raise ConfigError(
                f"the text tokenizer needs ids up to {tokenizer.vocab_size - 1}, but the model's "
                f"vocabulary has {config.vocab_size} rows. Raise model.overrides.vocab_size to "
                f"at least {tokenizer.vocab_size}."
            )
        if tokenizer.id_offset < config.image_vocab_size:
            raise ConfigError(
                f"text ids start at {tokenizer.id_offset} but image ids run to "
                f"{config.image_vocab_size - 1}: set text_tokenizer.id_offset to "
                f"{config.image_vocab_size} so text and image ids do not collide."
            )

    @staticmethod
    def _check_shards(config, data, root) -> None:
        layout = config.layout
        if data.text_len != layout.text_len:
            raise ConfigError(f"shards in {root} have text_len {data.text_len} but the model "
                              f"layout has {layout.text_len}; re-run prepare with the model's "
                              "text_len or override model.overrides.layout.text_len.")
        if data.num_frames != layout.frames or tuple(data.grid) != (layout.frame_height,
                                                                    layout.frame_width):
            raise ConfigError(
                f"shards in {root} hold {data.num_frames} frames of {data.grid[0]}x{data.grid[1]} "
                f"tokens but the model layout expects {layout.frames} of "
                f"{layout.frame_height}x{layout.frame_width}; prepare shards for this layout."
            )


def _sample_problems(cfg: DictConfig, sections: dict, config) -> list[Problem]:
    """What train.sample_every > 0 needs (core.training.settings.sample_problems)."""
    from cogframe.core.training.settings import sample_problems

    return sample_problems(sections["train"], config.stage.value,
                           has_image_tokenizer=OmegaConf.select(cfg, "image_tokenizer", default=None) is not None,
                           val_split=sections["data"].val_split)


def _build_preview(cfg: DictConfig, registries: Registries, settings, config, tokenizer, shards: Path,
                   val_split, keep=None):
    """The sample-video writer of train.sample_every (None when off), built before the first step."""
    if not settings.sample_every:
        return None
    from cogframe.core.training.preview import TrainingPreview
    from cogframe.core.training.settings import sample_problems
    from cogframe.errors import problems_error

    found = sample_problems(settings, config.stage.value, has_image_tokenizer=cfg.get("image_tokenizer") is not None,
                            val_split=val_split)
    if found:  # settings built in code skip validation; the same checks
        raise problems_error("train.sample_every cannot sample", found)
    windows = ()
    if config.stage.value == "interpolation":
        from cogframe.core.io.token_shards import ShardDataset

        val = ShardDataset(shards, str(val_split), keep=keep)
        windows = [val[i] for i in range(min(settings.sample_windows, len(val)))]
    sampler = cfg.get("token_sampler") or {"name": "top_k", "k": 10}  # tiny/sample's default
    return TrainingPreview(
        Path(str(cfg.output_dir)), settings.sample_every, stage=config.stage,
        text_tokenizer=tokenizer, image_tokenizer=registries.build("image_tokenizer", cfg.image_tokenizer),
        sampler=registries.build("token_sampler", sampler), text_len=config.layout.text_len,
        prompts=settings.sample_prompts, fps=settings.sample_fps, key_frames=config.layout.frames,
        windows=windows, seed=settings.sample_seed, first_frame_temporal=settings.first_frame_loss)


@hookimpl
def register_components():
    return [TrainTask]
