"""What SFT and PRM training build alike: the FSDP2 sharding of a model, and AdamW with a warmup-cosine schedule
that lives on the module, so that successive `fit` calls continue one optimizer state and one schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch.optim.lr_scheduler import LambdaLR

from bstar_pl.dtypes import dtype


@dataclass(frozen=True)
class Optim:
    """AdamW, with a linear warmup and a cosine decay to `lr_min` (the paper: peak 4.12e-6 -> 2e-7 in the loop).

    Args:
        lr / lr_min: peak LR and the floor the cosine decays to.
        warmup_steps / warmup_ratio: linear warmup length in steps, or as a fraction of `total_steps` (the
            larger wins).
        total_steps: length of the cosine schedule in optimizer steps. None: the first fit's
            `trainer.estimated_stepping_batches`. The self-improvement loop sets iterations × steps.
        weight_decay, betas: AdamW settings (the paper: weight decay 0).
    """

    lr: float = 5e-6
    lr_min: float = 2e-7
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    total_steps: int | None = None
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)


class WarmupCosine:
    """LR factor: linear warmup over `warmup` steps, then cosine from 1 to `floor` at `total` steps.

    A class (not a lambda) so the scheduler's state dict, and with it a checkpoint, can hold it.
    """

    def __init__(self, warmup: int, total: int, floor: float) -> None:
        self.warmup, self.total, self.floor = warmup, total, floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min((step - self.warmup) / max(1, self.total - self.warmup), 1.0)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))


def adamw_cosine(module: L.LightningModule) -> dict[str, Any]:
    """`configure_optimizers` of a module with an `optim` (an `Optim`): AdamW over the trainable
    parameters and a per-step warmup-cosine schedule, created once and kept on the module as `optimizer` and
    `scheduler` (Lightning calls this on every fit; returning the same objects carries their state over)."""
    if module.optimizer is None:
        hp = module.optim
        total = hp.total_steps or int(module.trainer.estimated_stepping_batches)
        warmup = max(hp.warmup_steps, int(hp.warmup_ratio * total))
        params = [p for p in module.model.parameters() if p.requires_grad]
        module.optimizer = torch.optim.AdamW(params, lr=hp.lr, betas=hp.betas, weight_decay=hp.weight_decay)
        module.scheduler = LambdaLR(module.optimizer, WarmupCosine(warmup, total, hp.lr_min / hp.lr))
    return {"optimizer": module.optimizer, "lr_scheduler": {"scheduler": module.scheduler, "interval": "step"}}


def decoder_layers(model: torch.nn.Module, within: torch.nn.Module | None = None) -> list[torch.nn.Module]:
    """The decoder layers of an HF model (the classes it names as never to be split across devices), found in
    `within` (default: the model itself; e.g. a PRM around its backbone)."""
    types = set(model._no_split_modules or [])
    return [m for m in (within or model).modules() if type(m).__name__ in types]


def fully_shard(model: torch.nn.Module, mesh: Any, param_dtype: str | None, units: Iterable[torch.nn.Module]) -> None:
    """FSDP2 over the mesh's data-parallel dimension: each of `units` (decoder layers, frozen parts) on its own, then
    the root. `param_dtype` is the compute dtype ("bfloat16" on GPU); master weights and gradient reduction stay
    float32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy
    from torch.distributed.fsdp import fully_shard as shard

    policy = MixedPrecisionPolicy(param_dtype=dtype(param_dtype, "param_dtype"), reduce_dtype=torch.float32)
    for unit in units:
        shard(unit, mesh=mesh["data_parallel"], mp_policy=policy)
    shard(model, mesh=mesh["data_parallel"], mp_policy=policy)
