"""Task ``train``: text-to-image pretraining and CogVideo stage 1 / stage 2 training.

Recipe keys (see recipes/tiny/stage1.yaml for a complete one)::

    task: train
    output_dir: runs/tiny/stage1
    model: {preset, overrides, attention: {spatial, temporal}, init: {from, freeze_inherited}}
    text_tokenizer: {name: sentencepiece, model_path: ..., id_offset: 256}   # for [BOI] and vocab checks
    data: {shards: runs/tiny/shards_video, train_split: train, val_split: val}
    train: {steps, batch_size, lr, ..., see core.train.TrainSettings}
    distributed: {param_dtype: bfloat16, reduce_dtype: float32}               # FSDP2 under torchrun
    loggers: [{name: stdout}, {name: jsonl, path: ...}]
    resume: false

Under ``cogframe run --nproc N`` the same task runs in every process: the model is built on the
meta device and sharded with FSDP2; rank 0 provides the initial weights.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from cogframe.errors import ConfigError
from cogframe.hookspecs import hookimpl
from cogframe.config.model import (
    MISSING_WEIGHTS_FIX,
    MODEL_SLOTS,
    build_model_from_recipe,
    model_config_from_recipe,
)
from cogframe.registry import Registries, component

__all__ = ["TrainTask", "train_settings"]


def train_settings(cfg: DictConfig):
    """The recipe's ``train:`` section as TrainSettings (unknown keys named with the valid ones)."""
    from cogframe.core.training.loop import TrainSettings

    node = OmegaConf.to_container(cfg.get("train") or {}, resolve=True)
    known = {f.name for f in dataclasses.fields(TrainSettings)}
    unknown = sorted(set(node) - known)
    if unknown:
        raise ConfigError(f"unknown train keys: {', '.join(unknown)}. Known: {', '.join(sorted(known))}.")
    missing = [k for k in ("steps", "batch_size") if k not in node]
    if missing:
        raise ConfigError(f"train.{missing[0]} is required (e.g. train.{missing[0]}=8).")
    _check_types(node, typing.get_type_hints(TrainSettings))
    return TrainSettings(**node)


def _check_types(node: dict, hints: dict) -> None:
    """Refuse ill-typed train values up front (``train.steps=abc``) with the key and the fix."""
    for key, value in node.items():
        hint = hints[key]
        optional = type(None) in typing.get_args(hint)
        if value is None:
            if not optional:
                raise ConfigError(f"train.{key} cannot be null; give it a value.")
            continue
        base = hint
        if optional:  # `X | None` -> X
            base = next(a for a in typing.get_args(hint) if a is not type(None))
        base = typing.get_origin(base) or base  # tuple[float, float] -> tuple
        ok = {
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, (int, float)) and not isinstance(value, bool),
            bool: isinstance(value, bool),
            str: isinstance(value, str),
            tuple: isinstance(value, (list, tuple)),
        }.get(base, True)
        if not ok:
            name = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
                    tuple: "a list"}[base]
            raise ConfigError(f"train.{key} must be {name}, got {value!r}.")


@component("task", "train", description="Train a text-to-image model or a CogVideo stage from token shards.")
class TrainTask:
    """Train the recipe's model on prepared token shards."""

    slots = {**MODEL_SLOTS, "text_tokenizer": "text_tokenizer", "loggers": "logger"}

    def validate(self, cfg: DictConfig, registries: Registries) -> None:
        """Model config, train settings and tokenizer/model vocabulary agreement."""
        config = model_config_from_recipe(cfg)
        train_settings(cfg)
        if OmegaConf.select(cfg, "data.shards") is None:
            raise ConfigError("the train task needs data.shards: the folder written by a prepare "
                              "recipe (e.g. `cogframe run tiny/prepare_video`).")
        if OmegaConf.select(cfg, "output_dir") is None:
            raise ConfigError("the train task needs output_dir (where checkpoints and the final "
                              "model.safetensors go).")
        for key in ("model.init.from", "model.weights"):
            path = OmegaConf.select(cfg, key)
            if path and not Path(str(path)).exists():
                raise ConfigError(f"{key} is {path}, which does not exist yet. {MISSING_WEIGHTS_FIX}")
        if config.has_temporal_channel and not OmegaConf.select(cfg, "model.init.from"):
            init = OmegaConf.select(cfg, "model.init.freeze_inherited", default=True)
            if init:
                raise ConfigError(
                    "model.init.from is empty but model.init.freeze_inherited is true: a video "
                    "stage would freeze a random backbone. Inherit a text-to-image model "
                    "(model.init.from=...) or train from scratch with "
                    "model.init.freeze_inherited=false.")

    def run(self, cfg: DictConfig, registries: Registries) -> None:
        """Build data, model, loggers and context, then call core.train.train."""
        from cogframe.core.training.batches import StepBatches
        from cogframe.core.training.distributed import DistributedContext
        from cogframe.core.io.token_shards import ShardDataset
        from cogframe.core.training.loop import train

        settings = train_settings(cfg)
        config = model_config_from_recipe(cfg)
        self._check_output_dir(cfg)
        tokenizer = registries.build("text_tokenizer", cfg.text_tokenizer)
        self._check_agreement(config, tokenizer, cfg)
        dist_cfg = cfg.get("distributed") or {}
        ctx = DistributedContext.from_environment(
            settings.device, dist_cfg.get("param_dtype", "bfloat16"),
            dist_cfg.get("reduce_dtype", "float32"))
        if ctx.device.type == "cpu" and "COGFRAME_THREADS" in os.environ:
            torch.set_num_threads(int(os.environ["COGFRAME_THREADS"]))
        torch.manual_seed(settings.seed)
        if ctx.distributed:
            # Build the real weights once on rank 0; every rank shards a meta-device copy.
            if ctx.is_main:
                ctx.initial_state = build_model_from_recipe(cfg, registries).state_dict()
            # The meta model is frozen by the same recipe rule as the materialised one.
            model = build_model_from_recipe(cfg, registries, device="meta")
        else:
            model = build_model_from_recipe(cfg, registries)
        shards = Path(str(cfg.data.shards))
        data = ShardDataset(shards, str(cfg.data.get("train_split", "train")))
        self._check_shards(config, data, shards)
        val_split = cfg.data.get("val_split", "val")
        val = None
        if val_split and settings.eval_every:
            val = StepBatches(ShardDataset(shards, str(val_split)), settings.batch_size,
                              shuffle=False)
        loggers = [registries.build("logger", node) for node in (cfg.get("loggers") or [])]
        result = train(
            model, settings, StepBatches(data, settings.batch_size, grad_accum=settings.grad_accum,
                                         seed=settings.seed),
            boi_id=tokenizer.boi_id, run_dir=str(cfg.output_dir), val_data=val, loggers=loggers,
            recipe=OmegaConf.to_container(cfg, resolve=True), resume=bool(cfg.get("resume", False)),
            ctx=ctx,
        )
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


@hookimpl
def register_components():
    return [TrainTask]
