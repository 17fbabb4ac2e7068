"""The one way a seed is derived from a run's seed and what it is for: iterations, phases, problems and
temperatures never repeat each other's draws, and a draw does not depend on batch order, shard or rank."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from `parts` (e.g. run seed, iteration, purpose; or engine seed, problem id, temperature key)."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
