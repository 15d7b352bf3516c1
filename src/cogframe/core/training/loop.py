"""The training loop shared by text-to-image pretraining and both CogVideo stages.

One function, :func:`train`, runs the loop nanoGPT-style, with what a torchtune user expects:
AdamW over trainable parameters only, warmup + cosine learning rate, gradient accumulation and
clipping, optional bf16 autocast and activation checkpointing, seeded and *exactly* resumable
(data order is a pure function of the step, RNG and optimizer state are checkpointed), periodic
validation, per-step metrics to the given loggers, and a progress bar.

Distributed runs (FSDP2 under torchrun) go through the same loop: a
:class:`~cogframe.core.training.distributed.DistributedContext` shards the model, slices the global batch
by rank and saves sharded checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol

import torch
from tqdm.auto import tqdm

from cogframe.core.training.batches import StepBatches
from cogframe.core.training.checkpoint import TrainerState
from cogframe.core.training.settings import TrainSettings, stage_problems
from cogframe.core.model.transformer import CogVideoTransformer, loss_fn
from cogframe.errors import ConfigError, problems_error

__all__ = ["TrainSettings", "Logger", "train", "lr_at", "select_device", "autocast_dtype"]


class Logger(Protocol):
    """A metrics sink (registry kind ``logger``)."""

    def log(self, metrics: Mapping[str, Any], step: int) -> None: ...

    def close(self) -> None: ...


def lr_at(step: int, settings: TrainSettings) -> float:
    """Linear warmup to ``lr``, then cosine decay to ``lr * min_lr_ratio``.

    The schedule is evaluated at ``settings.schedule_offset + step``. The cosine spans
    ``decay_steps`` steps after warmup (SAT's ``AnnealingLR`` divides by ``--train-iters``), or,
    when that is None, the rest of the run; past its end the rate stays at the floor.
    """
    step = settings.schedule_offset + step
    if settings.warmup_steps and step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    span = settings.decay_steps or max(1, settings.schedule_offset + settings.steps
                                        - settings.warmup_steps)
    progress = min(1.0, (step - settings.warmup_steps) / span)
    floor = settings.lr * settings.min_lr_ratio
    return floor + (settings.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def select_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; anything else is taken literally."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is available; use "
                          "train.device=cpu or auto.")
    return device


def autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.dtype`` (None: plain fp32; float16 is refused earlier)."""
    return None if name == "float32" else getattr(torch, name)


@dataclass
class TrainResult:
    """What a finished run reports."""

    step: int
    train_loss: float
    val_loss: float | None
    history: list[dict[str, Any]] = field(default_factory=list)


def _evaluate(model, layout, loss_mask, val: StepBatches | None, n_batches, boi_id, device, amp,
              ctx) -> float | None:
    if val is None or n_batches == 0:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(n_batches):
            batch = val.batch(i, 0, ctx.rank, ctx.world_size)
            text, frames, valid = (batch[k].to(device) for k in ("text", "frames", "text_valid"))
            inp, lab = layout.build_input(text, frames, boi_id)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = model(inp, text_valid=valid)
            total += float(loss_fn(logits, lab, loss_mask))
            count += 1
    model.train(was_training)
    return ctx.mean(total / count)


def train(
    model: CogVideoTransformer,
    settings: TrainSettings,
    train_data: StepBatches,
    *,
    boi_id: int,
    run_dir: str | Path,
    val_data: StepBatches | None = None,
    loggers: Iterable[Logger] = (),
    recipe: Mapping[str, Any] | None = None,
    resume: bool = False,
    ctx=None,
    preview=None,
) -> TrainResult:
    """Train ``model`` on token batches; only parameters with ``requires_grad`` are optimised.

    Args:
        model: The model (already built, inherited and frozen as the recipe says).
        settings: Hyper-parameters.
        train_data: Deterministic batches: ``batch(step, micro, rank, world)``.
        boi_id: The [BOI] token id (input convention: it replaces each frame's first input).
        run_dir: Run folder: checkpoints under ``checkpoints/``, final weights in
            ``model.safetensors``.
        val_data: Validation batches (optional).
        loggers: Metric sinks.
        recipe: The resolved recipe, stored in every checkpoint.
        resume: Continue from the newest checkpoint in ``run_dir`` when there is one.
        ctx: Distributed context (default: single process).
        preview: Called after every step as ``preview(model, step, last_step=, loggers=, is_main=)``;
            writes sample videos when due (:class:`cogframe.core.training.preview.TrainingPreview`).

    Returns:
        Final step, losses and the logged history.
    """
    from cogframe.core.training.distributed import DistributedContext

    # Recipes are checked at validation; this catches settings built in code (the same checks).
    problems = [dataclasses.replace(p, where=f"train.{p.where}") for p in settings.problems()]
    if problems:
        raise problems_error("the train settings are invalid", problems)
    ctx = ctx or DistributedContext.single(select_device(settings.device))
    device = ctx.device
    amp = autocast_dtype(settings.dtype, device)
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    layout, stage = model.config.layout, model.config.stage
    torch.manual_seed(settings.seed)

    model.activation_checkpointing = settings.activation_checkpointing
    model = ctx.prepare_model(model)
    if settings.compile:
        # In place (nn.Module.compile), so parameter and state-dict names stay those of the
        # eager model and checkpoints are interchangeable; static shapes, so every process of
        # a run (resumed or not) builds the same kernels.
        model.compile(dynamic=False)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ConfigError("the model has no trainable parameters: check model.freeze_inherited "
                          "and the recipe's init section.")
    params = [p for _, p in named]
    # Decay matrices only; biases, LayerNorms and the mixing vector a are not decayed.
    decay = [p for n, p in named if p.dim() >= 2]
    no_decay = [p for n, p in named if p.dim() < 2]
    order = [n for n, p in named if p.dim() >= 2] + [n for n, p in named if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr, betas=settings.betas, eps=settings.eps,
    )

    step = 0
    if resume:
        found = ctx.latest_checkpoint(ckpt_dir)
        if found is not None:
            state = ctx.load_checkpoint(found, model, optimizer, order)
            step = state.step
            ctx.print(f"resumed from {found} at step {step}")
    history: list[dict[str, Any]] = []
    if problems := stage_problems(settings, stage.value):  # checked at validation for recipes
        raise problems_error("the train settings are invalid", problems)
    # Only video layouts take first_frame (the super-resolution layout's loss_mask does not).
    extra = {"first_frame": True} if settings.first_frame_loss else {}
    loss_mask = layout.loss_mask(stage, device, **extra)
    model.train()
    bar = tqdm(total=settings.steps, initial=step, disable=not (settings.progress and ctx.is_main),
               desc=f"train {stage.value}", unit="step", dynamic_ncols=True)
    last_loss, val_loss = float("nan"), None
    try:
        if settings.eval_at_start and step == 0 and val_data is not None:
            # The untrained baseline (a fine-tune's "before"), logged at step 0; not kept as
            # val_loss, which stays the loss of the trained model.
            start_loss = _evaluate(model, layout, loss_mask, val_data, settings.eval_batches, boi_id,
                                   device, amp, ctx)
            if ctx.is_main:
                for logger in loggers:
                    logger.log({"val_loss": start_loss}, 0)
            history.append({"step": 0, "val_loss": start_loss})
        first_step = step
        while step < settings.steps:
            started = time.perf_counter()
            lr = lr_at(step, settings)
            for group in optimizer.param_groups:
                group["lr"] = lr
            step_loss, tokens = 0.0, 0
            for micro in range(settings.grad_accum):
                batch = train_data.batch(step, micro, ctx.rank, ctx.world_size)
                text, frames, valid = (batch[k].to(device) for k in ("text", "frames", "text_valid"))
                inp, lab = layout.build_input(text, frames, boi_id)
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    logits = model(inp, text_valid=valid)
                loss = loss_fn(logits, lab, loss_mask) / settings.grad_accum
                loss.backward()
                step_loss += float(loss.detach())
                tokens += inp.numel()
            clip = settings.grad_clip if settings.grad_clip else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            elapsed = time.perf_counter() - started
            if settings.compile and step == first_step + 1:
                ctx.print(f"train.compile: first step (compiling) took {elapsed:.1f} s")
            last_loss = ctx.mean(step_loss)
            metrics = {"loss": last_loss, "lr": lr, "grad_norm": grad_norm,
                       "tokens_per_s": ctx.sum(tokens) / elapsed}
            if settings.eval_every and (step % settings.eval_every == 0 or step == settings.steps):
                val_loss = _evaluate(model, layout, loss_mask, val_data, settings.eval_batches, boi_id,
                                     device, amp, ctx)
                metrics["val_loss"] = val_loss
            if ctx.is_main and (step % settings.log_every == 0 or step == settings.steps
                                or "val_loss" in metrics):
                for logger in loggers:
                    logger.log(metrics, step)
            history.append({"step": step, **metrics})
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}", refresh=False)
            if preview is not None:  # before the checkpoint: a resumed step re-samples (and replaces)
                preview(model, step, last_step=settings.steps, loggers=loggers, is_main=ctx.is_main)
            if settings.save_every and (step % settings.save_every == 0) and step < settings.steps:
                ctx.save_checkpoint(ckpt_dir, model, optimizer, order,
                                    TrainerState(step, _schedule_state(settings), metrics,
                                                 dict(recipe or {})), settings.keep_last)
        if step > first_step:
            state = TrainerState(step, _schedule_state(settings),
                                 {"loss": last_loss, "val_loss": val_loss}, dict(recipe or {}))
            ctx.save_checkpoint(ckpt_dir, model, optimizer, order, state, settings.keep_last)
        else:
            # Resumed at (or past) the last step: the checkpoint already holds this exact state,
            # and re-saving it would replace its recorded losses with NaN.
            ctx.print(f"already at step {step}; nothing to train")
        ctx.save_final_weights(model, run_dir / "model.safetensors")
    finally:
        bar.close()
        for logger in loggers:
            logger.close()
    return TrainResult(step, last_loss, val_loss, history)


def _schedule_state(settings: TrainSettings) -> dict[str, Any]:
    return {"kind": "warmup_cosine", **{k: v for k, v in asdict(settings).items()
                                         if k in ("lr", "warmup_steps", "min_lr_ratio", "steps",
                                                  "decay_steps", "schedule_offset")}}
