"""``vqvae``: a small VQ-VAE image tokenizer (kind ``image_tokenizer``), trainable on a CPU.

The network (encoder, EMA codebook with dead-code restart, decoder) is
:class:`cogframe.core.model.vqvae.ConvVQVAE`; this module makes it a component: it resolves the
recipe keywords against a saved model's ``config.json`` and reads and writes the model folder.

Saved as a folder: ``config.json`` (architecture) + ``model.safetensors`` (weights and codebook
buffers), both written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from safetensors.torch import load_file, save_file

from cogframe.core.io.atomic import atomic_path, atomic_write_json
from cogframe.core.model.vqvae import ARCH_KEYS, DEFAULTS, ConvVQVAE
from cogframe.errors import ConfigError, DataError
from cogframe.hookspecs import hookimpl
from cogframe.registry import component

__all__ = ["VQVAE"]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_FORMAT = "cogframe-vqvae"


def _read_config(path: Path) -> dict:
    config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not config_file.is_file() or not weights_file.is_file():
        raise DataError(
            f"no trained VQ-VAE at {path} (need {CONFIG_FILE} and {WEIGHTS_FILE}); train one with "
            "`cogframe run tiny/vqvae` or point image_tokenizer.path at a folder saved by VQVAE.save().")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{config_file} is not valid JSON ({exc}); the checkpoint is corrupt, re-train or "
                        "re-save it.") from exc
    if config.get("format") != _FORMAT:
        raise DataError(f"{config_file} is not a cogframe VQ-VAE config (format={config.get('format')!r}); "
                        "point image_tokenizer.path at a folder written by VQVAE.save().")
    return config


@component("image_tokenizer", "vqvae",
           description="Small conv VQ-VAE (EMA codebook, dead-code restart); frames <-> token grids.")
class VQVAE(ConvVQVAE):
    """VQ-VAE image tokenizer: ``[N, 3, H, W]`` frames in [0, 1] <-> ``[N, H/ds, W/ds]`` code grids.

    Args:
        path: Folder saved by :meth:`save`; when given, its config and weights are loaded and any
            architecture keyword passed as well must agree with it.
        downsample: Spatial reduction, 4 or 8.
        codebook_size: Number of codes (image vocabulary size).
        code_dim: Dimension of each code vector.
        channels: Base width; level ``i`` has ``channels * channel_mult[i]`` channels.
        channel_mult: Width multipliers per resolution level, full resolution first
            (``log2(downsample) + 1`` entries); default ``[1, 2, 4]`` / ``[1, 2, 4, 4]`` as icetk.
        num_res_blocks: ResBlocks per resolution level.
        commitment: Weight of the commitment loss in ``stats["loss"]``.
        decay: EMA decay of the codebook.
        dead_code_threshold: EMA usage below which a code is restarted from the data.
        encoder: ``conv`` or ``patch`` (every token coded from its own patch; the tiny default).

    Raises:
        ConfigError: Unsupported ``downsample`` or a keyword that contradicts the checkpoint.
        DataError: ``path`` does not hold a readable checkpoint.
    """

    def __init__(self, path: str | None = None, downsample: int | None = None, codebook_size: int | None = None,
                 code_dim: int | None = None, channels: int | None = None,
                 channel_mult: Sequence[int] | None = None, num_res_blocks: int | None = None,
                 commitment: float | None = None, decay: float | None = None,
                 dead_code_threshold: float | None = None, encoder: str | None = None) -> None:
        given = {"encoder": encoder, "downsample": downsample, "codebook_size": codebook_size, "code_dim": code_dim,
                 "channels": channels, "channel_mult": None if channel_mult is None else [int(m) for m in channel_mult],
                 "num_res_blocks": num_res_blocks, "commitment": commitment, "decay": decay,
                 "dead_code_threshold": dead_code_threshold}
        config = dict(DEFAULTS)
        saved = _read_config(Path(path)) if path is not None else None
        if saved is not None:
            config.update({k: saved[k] for k in DEFAULTS if k in saved})
            clashes = [f"{k}={given[k]} (checkpoint: {saved.get(k)})" for k in ARCH_KEYS
                       if given[k] is not None and given[k] != saved.get(k)]
            if clashes:
                raise ConfigError(
                    f"image_tokenizer keywords contradict the checkpoint at {path}: {', '.join(clashes)}; "
                    "remove them from the recipe (the checkpoint defines the architecture) or train a "
                    "new VQ-VAE with those settings.")
        config.update({k: v for k, v in given.items() if v is not None})
        super().__init__(**config)  # checks the architecture (ConfigError) and builds the network
        if path is not None:
            self._load_weights(Path(path) / WEIGHTS_FILE)
            self.eval()

    def save(self, directory: str | Path) -> Path:
        """Writes ``config.json`` and ``model.safetensors`` into ``directory`` atomically.

        Weights go first and the config last, so a folder with a config always has its weights.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        with atomic_path(directory / WEIGHTS_FILE) as tmp:
            save_file(state, str(tmp), metadata={"format": _FORMAT})
        atomic_write_json(directory / CONFIG_FILE, {"format": _FORMAT, "version": 1, **self.config})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> "VQVAE":
        """Loads a model saved by :meth:`save` (in eval mode)."""
        return cls(path=str(directory))

    def _load_weights(self, weights_file: Path) -> None:
        try:
            state = load_file(str(weights_file))
        except Exception as exc:  # safetensors raises several types for truncated/corrupt files
            raise DataError(f"cannot read VQ-VAE weights {weights_file} ({exc}); the file is corrupt, "
                            "re-train or re-save the model.") from exc
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise DataError(f"VQ-VAE weights {weights_file} do not match its config.json (missing: "
                            f"{missing[:5]}, unexpected: {unexpected[:5]}); re-save the model.")


@hookimpl
def register_components():
    return [VQVAE]
