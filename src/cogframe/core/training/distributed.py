"""Single-process and FSDP2 (torchrun) execution behind one small interface.

The training loop never branches on "am I distributed?": it asks a context to prepare the model,
average a metric, and save or load a checkpoint.

* :meth:`DistributedContext.single` — one process; checkpoints are the safetensors folders of
  ``core/checkpoint.py``.
* :meth:`DistributedContext.from_environment` under torchrun — a gloo (CPU) or NCCL (CUDA)
  process group; the model arrives on the meta device, every transformer layer and then the
  root are wrapped with ``fully_shard`` (bf16 parameters with fp32 gradient reduction by
  default), storage is materialised with ``to_empty`` and the full initial state is broadcast
  from rank 0 into the shards. Frozen and trainable parameters live side by side: FSDP2 shards
  per parameter, so ``requires_grad`` may differ inside one layer. Checkpoints are sharded with
  ``torch.distributed.checkpoint`` and can be consolidated into one safetensors file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from cogframe.core.training.checkpoint import (
    TrainerState,
    checkpoint_paths,
    latest_checkpoint,
    load_checkpoint,
    publish_checkpoint,
    python_rng_state,
    restore_rng_state,
    rng_state_tensors,
    save_checkpoint,
    save_model_weights,
    staging_dir,
)
from cogframe.errors import ConfigError, DataError

__all__ = ["DistributedContext", "consolidate_checkpoint"]


@dataclass
class DistributedContext:
    """Where this process runs and how it talks to its peers.

    Attributes:
        rank: This process's rank (0 when single).
        world_size: Number of processes.
        device: Device of this process.
        param_dtype: FSDP2 compute dtype of parameters (None: keep fp32).
        reduce_dtype: FSDP2 gradient reduction dtype.
    """

    rank: int
    world_size: int
    device: torch.device
    param_dtype: torch.dtype | None = None
    reduce_dtype: torch.dtype | None = torch.float32
    initial_state: Mapping[str, torch.Tensor] | None = None

    # ----------------------------------------------------------------------------- creation
    @classmethod
    def single(cls, device: torch.device | str = "cpu") -> "DistributedContext":
        """One process on ``device``."""
        return cls(0, 1, torch.device(device))

    @classmethod
    def from_environment(cls, device: str = "auto", param_dtype: str | None = "bfloat16",
                         reduce_dtype: str = "float32") -> "DistributedContext":
        """Join the torchrun process group described by ``RANK``/``WORLD_SIZE`` (or run single)."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if world == 1:
            return cls.single(device)
        rank = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", rank))
        if device == "cuda":
            torch.cuda.set_device(local)
            dev = torch.device("cuda", local)
        else:
            dev = torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if param_dtype == "float16":
            raise ConfigError("distributed.param_dtype=float16 needs dynamic loss scaling, which "
                              "cogframe's loop does not do (and fp16 on CPU is ~1000x slower); use "
                              "bfloat16 or null (fp32).")
        return cls(rank, world, dev, getattr(torch, param_dtype) if param_dtype else None,
                   getattr(torch, reduce_dtype))

    @property
    def distributed(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows progress and writes shared files."""
        return self.rank == 0

    # ----------------------------------------------------------------------------- collectives
    def mean(self, value: float) -> float:
        """Average a scalar over ranks."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t) / self.world_size

    def sum(self, value: float) -> float:
        """Sum a scalar over ranks."""
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t)

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.distributed:
            dist.barrier()

    def print(self, message: str) -> None:
        """Print once (rank 0)."""
        if self.is_main:
            print(message, flush=True)

    # ----------------------------------------------------------------------------- model
    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move (single) or shard and fill (FSDP2) the model.

        Under FSDP2 the model must be on the meta device and ``initial_state`` (the full state
        dict, needed on rank 0 only) provides its weights.
        """
        if not self.distributed:
            return model.to(self.device)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(param_dtype=self.param_dtype, reduce_dtype=self.reduce_dtype)
        for layer in model.layers:
            fully_shard(layer, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        model.to_empty(device=self.device)
        if self.is_main and self.initial_state is None:
            raise ConfigError("FSDP2 training needs the initial weights on rank 0 "
                              "(DistributedContext.initial_state).")
        set_model_state_dict(
            model, dict(self.initial_state) if self.is_main else {},
            options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True),
        )
        return model

    # ----------------------------------------------------------------------------- checkpoints
    def latest_checkpoint(self, directory: Path) -> Path | None:
        """Newest complete checkpoint (every rank agrees: the folder appears atomically)."""
        return latest_checkpoint(directory)

    def save_checkpoint(self, directory: Path, model, optimizer, names: list[str],
                        state: TrainerState, keep_last: int | None) -> Path:
        """Write a checkpoint: safetensors folder (single) or a DCP folder (FSDP2)."""
        if not self.distributed:
            return save_checkpoint(directory, model_state=model.state_dict(), optimizer=optimizer,
                                   param_names=names, state=state, keep_last=keep_last)
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        # Rank 0 prepares the staging folder; every rank writes its shards into it.
        tmp, final = checkpoint_paths(directory, state.step)
        if self.is_main:
            staging_dir(directory, state.step)
        self.barrier()
        model_sd, optim_sd = get_state_dict(model, optimizer)
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp / "dcp"))
        # Every rank's RNG (CPU and its CUDA device: dropout draws there under NCCL), so a resumed
        # run draws the same dropout masks as an uninterrupted one.
        save_file(rng_state_tensors(), str(tmp / f"rng_rank{self.rank}.safetensors"))
        (tmp / f"rng_rank{self.rank}.json").write_text(json.dumps(python_rng_state()))
        self.barrier()
        if self.is_main:
            trainer = {"step": state.step, "scheduler": state.scheduler, "metrics": state.metrics,
                       "recipe": state.recipe, "param_names": names,
                       "world_size": self.world_size, "format": "dcp"}
            (tmp / "trainer.json").write_text(json.dumps(trainer, indent=1, default=str))
            publish_checkpoint(tmp, final, keep_last)
        self.barrier()
        return final

    def load_checkpoint(self, path: Path, model, optimizer, names: list[str]) -> TrainerState:
        """Restore model, optimizer and RNG from a checkpoint written by the same world size."""
        if not self.distributed:
            return load_checkpoint(path, model=model, optimizer=optimizer, param_names=names)
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        try:
            trainer = json.loads((Path(path) / "trainer.json").read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{Path(path) / 'trainer.json'} is missing or corrupt ({exc}); move {path} "
                            "aside to resume from an earlier checkpoint.") from None
        if trainer.get("format") != "dcp":
            raise DataError(f"{path} is a single-process checkpoint; resume it without --nproc "
                            "(one process), or start the distributed run from its model.safetensors "
                            "(model.init.from or model.weights).")
        # Checked before reading any shard: another world size cannot restore the RNG states.
        rng = Path(path) / f"rng_rank{self.rank}.safetensors"
        if trainer.get("world_size") != self.world_size or not rng.exists():
            saved = trainer.get("world_size")
            raise DataError(
                f"{path} is a sharded checkpoint written by {saved} processes, and this run has "
                f"{self.world_size}; the checkpoint is fine. Resume it with "
                f"`cogframe run --nproc {saved} RECIPE resume=true`, or merge it with "
                f"`cogframe consolidate {path} OUT.safetensors` and start a new run from the weights.")
        model_sd, optim_sd = get_state_dict(model, optimizer)
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=str(Path(path) / "dcp"))
        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optim"])
        restore_rng_state(load_file(str(rng)), json.loads((Path(path) / f"rng_rank{self.rank}.json").read_text()))
        return TrainerState(trainer["step"], trainer["scheduler"], trainer["metrics"],
                            trainer["recipe"])

    def save_final_weights(self, model, path: Path) -> None:
        """Full (unsharded) weights as one safetensors file, written by rank 0."""
        if not self.distributed:
            save_model_weights(path, model.state_dict())
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                                    cpu_offload=True))
        if self.is_main:
            save_model_weights(path, full)
        self.barrier()


def consolidate_checkpoint(checkpoint: str | os.PathLike, output: str | os.PathLike) -> int:
    """Turn a sharded (DCP) checkpoint into one safetensors file of model weights.

    Returns:
        Number of tensors written.
    """
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    checkpoint = Path(checkpoint)
    source = checkpoint / "dcp"
    if not source.is_dir():
        raise DataError(f"{checkpoint} has no sharded 'dcp' folder; it is not a distributed "
                        "checkpoint (single-process checkpoints already hold model.safetensors).")
    output = Path(output)
    tmp = output.with_name(f".{output.name}.consolidate.pt")
    try:
        dcp_to_torch_save(str(source), str(tmp))
        full = torch.load(tmp, weights_only=True)
    finally:
        tmp.unlink(missing_ok=True)
    model = {k: v for k, v in full["model"].items() if torch.is_tensor(v)}
    save_model_weights(output, model)
    return len(model)
