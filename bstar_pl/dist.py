"""Which process this is among the ranks of a job, and where they wait for each other.

One place reads the launcher's environment (torchrun, srun, Lightning) and the default process group, so every
module agrees on what rank 0 is. Read `local_world_size` before the engine starts: vLLM's CPU platform overwrites
LOCAL_WORLD_SIZE with its tensor-parallel size.
"""

from __future__ import annotations

import os

import torch


def initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    """This process's global rank: the process group's, else the launcher's RANK, else 0."""
    return torch.distributed.get_rank() if initialized() else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return torch.distributed.get_world_size() if initialized() else int(os.environ.get("WORLD_SIZE", "1"))


def local_world_size() -> int:
    """Processes on this node, as the launcher set them (read before the engine starts)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def init() -> None:
    """Under torchrun: join the process group before the engine starts (vLLM would otherwise make a world of its
    own, of size 1, and the trainer's device mesh would not fit in it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def barrier() -> None:
    if initialized():
        torch.distributed.barrier()


def shard(group_size: int = 1) -> tuple[int, int]:
    """(this rank's data-parallel index, number of data-parallel shards) when ranks form groups of `group_size`
    (the engine's tensor-parallel groups); (0, 1) without a process group."""
    if not initialized():
        return 0, 1
    return torch.distributed.get_rank() // group_size, torch.distributed.get_world_size() // group_size


def say(message: str) -> None:
    """Print on rank 0 only (every rank runs the same phases)."""
    if rank() == 0:
        print(message, flush=True)
