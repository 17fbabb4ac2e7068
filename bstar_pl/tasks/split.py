"""`bstar-pl split`: one data file -> a self-improvement pool and a held-out test part, rows kept verbatim.

For a real-model check where only one file is at hand (e.g. the GSM8K test set): the parts never share
a row, and which part a row lands in depends only on its text and the seed, so re-running gives the
same split whatever the row order. Rows keep their own format, so the task's loader reads both parts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bstar_pl.atomic import atomic_path
from bstar_pl.settings import ConfigError
from bstar_pl.tasks.loading import read_rows


def split(source: Path, out: Path, held_out: int, seed: int = 0) -> dict[str, int]:
    """Write `out`/test.jsonl (`held_out` rows) and `out`/pool.jsonl (the rest); return the counts.

    Args:
        source: JSON lines, JSON or parquet rows in any task's format.
        out: the folder for the two files; an existing part is kept if it holds the same rows, and
            refused (never overwritten) if not.
        held_out: how many rows the test part gets.
        seed: chooses the rows, by a hash of (seed, row).
    """
    rows = read_rows(source)
    if not 0 < held_out < len(rows):
        raise ConfigError(f"config field 'held_out': must be between 1 and {len(rows) - 1}, got {held_out}")
    texts = [json.dumps(dict(row.data), ensure_ascii=False, sort_keys=True) for row in rows]
    order = sorted(range(len(rows)), key=lambda i: hashlib.sha256(f"{seed}/{texts[i]}".encode()).digest())
    chosen = set(order[:held_out])
    parts = {}
    for name, keep in (("test", lambda i: i in chosen), ("pool", lambda i: i not in chosen)):
        # Original row order within each part, the row's own fields as they were.
        lines = [json.dumps(dict(rows[i].data), ensure_ascii=False) for i in range(len(rows)) if keep(i)]
        parts[out / f"{name}.jsonl"] = "\n".join(lines) + "\n"
    # A part already there is kept if it is what this split writes (a re-run after a crash), else refused.
    for path, text in parts.items():
        if path.exists() and path.read_text(encoding="utf-8") != text:
            raise ConfigError(f"config field 'out': {path} exists with other rows; remove it or choose another folder")
    for path, text in parts.items():
        if not path.exists():
            with atomic_path(path) as tmp:
                tmp.write_text(text, encoding="utf-8")
    counts = {"pool": len(rows) - held_out, "test": held_out}
    print(f"split {source}: {counts['pool']} rows -> {out / 'pool.jsonl'}, {counts['test']} -> {out / 'test.jsonl'}")
    return counts
