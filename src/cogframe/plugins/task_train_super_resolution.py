"""Task ``train_super_resolution``: CogView2's direct super-resolution model on paired token shards.

The model (core/model/super_resolution.py) inherits a text-to-image model as its backbone and
trains what DSR adds: every layer's plus attention channel and the high-res position table
(CogView2, arXiv 2204.14217; THUDM/CogView2 sr_pipeline/dsr_model.py). The release keeps the
backbone frozen (``model.init.freeze_inherited: true``, the default); ``false`` fine-tunes it too,
which the tiny recipe does (recipes/tiny/sr.yaml says why). Its data are the
paired shards of a ``prepare`` recipe with ``high_res`` (``recipes/tiny/prepare_sr.yaml``): per
sample the caption (no duration prefix), the low-res token grid and the same frame's high-res grid.

Recipe keys (complete example: recipes/tiny/sr.yaml)::

    task: train_super_resolution
    output_dir: runs/tiny/sr
    model: {preset: tiny_dsr, overrides: {}, attention: {base: {name: sdpa}, plus: {name: sr_local_window}},
            init: {from: runs/tiny/t2i/model.safetensors, freeze_inherited: true}}
    text_tokenizer: {name: sentencepiece, model_path: ..., id_offset: 256}   # its [BOI] fills the high-res slots
    data: {shards: runs/tiny/shards_sr, train_split: train, val_split: val}
    train: {steps, batch_size, lr, ...}      # core.training.settings.TrainSettings, as the train task
    loggers: [...]
    resume: false
    overwrite: false

The loop is the shared one (core/training/loop.py: AdamW over the trainable parameters, warmup +
cosine, clipping, exact resume, checkpoints, validation, loggers). It is written against the
CogVideo layout's two calls, ``build_input(text, frames, boi_id)`` and ``loss_mask(stage,
device)``; :class:`_LoopModel` answers them for DSR samples instead of a second copy of the loop
(the examples carry the low-res and high-res grids packed in ``frames``). One process only.
"""

from __future__ import annotations

import bisect
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cogframe.core.training.settings import DataSettings, TrainRunSettings, TrainSettings, cuda_device_problem
from cogframe.errors import ConfigError, DataError, Problem
from cogframe.hookspecs import hookimpl
from cogframe.plugins._run_folder import locks_run_folder
from cogframe.plugins._super_resolution_models import attention_problems, build_sr_model, sr_config_from_section
from cogframe.plugins._task_helpers import check_recipe, task_settings
from cogframe.registry import Registries, component

__all__ = ["TrainSuperResolutionTask"]


class _LoopStage:
    """What the shared loop reads of ``config.stage`` (its progress-bar label)."""

    value = "super_resolution"


class _LoopLayout:
    """The shared loop's two layout calls for DSR examples.

    ``frames`` is ``[B, low_tokens + high_tokens]``: the low-res grid then the high-res grid, both
    in raster order (how :class:`_PairedShards` packs them). The model returns only the high-res
    rows' logits, so labels and loss mask cover those rows only.
    """

    def __init__(self, layout) -> None:
        self.layout = layout

    def build_input(self, text, frames, boi_id: int):
        lay = self.layout
        batch = frames.shape[0]
        low = frames[:, :lay.low_tokens].reshape(batch, lay.low_height, lay.low_width)
        high = frames[:, lay.low_tokens:].reshape(batch, lay.high_height, lay.high_width)
        inputs, labels = lay.build_input(text, low, boi_id, high)
        return inputs, labels[:, lay.high_start:]

    def loss_mask(self, stage, device=None):
        import torch

        return torch.ones(self.layout.high_tokens, dtype=torch.bool, device=device)


class _LoopConfig:
    def __init__(self, layout) -> None:
        self.layout, self.stage = _LoopLayout(layout), _LoopStage()


def _loop_model(model):
    """The DSR model as the shared loop sees it; weights and checkpoints keep the model's own names."""
    import torch

    class _LoopModel(torch.nn.Module):
        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner
            self.config = _LoopConfig(inner.config.layout)

        def forward(self, input_ids, *, text_valid=None):
            return self.inner(input_ids, text_valid=text_valid, high_only=True)

        # Checkpoints and the final model.safetensors hold the DSR model's names, not "inner.*":
        # the file is the sampling stage's `weights` as it is.
        def state_dict(self, *args, **kwargs):
            return self.inner.state_dict(*args, **kwargs)

        def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
            return self.inner.load_state_dict(state_dict, strict=strict, assign=assign)

    return _LoopModel(model)


def _paired_shards(root: Path, split: str):
    """The shards of ``split`` as examples whose ``frames`` packs the low-res and high-res grids."""
    import torch

    from cogframe.core.io.token_shards import ShardDataset

    class _PairedShards(ShardDataset):
        def __getitem__(self, index: int):
            item = super().__getitem__(index)
            shard = bisect.bisect_right(self._starts, index) - 1
            handle = self._handle(shard)
            if "frames_high" not in handle.keys():
                raise DataError(f"token shard {self._files[shard]} has no high-res frames (frames_high); "
                                "write paired shards with a prepare recipe that has high_res "
                                "(`cogframe run tiny/prepare_sr`).")
            high = handle.get_slice("frames_high")[index - self._starts[shard]].long()
            return {"text": item["text"], "text_valid": item["text_valid"],
                    "frames": torch.cat([item["frames"].reshape(-1), high.reshape(-1)])}

    return _PairedShards(root, split)


def _check_shards(layout, data, root: Path) -> None:
    high = data.manifest.get("high_res")
    if not high:
        raise ConfigError(f"the shards in {root} are not paired super-resolution shards (their manifest has no "
                          "high_res); write them with `cogframe run tiny/prepare_sr` (a prepare recipe with "
                          "high_res) and point data.shards at its output_dir.")
    want = {"text_len": layout.text_len, "num_frames": 1, "grid": [layout.low_height, layout.low_width],
            "high grid": [layout.high_height, layout.high_width]}
    have = {"text_len": data.text_len, "num_frames": data.num_frames, "grid": list(data.grid),
            "high grid": [int(g) for g in high.get("grid", [])]}
    wrong = [f"{k} {have[k]} (the model wants {want[k]})" for k in want if have[k] != want[k]]
    if wrong:
        raise ConfigError(f"the shards in {root} do not fit the super-resolution model: {'; '.join(wrong)}; "
                          "prepare shards for this layout (text_len, one frame, the model's grids and scale).")


@component("task", "train_super_resolution",
           description="Train CogView2's direct super-resolution model (inherited text-to-image backbone, frozen or fine-tuned) on paired shards.")
class TrainSuperResolutionTask:
    """Train the plus channel and high-res positions of a DSR model (and, if asked, its backbone) on paired token shards."""

    slots = {"model.attention.base": "attention", "model.attention.plus": "attention",
             "text_tokenizer": "text_tokenizer", "loggers": "logger"}
    list_slots = ("loggers",)
    sections = {"": TrainRunSettings, "train": TrainSettings, "data": DataSettings}
    recipe_keys = ("model",)

    def validate(self, cfg: DictConfig, registries: Registries) -> None:
        """Checks the whole recipe for this task; raises one ConfigError listing every problem."""
        check_recipe(self, cfg, registries)

    def problems(self, cfg: DictConfig, registries: Registries) -> list[Problem]:
        """The model section, its backbone file, the attention backends, the device; no torch."""
        found: list[Problem] = []
        if OmegaConf.select(cfg, "text_tokenizer", default=None) is None:
            found.append(Problem("text_tokenizer", "is missing (the tokenizer that wrote the shards' text ids)",
                                 "add e.g. `text_tokenizer: {name: sentencepiece, model_path: FILE, id_offset: 256}`"))
        sections = task_settings(self, cfg)
        device = dtype = None
        if sections is not None:
            device, dtype = sections["train"].device, sections["train"].dtype
            if (problem := cuda_device_problem(device, "train.device")) is not None:
                found.append(problem)
        if OmegaConf.select(cfg, "model", default=None) is None:
            return found + [Problem("model", "is missing", "add `model: {preset: tiny_dsr, init: {from: FILE}}`")]
        try:
            sr_config_from_section(cfg.model)
        except ConfigError as exc:
            found.append(Problem("model", str(exc), ""))
        source = OmegaConf.select(cfg, "model.init.from", default=None)
        weights = OmegaConf.select(cfg, "model.weights", default=None)
        if not source and not weights:
            found.append(Problem("model.init.from", "is not set: the DSR backbone is a trained text-to-image model",
                                 "set model.init.from to its model.safetensors (tiny: runs/tiny/t2i/model.safetensors)"))
        for key, path in (("model.init.from", source), ("model.weights", weights)):
            if path and not Path(str(path)).is_file():
                found.append(Problem(key, f"is {path}, which does not exist yet",
                                     "train it first (`cogframe run tiny/t2i`) or fix the path"))
        found += attention_problems(cfg.model, registries, device=device, dtype=dtype, training=True)
        return found

    @locks_run_folder("output_dir")
    def run(self, cfg: DictConfig, registries: Registries) -> None:
        """Build data, model and loggers, then run core.training.loop.train."""
        import torch

        from cogframe.core.training.batches import StepBatches
        from cogframe.core.training.loop import train
        from cogframe.plugins.task_train import TrainTask

        sections = task_settings(self, cfg, strict=True)
        settings, data_cfg = sections["train"], sections["data"]
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("train_super_resolution runs in one process; drop --nproc (the tiny model "
                              "trains in minutes on one CPU thread).")
        TrainTask._check_output_dir(cfg)  # the train task's rule: never mix into an earlier run
        tokenizer = registries.build("text_tokenizer", cfg.text_tokenizer)
        if settings.threads > 0:
            torch.set_num_threads(settings.threads)
        torch.manual_seed(settings.seed)
        # Weights (a model.weights fine-tune) or the inherited backbone; reloaded on resume.
        model = build_sr_model(cfg.model, registries, weights=True)
        layout = model.config.layout
        shards = Path(data_cfg.shards)
        data = _paired_shards(shards, data_cfg.train_split)
        _check_shards(layout, data, shards)
        val = None
        if data_cfg.val_split and settings.eval_every:
            val = StepBatches(_paired_shards(shards, str(data_cfg.val_split)), settings.batch_size, shuffle=False)
        loggers = [registries.build("logger", node) for node in (cfg.get("loggers") or [])]
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        backbone = "backbone frozen" if trainable < model.num_parameters() else "backbone fine-tuned too"
        print(f"super-resolution model: {model.num_parameters():,} parameters, {trainable:,} trained "
              f"(plus channel + {layout.high_tokens} high-res positions); {backbone}")
        result = train(
            _loop_model(model), settings,
            StepBatches(data, settings.batch_size, grad_accum=settings.grad_accum, seed=settings.seed),
            boi_id=tokenizer.boi_id, run_dir=str(cfg.output_dir), val_data=val, loggers=loggers,
            recipe=OmegaConf.to_container(cfg, resolve=True), resume=sections[""].resume)
        print(f"finished at step {result.step}: train loss {result.train_loss:.4f}"
              + (f", val loss {result.val_loss:.4f}" if result.val_loss is not None else "")
              + f"; weights in {Path(str(cfg.output_dir)) / 'model.safetensors'}")


@hookimpl
def register_components():
    return [TrainSuperResolutionTask]
