"""The two icetk files the released CogVideo models need, and where a user gets them.

icetk (https://github.com/THUDM/icetk) is the tokenizer of CogView2 and CogVideo: ``ice_image.pt``
holds its image VQ-VAE (read by :class:`~cogframe.core.model.icetk_vqvae.HVQVAE` through the
``icetk`` component), ``ice_text.model`` its SentencePiece text model (the ``icetk_text``
component). The names and the "where do I get it" message live here, in core and free of torch,
so that both the components and recipe validation (which names no plugin) can use them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["ICETK_IMAGE_FILE", "ICETK_TEXT_FILE", "missing_file_message"]

ICETK_IMAGE_FILE = "ice_image.pt"
ICETK_TEXT_FILE = "ice_text.model"


def missing_file_message(path: str | Path, file_name: str) -> str:
    """Why ``path`` is needed and where a user gets it (one paragraph).

    Args:
        path: Where the recipe expects the file.
        file_name: :data:`ICETK_IMAGE_FILE` or :data:`ICETK_TEXT_FILE`.
    """
    return (f"{file_name} not found at {path}. It is part of icetk, the CogView2/CogVideo tokenizer: "
            f"`pip install icetk`, then run `from icetk import icetk` and use the tokenizer once (e.g. "
            f"icetk.encode('hi') for the text model, icetk.encode(image_path=...) for the image model); "
            f"icetk downloads {file_name} into ~/.icetk_models/ from Tsinghua University's cloud storage "
            f"(the link is in icetk's utils.py). Copy the file to {path} or point the recipe at it. "
            "cogframe itself never downloads.")
