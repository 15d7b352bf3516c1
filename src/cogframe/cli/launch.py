"""Launching ``cogframe run`` as torchrun workers: one node (``--nproc``) or several (``--nnodes``).

Not a command: :mod:`cogframe.cli.run` adds these options and calls :func:`launch` when the run
needs more than one process. One node uses torchrun's ``--standalone`` rendezvous; several nodes
use its elastic **c10d** rendezvous, whose TCP store lives at ``--rdzv-endpoint`` (the host of
node 0). Every node runs the same command with its own ``--node-rank``::

    cogframe run --nnodes 2 --node-rank 0 --rdzv-endpoint node0:29500 --nproc 8 RECIPE   # node 0
    cogframe run --nnodes 2 --node-rank 1 --rdzv-endpoint node0:29500 --nproc 8 RECIPE   # node 1

With c10d, torchrun assigns the global ranks itself (all ranks of one node stay contiguous);
``--node-rank`` decides which launcher hosts the rendezvous store (node 0), so no hostname
heuristics are involved. ``--rdzv-backend static`` makes ranks ``node_rank * nproc + local_rank``
instead (and needs every node to start). The node count is fixed, not an elastic range: sharded
checkpoints are bound to the world size that wrote them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
from typing import Any

from cogframe.errors import ConfigError, Problem, problems_error

__all__ = ["add_launch_arguments", "launch", "launch_command", "launch_problems", "needs_launch"]

RDZV_BACKENDS = ("c10d", "static")


def add_launch_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--nproc``, ``--nnodes``, ``--node-rank``, ``--rdzv-*`` and ``--local-addr``."""
    group = parser.add_argument_group("multi-process training (torchrun; docs/training.md)")
    group.add_argument("--nproc", type=int, default=1, metavar="N",
                       help="processes per node under torchrun (FSDP2 training; one per GPU)")
    group.add_argument("--nnodes", type=int, default=None, metavar="N",
                       help="number of nodes (machines) of the job; each runs this same command "
                            "with its own --node-rank")
    group.add_argument("--node-rank", type=int, default=None, metavar="R",
                       help="this node's rank, 0 .. nnodes-1 (node 0 hosts the rendezvous)")
    group.add_argument("--rdzv-endpoint", default=None, metavar="HOST:PORT",
                       help="rendezvous address every node can reach: node 0's host and a free port")
    group.add_argument("--rdzv-id", default=None, metavar="ID",
                       help="job id shared by the nodes (default: derived from the recipe's "
                            "output_dir, so the same command on every node agrees)")
    group.add_argument("--rdzv-backend", default="c10d", choices=RDZV_BACKENDS,
                       help="c10d (elastic rendezvous, default) or static (ranks by --node-rank)")
    group.add_argument("--local-addr", default=None, metavar="ADDR",
                       help="this node's address as the others should reach it (default: its "
                            "hostname); set it on machines with several network interfaces")


def _endpoint_problem(endpoint: str) -> Problem | None:
    host, sep, port = endpoint.rpartition(":")
    host = host.strip("[]")  # [::1]:29500
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return Problem("--rdzv-endpoint", f"is {endpoint!r}, not HOST:PORT with a port 1..65535",
                       "e.g. --rdzv-endpoint node0.cluster:29500 (node 0's host name or address)")
    return None


def launch_problems(args: argparse.Namespace) -> list[Problem]:
    """Every wrong combination of the launch options, each with its fix (checked before loading).

    Args:
        args: Parsed ``cogframe run`` arguments.
    """
    out: list[Problem] = []
    if args.nproc < 1:
        out.append(Problem("--nproc", f"must be >= 1, got {args.nproc}", "e.g. --nproc 8 (one per GPU)"))
    nnodes = args.nnodes
    multi_only = [name for name, value in (("--node-rank", args.node_rank),
                                           ("--rdzv-endpoint", args.rdzv_endpoint),
                                           ("--rdzv-id", args.rdzv_id),
                                           ("--local-addr", args.local_addr)) if value is not None]
    if args.rdzv_backend != "c10d":
        multi_only.append("--rdzv-backend")
    if nnodes is None:
        if multi_only:
            out.append(Problem(", ".join(multi_only), "is only meaningful with several nodes, and "
                               "--nnodes is not given",
                               "add --nnodes N (the number of machines), or drop these options "
                               "to run on this machine only"))
        return out
    if nnodes < 1:
        out.append(Problem("--nnodes", f"must be >= 1, got {nnodes}", "e.g. --nnodes 2"))
        return out
    if nnodes == 1:
        if multi_only:
            out.append(Problem("--nnodes", f"is 1, but {', '.join(multi_only)} is given",
                               "for one machine use --nproc N alone; for several use --nnodes N >= 2"))
        return out
    if args.node_rank is None:
        out.append(Problem("--node-rank", f"is missing (the job has {nnodes} nodes)",
                           f"give each node its own rank: --node-rank 0 .. {nnodes - 1} "
                           "(SLURM: --node-rank $SLURM_NODEID)"))
    elif not 0 <= args.node_rank < nnodes:
        out.append(Problem("--node-rank", f"is {args.node_rank}, outside 0 .. {nnodes - 1} "
                           f"(--nnodes {nnodes})", f"use a rank from 0 to {nnodes - 1}"))
    if args.rdzv_endpoint is None:
        out.append(Problem("--rdzv-endpoint", "is missing: the nodes cannot find each other",
                           "give every node the same --rdzv-endpoint HOST:PORT, HOST being node 0"))
    elif (problem := _endpoint_problem(args.rdzv_endpoint)) is not None:
        out.append(problem)
    if args.rdzv_id is not None and not args.rdzv_id.strip():
        out.append(Problem("--rdzv-id", "is empty", "give every node the same job id, e.g. $SLURM_JOB_ID"))
    return out


def check_launch_arguments(args: argparse.Namespace) -> None:
    """Raises one ConfigError listing every problem of :func:`launch_problems` (exit 2)."""
    problems = launch_problems(args)
    if problems:
        raise problems_error("the launch options do not fit together", problems)


def needs_launch(args: argparse.Namespace) -> bool:
    """Whether the run goes through torchrun (several processes on this node, or several nodes)."""
    if args.nproc <= 1 and (args.nnodes or 1) <= 1:
        return False
    if "WORLD_SIZE" in os.environ:
        raise ConfigError("--nproc/--nnodes inside a torchrun worker: launch either with torchrun "
                          "or with `cogframe run --nproc N [--nnodes N ...]`, not both.")
    return True


def _default_rdzv_id(cfg: Any, recipe: str) -> str:
    # Deterministic, so the identical command on every node names the same job.
    target = str(cfg.get("output_dir") or recipe) if cfg is not None else recipe
    return "cogframe-" + hashlib.sha1(target.encode()).hexdigest()[:12]


def launch_command(args: argparse.Namespace, cfg: Any = None) -> list[str]:
    """The torchrun command line that re-runs this ``cogframe run`` as workers.

    Args:
        args: Checked ``cogframe run`` arguments.
        cfg: The loaded recipe (for the default rendezvous id), or None.
    """
    command = [sys.executable, "-m", "torch.distributed.run"]
    if (args.nnodes or 1) <= 1:
        command.append("--standalone")
    else:
        command += [f"--nnodes={args.nnodes}", f"--rdzv-backend={args.rdzv_backend}",
                    f"--rdzv-endpoint={args.rdzv_endpoint}",
                    f"--rdzv-id={args.rdzv_id or _default_rdzv_id(cfg, args.recipe)}"]
        if args.rdzv_backend == "static":
            command.append(f"--node-rank={args.node_rank}")
        else:
            # torchrun ignores the node rank under c10d; use it to say who hosts the store.
            command.append(f"--rdzv-conf=is_host={'true' if args.node_rank == 0 else 'false'}")
        if args.local_addr:
            command.append(f"--local-addr={args.local_addr}")
    command += [f"--nproc-per-node={args.nproc}", "-m", "cogframe", "run", args.recipe,
                *args.overrides]
    return command


def launch(args: argparse.Namespace, cfg: Any = None) -> int:
    """Runs the workers of this node under torchrun and returns torchrun's exit status.

    CPU workers default to one thread each, so N processes do not oversubscribe the cores.
    """
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.call(launch_command(args, cfg), env=env)
