"""Task ``train_video_classifier``: train the moving-shapes clip classifier behind the Fréchet distance.

The classifier (:class:`cogframe.core.metrics.video_classifier.VideoClassifier`) reads colour,
shape and direction of motion from a clip; its penultimate embedding is what
:mod:`cogframe.core.metrics.frechet` compares (docs/quality.md).

Training data are real clips of the ``train`` split, drawn afresh every step (moving_shapes
renders any clip index on demand, so a large ``num_clips`` never repeats a clip), each cut to a
random *view*: a random number of frames (``views.min_frames``..``views.max_frames``, 5..33 by
default: 5 key frames up to a 33-frame video) evenly spread over a random contiguous span of at
least ``views.min_span`` of the clip (a random frame rate). Then a light augmentation that mimics
what decoding through the VQ-VAE does to generated frames: with probability ``views.blur_prob`` a
Gaussian blur of random sigma up to ``views.max_blur_sigma`` px, and Gaussian pixel noise of
random std up to ``views.max_noise``.

Held-out accuracy is measured per head on the ``val`` split (disjoint clips) in four views: random
views as in training (seeded, no augmentation), 5 key frames over the whole clip, 33 frames over
the whole clip, and the 5 key frames blurred with sigma ``views.max_blur_sigma``.

Outputs in ``output_dir``: ``model/`` (:meth:`VideoClassifier.save`), ``metrics.json`` (accuracy
per head and view, time, settings) and whatever the loggers write (loss and accuracy every
``train.log_every`` steps).

Recipe keys::

    output_dir: runs/tiny/video_classifier
    seed: 0
    dataset: {name: moving_shapes, size: 32}
    splits: {train: {split: train, num_clips: 100000}, val: {split: val, num_clips: 1000}}
    model: {num_frames: 9, width: 16, embed_dim: 64}
    views: {min_frames: 5, max_frames: 33, min_span: 0.5, blur_prob: 0.5, max_blur_sigma: 1.0, max_noise: 0.03}
    train: {steps: 200, batch_size: 32, lr: 5e-3, min_lr_ratio: 0.02, log_every: 50, threads: 1}
    loggers: [{name: jsonl, path: runs/tiny/video_classifier/train_log.jsonl}]
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from cogframe.errors import ConfigError, DataError, Problem
from cogframe.hookspecs import hookimpl
from cogframe.plugins._run_folder import locks_run_folder
from cogframe.plugins._task_helpers import build_split, output_dir, split_names, split_problems, task_settings
from cogframe.plugins.dataset_moving_shapes import COLOURS, DIRECTIONS, SHAPES
from cogframe.registry import Registries, component

__all__ = ["ClassifierRunSettings", "ClassifierModelSettings", "ClassifierTrainSettings", "TrainVideoClassifierTask",
           "ViewSettings"]

# The heads and their classes, in logit order: the three facts of a moving_shapes caption.
LABELS: dict[str, list[str]] = {"colour": list(COLOURS), "shape": list(SHAPES), "direction": list(DIRECTIONS)}
_MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class ClassifierRunSettings:
    """The top-level scalar keys.

    Attributes:
        output_dir: Where ``model/`` and ``metrics.json`` go.
        seed: Seed of initialisation, clip choice, views and augmentation, in [0, 2**63).
    """

    output_dir: str
    seed: int = 0

    def problems(self) -> list[Problem]:
        """A seed of 64 bits."""
        if 0 <= self.seed <= _MAX_SEED:
            return []
        return [Problem("seed", f"is {self.seed}, outside 0 .. 2**63-1", "pick a seed in that range, e.g. 0")]


@dataclass(frozen=True)
class ClassifierModelSettings:
    """The ``model:`` section: the classifier's architecture (the frame size comes from the data).

    Attributes:
        num_frames: Frames every clip is resampled to (>= 4).
        width: Channels of the first convolution block (>= 1).
        embed_dim: Dimension of the embedding the Fréchet distance uses (>= 2).
    """

    num_frames: int = 9
    width: int = 16
    embed_dim: int = 64

    def problems(self) -> list[Problem]:
        """Sizes in range."""
        found = []
        if self.num_frames < 4:
            found.append(Problem("num_frames", f"is {self.num_frames}; motion needs >= 4 frames", "use e.g. 9"))
        if self.width < 1:
            found.append(Problem("width", f"is {self.width}; it must be >= 1", "use e.g. 16"))
        if self.embed_dim < 2:
            found.append(Problem("embed_dim", f"is {self.embed_dim}; a covariance needs >= 2 dimensions",
                                 "use e.g. 64"))
        return found


@dataclass(frozen=True)
class ViewSettings:
    """The ``views:`` section: how a training clip is cut and augmented.

    Attributes:
        min_frames: Fewest frames of a view (>= 2).
        max_frames: Most frames of a view (>= min_frames).
        min_span: Shortest span of the clip a view covers, as a fraction in (0, 1].
        blur_prob: Probability of blurring a view, in [0, 1].
        max_blur_sigma: Largest blur sigma in pixels (>= 0); the sigma is uniform in [0.3, max].
        max_noise: Largest std of the added pixel noise (pixels in [0, 1]), in [0, 0.5].
    """

    min_frames: int = 5
    max_frames: int = 33
    min_span: float = 0.5
    blur_prob: float = 0.5
    max_blur_sigma: float = 1.0
    max_noise: float = 0.03

    def problems(self) -> list[Problem]:
        """Ranges of every setting."""
        found = []
        if self.min_frames < 2:
            found.append(Problem("min_frames", f"is {self.min_frames}; a view needs >= 2 frames", "use e.g. 5"))
        if self.max_frames < self.min_frames:
            found.append(Problem("max_frames", f"is {self.max_frames} < min_frames {self.min_frames}",
                                 "raise it, e.g. 33"))
        if not 0 < self.min_span <= 1:
            found.append(Problem("min_span", f"is {self.min_span}; it is a fraction of the clip in (0, 1]",
                                 "use e.g. 0.5"))
        if not 0 <= self.blur_prob <= 1:
            found.append(Problem("blur_prob", f"is {self.blur_prob}; a probability is in [0, 1]", "use e.g. 0.5"))
        if self.max_blur_sigma < 0:
            found.append(Problem("max_blur_sigma", f"is {self.max_blur_sigma}; it must be >= 0", "use e.g. 1.0"))
        if not 0 <= self.max_noise <= 0.5:
            found.append(Problem("max_noise", f"is {self.max_noise}; use a std in [0, 0.5]", "use e.g. 0.03"))
        return found


@dataclass(frozen=True)
class ClassifierTrainSettings:
    """The ``train:`` section.

    Attributes:
        steps: Optimizer steps (>= 1).
        batch_size: Clips per step (>= 2).
        lr: Peak Adam learning rate (> 0), cosine-decayed to ``min_lr_ratio * lr``.
        min_lr_ratio: Cosine floor, in [0, 1].
        log_every: Log loss and batch accuracy every N steps (>= 1).
        threads: torch CPU threads (0: torch's default).
        eval_batch_size: Clips per forward pass of the held-out evaluation (>= 1).
    """

    steps: int = 200
    batch_size: int = 32
    lr: float = 5e-3
    min_lr_ratio: float = 0.02
    log_every: int = 50
    threads: int = 0
    eval_batch_size: int = 200

    def problems(self) -> list[Problem]:
        """Positive sizes and a usable schedule."""
        found = [Problem(key, f"must be >= {low}, got {getattr(self, key)}", f"e.g. {key}={example}")
                 for key, low, example in (("steps", 1, 200), ("batch_size", 2, 32), ("log_every", 1, 50),
                                           ("eval_batch_size", 1, 200), ("threads", 0, 1))
                 if getattr(self, key) < low]
        if not self.lr > 0:
            found.append(Problem("lr", f"must be > 0, got {self.lr}", "e.g. lr=3e-3"))
        if not 0 <= self.min_lr_ratio <= 1:
            found.append(Problem("min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}", "e.g. 0.02"))
        return found


def _view_indices(num_frames: int, views: ViewSettings, rng: np.random.Generator) -> np.ndarray:
    """Frame indices of one random view: random length, random contiguous span, evenly spread."""
    count = int(rng.integers(views.min_frames, views.max_frames + 1))
    span = int(rng.integers(max(2, math.ceil(views.min_span * num_frames)), num_frames + 1)) \
        if num_frames >= 2 else num_frames
    start = int(rng.integers(0, num_frames - span + 1))
    return np.round(np.linspace(start, start + span - 1, count)).astype(np.int64)


def _labels_of(clip, where: str) -> list[int]:
    """The class index per head of a clip, from its metadata."""
    meta = getattr(clip, "metadata", None) or {}
    try:
        return [LABELS[head].index(meta[head]) for head in LABELS]
    except (KeyError, ValueError):
        raise DataError(f"{where} ({getattr(clip, 'source', '?')}) has no moving_shapes labels "
                        f"({ {h: meta.get(h) for h in LABELS} }); train_video_classifier learns the colour, shape "
                        "and direction of moving_shapes clips: use `dataset: {name: moving_shapes}`.") from None


class _ClipSource:
    """Random access to a split's usable clips, checking frame size and labels once per clip."""

    def __init__(self, dataset, split: str) -> None:
        self.dataset, self.split = dataset, split
        if len(dataset) < 1:
            raise DataError(f"the {split} split has no clips; give it num_clips >= 1 (e.g. "
                            f"splits.{split}.num_clips=1000).")
        self.size: int | None = None

    def get(self, index: int):
        """``(frames, labels)`` of entry ``index``, or None when the dataset skipped it."""
        clip = self.dataset[index]
        if clip is None:
            return None
        frames = clip.frames
        if frames.ndim != 4 or frames.shape[1] != frames.shape[2] or frames.shape[0] < 2:
            raise DataError(f"{self.split} clip {index} has frames {frames.shape}; the classifier needs square "
                            "frames and >= 2 frames per clip: give the dataset a fixed 'size'.")
        if self.size is None:
            self.size = int(frames.shape[1])
        elif frames.shape[1] != self.size:
            raise DataError(f"{self.split} clip {index} has {frames.shape[1]}px frames, others {self.size}px; give "
                            "the dataset a fixed 'size' so every frame has the same shape.")
        return frames, _labels_of(clip, f"{self.split} clip {index}")


def _blur(x, sigma):
    """Per-clip Gaussian blur of ``x [B, 3, F, H, W]`` with ``sigma [B]`` (0: unchanged)."""
    import torch

    radius = max(1, math.ceil(3 * float(sigma.max()))) if float(sigma.max()) > 0 else 0
    if radius == 0:
        return x
    b, c, f, h, w = x.shape
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    safe = sigma.clamp(min=1e-3)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None, :] / safe) ** 2)
    kernel = torch.where(sigma[:, None] > 0, kernel, (offsets[None, :] == 0).to(x.dtype))  # identity at 0
    kernel = kernel / kernel.sum(dim=1, keepdim=True)                                     # [B, K]
    groups = b * c * f
    weight = kernel.repeat_interleave(c * f, dim=0)                                         # [B*C*F, K]
    # Replicate padding: a clip's border pixels are background, so no dark halo is invented.
    flat = torch.nn.functional.pad(x.reshape(1, groups, h, w), (radius, radius, radius, radius), mode="replicate")
    flat = torch.nn.functional.conv2d(flat, weight[:, None, :, None], groups=groups)
    flat = torch.nn.functional.conv2d(flat, weight[:, None, None, :], groups=groups)
    return flat.reshape(b, c, f, h, w)


@component("task", "train_video_classifier",
           description="Train the moving-shapes clip classifier behind the Fréchet distance; write held-out accuracy.")
class TrainVideoClassifierTask:
    """Trains :class:`~cogframe.core.metrics.video_classifier.VideoClassifier` on real clips."""

    slots = {"dataset": "dataset", "loggers": "logger"}
    list_slots = ("loggers",)
    sections = {"": ClassifierRunSettings, "model": ClassifierModelSettings, "views": ViewSettings,
                "train": ClassifierTrainSettings}
    recipe_keys = ("splits",)

    def problems(self, cfg: DictConfig, registries: Registries) -> list[Problem]:
        """The dataset node, the split keywords and the two splits it needs."""
        found = split_problems(cfg, registries)
        if OmegaConf.select(cfg, "dataset", default=None) is None:
            found.append(Problem("dataset", "is missing: the classifier learns from real clips",
                                 "add `dataset: {name: moving_shapes, size: 32}`"))
        try:
            names = split_names(cfg)
        except ConfigError:
            return found  # split_problems has reported the malformed splits
        for split in ("train", "val"):
            if split not in names:
                found.append(Problem("splits", f"has no '{split}' split (the classifier trains on 'train' and "
                                     "reports held-out accuracy on 'val')",
                                     "write `splits: {train: {split: train, num_clips: 100000}, "
                                     "val: {split: val, num_clips: 1000}}`"))
        return found

    @locks_run_folder("output_dir")
    def run(self, cfg: DictConfig, registries: Registries) -> None:
        """Trains, evaluates on ``val``, then saves ``model/`` and ``metrics.json``."""
        import torch

        from cogframe.core.io.atomic import atomic_write_json
        from cogframe.core.metrics.video_classifier import VideoClassifier
        from cogframe.plugins._task_helpers import seed_everything

        s = task_settings(self, cfg, strict=True)
        run, arch, views, train = s[""], s["model"], s["views"], s["train"]
        out = output_dir(cfg)
        seed_everything(run.seed)
        if train.threads:
            torch.set_num_threads(train.threads)
        source = _ClipSource(build_split(cfg, registries, "train"), "train")
        val = _ClipSource(build_split(cfg, registries, "val"), "val")
        first = next((c for c in (source.get(i) for i in range(min(len(source.dataset), 64))) if c is not None), None)
        if first is None:
            raise DataError("the train split's first 64 entries were all skipped; fix the dataset or point it at "
                            "other clips.")
        model = VideoClassifier(LABELS, size=source.size, num_frames=arch.num_frames, width=arch.width,
                                embed_dim=arch.embed_dim)
        loggers = [registries.build("logger", node) for node in (cfg.get("loggers") or [])]
        stats = _train(model, source, views, train, run.seed, loggers)
        accuracy, val_clips = _evaluate(model, val, views, train.eval_batch_size, run.seed)
        metrics: dict[str, Any] = {
            **stats, "accuracy": accuracy, "val_clips": val_clips, "size": source.size,
            "params": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
            "seed": run.seed, "views": asdict(views), "train": asdict(train), "model": asdict(arch),
        }
        model.save(out / "model")
        atomic_write_json(out / "metrics.json", metrics)
        flat = {f"val_{view}_{head}": value for view, heads in accuracy.items() for head, value in heads.items()}
        for logger in loggers:
            logger.log(flat, train.steps)
            logger.close()
        worst_key = min(flat, key=flat.get)
        print(f"video classifier: held-out accuracy on {val_clips} val clips, random views: "
              + ", ".join(f"{h} {v:.1%}" for h, v in accuracy["random_views"].items())
              + f" (lowest of all views and heads: {flat[worst_key]:.1%}, {worst_key}); trained {train.steps} steps "
              f"in {stats['train_seconds']:.0f} s; saved {out / 'model'}, metrics in {out / 'metrics.json'}")


def _batch(source: _ClipSource, indices, views: ViewSettings, rng: np.random.Generator, model):
    """Prepared input and labels of random views of the clips ``indices`` (skipped ones dropped)."""
    import torch

    from cogframe.core.metrics.video_classifier import clips_to_tensor

    clips, labels = [], []
    for index in indices:
        got = source.get(int(index))
        if got is None:
            continue
        frames, label = got
        clips.append(frames[_view_indices(frames.shape[0], views, rng)])
        labels.append(label)
    if not clips:
        return None, None
    return clips_to_tensor(clips, model.num_frames, model.size), torch.tensor(labels, dtype=torch.long)


def _augment(x, views: ViewSettings, generator):
    """Decoding-like damage: a random Gaussian blur on some clips, then pixel noise."""
    import torch

    b = x.shape[0]
    if views.max_blur_sigma > 0 and views.blur_prob > 0:
        low = min(0.3, views.max_blur_sigma)
        sigma = low + (views.max_blur_sigma - low) * torch.rand(b, generator=generator)
        sigma = torch.where(torch.rand(b, generator=generator) < views.blur_prob, sigma, torch.zeros(b))
        x = _blur(x, sigma)
    if views.max_noise > 0:
        std = views.max_noise * torch.rand(b, 1, 1, 1, 1, generator=generator)
        x = x + std * torch.randn(x.shape, generator=generator)
    return x.clamp(0.0, 1.0)


def _train(model, source: _ClipSource, views: ViewSettings, s: ClassifierTrainSettings, seed: int,
           loggers: list) -> dict:
    import torch
    from tqdm import tqdm

    heads = list(LABELS)
    optimizer = torch.optim.Adam(model.parameters(), lr=s.lr)
    floor = s.min_lr_ratio
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(i, s.steps) / s.steps)))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    start = time.perf_counter()
    bar = tqdm(range(1, s.steps + 1), desc="train video classifier", unit="step", file=sys.stderr)
    last: dict[str, float] = {}
    for step in bar:
        x, y = _batch(source, rng.integers(0, len(source.dataset), s.batch_size), views, rng, model)
        if x is None:
            continue  # every clip of this draw was skipped by the dataset; draw again next step
        logits = model.logits_of_pixels(_augment(x, views, generator))
        losses = [torch.nn.functional.cross_entropy(logits[h], y[:, i]) for i, h in enumerate(heads)]
        loss = sum(losses)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % s.log_every == 0 or step == s.steps:
            last = {"loss": float(loss.detach()), "lr": schedule.get_last_lr()[0]}
            last.update({f"acc_{h}": float((logits[h].argmax(1) == y[:, i]).float().mean()) for i, h in enumerate(heads)})
            bar.set_postfix(loss=f"{last['loss']:.3f}")
            for logger in loggers:
                logger.log(last, step)
    return {"train_seconds": time.perf_counter() - start, "steps": s.steps, "batch_size": s.batch_size,
            "final_train_loss": last.get("loss")}


def _evaluate(model, val: _ClipSource, views: ViewSettings, batch_size: int, seed: int) -> tuple[dict, int]:
    """Held-out accuracy per view and head, and the number of val clips used.

    Views: ``random_views`` (as in training, seeded, no augmentation), ``key_frames`` (5 frames over
    the whole clip: what stage 1 generates), ``frames_33`` (33 frames over the whole clip: a video
    after three interpolation rounds) and ``key_frames_blurred`` (the key frames blurred with sigma
    ``views.max_blur_sigma``: the worst decoding blur of training).
    """
    import torch

    from cogframe.core.metrics.video_classifier import clips_to_tensor, resample_indices

    rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    heads = list(LABELS)
    cuts = {
        "random_views": lambda n: _view_indices(n, views, rng),
        "key_frames": lambda n: resample_indices(n, 5),
        "frames_33": lambda n: resample_indices(n, 33),
        "key_frames_blurred": lambda n: resample_indices(n, 5),
    }
    correct = {view: torch.zeros(len(heads)) for view in cuts}
    total = 0
    model.eval()
    entries = list(range(len(val.dataset)))
    with torch.no_grad():
        for begin in range(0, len(entries), batch_size):
            got = [c for c in (val.get(i) for i in entries[begin:begin + batch_size]) if c is not None]
            if not got:
                continue
            y = torch.tensor([label for _, label in got], dtype=torch.long)
            total += len(got)
            for view, cut in cuts.items():
                x = clips_to_tensor([frames[cut(frames.shape[0])] for frames, _ in got], model.num_frames, model.size)
                if view == "key_frames_blurred" and views.max_blur_sigma > 0:
                    x = _blur(x, torch.full((x.shape[0],), float(views.max_blur_sigma)))
                logits = model.logits_of_pixels(x)
                correct[view] += torch.tensor([float((logits[h].argmax(1) == y[:, i]).sum())
                                               for i, h in enumerate(heads)])
    if total == 0:
        raise DataError("the val split gave no usable clips; give it num_clips >= 1 (e.g. splits.val.num_clips=1000).")
    return {view: {h: float(c[i]) / total for i, h in enumerate(heads)} for view, c in correct.items()}, total


@hookimpl
def register_components():
    return [TrainVideoClassifierTask]
