"""Dtypes by name, as configs spell them; no Lightning here, so inference code can use it."""

from __future__ import annotations

import torch

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def dtype(name: str | None, field: str) -> torch.dtype | None:
    """The dtype called `name` (None stays None: the training dtype); a ValueError names `field` otherwise."""
    if name is None:
        return None
    if name not in DTYPES:
        raise ValueError(f"{field} must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]
