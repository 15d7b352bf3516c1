"""Task ``train_vqvae``: train the VQ-VAE image tokenizer on dataset frames; report held-out PSNR.

Frames of every clip of the ``train`` split form the training pool; each step reconstructs a
random batch of them. At the end the model is evaluated on all frames of the ``val`` split.
Outputs in ``output_dir``: ``model/`` (:meth:`VQVAE.save`), ``metrics.json`` (PSNR, time, codebook
use), ``train_log.jsonl`` (losses every ``log_every`` steps) and ``val_recon.png`` (originals
above reconstructions).

Recipe keys::

    output_dir: runs/tiny/vqvae
    seed: 0
    dataset: {name: moving_shapes, size: 32}
    splits: {train: {split: train, num_clips: 256}, val: {split: val, num_clips: 32}}
    image_tokenizer: {name: vqvae, downsample: 4, codebook_size: 256}
    train: {steps: 2000, batch_size: 32, lr: 1e-3, log_every: 100, threads: 2}
    loggers: [{name: jsonl, path: runs/tiny/vqvae/train_log.jsonl}]
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from cogframe.core.io.atomic import atomic_write_json
from cogframe.core.io.datasets import iter_clips
from cogframe.core.io.video import contact_sheet
from cogframe.errors import ConfigError, DataError, Problem
from cogframe.hookspecs import hookimpl
from cogframe.core.training.settings import seed_problem
from cogframe.plugins._task_helpers import (
    build_split,
    check_recipe,
    output_dir,
    seed_everything,
    split_names,
    split_problems,
    task_settings,
)
from cogframe.registry import Registries, component
from cogframe.plugins._run_folder import locks_run_folder

__all__ = ["TrainVQVAETask", "psnr"]



@dataclass(frozen=True)
class VQVAETrainSettings:
    """The ``train:`` section of a train_vqvae recipe.

    Attributes:
        steps: Adam steps (>= 1).
        batch_size: Frames per step (>= 1).
        lr: Peak learning rate (> 0).
        min_lr_ratio: Cosine floor as a fraction of ``lr``, in [0, 1].
        log_every: Log losses every N steps (>= 1).
        threads: torch CPU threads (0: torch's default).
        eval_batch_size: Frames per batch of the held-out evaluation (>= 1).
    """

    steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    log_every: int = 100
    threads: int = 0
    eval_batch_size: int = 256

    def problems(self) -> list[Problem]:
        """Positive counts and rate, a floor in [0, 1]."""
        found = [Problem(key, f"must be an integer >= 1, got {getattr(self, key)}", "set it to 1 or more")
                 for key in ("steps", "batch_size", "log_every", "eval_batch_size") if getattr(self, key) < 1]
        if not (math.isfinite(self.lr) and self.lr > 0):
            found.append(Problem("lr", f"must be a positive number, got {self.lr}", "e.g. 2e-3"))
        if not 0 <= self.min_lr_ratio <= 1:
            found.append(Problem("min_lr_ratio", f"must be from 0 to 1, got {self.min_lr_ratio}", "e.g. 0.05"))
        if self.threads < 0:
            found.append(Problem("threads", f"must be >= 0, got {self.threads}", "0 keeps torch's default"))
        return found


@dataclass(frozen=True)
class VQVAERunSettings:
    """The top-level scalar keys of a train_vqvae recipe.

    Attributes:
        output_dir: Where ``model/``, ``metrics.json`` and ``val_recon.png`` go.
        seed: Seed of initialisation and batch order, in [0, 2**63).
    """

    output_dir: str
    seed: int = 0

    def problems(self) -> list[Problem]:
        """A 64-bit seed."""
        problem = seed_problem(self.seed, "seed")
        return [problem] if problem is not None else []


def psnr(mse: float) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1] with mean squared error ``mse``."""
    return float("inf") if mse <= 0 else 10.0 * math.log10(1.0 / mse)


def _frame_pool(dataset, desc: str) -> torch.Tensor:
    """All frames of all usable clips as one uint8 ``[N, 3, H, W]`` tensor."""
    frames = [clip.frames for _, clip in tqdm(iter_clips(dataset), total=len(dataset), desc=desc,
                                              unit="clip", file=sys.stderr)]
    if not frames:
        raise DataError(f"{desc}: the dataset gave no usable clips; check the dataset settings (num_clips, root).")
    shapes = {f.shape[1:] for f in frames}
    if len(shapes) > 1:
        raise DataError(f"{desc}: clips have different frame sizes {sorted(shapes)}; give the dataset a fixed "
                        "'size' so every frame has the same shape.")
    return torch.from_numpy(np.concatenate(frames)).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def evaluate(model, frames: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Held-out reconstruction quality: MSE, PSNR (over all pixels) and codebook use of ``frames``."""
    model.eval()
    sq_err, pixels, used = 0.0, 0, torch.zeros(model.codebook_size, dtype=torch.bool)
    for start in range(0, frames.shape[0], batch_size):
        batch = frames[start:start + batch_size].float() / 255.0
        codes = model.encode(batch)
        recon = model.decode(codes)
        sq_err += float(((recon - batch) ** 2).sum())
        pixels += batch.numel()
        used[codes.unique()] = True
    mse = sq_err / pixels
    return {"val_mse": mse, "val_psnr": psnr(mse), "val_codes_used": int(used.sum())}


@component("task", "train_vqvae", description="Train the VQ-VAE image tokenizer; write held-out PSNR.")
class TrainVQVAETask:
    """Trains an ``image_tokenizer`` that is an ``nn.Module`` returning ``(recon, stats)``."""

    slots = {"dataset": "dataset", "image_tokenizer": "image_tokenizer", "loggers": "logger"}

    list_slots = ("loggers",)
    sections = {"": VQVAERunSettings, "train": VQVAETrainSettings}
    recipe_keys = ("splits",)

    def validate(self, cfg: DictConfig, registries: Registries) -> None:
        """Checks the whole recipe for this task; raises one ConfigError listing every problem."""
        check_recipe(self, cfg, registries)

    def problems(self, cfg: DictConfig, registries: Registries) -> list[Problem]:
        """The split keywords and the held-out split (sections and slots: validation)."""
        found = split_problems(cfg, registries)
        if OmegaConf.select(cfg, "image_tokenizer", default=None) is None:
            found.append(Problem("image_tokenizer", "is missing: train_vqvae trains it",
                                 "add e.g. `image_tokenizer: {name: vqvae, downsample: 4, codebook_size: 256}`"))
        if not any(p.where.startswith("splits") for p in found) and "val" not in split_names(cfg):
            found.append(Problem("splits", "has no 'val' split: train_vqvae reports held-out PSNR",
                                 "add `splits: {train: {split: train}, val: {split: val, num_clips: 32}}`"))
        return found

    @locks_run_folder("output_dir")
    def run(self, cfg: DictConfig, registries: Registries) -> None:
        """Trains, evaluates on ``val``, saves the model and ``metrics.json``."""
        sections = task_settings(self, cfg, strict=True)  # checked once, by validation
        settings = asdict(sections["train"])
        out = output_dir(cfg)
        seed = sections[""].seed
        seed_everything(seed)
        if settings["threads"]:
            torch.set_num_threads(int(settings["threads"]))
        train_frames = _frame_pool(build_split(cfg, registries, "train"), "loading train frames")
        val_frames = _frame_pool(build_split(cfg, registries, "val"), "loading val frames")
        model = registries.build("image_tokenizer", cfg.image_tokenizer)
        if not isinstance(model, torch.nn.Module):
            raise ConfigError(f"image_tokenizer '{cfg.image_tokenizer.name}' is not a trainable nn.Module; "
                              "train_vqvae can only train modules such as vqvae.")
        loggers = [registries.build("logger", node) for node in (cfg.get("loggers") or [])]
        stats = self._train(model, train_frames, settings, seed, loggers)
        metrics = {**stats, **evaluate(model, val_frames, int(settings["eval_batch_size"])),
                   "train_frames": int(train_frames.shape[0]), "val_frames": int(val_frames.shape[0]),
                   "threads": torch.get_num_threads(), "seed": seed}
        model.save(out / "model")
        self._save_preview(model, val_frames, out / "val_recon.png")
        atomic_write_json(out / "metrics.json", metrics)
        for logger in loggers:
            logger.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, int(settings["steps"]))
            logger.close()
        print(f"VQ-VAE: held-out PSNR {metrics['val_psnr']:.2f} dB on {metrics['val_frames']} frames, "
              f"{metrics['val_codes_used']}/{model.codebook_size} codes used, trained {settings['steps']} steps "
              f"in {metrics['train_seconds']:.0f} s; saved {out / 'model'}, metrics in {out / 'metrics.json'}")

    @staticmethod
    def _train(model: torch.nn.Module, frames: torch.Tensor, s: dict, seed: int, loggers: list) -> dict:
        steps, batch_size = int(s["steps"]), int(s["batch_size"])
        optimizer = torch.optim.Adam(model.parameters(), lr=float(s["lr"]))
        # Cosine decay to min_lr_ratio * lr: large early steps while the codebook settles,
        # small late steps for a sharper final reconstruction.
        floor = float(s["min_lr_ratio"])
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda i: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * i / steps)))
        generator = torch.Generator().manual_seed(seed)
        model.train()
        start = time.perf_counter()
        bar = tqdm(range(1, steps + 1), desc="train vqvae", unit="step", file=sys.stderr)
        last = {}
        for step in bar:
            batch = frames[torch.randint(0, frames.shape[0], (batch_size,), generator=generator)].float() / 255.0
            _, stats = model(batch)
            optimizer.zero_grad(set_to_none=True)
            stats["loss"].backward()
            optimizer.step()
            schedule.step()
            if step % int(s["log_every"]) == 0 or step == steps:
                last = {k: float(v.detach()) for k, v in stats.items()}
                last["psnr_train"] = psnr(last["recon"])
                last["lr"] = schedule.get_last_lr()[0]
                bar.set_postfix(recon=f"{last['recon']:.4f}", ppl=f"{last['perplexity']:.0f}")
                for logger in loggers:
                    logger.log(last, step)
        seconds = time.perf_counter() - start
        return {"train_seconds": seconds, "steps": steps, "batch_size": batch_size,
                "final_train_recon": last.get("recon"), "final_perplexity": last.get("perplexity"),
                "codebook_restarts": int(getattr(getattr(model, "quantizer", None), "restarts", torch.tensor(0)))}

    @staticmethod
    def _save_preview(model, frames: torch.Tensor, path: Path, count: int = 8) -> None:
        pick = frames[torch.linspace(0, frames.shape[0] - 1, count).long()]
        recon = model.decode(model.encode(pick.float() / 255.0))
        recon = (recon * 255).round().to(torch.uint8)
        grid = torch.cat([pick, recon]).permute(0, 2, 3, 1).numpy()
        contact_sheet(grid, path, cols=count)


@hookimpl
def register_components():
    return [TrainVQVAETask]
