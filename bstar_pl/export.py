"""Weights out of a (possibly FSDP2-sharded) model: a full HF checkpoint on disk, or bf16 tensor buckets in memory.

Every rank must call these together: gathering a sharded tensor is a collective.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.tensor import DTensor
from transformers import AutoTokenizer

from bstar_pl.atomic import atomic_path
from bstar_pl.dist import barrier, rank


def save_hf(
    model: torch.nn.Module,
    tokenizer_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    dtype: torch.dtype | None = None,
) -> Path:
    """Write `model` as an HF checkpoint (safetensors + tokenizer) to `out`, atomically, from rank 0.

    All ranks gather the full weights (to CPU, on rank 0 only); the others wait at a barrier so
    that no rank reads `out` before it is complete. `dtype` (e.g. bfloat16 on GPU) casts the saved
    weights and the config's dtype, which vLLM and transformers load in; None keeps the training dtype.
    """
    out = Path(out)
    state = full_state(model)
    if rank() == 0:
        with atomic_path(out, directory=True) as tmp:
            write_hf(model, state, tmp, dtype)
            AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(tmp)
    barrier()
    return out


def full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict, on the CPU of rank 0 only; a collective: every rank calls it."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def write_hf(model: torch.nn.Module, state: dict[str, torch.Tensor], out: Path, dtype: torch.dtype | None) -> None:
    """Save the HF model `model` with the weights `state` (cast to `dtype` if given) as a checkpoint in `out`."""
    if dtype is not None:
        state = {name: tensor.to(dtype) for name, tensor in state.items()}
    model.save_pretrained(out, state_dict=state, safe_serialization=True)
    if dtype is not None:
        # save_pretrained records the live (float32) parameters' dtype; loaders go by this field.
        config = json.loads((out / "config.json").read_text())
        config["dtype"] = str(dtype).removeprefix("torch.")
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def weight_buckets(
    model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16, bucket_bytes: int = 512 << 20
) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Yield the full weights as lists of (name, tensor in `dtype`) of about `bucket_bytes` each.

    For an in-place weight swap into the engine. Shards are cast before they are gathered (half the
    traffic in bf16); all ranks walk the state dict in the same order, so every rank must consume
    the whole iterator.
    """
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to(dtype)
        if isinstance(tensor, DTensor):
            tensor = tensor.full_tensor()
        bucket.append((name, tensor))
        size += tensor.numel() * tensor.element_size()
        if size >= bucket_bytes:
            yield bucket
            bucket, size = [], 0
    if bucket:
        yield bucket
