"""The typed recipe sections of the ``train`` task, importable without torch.

One dataclass per section, with its defaults and its value checks (``problems()``); the types are
checked by :func:`cogframe.config.settings.read_section` with the same keyword checker that checks
component keywords. Validation (``cogframe validate``) reads these without importing torch; the
training loop (:mod:`cogframe.core.training.loop`) receives a built :class:`TrainSettings`.

The defaults of :class:`TrainSettings` are the paper's where it gives one (CogVideo, arXiv
2205.15868, section 4 and the released ds_config of the CogVideo branch of THUDM/CogVideo): Adam
with lr 2e-4, betas (0.9, 0.95), eps 1e-8, weight decay 1e-4, gradient clip 0.1, cosine decay.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from typing import Any

from cogframe.errors import Problem

__all__ = [
    "MAX_SEED",
    "CaptionFilter",
    "DataSettings",
    "DistributedSettings",
    "PlanSettings",
    "TrainRunSettings",
    "TrainSettings",
    "compile_toolchain_problem",
    "cuda_device_problem",
    "sample_problems",
    "seed_problem",
]

# torch.manual_seed and torch.Generator take a signed 64-bit seed; larger ones fail deep inside.
MAX_SEED = 2**63 - 1

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def seed_problem(seed: int, where: str) -> Problem | None:
    """A seed outside ``[0, 2**63)`` as a Problem (None when it is fine).

    Args:
        seed: The seed as written in the recipe.
        where: Its key path, e.g. ``"train.seed"``.
    """
    if 0 <= seed <= MAX_SEED:
        return None
    return Problem(where, f"is {seed}, outside 0 .. 2**63-1 (seeds are signed 64-bit integers)",
                   "pick a seed in that range, e.g. 0")


def cuda_device_problem(device: str, where: str) -> Problem | None:
    """A CUDA device asked for on a machine without one, as a Problem (None when it is fine).

    torch is imported only when the recipe asks for CUDA: ``auto`` and ``cpu`` need no check, so
    validating a CPU or ``auto`` recipe stays torch-free.
    """
    if not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        build = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
        return Problem(where, f"is {device!r} but {build} (torch {torch.__version__})",
                       f"set {where}=cpu (or auto, which picks CUDA when there is one), or install a "
                       "CUDA build of torch on a machine with a GPU")
    index = device.partition(":")[2]
    if index and int(index) >= torch.cuda.device_count():
        return Problem(where, f"is {device!r} but only {torch.cuda.device_count()} CUDA device(s) are visible",
                       f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}, or cuda")
    return None


def compile_toolchain_problem(device: str, where: str) -> Problem | None:
    """A missing C++ compiler for ``torch.compile`` on the CPU, as a Problem (None when fine).

    Inductor's CPU backend writes C++ and builds it with ``$CXX`` (default ``g++``); without it
    the first step would fail deep inside torch. CUDA devices compile through Triton instead.
    Torch-free (a PATH lookup), so validation stays cheap.
    """
    import os
    import shutil

    if device.startswith("cuda"):
        return None
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler):
        return None
    return Problem(where, f"is true but the C++ compiler torch.compile needs on the CPU ({compiler!r}, "
                   "from $CXX or g++) is not on PATH",
                   "install one (e.g. `apt-get install g++`) or point $CXX at it, or set "
                   f"train.{where}=false")


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


@dataclass
class TrainSettings:
    """Hyper-parameters of a training run (the ``train:`` section of a recipe).

    Attributes:
        steps: Optimizer steps of the whole run (>= 1).
        batch_size: Global batch size (>= 1), split over processes and ``grad_accum`` micro-steps.
        lr: Peak learning rate (> 0).
        betas: AdamW betas, each in [0, 1).
        eps: AdamW epsilon (> 0).
        weight_decay: Decoupled weight decay of matrices (>= 0).
        warmup_steps: Linear warmup steps (>= 0, fewer than ``steps``).
        min_lr_ratio: Cosine floor as a fraction of ``lr``, in [0, 1].
        decay_steps: Length of the cosine after warmup (>= 1), or null for the rest of the run.
            The released CogVideo scripts decay over ``--train-iters 500000`` and the paper
            stopped far earlier, so the decay length is not the step count.
        schedule_offset: Schedule step of this run's step 0 (>= 0): a run continuing another
            run's schedule (CogVideo stage 1, phase 2, at 76000) starts where that one ended.
        grad_clip: Gradient-norm clip (> 0), or null for none.
        grad_accum: Micro-steps per optimizer step (>= 1).
        dtype: ``float32`` or ``bfloat16`` autocast.
        activation_checkpointing: Recompute layer activations in the backward pass.
        compile: ``torch.compile`` the model's forward (and so its backward) for training: the
            inductor C++ backend on CPU, Triton on CUDA. Costs a compile at the first step of
            every process; exact resume still holds (docs/training.md).
        seed: Seed of initialisation and data order, in [0, 2**63).
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        log_every: Log metrics every N steps (>= 1).
        eval_every: Validate every N steps (0: never).
        eval_batches: Validation batches per evaluation (>= 1).
        eval_at_start: Also validate before the first step (logged at step 0; a fresh run only,
            not a resumed one; needs a validation split): the baseline a fine-tune's validation
            loss is compared with.
        save_every: Checkpoint every N steps (0: only at the end).
        keep_last: Checkpoints kept (>= 1), or null to keep all.
        progress: Show a progress bar.
        threads: torch CPU threads (0: torch's default, or ``$COGFRAME_THREADS`` when set). One is
            fastest for the tiny models on a shared 2-core machine: two OpenMP threads stall
            whenever another process holds a core.
        sample_every: Write sample videos of the model every N steps and at the last step (0: never),
            into ``<output_dir>/samples/step_NNNNNN/`` and to the loggers
            (:mod:`cogframe.core.training.preview`). Video stages only; needs the recipe's
            ``image_tokenizer``.
        sample_prompts: Stage 1: the captions whose key frames are sampled.
        sample_seed: Seed of the samples (the same randomness at every step), in [0, 2**63).
        sample_fps: Stage 1: the key-frame rate of the samples (their duration prefix), > 0.
        sample_windows: Stage 2: how many validation windows are interpolated (>= 1).
        first_frame_loss: Stage 1: train frame 0 too. The release does not (CogView2 draws frame
            0 and its weights are frozen); a stage 1 whose base trains or is random
            (``tiny/stage1``, ``tiny/stage1_scratch``) does, or frame 0 is never learnt through
            the channels that draw it. Sample such a model with the key_frames stage's
            ``first_frame: both``.
    """

    steps: int
    batch_size: int
    lr: float = 2e-4
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    decay_steps: int | None = None
    schedule_offset: int = 0
    grad_clip: float | None = 0.1
    grad_accum: int = 1
    dtype: str = "float32"
    activation_checkpointing: bool = False
    compile: bool = False
    seed: int = 0
    device: str = "auto"
    log_every: int = 1
    eval_every: int = 0
    eval_batches: int = 2
    eval_at_start: bool = False
    save_every: int = 0
    keep_last: int | None = 3
    progress: bool = True
    threads: int = 0
    sample_every: int = 0
    sample_prompts: list[str] = field(default_factory=list)
    sample_seed: int = 0
    sample_fps: float = 1.0
    sample_windows: int = 4
    first_frame_loss: bool = False

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)

    def problems(self) -> list[Problem]:
        """Value checks (types are checked before): each wrong value with its fix."""
        out: list[Problem] = []

        def need(ok: bool, key: str, rule: str, fix: str) -> None:
            if not ok:
                out.append(Problem(key, f"must be {rule}, got {getattr(self, key)!r}", fix))

        for key in ("steps", "batch_size", "grad_accum", "log_every", "eval_batches", "sample_windows"):
            need(getattr(self, key) >= 1, key, "an integer >= 1", "set it to 1 or more")
        for key in ("warmup_steps", "eval_every", "save_every", "schedule_offset", "sample_every", "threads"):
            need(getattr(self, key) >= 0, key, "an integer >= 0", "set it to 0 (off) or more")
        need(_positive(self.lr), "lr", "a positive number", "e.g. 2e-4 (a negative rate climbs the loss instead of descending it)")
        need(_positive(self.eps), "eps", "a positive number", "e.g. 1e-8")
        need(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay", "a number >= 0",
             "e.g. 1e-4, or 0 for none")
        need(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "a number from 0 to 1",
             "the cosine ends at lr * min_lr_ratio, e.g. 0.1")
        need(self.decay_steps is None or self.decay_steps >= 1, "decay_steps", "an integer >= 1 or null",
             "e.g. 500000 (the released --train-iters), or null to decay over the rest of the run")
        need(self.grad_clip is None or _positive(self.grad_clip), "grad_clip", "a positive number or null",
             "e.g. 1.0, or null for no clipping (a negative clip reverses the update)")
        need(self.keep_last is None or self.keep_last >= 1, "keep_last", "an integer >= 1 or null",
             "e.g. 3, or null to keep every checkpoint")
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                           and 0 <= b < 1 for b in self.betas):
            out.append(Problem("betas", f"must be two numbers in [0, 1), got {list(self.betas)!r}",
                               "e.g. [0.9, 0.95]"))
        if self.dtype == "float16":
            # The released model trained in fp16 with dynamic loss scaling; without a grad scaler
            # fp16 gradients underflow, and on CPU fp16 matmuls are ~1000x slower. bf16 needs no
            # scaling.
            out.append(Problem("dtype", "float16 is not supported (it needs dynamic loss scaling)",
                               "use bfloat16 (same memory, no scaling) or float32"))
        elif self.dtype not in ("float32", "bfloat16"):
            out.append(Problem("dtype", f"must be float32 or bfloat16, got {self.dtype!r}",
                               "use float32 or bfloat16"))
        if not _DEVICE.fullmatch(self.device):
            out.append(Problem("device", f"must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}",
                               "e.g. auto (CUDA when present, else CPU)"))
        if (problem := seed_problem(self.seed, "seed")) is not None:
            out.append(problem)
        if (problem := seed_problem(self.sample_seed, "sample_seed")) is not None:
            out.append(problem)
        need(_positive(self.sample_fps), "sample_fps", "a positive number",
             "e.g. 1 (5 key frames spanning 4 s, the prefix 4.0s)")
        if any(not isinstance(p, str) or not p.strip() for p in self.sample_prompts):
            out.append(Problem("sample_prompts", "holds an empty or non-text prompt",
                               "give one non-empty caption per item, e.g. ['a red circle moving left']"))
        if self.compile and (problem := compile_toolchain_problem(self.device, "compile")) is not None:
            out.append(problem)
        return out


def stage_problems(settings: TrainSettings, stage: str) -> list[Problem]:
    """Settings that only one stage takes (empty when they fit ``stage``, the model's stage value)."""
    if settings.first_frame_loss and stage != "sequential":
        return [Problem("train.first_frame_loss", f"is true but the model is a {stage} model (training "
                        "frame 0 is a stage-1 option)", "set train.first_frame_loss=false")]
    return []


def sample_problems(settings: TrainSettings, stage: str, *, has_image_tokenizer: bool,
                    val_split: str | None) -> list[Problem]:
    """What ``train.sample_every > 0`` needs of the rest of the recipe (empty when off or fine).

    Args:
        settings: The train section.
        stage: The model's stage value (``sequential``, ``interpolation``, ``text_to_image``).
        has_image_tokenizer: Whether the recipe names an ``image_tokenizer`` (samples are decoded).
        val_split: ``data.val_split`` (stage 2 interpolates its windows).
    """
    if not settings.sample_every:
        return []
    out = []
    if not has_image_tokenizer:
        out.append(Problem("image_tokenizer", f"is missing but train.sample_every={settings.sample_every} "
                           "writes sample videos, which are decoded with it",
                           "add the tokenizer that wrote the shards, e.g. `image_tokenizer: {name: vqvae, "
                           "path: runs/tiny/vqvae/model}`, or set train.sample_every=0"))
    if stage == "sequential" and not settings.sample_prompts:
        out.append(Problem("train.sample_prompts", "is empty but train.sample_every > 0 samples their key frames",
                           "give a few captions, e.g. sample_prompts: ['a red circle moving left', "
                           "'a blue square moving up']"))
    elif stage == "interpolation" and not val_split:
        out.append(Problem("data.val_split", "is null but stage-2 samples interpolate validation windows",
                           "set data.val_split=val, or train.sample_every=0"))
    elif stage not in ("sequential", "interpolation"):
        out.append(Problem("train.sample_every", f"is {settings.sample_every} but a '{stage}' model makes no video",
                           "set train.sample_every=0 (sample videos are for the stage-1 and stage-2 models)"))
    return out


@dataclass(frozen=True)
class TrainRunSettings:
    """The top-level scalar keys of a train recipe.

    Attributes:
        output_dir: The run folder: checkpoints, ``model.safetensors``, metrics.
        resume: Continue from the newest checkpoint in ``output_dir``.
        overwrite: Delete an earlier run's checkpoints in ``output_dir`` first.
    """

    output_dir: str
    resume: bool = False
    overwrite: bool = False

    def problems(self) -> list[Problem]:
        """``output_dir`` must name a folder."""
        if not self.output_dir.strip():
            return [Problem("output_dir", "is empty", "name the run folder, e.g. output_dir=runs/my_run")]
        return []


_CAPTION_KEYS = ("contains", "regex")


@dataclass(frozen=True)
class CaptionFilter:
    """Which samples of a split a run uses, chosen by caption (``data.captions``).

    A caption is kept when it holds every string of ``contains`` and, when ``regex`` is given, the
    regular expression matches somewhere in it (``re.search``). Both are case-sensitive (the
    prepared captions are lower case; ``(?i)`` makes a regex ignore case). ``contains`` narrows
    (AND); alternatives and negation go in the regex: ``"circle|square"``, ``"^(?!.*red)"``.

    Calling the filter on a caption answers whether it is kept; ``str()`` names it as the recipe
    writes it, for messages.

    Attributes:
        contains: Substrings a kept caption holds, all of them.
        regex: A Python regular expression a kept caption matches, or None.
    """

    contains: tuple[str, ...] = ()
    regex: str | None = None

    def __call__(self, caption: str) -> bool:
        if not all(part in caption for part in self.contains):
            return False
        return self.regex is None or re.search(self.regex, caption) is not None

    def __str__(self) -> str:
        parts = [f"contains: {list(self.contains)!r}"] if self.contains else []
        parts += [f"regex: {self.regex!r}"] if self.regex is not None else []
        return f"data.captions {{{', '.join(parts)}}}"


def _caption_filter_problems(node: object) -> list[Problem]:
    """The problems of a ``data.captions`` mapping (empty when it builds a CaptionFilter)."""
    example = "e.g. data.captions={contains: [triangle]} or {regex: 'red|blue'}"
    if not isinstance(node, dict):
        return [Problem("captions", f"must be a mapping with {' and/or '.join(_CAPTION_KEYS)}, got {node!r}", example)]
    out = []
    for key in node:
        if key not in _CAPTION_KEYS:
            close = difflib.get_close_matches(str(key), _CAPTION_KEYS, n=1)
            hint = f": did you mean {close[0]!r}?" if close else ""
            out.append(Problem(f"captions.{key}", f"is not a caption-filter key{hint} (accepted: "
                               f"{', '.join(_CAPTION_KEYS)})", example))
    contains, regex = node.get("contains", []), node.get("regex")
    if not isinstance(contains, (list, tuple)) or not all(isinstance(p, str) and p for p in contains):
        out.append(Problem("captions.contains", f"must be a list of non-empty strings, got {contains!r}",
                           "e.g. contains: [triangle] (a caption is kept when it holds every one)"))
    if regex is not None:
        if not isinstance(regex, str):
            out.append(Problem("captions.regex", f"must be a string, got {regex!r}", "e.g. regex: 'circle|square'"))
        else:
            try:
                re.compile(regex)
            except re.error as exc:
                out.append(Problem("captions.regex", f"is not a valid regular expression ({exc})",
                                   "fix the pattern (Python `re` syntax), e.g. regex: 'circle|square'"))
    if not out and not contains and regex is None:
        out.append(Problem("captions", "has neither contains nor regex, so it names no subset",
                           f"give one ({example}), or set data.captions=null to use every sample"))
    return out


@dataclass(frozen=True)
class DataSettings:
    """The ``data:`` section of a train recipe: where the token shards are, and which samples.

    Attributes:
        shards: The folder a ``prepare`` recipe wrote (``manifest.json`` + shards).
        train_split: The split trained on.
        val_split: The split validated on, or null for none.
        captions: Train and validate only on the samples whose caption passes this filter,
            ``{contains: [str, ...], regex: str}`` (:class:`CaptionFilter`), or null for all. It
            applies to both splits, so the validation loss is that of the held-out samples of the
            same caption subset. Read from the shards' headers, no frames loaded.
    """

    shards: str
    train_split: str = "train"
    val_split: str | None = "val"
    captions: dict[str, Any] | None = None

    def problems(self) -> list[Problem]:
        """The caption filter's keys, types and regex."""
        return [] if self.captions is None else _caption_filter_problems(self.captions)

    def caption_filter(self) -> CaptionFilter | None:
        """``captions`` as a :class:`CaptionFilter` (None when unset). Call after :meth:`problems`."""
        if self.captions is None:
            return None
        return CaptionFilter(tuple(self.captions.get("contains", ())), self.captions.get("regex"))


@dataclass(frozen=True)
class DistributedSettings:
    """The ``distributed:`` section: FSDP2 precision under ``cogframe run --nproc N``.

    Attributes:
        param_dtype: Dtype of the unsharded working parameters (null: the master dtype).
        reduce_dtype: Dtype of the gradient reduction.
    """

    param_dtype: str | None = "bfloat16"
    reduce_dtype: str = "float32"

    def problems(self) -> list[Problem]:
        """Only float32 and bfloat16: float16 would need dynamic loss scaling."""
        out = []
        for key in ("param_dtype", "reduce_dtype"):
            value = getattr(self, key)
            if value is None and key == "param_dtype":
                continue
            if value not in ("float32", "bfloat16"):
                extra = " (float16 needs dynamic loss scaling, which FSDP2 training here does not do)" \
                    if value == "float16" else ""
                out.append(Problem(key, f"must be float32 or bfloat16, got {value!r}{extra}",
                                   f"set distributed.{key}=bfloat16 or float32"))
        return out


@dataclass(frozen=True)
class PlanSettings:
    """The ``plan:`` section read by ``cogframe plan``.

    Attributes:
        devices: Device counts to plan memory for.
        micro_batch: Samples per device per micro-step.
    """

    devices: list[int] = field(default_factory=lambda: [1, 8, 64])
    micro_batch: int = 1

    def problems(self) -> list[Problem]:
        """Positive device counts and micro-batch."""
        out = []
        if not self.devices or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in self.devices):
            out.append(Problem("devices", f"must be a list of positive integers, got {self.devices!r}",
                               "e.g. plan.devices=[1,8,64]"))
        if self.micro_batch < 1:
            out.append(Problem("micro_batch", f"must be >= 1, got {self.micro_batch}", "e.g. plan.micro_batch=1"))
        return out

