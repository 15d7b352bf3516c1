"""icetk, the tokenizer of CogView2 and CogVideo (THUDM/icetk): ``icetk`` and ``icetk_text``.

* ``image_tokenizer`` ``icetk`` (:class:`IceImageTokenizer`): the hierarchical VQ-VAE of
  ``ice_image.pt``. Frames in [0, 1] <-> token grids at ``compress_rate`` 4, 8 (CogVideo:
  160x160 -> 20x20) or 16; 20000 codes.
* ``text_tokenizer`` ``icetk_text`` (:func:`icetk_text_tokenizer`): ``ice_text.model`` through the
  ``sentencepiece`` component, with icetk's id space: text id = piece id + 20000, and
  ``<start_of_image>`` (BOI), ``<start_of_english>``, ``<start_of_chinese>`` appended after the
  pieces as icetk's ``add_special_tokens`` does (ids 150000-150002 with the released model).

Both files come with the icetk package (pip package ``icetk``): on first use it downloads them into
``~/.icetk_models`` from Tsinghua University's cloud storage (the links are in icetk's
``utils.py``). cogframe downloads nothing; it reads local copies.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from cogframe.core.model.icetk_vqvae import HVQVAE
from cogframe.core.weights.icetk_files import ICETK_IMAGE_FILE, ICETK_TEXT_FILE, missing_file_message
from cogframe.core.weights.safe_load import safe_torch_load
from cogframe.errors import ConfigError, DataError, ShapeError
from cogframe.hookspecs import hookimpl
from cogframe.plugins.tokenizer_sentencepiece import SentencePieceTokenizer
from cogframe.registry import Capabilities, component

__all__ = ["IceImageTokenizer", "icetk_text_tokenizer", "ICETK_IMAGE_FILE", "ICETK_TEXT_FILE",
           "ICETK_SPECIAL_TOKENS", "ICETK_NUM_IMAGE_TOKENS", "missing_file_message"]

ICETK_NUM_IMAGE_TOKENS = 20000
ICETK_SPECIAL_TOKENS = ("<start_of_image>", "<start_of_english>", "<start_of_chinese>")
MEAN = (0.79093, 0.76271, 0.75340)
STD = (0.30379, 0.32279, 0.32800)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _where_to_get(file_name: str) -> str:
    """How a user gets an icetk file (declared to the registry; config/official_weights.py reads it)."""
    return (f"{file_name} is part of icetk, the CogView2/CogVideo tokenizer: `pip install icetk`, run `from "
            "icetk import icetk` and use the tokenizer once; icetk downloads it into ~/.icetk_models/ from "
            "Tsinghua University's cloud storage (the link is in icetk's utils.py). Copy it to that path or "
            "point the recipe at it; cogframe itself never downloads")


@component("image_tokenizer", "icetk",
           description="icetk's hierarchical VQ-VAE (ice_image.pt): frames <-> 20000-code token grids.",
           capabilities=Capabilities(devices=("cpu", "cuda"), dtypes=("float32", "bfloat16", "float16"),
                                     extra={"files": {"path": _where_to_get(ICETK_IMAGE_FILE)}}))
class IceImageTokenizer(HVQVAE):
    """icetk's image tokenizer: ``[N, 3, H, W]`` frames in [0, 1] <-> ``[N, H/r, W/r]`` code grids.

    Args:
        path: Local ``ice_image.pt`` (a torch pickle whose ``'module'`` is the state dict). None
            builds random weights (tests only).
        compress_rate: Pixels per token side: 4, 8 (CogVideo, 160x160 -> 20x20) or 16.
        channels: Base width of encoder and decoders (icetk: 128; multiples of 32).
        z_channels: Latent and code dimension (icetk: 256).
        codebook_size: Number of codes (icetk: 20000).
        device: Where to run.
        dtype: Compute dtype; float16 only on a GPU.

    Attributes:
        load_warnings: Missing and unexpected checkpoint keys (icetk loads with strict=False and so
            does this class, but it reports them here and as a warning).

    Raises:
        DataError: ``path`` missing (with where to get the file), unreadable, unsafe, or with
            tensors whose shapes disagree with the architecture.
        ConfigError: Bad compress rate, widths or dtype.
    """

    def __init__(self, path: str | None, compress_rate: Literal[4, 8, 16] = 8, channels: int = 128,
                 z_channels: int = 256, codebook_size: int = ICETK_NUM_IMAGE_TOKENS, device: str = "cpu",
                 dtype: Literal["float32", "bfloat16", "float16"] = "float32") -> None:
        if compress_rate not in (4, 8, 16):
            raise ConfigError(f"icetk compress_rate must be 4, 8 or 16, got {compress_rate!r} (CogVideo "
                              "uses 8: 160x160 frames -> 20x20 tokens).")
        if channels <= 0 or channels % 32 or z_channels <= 0 or codebook_size <= 0:
            raise ConfigError(f"icetk channels must be a positive multiple of 32 (GroupNorm(32)) and "
                              f"z_channels/codebook_size positive; got channels={channels}, "
                              f"z_channels={z_channels}, codebook_size={codebook_size}.")
        if dtype not in _DTYPES or (dtype == "float16" and torch.device(device).type == "cpu"):
            raise ConfigError(f"icetk dtype {dtype!r} on {device}: use float32 or bfloat16 on a CPU "
                              "(float16 only on a GPU).")
        if path is not None and not Path(path).is_file():
            raise DataError(missing_file_message(path, ICETK_IMAGE_FILE))
        super().__init__(channels, z_channels, codebook_size)
        self.compress_rate = int(compress_rate)
        self.level = int(math.log2(self.compress_rate)) - 2
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.load_warnings: list[str] = []
        if path is not None:
            self._load(Path(path))
        self.to(device=device, dtype=_DTYPES[dtype]).eval()

    # ---- API shared with the vqvae tokenizer ---------------------------------------------------
    @property
    def codebook_size(self) -> int:
        """Number of codes; image token ids are ``0 .. codebook_size - 1``."""
        return self.quantize.n_embed

    @property
    def codebook(self) -> torch.Tensor:
        """The ``[codebook_size, z_channels]`` code vectors (read by the ``cluster`` token sampler)."""
        return self.quantize.embed.weight.detach()

    @property
    def downsample(self) -> int:
        """Pixels per token along each side (= ``compress_rate``)."""
        return self.compress_rate

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Token grid ``(h, w)`` for ``height x width`` frames.

        Raises:
            ShapeError: A side is not a positive multiple of ``compress_rate``.
        """
        for name, size in (("height", height), ("width", width)):
            if size <= 0 or size % self.compress_rate:
                raise ShapeError(f"frame {name} {size} is not a multiple of icetk's compress_rate "
                                 f"{self.compress_rate}; resize frames (CogVideo: 160x160 at rate 8).")
        return height // self.compress_rate, width // self.compress_rate

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``[N, 3, H, W]`` float in [0, 1] (or uint8) -> codes ``[N, H/r, W/r]`` long."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ShapeError(f"icetk expects frames shaped [N, 3, H, W], got {list(frames.shape)}; convert "
                             "[N, H, W, 3] arrays with .permute(0, 3, 1, 2).")
        self.grid_size(frames.shape[2], frames.shape[3])
        if frames.dtype == torch.uint8:
            frames = frames.float() / 255.0
        x = (frames.to(self.mean.device, torch.float32) - self.mean.float()) / self.std.float()
        return self.single_encode_codes(x.to(self.mean.dtype), self.level)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codes ``[N, h, w]`` long -> frames ``[N, 3, h*r, w*r]`` float32 clamped to [0, 1]."""
        if tokens.ndim != 3:
            raise ShapeError(f"icetk decode expects token grids shaped [N, h, w], got {list(tokens.shape)}.")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.codebook_size):
            raise ShapeError(f"image token ids must be in [0, {self.codebook_size}), got "
                             f"[{int(tokens.min())}, {int(tokens.max())}]; subtract the text-id offset first.")
        out = self.single_decode_code(tokens.to(self.mean.device).long(), self.level).float()
        return (out * self.std.float() + self.mean.float()).clamp(0.0, 1.0)

    # ---- checkpoint ------------------------------------------------------------------------------
    def _load(self, path: Path) -> None:
        payload = safe_torch_load(path, what=f"icetk image tokenizer ({ICETK_IMAGE_FILE})")
        state = payload.get("module") if isinstance(payload, dict) else None
        if not isinstance(state, dict):
            raise DataError(f"{path} has no 'module' state dict; icetk's {ICETK_IMAGE_FILE} stores its "
                            "weights under 'module'. Get the original file again (see the icetk package).")
        own = self.state_dict()
        wrong = [f"{k}: file {list(v.shape)} vs model {list(own[k].shape)}"
                 for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
        if wrong:
            raise DataError(f"{path} does not fit this icetk architecture ({len(wrong)} shape mismatches: "
                            + "; ".join(wrong) + "). Leave channels, z_channels and codebook_size at their "
                            "defaults for the released file.")
        missing, unexpected = self.load_state_dict(state, strict=False)
        self.load_warnings = [f"missing: {k}" for k in missing] + [f"unexpected: {k}" for k in unexpected]
        if self.load_warnings:
            warnings.warn(f"{path} loaded with strict=False (as icetk does) but {len(missing)} model keys were "
                          f"missing and {len(unexpected)} file keys unused: " + ", ".join(self.load_warnings),
                          stacklevel=3)


@component("text_tokenizer", "icetk_text",
           description="icetk's ice_text.model: sentencepiece ids + 20000, icetk's special tokens appended.",
           capabilities=Capabilities(extra={"files": {"model_path": _where_to_get(ICETK_TEXT_FILE)}}))
def icetk_text_tokenizer(model_path: str, truncate: bool = False) -> SentencePieceTokenizer:
    """The ``sentencepiece`` tokenizer configured as icetk (THUDM/icetk ice_tokenizer.py,
    text_tokenizer.py).

    Text id = piece id + 20000 (image ids come first); ``<start_of_image>`` is BOI,
    ``<start_of_english>`` and ``<start_of_chinese>`` follow it, all appended after the model's
    pieces like icetk's ``add_special_tokens``; ``<n>`` separates the duration prefix; ``<pad>``
    pads.

    Args:
        model_path: Local ``ice_text.model``.
        truncate: Cut captions that do not fit the text slots instead of raising.

    Raises:
        DataError: The file is missing (with where to get it) or unreadable.
    """
    if not Path(model_path).is_file():
        raise DataError(missing_file_message(model_path, ICETK_TEXT_FILE))
    return SentencePieceTokenizer(model_path, id_offset=ICETK_NUM_IMAGE_TOKENS, truncate=truncate,
                                  boi_piece=ICETK_SPECIAL_TOKENS[0], sep_piece="<n>", pad_piece="<pad>",
                                  extra_pieces=list(ICETK_SPECIAL_TOKENS))


@hookimpl
def register_components():
    return [IceImageTokenizer, icetk_text_tokenizer]
