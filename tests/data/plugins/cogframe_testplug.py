"""A plugin used by the tests; registered like a built-in by the ``testplug`` fixture."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import OmegaConf

from cogframe.errors import ConfigError
from cogframe.hookspecs import hookimpl
from cogframe.registry import Capabilities, component


@component("token_sampler", "test_topk")
class TopK:
    """Keeps the k most likely tokens."""

    def __init__(self, k: int = 1, temperature: float = 1.0) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.temperature = temperature


@component("attention", "test_cpu", capabilities=Capabilities(devices=("cpu",), dtypes=("float32",), backward=True),
           runtime_kwargs=("layout",))
class CpuAttention:
    """Windowed attention that needs the task's layout."""

    def __init__(self, window: int, layout: object, causal: bool = True) -> None:
        self.window, self.layout, self.causal = window, layout, causal


@component("attention", "test_gpu_only", available=lambda: "needs a CUDA GPU: run on a GPU machine or use test_cpu")
class GpuOnlyAttention:
    """Pretends to need a GPU."""


@component("task", "test_write")
class WriteTask:
    """Writes the sampler's k and the message to `out`."""

    slots = {"sampler": "token_sampler", "loggers": "logger", "model.attention": "attention"}

    def validate(self, cfg, registries) -> None:
        if OmegaConf.is_missing(cfg, "out"):
            raise ConfigError("out is ???: set the output file, e.g. out=/tmp/result.json")

    def run(self, cfg, registries) -> None:
        if cfg.get("crash"):
            raise RuntimeError("crash requested by the recipe")
        sampler = registries.build("token_sampler", cfg.sampler)
        attention = registries.build("attention", cfg.model.attention, layout="L")
        loggers = [registries.build("logger", node) for node in cfg.get("loggers", [])]
        for logger in loggers:
            logger.log({"k": sampler.k}, step=1)
            logger.close()
        Path(cfg.out).write_text(json.dumps({"k": sampler.k, "window": attention.window,
                                             "message": cfg.get("message", "")}))


@hookimpl
def register_components():
    return [TopK, CpuAttention, GpuOnlyAttention, WriteTask]


@hookimpl
def recipe_dirs():
    return [Path(__file__).resolve().parents[1] / "plugin_recipes"]
