"""``cogframe plan RECIPE [k=v ...]``: parameter counts and memory per device, on the meta device.

A recipe whose ``model.preset`` is a super-resolution preset, or a sample recipe with a
``super_resolution.model`` section and no ``model:`` (``cogvideo_9b/sample_official``), gets the
direct super-resolution model's plan instead: parameters, memory of one inference pass (bf16) and
of training its plus channel.
"""

from __future__ import annotations

import argparse
import json

from omegaconf import OmegaConf

from cogframe.cli.table import format_table
from cogframe.config.recipes import load_recipe

NAME = "plan"
HELP = ("Build the recipe's model on the meta device (no memory) and print total, trainable and "
        "frozen parameters, and training memory per device for N devices.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """RECIPE, overrides, --devices, --micro-batch, --json."""
    parser.add_argument("recipe", metavar="RECIPE", help="a recipe name or .yaml file")
    parser.add_argument("overrides", metavar="KEY=VALUE", nargs="*", help="recipe overrides")
    parser.add_argument("--devices", type=int, nargs="+", default=None,
                        help="device counts to plan for (default: the recipe's plan.devices or 1 8 64)")
    parser.add_argument("--micro-batch", type=int, default=None,
                        help="samples per device per micro-step (default: plan.micro_batch or 1)")
    parser.add_argument("--lora", type=int, default=None, metavar="RANK",
                        help="plan a LoRA fine-tune with adapters of this rank on the temporal channel "
                             "(alpha 2 x rank), unless the recipe has a model.lora section of its own")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _gib(n: int) -> str:
    return f"{n / 1024 ** 3:,.2f}"


def _devices_and_micro_batch(args: argparse.Namespace, cfg) -> tuple[list[int], int]:
    """Device counts and micro-batch from the flags, else the recipe's ``plan:`` section, else 1 8 64 and 1."""
    from cogframe.errors import ConfigError

    devices = args.devices or list(OmegaConf.select(cfg, "plan.devices", default=[1, 8, 64]))
    micro = args.micro_batch or int(OmegaConf.select(cfg, "plan.micro_batch", default=1))
    if micro < 1 or any(d < 1 for d in devices):
        raise ConfigError("--devices and --micro-batch must be positive integers.")
    return devices, micro


def _print_training_memory(title: str, plans, logits_label: str) -> None:
    """A blank line, ``title`` and the table of :class:`MemoryPlan` parts (GiB), one column per device count."""
    print()
    print(title)
    rows = []
    for label, attr in [("parameters (fp32 shard)", "parameters"), ("gradients (trainable)", "gradients"),
                        ("AdamW moments (trainable)", "optimizer"),
                        ("unsharded working layers (bf16)", "working_layers"),
                        ("activations, no checkpointing", "activations"),
                        ("activations, checkpointing", "activations_checkpointed"),
                        (logits_label, "logits"),
                        ("TOTAL, no checkpointing", "total"),
                        ("TOTAL, checkpointing", "total_checkpointed")]:
        rows.append([label] + [_gib(getattr(p, attr)) for p in plans])
    print(format_table(["per device"] + [f"{p.devices} dev" for p in plans], rows))


def run(args: argparse.Namespace) -> int:
    """Print the plan."""
    from cogframe.core.training.memory_plan import count_parameters, memory_plan, meta_model
    from cogframe.errors import ConfigError
    from cogframe.config.model import LoraSettings, lora_settings, model_config_from_recipe, model_section

    cfg = load_recipe(args.recipe, args.overrides)
    sr_node = _super_resolution_node(cfg)
    if sr_node is not None:
        return _run_super_resolution(args, cfg, sr_node)
    config = model_config_from_recipe(cfg)
    init = model_section(cfg).get("init") or {}
    freeze = bool(init.get("freeze_inherited", config.has_temporal_channel))
    lora = lora_settings(cfg)
    if lora is None and args.lora is not None:
        lora = LoraSettings(rank=args.lora, alpha=2.0 * args.lora)
        problems = lora.problems()
        if problems:
            raise ConfigError(f"--lora: {problems[0]}")
    devices, micro = _devices_and_micro_batch(args, cfg)
    model = meta_model(config, freeze, lora.spec() if lora is not None else None)
    counts = count_parameters(model)
    plans = [memory_plan(model, d, micro) for d in devices]
    # Without adapters, for the comparison (what the same recipe trains without LoRA).
    full = count_parameters(meta_model(config, freeze)) if lora is not None else None
    if args.json:
        print(json.dumps({"recipe": args.recipe, "preset": str(cfg.model.preset),
                          "parameters": counts.__dict__,
                          "lora": None if lora is None else {"rank": lora.rank, "alpha": lora.alpha,
                                                             "targets": list(lora.targets),
                                                             "trainable_without_lora": full.trainable},
                          "memory_bytes": [p.as_dict() for p in plans]}, indent=2))
        return 0
    print(f"model {cfg.model.preset} ({config.stage.value}), layout {config.layout.seq_len} tokens, "
          f"{config.num_layers} layers x {config.hidden_size}")
    rows = [["total", f"{counts.total:,}"], ["trainable", f"{counts.trainable:,}"],
            ["frozen", f"{counts.frozen:,}"]]
    if lora is not None:
        rows.append(["trainable without LoRA", f"{full.trainable:,}"])
    print(format_table(["parameters", "count"], rows))
    if lora is not None:
        print(f"LoRA rank {lora.rank}, alpha {lora.alpha:g} on {', '.join(lora.targets)}: only the adapters "
              f"train ({counts.trainable / max(full.trainable, 1):.2%} of the parameters a full fine-tune trains)")
    _print_training_memory(f"training memory per device, GiB (FSDP2, fp32 master weights, bf16 compute, "
                           f"AdamW; micro-batch {micro} per device):", plans, "logits + grad (fp32)")
    return 0


# ------------------------------------------------------------------------------ super-resolution
def _super_resolution_node(cfg):
    """The DSR model section of a recipe, or None (then the recipe's ``model:`` is a CogVideo model)."""
    from cogframe.core.model.config import SR_PRESETS

    node = cfg.get("model")
    if node is not None and node.get("preset") is not None:
        return node if str(node.preset) in SR_PRESETS else None
    sr = OmegaConf.select(cfg, "super_resolution.model", default=None)
    return sr if sr is not None and sr.get("preset") is not None else None


def _run_super_resolution(args: argparse.Namespace, cfg, node) -> int:
    from cogframe.core.model.sr_config import sr_model_config
    from cogframe.core.training.memory_plan import (sr_count_parameters, sr_inference_plan, sr_memory_plan,
                                                    sr_meta_model)
    from cogframe.errors import ConfigError

    if args.lora is not None:
        raise ConfigError("--lora plans adapters on a CogVideo temporal channel; the super-resolution model "
                          "has none. Drop --lora.")
    overrides = node.get("overrides") or {}
    if not isinstance(overrides, dict):
        overrides = OmegaConf.to_container(overrides, resolve=True)
    config = sr_model_config(str(node.preset), overrides or None)
    devices, micro = _devices_and_micro_batch(args, cfg)
    model = sr_meta_model(config, freeze=True)
    counts = sr_count_parameters(model)
    inference = sr_inference_plan(model, batch=micro)
    plans = [sr_memory_plan(model, d, micro) for d in devices]
    layout, base = config.layout, config.backbone
    if args.json:
        print(json.dumps({"recipe": args.recipe, "preset": str(node.preset), "model_kind": "super_resolution",
                          "parameters": counts.__dict__, "inference_bytes": inference.as_dict(),
                          "memory_bytes": [p.as_dict() for p in plans]}, indent=2))
        return 0
    print(f"super-resolution model {node.preset}: {layout.low_height}x{layout.low_width} -> "
          f"{layout.high_height}x{layout.high_width} tokens, {layout.seq_len} tokens per frame, "
          f"{base.num_layers} layers x {base.hidden_size}, frozen backbone + plus channel")
    print(format_table(["parameters", "count"], [["total", f"{counts.total:,}"],
                                                  ["trainable (plus channel, extra positions)", f"{counts.trainable:,}"],
                                                  ["frozen (backbone)", f"{counts.frozen:,}"]]))
    print()
    print(f"inference memory, GiB (one pass over {micro} frame(s), bf16 weights and activations, "
          "sr_local_window for the high-res rows):")
    print(format_table(["part", "GiB"], [[label, _gib(getattr(inference, attr))] for label, attr in [
        ("weights (bf16)", "weights"), ("activations, one layer", "activations"),
        ("attention scores, one layer (fp32)", "attention_scores"), ("high-res logits (fp32)", "logits"),
        ("TOTAL", "total")]]))
    _print_training_memory(f"training memory of the plus channel per device, GiB (FSDP2, fp32 master weights, "
                           f"bf16 compute, AdamW; micro-batch {micro} per device):", plans,
                           "high-res logits + grad (fp32)")
    return 0
