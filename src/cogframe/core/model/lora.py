"""LoRA (low-rank adaptation, Hu et al., arXiv 2106.09685) for the transformer's Linear layers.

A wrapped layer computes ``W x + b + (alpha / rank) * B A dropout(x)`` with ``A`` of shape
``[rank, in]`` (Kaiming-uniform) and ``B`` of shape ``[out, rank]`` (zeros, so a fresh adapter
changes nothing). Only ``A`` and ``B`` train; every other parameter of the model is frozen::

    names = inject_lora(model, rank=8, alpha=16, targets=("temporal",))   # wrapped module names
    ... train ...
    save_adapter(model, "lora.safetensors")        # A and B only, atomically, with rank/alpha/targets
    merge_lora(model)                              # W += scale * B A (inference at full speed)
    unmerge_lora(model)                            # back (round trip within float rounding)
    plain = merged_state_dict(model)               # the names of an un-adapted model, merged

Targets are aliases (``temporal``: the temporal channel's QKV and dense; ``spatial``: the base
attention's; ``mlp``: both MLP layers) or ``fnmatch`` patterns over module names
(``layers.*.temporal.dense``).

Why our own module rather than ``peft``: peft requires ``transformers``, ``accelerate`` and
``huggingface_hub`` (it imports transformers when imported), and it renames wrapped weights to
``<name>.base_layer.weight``, so checkpoints, ``freeze_inherited``, text-to-image inheritance
and the converted release weights would all need a second naming scheme. Here a wrapped layer
*is* an ``nn.Linear`` with the same ``weight``/``bias`` parameters plus ``lora_A``/``lora_B``,
so every existing name stays valid and a merged model loads into a plain one.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cogframe.core.io.atomic import atomic_path
from cogframe.errors import ConfigError, DataError

__all__ = ["ADAPTER_FORMAT", "TARGET_ALIASES", "LoraLinear", "LoraSpec", "inject_lora", "load_adapter",
           "lora_modules", "lora_state_dict", "merge_lora", "merge_lora_tensors", "merged_state_dict",
           "read_adapter", "resolve_targets", "save_adapter", "split_lora_weights", "trainable_names", "unmerge_lora"]

ADAPTER_FORMAT = "cogframe-lora-1"
# Module-name patterns per alias (names as in core/model/transformer.py).
TARGET_ALIASES: dict[str, tuple[str, ...]] = {
    "temporal": ("layers.*.temporal.query_key_value", "layers.*.temporal.dense"),
    "spatial": ("layers.*.attention.query_key_value", "layers.*.attention.dense"),
    "mlp": ("layers.*.mlp.dense_h_to_4h", "layers.*.mlp.dense_4h_to_h"),
}


@dataclass(frozen=True)
class LoraSpec:
    """Rank, scale numerator, dropout and targets of one adapter.

    Attributes:
        rank: Inner dimension ``r`` of ``B A`` (>= 1).
        alpha: The update is scaled by ``alpha / rank`` (peft's convention).
        dropout: Dropout on the adapter's input while training (0: none).
        targets: Aliases or module-name patterns (see the module docstring).
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("temporal",)

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise ConfigError(f"lora rank must be a whole number >= 1, got {self.rank!r}; e.g. rank=8")
        if not math.isfinite(float(self.alpha)) or float(self.alpha) <= 0:
            raise ConfigError(f"lora alpha must be a positive number, got {self.alpha!r}; e.g. alpha=16 "
                              "(the update is scaled by alpha / rank)")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"lora dropout must be in [0, 1), got {self.dropout!r}")
        if not self.targets:
            raise ConfigError(f"lora targets is empty; name some, e.g. [temporal] (aliases: "
                              f"{', '.join(TARGET_ALIASES)}, or patterns such as layers.*.temporal.dense)")
        object.__setattr__(self, "targets", tuple(str(t) for t in self.targets))

    @property
    def scale(self) -> float:
        """``alpha / rank``."""
        return float(self.alpha) / self.rank

    def metadata(self) -> dict[str, str]:
        """The spec as safetensors metadata (strings)."""
        return {"format": ADAPTER_FORMAT, "rank": str(self.rank), "alpha": repr(float(self.alpha)),
                "dropout": repr(float(self.dropout)), "targets": json.dumps(list(self.targets))}

    @classmethod
    def from_metadata(cls, meta: dict[str, str], path: Path) -> "LoraSpec":
        """The spec an adapter file was saved with."""
        if (meta or {}).get("format") != ADAPTER_FORMAT:
            raise DataError(f"{path} is not a cogframe LoRA adapter (metadata format "
                            f"{(meta or {}).get('format')!r}, expected {ADAPTER_FORMAT!r}); save adapters "
                            "with save_adapter or point at the lora.safetensors of a LoRA training run")
        return cls(rank=int(meta["rank"]), alpha=float(meta["alpha"]), dropout=float(meta["dropout"]),
                   targets=tuple(json.loads(meta["targets"])))


class LoraLinear(nn.Linear):
    """An ``nn.Linear`` (same ``weight`` and ``bias`` parameters) plus a low-rank update.

    Args:
        base: The layer to adapt; its parameters are reused, not copied.
        spec: Rank, alpha and dropout.
    """

    def __init__(self, base: nn.Linear, spec: LoraSpec) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.rank, self.scale = spec.rank, spec.scale
        like = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(spec.rank, self.in_features, **like))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, spec.rank, **like))
        # peft's default init: A as nn.Linear's own weights, B zero (the adapter starts as identity).
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(spec.dropout) if spec.dropout else nn.Identity()
        self.merged = False

    def delta(self) -> torch.Tensor:
        """``scale * B A``: the update a merge adds to ``weight``."""
        return (self.lora_B @ self.lora_A) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.merged:
            return out
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return out + update * self.scale

    @torch.no_grad()
    def merge(self) -> None:
        """Adds the update into ``weight`` (idempotent)."""
        if not self.merged:
            self.weight.add_(self.delta().to(self.weight.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtracts the update again (idempotent)."""
        if self.merged:
            self.weight.sub_(self.delta().to(self.weight.dtype))
            self.merged = False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, scale={self.scale:g}"


def resolve_targets(model: nn.Module, targets: Iterable[str]) -> list[str]:
    """Names of the Linear modules ``targets`` select, in model order.

    Raises:
        ConfigError: A target that selects no Linear layer (naming the aliases and an example).
    """
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    chosen: dict[str, None] = {}
    for target in targets:
        patterns = TARGET_ALIASES.get(target, (target,))
        hits = [name for name in linear if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
        if not hits:
            extra = " (this model has no temporal channel: it is a text-to-image model)" \
                if target == "temporal" else ""
            raise ConfigError(f"lora target {target!r} selects no Linear layer of the model{extra}; use an "
                              f"alias ({', '.join(TARGET_ALIASES)}) or a module-name pattern such as "
                              f"{linear[0] if linear else 'layers.*.temporal.dense'!r}")
        chosen.update(dict.fromkeys(hits))
    return [name for name in linear if name in chosen]


def inject_lora(model: nn.Module, spec: LoraSpec | None = None, **kwargs) -> list[str]:
    """Wraps the target Linear layers of ``model`` in place; freezes every other parameter.

    Works on the meta device (planning, FSDP2). Call it after loading or inheriting the base
    weights: the adapters start as the identity (``B = 0``).

    Args:
        model: The model.
        spec: The adapter; or give its fields as keywords (``rank=8, alpha=16, targets=[...]``).

    Returns:
        The wrapped module names.

    Raises:
        ConfigError: Bad rank/alpha/dropout, a target that selects nothing, or a model that
            already has adapters.
    """
    spec = spec or LoraSpec(**{k: tuple(v) if k == "targets" else v for k, v in kwargs.items()})
    if lora_modules(model):
        raise ConfigError("the model already has LoRA adapters; inject once (merge or build a fresh model "
                          "to start another adapter)")
    names = resolve_targets(model, spec.targets)
    for param in model.parameters():
        param.requires_grad_(False)
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoraLinear(getattr(parent, child), spec))
    model.lora_spec = spec
    return names


def lora_modules(model: nn.Module) -> dict[str, LoraLinear]:
    """The wrapped layers by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLinear)}


def merge_lora(model: nn.Module) -> None:
    """Merges every adapter into its weight (inference runs at the speed of the plain model)."""
    for module in lora_modules(model).values():
        module.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Undoes :func:`merge_lora` (to keep training or swap adapters)."""
    for module in lora_modules(model).values():
        module.unmerge()


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter tensors (``<module>.lora_A`` / ``.lora_B``), detached, on the CPU."""
    out = {}
    for name, module in lora_modules(model).items():
        out[f"{name}.lora_A"] = module.lora_A.detach().cpu().contiguous()
        out[f"{name}.lora_B"] = module.lora_B.detach().cpu().contiguous()
    return out


def merge_lora_tensors(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """A state dict with ``lora_A``/``lora_B`` entries -> the plain names, each weight merged.

    Used on files (a training run's ``model.safetensors``) without building a model. Weights
    of a module whose adapter is merged already would be merged twice: pass unmerged states.
    """
    plain = {k: v for k, v in state.items() if not k.endswith((".lora_A", ".lora_B"))}
    for key in [k for k in state if k.endswith(".lora_A")]:
        prefix = key[:-len(".lora_A")]
        weight = plain[f"{prefix}.weight"]
        delta = (state[f"{prefix}.lora_B"].double() @ state[key].double()) * scale
        plain[f"{prefix}.weight"] = (weight.double() + delta).to(weight.dtype)
    return plain


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors under the names of an un-adapted model, adapters merged (model unchanged)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    spec = getattr(model, "lora_spec", None)
    merged = {name for name, m in lora_modules(model).items() if m.merged}
    if merged:  # already in the weights: drop the adapter tensors only
        return {k: v for k, v in state.items() if not k.endswith((".lora_A", ".lora_B"))}
    return merge_lora_tensors(state, spec.scale) if spec is not None else state


def save_adapter(model: nn.Module, path: str | Path) -> Path:
    """Writes the adapter tensors and their spec to a safetensors file, atomically.

    Raises:
        ConfigError: The model has no adapters.
    """
    from safetensors.torch import save_file

    spec = getattr(model, "lora_spec", None)
    tensors = lora_state_dict(model)
    if spec is None or not tensors:
        raise ConfigError("the model has no LoRA adapters to save; inject them first (model.lora in the recipe)")
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=spec.metadata())
    return path


def read_adapter(path: str | Path) -> tuple[LoraSpec, dict[str, torch.Tensor]]:
    """The spec and tensors of an adapter file.

    Raises:
        DataError: Missing, truncated or foreign file.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(f"LoRA adapter {path} does not exist; train one (a recipe with model.lora writes "
                        "lora.safetensors into its output_dir) or fix the path")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise DataError(f"cannot read LoRA adapter {path} ({exc}); copy it again or re-run the training "
                        "that wrote it") from None
    return LoraSpec.from_metadata(meta, path), tensors


def load_adapter(model: nn.Module, path: str | Path, *, strict: bool = True) -> LoraSpec:
    """Loads an adapter file into a model that has the same adapters injected.

    Raises:
        DataError: A tensor name or shape that does not match the model's adapters.
    """
    spec, tensors = read_adapter(path)
    modules = lora_modules(model)
    if not modules:
        raise ConfigError(f"cannot load {path}: the model has no LoRA adapters; inject them first with the "
                          f"file's spec (rank {spec.rank}, targets {list(spec.targets)})")
    if any(m.merged for m in modules.values()):
        raise ConfigError(f"cannot load {path} into merged adapters; call unmerge_lora(model) first")
    own = {f"{n}.lora_{ab}": getattr(m, f"lora_{ab}") for n, m in modules.items() for ab in "AB"}
    missing, extra = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
    if strict and (missing or extra):
        first = (missing or extra)[0]
        raise DataError(f"LoRA adapter {path} does not match the model's adapters: "
                        f"{'missing' if missing else 'unexpected'} tensor {first!r} ({len(missing)} missing, "
                        f"{len(extra)} unexpected); inject with the file's targets {list(spec.targets)}")
    with torch.no_grad():
        for name, param in own.items():
            if name not in tensors:
                continue
            if tuple(tensors[name].shape) != tuple(param.shape):
                raise DataError(f"LoRA adapter {path}: {name!r} has shape {tuple(tensors[name].shape)} but the "
                                f"model's has {tuple(param.shape)}; use rank {spec.rank} and the same preset")
            param.copy_(tensors[name].to(param.dtype))
    return spec


def split_lora_weights(weights: str | Path, spec: LoraSpec, adapter: str | Path | None = None) -> Path:
    """Turns a LoRA run's ``model.safetensors`` into a merged plain model plus ``lora.safetensors``.

    The training loop saves the model as it trained (``weight`` + ``lora_A``/``lora_B``); this
    writes the adapter tensors to ``adapter`` (default: ``lora.safetensors`` beside it) and
    replaces ``weights`` with the merged tensors under the plain names, so the file loads into
    a model without adapters (``cogframe run tiny/sample stage1.model.weights=...``). Both files
    are written atomically; a file without adapter tensors is left as it is.

    Returns:
        The adapter path.
    """
    from safetensors.torch import load_file, save_file

    weights = Path(weights)
    adapter = Path(adapter) if adapter is not None else weights.with_name("lora.safetensors")
    state = load_file(str(weights))
    tensors = {k: v.contiguous() for k, v in state.items() if k.endswith((".lora_A", ".lora_B"))}
    if not tensors:
        return adapter
    with atomic_path(adapter) as tmp:
        save_file(tensors, str(tmp), metadata=spec.metadata())
    plain = {k: v.contiguous() for k, v in merge_lora_tensors(state, spec.scale).items()}
    with atomic_path(weights) as tmp:
        save_file(plain, str(tmp))
    return adapter


def trainable_names(model: nn.Module) -> Sequence[str]:
    """Names of the parameters that train (for reports and tests)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]
