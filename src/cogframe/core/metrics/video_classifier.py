"""A small 3D-convolutional clip classifier of the moving-shapes domain, whose embedding FVD-style
distances are computed on (:mod:`cogframe.core.metrics.frechet`).

Published FVD embeds clips with an I3D network trained on Kinetics; that network knows nothing of
one coloured shape on black. This classifier is its offline analogue for the synthetic domain: it
is trained to read the three facts a caption states (colour, shape, direction of motion), so its
penultimate embedding is sensitive to exactly what a generated clip can get wrong, and it is small
enough to train in minutes on one CPU thread (recipe ``tiny/video_classifier``).

Input: uint8 clips ``[B, T, H, W, 3]`` with ``H == W == size``, any ``T >= 2``. Every clip is first
resampled to ``num_frames`` frames by nearest index over its whole length (:func:`resample_indices`),
so 5 key frames and a 33-frame video of the same motion look alike to the network.

Network (``[B, 3, F, H, W]`` in [0, 1]): two 1x3x3 convolution blocks per frame (batch norm,
ReLU, 2x2 spatial max-pooling), one 3x3x3 block across time (stride 2 in time), global mean and
max pooling, a linear layer to the ``embed_dim`` embedding (:meth:`VideoClassifier.features`),
then one linear head per attribute. The label names are arguments (core does not import the dataset plugin) and
are saved with the weights.

Saved as a folder: ``config.json`` (architecture and label names) + ``model.safetensors``, both
written atomically, weights first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from cogframe.core.io.atomic import atomic_path, atomic_write_json
from cogframe.core.weights.safe_load import check_finite, read_safetensors
from cogframe.errors import ConfigError, DataError, ShapeError

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "VideoClassifier",
    "clips_to_tensor",
    "load_video_classifier",
    "resample_indices",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_FORMAT = "cogframe-video-classifier"
_VERSION = 1


def resample_indices(num_frames: int, target: int) -> np.ndarray:
    """Nearest-index resampling of a clip of ``num_frames`` frames to ``target`` frames.

    The first and last frames are always kept, so the resampled clip spans the whole motion;
    a clip shorter than ``target`` repeats frames.

    Args:
        num_frames: Frames of the clip (>= 1).
        target: Frames wanted (>= 1).

    Returns:
        ``int64 [target]`` frame indices, non-decreasing.
    """
    if num_frames < 1 or target < 1:
        raise ShapeError(f"cannot resample a clip of {num_frames} frames to {target} frames; both must be >= 1.")
    # Round half up, not numpy's half-to-even, so ties spread evenly (5 -> 9: 0,1,1,2,2,3,3,4,4).
    return np.floor(np.linspace(0, num_frames - 1, target) + 0.5).astype(np.int64)


def _check_clip(clip: np.ndarray | torch.Tensor, size: int, where: str) -> None:
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise ShapeError(f"{where} has shape {tuple(clip.shape)}; a clip must be uint8 [T, H, W, 3] "
                         "(frames, height, width, RGB) — pass clips as [B, T, H, W, 3] or a list of [T, H, W, 3].")
    if clip.dtype not in (np.uint8, torch.uint8):
        raise ShapeError(f"{where} has dtype {clip.dtype}; the classifier reads uint8 pixels 0..255. Convert "
                         "float frames in [0, 1] with (x * 255).round() cast to uint8.")
    if clip.shape[0] < 2:
        raise ShapeError(f"{where} has {clip.shape[0]} frame; a clip needs >= 2 frames to show motion.")
    if tuple(clip.shape[1:3]) != (size, size):
        raise ShapeError(f"{where} has {clip.shape[1]}x{clip.shape[2]} frames but the classifier was trained on "
                         f"{size}x{size}; resize the frames to {size}x{size} (or train a classifier at that size "
                         "with `cogframe run tiny/video_classifier dataset.size=...`).")


def clips_to_tensor(clips: np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor], num_frames: int,
                    size: int) -> torch.Tensor:
    """uint8 clips -> the network's float input ``[B, 3, num_frames, size, size]`` in [0, 1].

    Args:
        clips: One array ``[B, T, H, W, 3]`` or a sequence of ``[T_i, H, W, 3]`` clips (lengths may
            differ: each is resampled to ``num_frames`` on its own).
        num_frames: Frames every clip is resampled to.
        size: The frame side the classifier expects.

    Raises:
        ShapeError: A clip that is not uint8 ``[T, size, size, 3]`` with ``T >= 2``, or no clip at all.
    """
    if isinstance(clips, (np.ndarray, torch.Tensor)):
        if clips.ndim != 5:
            raise ShapeError(f"clips have shape {tuple(clips.shape)}; pass uint8 [B, T, H, W, 3] or a list of "
                             "[T, H, W, 3] clips.")
        items = list(clips)
    else:
        items = list(clips)
    if not items:
        raise ShapeError("no clips given; pass at least one uint8 [T, H, W, 3] clip.")
    out = []
    for i, clip in enumerate(items):
        _check_clip(clip, size, f"clip {i}")
        frames = clip if isinstance(clip, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(clip))
        index = torch.from_numpy(resample_indices(int(frames.shape[0]), num_frames))
        out.append(frames.cpu()[index])
    return torch.stack(out).permute(0, 4, 1, 2, 3).float().div_(255.0)


class VideoClassifier(nn.Module):
    """Reads colour, shape and direction of motion from a moving-shapes clip.

    Args:
        labels: Head name -> its class names, e.g. ``{"colour": [...7], "shape": [...3],
            "direction": [...4]}`` (order = logit order). At least one head with >= 2 classes.
        size: Frame side in pixels (divisible by 4: two 2x2 poolings).
        num_frames: Frames each clip is resampled to (>= 4: one temporal pooling, 3-frame kernels).
        width: Channels of the first block; the second and third have 2x and 4x.
        embed_dim: Dimension of the embedding :meth:`features` returns.

    Raises:
        ConfigError: A setting out of range.
    """

    def __init__(self, labels: Mapping[str, Sequence[str]], size: int = 32, num_frames: int = 9, width: int = 16,
                 embed_dim: int = 64) -> None:
        super().__init__()
        labels = {str(k): [str(n) for n in v] for k, v in labels.items()}
        bad = [k for k, v in labels.items() if len(v) < 2 or len(set(v)) != len(v)]
        if not labels or bad:
            raise ConfigError(f"video classifier labels {labels} are invalid (heads {bad}); give each head >= 2 "
                              "distinct class names, e.g. {'direction': ['left', 'right', 'up', 'down']}.")
        if size < 8 or size % 4:
            raise ConfigError(f"video classifier size={size}: the frame side must be a multiple of 4 and >= 8.")
        if num_frames < 4:
            raise ConfigError(f"video classifier num_frames={num_frames}: use >= 4 (e.g. 9) so motion survives "
                              "the temporal pooling.")
        if width < 1 or embed_dim < 1:
            raise ConfigError(f"video classifier width={width}, embed_dim={embed_dim}: both must be >= 1.")
        self.labels = labels
        self.config = {"labels": labels, "size": int(size), "num_frames": int(num_frames), "width": int(width),
                       "embed_dim": int(embed_dim)}
        self.size, self.num_frames, self.embed_dim = int(size), int(num_frames), int(embed_dim)
        w = int(width)
        # Spatial 1x3x3 blocks per frame first (shape and colour need full-resolution detail and
        # are cheap there), then one 3x3x3 block that mixes time (motion) at 1/4 resolution.
        self.body = nn.Sequential(
            nn.Conv3d(3, w, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(w), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 2, 2)),
            nn.Conv3d(w, 2 * w, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(2 * w), nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 2, 2)),
            nn.Conv3d(2 * w, 4 * w, 3, padding=1, stride=(2, 1, 1)), nn.BatchNorm3d(4 * w), nn.ReLU(inplace=True),
        )
        # Mean and max pooling together: the object covers a small part of the frame, and a
        # detector of a corner or an apex ("is it anywhere?") is a max, which a mean dilutes.
        self.embed = nn.Linear(8 * w, self.embed_dim)
        self.heads = nn.ModuleDict({name: nn.Linear(self.embed_dim, len(names)) for name, names in labels.items()})

    # ---- the network on prepared pixels ------------------------------------------------------

    def embed_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding of prepared input ``[B, 3, num_frames, size, size]`` (floats in [0, 1])."""
        if x.ndim != 5 or tuple(x.shape[1:]) != (3, self.num_frames, self.size, self.size):
            raise ShapeError(f"prepared input has shape {tuple(x.shape)}; expected [B, 3, {self.num_frames}, "
                             f"{self.size}, {self.size}] (use clips_to_tensor).")
        # Centre the pixels around 0: the black background is -1, not a dead 0 input.
        hidden = self.body(x * 2.0 - 1.0)
        pooled = torch.cat([hidden.mean(dim=(2, 3, 4)), hidden.amax(dim=(2, 3, 4))], dim=1)
        return torch.relu(self.embed(pooled))

    def logits_of_pixels(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Head name -> logits ``[B, classes]`` of prepared input (see :meth:`embed_pixels`)."""
        z = self.embed_pixels(x)
        return {name: head(z) for name, head in self.heads.items()}

    # ---- the public API on uint8 clips -------------------------------------------------------

    def prepare(self, clips) -> torch.Tensor:
        """uint8 clips (``[B, T, H, W, 3]`` or a list of ``[T, H, W, 3]``) -> prepared input."""
        return clips_to_tensor(clips, self.num_frames, self.size).to(self.embed.weight.device)

    def forward(self, clips) -> dict[str, torch.Tensor]:
        """Head name -> logits ``[B, classes]`` of uint8 clips."""
        return self.logits_of_pixels(self.prepare(clips))

    @torch.no_grad()
    def features(self, clips) -> torch.Tensor:
        """The penultimate embedding ``[B, embed_dim]`` (float32, CPU) of uint8 clips, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return self.embed_pixels(self.prepare(clips)).float().cpu()
        finally:
            self.train(was_training)

    @torch.no_grad()
    def predict(self, clips) -> list[dict[str, str]]:
        """Per clip, head name -> the predicted class name."""
        was_training = self.training
        self.eval()
        try:
            logits = self.logits_of_pixels(self.prepare(clips))
        finally:
            self.train(was_training)
        best = {name: value.argmax(dim=1).tolist() for name, value in logits.items()}
        count = next(iter(logits.values())).shape[0]
        return [{name: self.labels[name][best[name][i]] for name in self.labels} for i in range(count)]

    # ---- files --------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Writes ``model.safetensors`` then ``config.json`` into ``directory``, each atomically.

        The config goes last, so a folder with a config always has the weights it describes.
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp), metadata={"format": _FORMAT})
        atomic_write_json(directory / CONFIG_FILE, {"format": _FORMAT, "version": _VERSION, **self.config})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "VideoClassifier":
        """Loads a classifier saved by :meth:`save`, in eval mode, on the CPU.

        Raises:
            DataError: The folder lacks a file, the config is not a classifier's, or the weights
                are corrupt, do not match the config, or are not finite.
        """
        directory = Path(directory)
        fix = ("retrain it with `cogframe run tiny/video_classifier` or point at a folder written by "
               "VideoClassifier.save() (the shipped one is cogframe/assets/tiny/video_classifier)")
        config_file = directory / CONFIG_FILE
        if not config_file.is_file() or not (directory / WEIGHTS_FILE).is_file():
            raise DataError(f"no video classifier at {directory} (it needs {CONFIG_FILE} and {WEIGHTS_FILE}); {fix}.")
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{config_file} is not valid JSON ({exc}); the folder is corrupt: {fix}.") from None
        if not isinstance(config, dict) or config.get("format") != _FORMAT:
            found = config.get("format") if isinstance(config, dict) else type(config).__name__
            raise DataError(f"{config_file} is not a cogframe video-classifier config (format={found!r}); {fix}.")
        if config.get("version") != _VERSION:
            raise DataError(f"{config_file} has version {config.get('version')!r}; this cogframe reads version "
                            f"{_VERSION}: {fix}.")
        try:
            model = cls(**{k: config[k] for k in ("labels", "size", "num_frames", "width", "embed_dim")})
        except (KeyError, TypeError, AttributeError, ConfigError) as exc:
            raise DataError(f"{config_file} does not describe a valid classifier ({exc}); {fix}.") from None
        state = read_safetensors(directory / WEIGHTS_FILE, what="video classifier weights", fix=f"Then {fix}.")
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = [k for k, v in state.items() if k in expected and v.shape != expected[k].shape]
        if missing or unexpected or wrong:
            raise DataError(f"video classifier weights {directory / WEIGHTS_FILE} do not match its {CONFIG_FILE} "
                            f"(missing: {missing[:4]}, unexpected: {unexpected[:4]}, wrong shape: {wrong[:4]}); {fix}.")
        for name, tensor in state.items():
            check_finite(name, tensor, what=f"video classifier weights {directory / WEIGHTS_FILE}", fix=f"Then {fix}.")
        model.load_state_dict(state)
        return model.eval()


def load_video_classifier(path: str | Path) -> VideoClassifier:
    """Loads the clip classifier saved in folder ``path`` (eval mode, CPU).

    The shipped one is the asset ``tiny/video_classifier`` (in recipes ``${asset:tiny/video_classifier}``;
    in code ``cogframe.config.recipes.asset_path("tiny/video_classifier")``).

    Raises:
        DataError: See :meth:`VideoClassifier.load`.
    """
    return VideoClassifier.load(path)
