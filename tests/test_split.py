"""`bstar-pl split`: disjoint parts that cover the file, chosen by content and seed, never overwritten,
resumable after a crash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bstar_pl.settings import ConfigError
from bstar_pl.tasks import gsm8k
from bstar_pl.tasks.split import split

ROWS = [
    {"question": f"Tom has {i} apples and buys 2 more. How many now?", "answer": f"{i} + 2\n#### {i + 2}"}
    for i in range(40)
]


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def parts(out: Path) -> tuple[list[str], list[str]]:
    return tuple([p.question for p in gsm8k.load(out / f"{name}.jsonl")] for name in ("pool", "test"))


def test_parts_are_disjoint_cover_the_file_and_load_as_the_task(tmp_path: Path) -> None:
    source = write(tmp_path / "all.jsonl", ROWS)
    assert split(source, tmp_path / "a", held_out=10) == {"pool": 30, "test": 10}
    pool, test = parts(tmp_path / "a")
    assert len(test) == 10 and not set(pool) & set(test) and sorted(pool + test) == sorted(r["question"] for r in ROWS)
    # Content decides, not position: the reversed file splits the same way; another seed differently.
    split(write(tmp_path / "rev.jsonl", ROWS[::-1]), tmp_path / "b", held_out=10)
    assert sorted(parts(tmp_path / "b")[1]) == sorted(test)
    split(source, tmp_path / "c", held_out=10, seed=1)
    assert sorted(parts(tmp_path / "c")[1]) != sorted(test)


def test_existing_parts_are_kept_and_bad_sizes_refused(tmp_path: Path) -> None:
    source = write(tmp_path / "all.jsonl", ROWS)
    split(source, tmp_path / "a", held_out=10)
    before = {name: (tmp_path / "a" / f"{name}.jsonl").read_text() for name in ("pool", "test")}
    with pytest.raises(ConfigError, match=r"test\.jsonl exists with other rows"):
        split(source, tmp_path / "a", held_out=5)
    assert {name: (tmp_path / "a" / f"{name}.jsonl").read_text() for name in before} == before
    # Killed after writing one part: the same command writes the other and keeps the first.
    (tmp_path / "a" / "pool.jsonl").unlink()
    split(source, tmp_path / "a", held_out=10)
    assert {name: (tmp_path / "a" / f"{name}.jsonl").read_text() for name in before} == before
    for held_out in (0, 40):
        with pytest.raises(ConfigError, match="held_out"):
            split(source, tmp_path / "x", held_out=held_out)
