"""Sample videos during training: every ``sample_every`` steps, a few clips of the model being trained.

A video-stage run (``train.sample_every > 0``) writes, at each due step ``s``, the folder
``<output_dir>/samples/step_<s:06d>/`` with one ``NN_<slug>.mp4`` and ``NN_<slug>.png`` (contact
sheet) per clip, ``sheet.png`` (every clip, one row each) and ``samples.json`` (the step, the
clips, their prompts and files), and hands the clips to every logger that has a ``log_media``
method (``jsonl`` records the file paths, ``tensorboard`` the sheet as an image; see
``plugins/loggers.py``). So users see motion appear while the model trains.

What is sampled:

* **stage 1** (a sequential model): the key frames of ``sample_prompts`` at ``sample_fps`` (its
  duration prefix, as ``cogframe run tiny/sample`` would prompt), generated exactly as the
  ``key_frames`` stage does (:func:`cogframe.core.generation.generate.generate_key_frames`: the
  first frame through the base channel, or both channels after ``train.first_frame_loss``, then
  the KV-cached key frames, parallel waves), with
  seed ``sample_seed`` and the run's token sampler;
* **stage 2** (an interpolation model): the first ``sample_windows`` windows of the validation
  shards; the model fills frames 1 and 3 between the real frames 0, 2 and 4 (one round, the
  window's own prompt and rate), and each sheet shows the generated window above the real one.

Both decode with the recipe's image tokenizer. Sampling runs in eval mode under ``no_grad`` and
inside :func:`torch.random.fork_rng`, so it changes neither the weights nor any random stream:
a run with samples trains to the same losses as one without, and resumes exactly.

Files: each step folder is built under a hidden temporary name (``.step_000200.<random>.tmp``)
and renamed into place when complete, so a folder named ``step_*`` is always whole. Re-running a
step (a resumed run that had written the step's samples but not yet its checkpoint) replaces the
folder: the old one is renamed aside, the new one renamed in, the old one deleted. Folders of
other steps are never touched, and a resumed run starts sampling after its checkpoint's step, so
it neither duplicates nor clobbers earlier samples; leftover temporary folders of a killed run
are removed at the first sample.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from cogframe.core.io.atomic import default_file_mode, fsync_dir
from cogframe.core.model.layout import Stage
from cogframe.errors import ConfigError

__all__ = ["SAMPLES_DIR", "PreviewClip", "TrainingPreview", "step_folder"]

SAMPLES_DIR = "samples"
_DECODE_CHUNK = 256


def step_folder(run_dir: str | os.PathLike, step: int) -> Path:
    """``<run_dir>/samples/step_<step:06d>``: where the samples of ``step`` go."""
    return Path(run_dir) / SAMPLES_DIR / f"step_{step:06d}"


@dataclass(frozen=True)
class PreviewClip:
    """One sampled clip.

    Attributes:
        name: File stem inside the step folder (``00_a_red_circle_moving_left``).
        caption: The prompt (stage 1) or the validation window's decoded text (stage 2).
        frames: uint8 ``[T, H, W, 3]`` generated frames.
        fps: Their frame rate.
        reference: uint8 ``[T, H, W, 3]`` real frames of the same window (stage 2), else None.
    """

    name: str
    caption: str
    frames: np.ndarray
    fps: float
    reference: np.ndarray | None = None


def _slug(text: str) -> str:
    import re

    words = re.sub(r"[^\w]+", "_", text.lower()).strip("_")
    return words[:48].rstrip("_") or "sample"


class TrainingPreview:
    """Writes sample clips of a training model every ``every`` steps (see the module docstring).

    Args:
        run_dir: The run folder; samples go under ``samples/``.
        every: Sample every this many steps (>= 1); the last step is always sampled too.
        stage: The model's stage (:class:`~cogframe.core.model.layout.Stage`): sequential or interpolation.
        text_tokenizer: The run's text tokenizer (``encode_prompt``, ``boi_id``).
        image_tokenizer: Decodes token grids ``[N, h, w]`` to float frames ``[N, 3, H, W]`` in [0, 1].
        sampler: The token sampler (kind ``token_sampler``).
        text_len: Text slots of the model.
        prompts: Stage 1: the captions to sample.
        fps: Stage 1: the key-frame rate (its duration prefix).
        key_frames: Stage 1: frames the model generates.
        windows: Stage 2: validation samples ``{"text", "text_valid", "frames", "fps"}``.
        seed: Sampling seed (the same clips' randomness at every step).
        prefix_format: Format of the duration prefix (``"{:.1f}s"``).
        display_scale: Nearest-neighbour upscaling of the written files (tiny 32x32 clips).
        first_frame_temporal: Stage 1: frame 0 through both channels (a model trained with
            ``train.first_frame_loss``, sampled with the key_frames stage's ``first_frame: both``).

    Raises:
        ConfigError: A stage without a video preview, no prompts or windows, or a prompt too long
            for the text slots (raised here, before the first training step).
    """

    def __init__(self, run_dir: str | os.PathLike, every: int, *, stage: Stage, text_tokenizer, image_tokenizer,
                 sampler, text_len: int, prompts: Sequence[str] = (), fps: float = 1.0, key_frames: int = 5,
                 windows: Sequence[dict] = (), seed: int = 0, prefix_format: str = "{:.1f}s",
                 display_scale: int = 4, first_frame_temporal: bool = False) -> None:
        from cogframe.core.generation.prompts import encode_prompts
        from cogframe.core.io.frame_rate import duration_prefix

        if every < 1:
            raise ConfigError(f"train.sample_every must be >= 1 to sample (0 turns sampling off), got {every}.")
        self.run_dir, self.every, self.stage = Path(run_dir), int(every), Stage.parse(stage)
        self.text_tokenizer, self.image_tokenizer, self.sampler = text_tokenizer, image_tokenizer, sampler
        self.seed, self.scale, self.fps = int(seed), max(1, int(display_scale)), float(fps)
        self._cleaned = False
        self.first_frame_temporal = bool(first_frame_temporal)
        if self.stage is Stage.SEQUENTIAL:
            if not prompts:
                raise ConfigError("train.sample_prompts is empty; give the captions to sample, e.g. "
                                  "sample_prompts: ['a red circle moving left', 'a blue square moving up'].")
            self.captions = [str(p) for p in prompts]
            self.prefix = duration_prefix(self.fps, key_frames, prefix_format)
            try:
                self.prompt = encode_prompts(text_tokenizer, self.captions, text_len, self.prefix)
                self.first_prompt = encode_prompts(text_tokenizer, self.captions, text_len, None)
            except ConfigError as exc:
                raise ConfigError(f"train.sample_prompts: {exc}") from None
        elif self.stage is Stage.INTERPOLATION:
            if not windows:
                raise ConfigError("stage-2 samples interpolate validation windows, but the validation split has "
                                  "none; set data.val_split to a split of the shards, or train.sample_every=0.")
            self.windows = list(windows)
            self.captions = [self._caption(w) for w in self.windows]
        else:
            raise ConfigError(f"train.sample_every samples videos of a video stage, but this is a "
                              f"'{self.stage.value}' model; set train.sample_every=0 (sample it with a "
                              "sampling recipe instead).")

    # ---- when -------------------------------------------------------------------------------
    def due(self, step: int, last_step: int) -> bool:
        """Whether ``step`` (just finished) is sampled: every ``every`` steps and the last one."""
        return step % self.every == 0 or step == last_step

    # ---- what ---------------------------------------------------------------------------------
    def _caption(self, window: dict) -> str:
        ids = window["text"][window["text_valid"].bool()].tolist()
        try:
            return str(self.text_tokenizer.decode(ids)).strip() or "window"
        except Exception:  # a tokenizer without decode, or ids it cannot map back: the name is cosmetic
            return "window"

    def _decode(self, tokens: torch.Tensor) -> np.ndarray:
        """Token grids ``[B, T, h, w]`` -> uint8 ``[B, T, H, W, 3]``."""
        batch, count = tokens.shape[:2]
        flat = tokens.reshape(batch * count, *tokens.shape[2:]).cpu()
        parts = [self.image_tokenizer.decode(flat[i:i + _DECODE_CHUNK]).float().cpu()
                 for i in range(0, flat.shape[0], _DECODE_CHUNK)]
        pixels = (torch.cat(parts) * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        return pixels.reshape(batch, count, *pixels.shape[1:]).numpy()

    def generate(self, model) -> list[PreviewClip]:
        """The clips of ``model`` now (eval mode, no grad, random streams untouched)."""
        from cogframe.core.generation.decoder import DecodeOptions
        from cogframe.core.generation.prompts import TextPrompt

        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                options = DecodeOptions(self.sampler, seed=self.seed, parallel=True)
                if self.stage is Stage.SEQUENTIAL:
                    from cogframe.core.generation.generate import generate_key_frames

                    def on(p):
                        return TextPrompt(p.ids.to(device), p.mask().to(device))

                    result = generate_key_frames(model, on(self.prompt), boi_id=self.text_tokenizer.boi_id,
                                                 options=options, first_prompt=on(self.first_prompt),
                                                 first_frame_temporal=self.first_frame_temporal)
                    pixels = self._decode(result.frames)
                    return [PreviewClip(f"{i:02d}_{_slug(c)}", c, pixels[i], self.fps)
                            for i, c in enumerate(self.captions)]
                from cogframe.core.generation.generate import interpolate_round

                frames = torch.stack([w["frames"] for w in self.windows]).to(device)
                prompt = TextPrompt(torch.stack([w["text"] for w in self.windows]).to(device),
                                    torch.stack([w["text_valid"] for w in self.windows]).bool().to(device))
                result = interpolate_round(model, frames[:, 0::2], prompt, boi_id=self.text_tokenizer.boi_id,
                                           options=options)
                pixels, real = self._decode(result.frames), self._decode(frames)
                return [PreviewClip(f"{i:02d}_{_slug(c)}", c, pixels[i], float(w["fps"]), real[i])
                        for i, (c, w) in enumerate(zip(self.captions, self.windows))]
        finally:
            model.train(was_training)

    # ---- where --------------------------------------------------------------------------------
    def _clean_leftovers(self, samples: Path) -> None:
        if self._cleaned or not samples.is_dir():
            self._cleaned = True
            return
        for entry in samples.iterdir():
            if entry.name.startswith(".step_") and ".tmp" in entry.name and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
        self._cleaned = True

    def write(self, clips: Sequence[PreviewClip], step: int) -> dict[str, Any]:
        """Writes the step folder (atomically, see the module docstring); returns its record."""
        from cogframe.core.io.video import contact_sheet, write_video

        final = step_folder(self.run_dir, step)
        samples = final.parent
        samples.mkdir(parents=True, exist_ok=True)
        self._clean_leftovers(samples)
        tmp = Path(tempfile.mkdtemp(dir=samples, prefix=f".{final.name}.", suffix=".tmp"))
        try:
            record = {"step": step, "stage": self.stage.value, "seed": self.seed, "display_scale": self.scale,
                      "clips": []}
            rows = []
            for clip in clips:
                shown = self._upscale(clip.frames)
                write_video(tmp / f"{clip.name}.mp4", shown, clip.fps)
                sheet = shown if clip.reference is None else np.concatenate([shown, self._upscale(clip.reference)])
                contact_sheet(sheet, tmp / f"{clip.name}.png", cols=shown.shape[0])
                rows.append(sheet)
                record["clips"].append({"name": clip.name, "caption": clip.caption, "fps": clip.fps,
                                        "frames": int(clip.frames.shape[0]),
                                        "files": {"mp4": f"{clip.name}.mp4", "png": f"{clip.name}.png"},
                                        "reference_row": clip.reference is not None})
            contact_sheet(np.concatenate(rows), tmp / "sheet.png", cols=rows[0].shape[0])
            record["sheet"] = "sheet.png"
            (tmp / "samples.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            os.chmod(tmp, _folder_mode())  # mkdtemp makes it 0700
            self._swap_in(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return {**record, "dir": str(final)}

    @staticmethod
    def _swap_in(tmp: Path, final: Path) -> None:
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old.", suffix=".tmp"))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _upscale(self, frames: np.ndarray) -> np.ndarray:
        if self.scale == 1:
            return frames
        return np.ascontiguousarray(frames.repeat(self.scale, axis=1).repeat(self.scale, axis=2))

    # ---- the loop's hook --------------------------------------------------------------------
    def __call__(self, model, step: int, *, last_step: int, loggers: Iterable[Any] = (),
                 is_main: bool = True) -> dict[str, Any] | None:
        """At a due step: generate (on every process: sharded forwards need them all), then on the
        main process write the folder and call ``log_media(step, name, frames, fps=..., files=...)``
        of each logger that has it. Returns the step's record (None when not due or not main)."""
        if not self.due(step, last_step):
            return None
        clips = self.generate(model)
        if not is_main:
            return None
        record = self.write(clips, step)
        folder = Path(record["dir"])
        for logger in loggers:
            log_media = getattr(logger, "log_media", None)
            if not callable(log_media):
                continue
            for clip in clips:
                log_media(step, f"samples/{clip.name}", clip.frames, fps=clip.fps,
                          files=[str(folder / f"{clip.name}.mp4"), str(folder / f"{clip.name}.png")])
        return record


def _folder_mode() -> int:
    """A new folder's usual mode: the file mode plus search (x) wherever it can be read."""
    mode = default_file_mode()
    return mode | ((mode & 0o444) >> 2)
