"""``cogframe env``: print what a bug report needs (Python, platform, torch, devices, optional packages)."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys

import cogframe

NAME = "env"
HELP = "Print Python, platform, torch/CUDA and optional package versions (paste it into bug reports)."

# Distribution names (as pip knows them) of the optional and core packages worth reporting.
PACKAGES = ("xformers", "tensorboard", "matplotlib", "imageio-ffmpeg", "sentencepiece", "safetensors",
            "pluggy", "omegaconf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options."""


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _torch_lines() -> list[tuple[str, str]]:
    try:
        import torch
    except ImportError as exc:
        return [("torch", f"not importable ({exc}): pip install torch")]
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        cuda = f"available, CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s): {names}"
    else:
        cuda = "not available"
    return [("torch", torch.__version__), ("cuda", cuda), ("torch threads", str(torch.get_num_threads()))]


def run(args: argparse.Namespace) -> int:
    """Prints one ``key: value`` line per fact."""
    lines = [
        ("cogframe", f"{cogframe.__version__} ({os.path.dirname(cogframe.__file__)})"),
        ("python", f"{platform.python_version()} ({sys.executable})"),
        ("platform", platform.platform()),
        ("cpu count", str(os.cpu_count())),
        *_torch_lines(),
        *((dist, _version(dist)) for dist in PACKAGES),
    ]
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        print(f"{key + ':':<{width + 1}} {value}")
    return 0
