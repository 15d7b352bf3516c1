"""``cogframe plan RECIPE [k=v ...]``: parameter counts and memory per device, on the meta device."""

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


def run(args: argparse.Namespace) -> int:
    """Print the plan."""
    from cogframe.core.training.memory_plan import count_parameters, memory_plan, meta_model
    from cogframe.errors import ConfigError
    from cogframe.config.model import LoraSettings, lora_settings, model_config_from_recipe, model_section

    cfg = load_recipe(args.recipe, args.overrides)
    config = model_config_from_recipe(cfg)
    init = model_section(cfg).get("init") or {}
    freeze = bool(init.get("freeze_inherited", config.has_temporal_channel))
    lora = lora_settings(cfg)
    if lora is None and args.lora is not None:
        lora = LoraSettings(rank=args.lora, alpha=2.0 * args.lora)
        problems = lora.problems()
        if problems:
            raise ConfigError(f"--lora: {problems[0]}")
    devices = args.devices or list(OmegaConf.select(cfg, "plan.devices", default=[1, 8, 64]))
    micro = args.micro_batch or int(OmegaConf.select(cfg, "plan.micro_batch", default=1))
    if micro < 1 or any(d < 1 for d in devices):
        raise ConfigError("--devices and --micro-batch must be positive integers.")
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
    print()
    print(f"training memory per device, GiB (FSDP2, fp32 master weights, bf16 compute, AdamW; "
          f"micro-batch {micro} per device):")
    rows = []
    for label, attr in [("parameters (fp32 shard)", "parameters"), ("gradients (trainable)", "gradients"),
                        ("AdamW moments (trainable)", "optimizer"),
                        ("unsharded working layers (bf16)", "working_layers"),
                        ("activations, no checkpointing", "activations"),
                        ("activations, checkpointing", "activations_checkpointed"),
                        ("logits + grad (fp32)", "logits"),
                        ("TOTAL, no checkpointing", "total"),
                        ("TOTAL, checkpointing", "total_checkpointed")]:
        rows.append([label] + [_gib(getattr(p, attr)) for p in plans])
    print(format_table(["per device"] + [f"{p.devices} dev" for p in plans], rows))
    return 0
