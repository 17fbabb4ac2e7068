"""Rows of task data from a local file (JSON, JSON lines, parquet) or a `datasets` dataset, turned into
Problems by each task's own row converter. A bad row fails with one line naming the file and the row.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bstar_pl.records import Problem, RecordError

# A path, or rows already in memory: a `datasets.Dataset` (iterating it yields dicts) or a list of dicts.
Source = str | os.PathLike[str] | Iterable[Mapping[str, Any]]


@dataclass(frozen=True)
class Row:
    """One input row and where it came from: `file.jsonl:12` (line), `file.json: item 3`,
    `file.parquet: row 3`, `dataset row 3` (items and rows count from 0, as indexing does)."""

    where: str
    data: Mapping[str, Any]


def load_problems(source: Source, limit: int | None, convert: Callable[[Mapping[str, Any]], Problem]) -> list[Problem]:
    """The first `limit` rows of `source` (all if None) as Problems; ids must be unique.

    `convert` raises ValueError (or KeyError/TypeError) for a bad row; the error is re-raised as one
    RecordError line that says where the row is.
    """
    problems: list[Problem] = []
    first: dict[str, str] = {}
    for row in read_rows(source, limit):
        try:
            problem = convert(row.data)
        except KeyError as e:
            raise RecordError(f"{row.where}: missing field {e.args[0]!r}") from None
        except (TypeError, ValueError) as e:
            raise RecordError(f"{row.where}: {e}") from None
        if problem.id in first:
            raise RecordError(f"{row.where}: id {problem.id!r} already used at {first[problem.id]}")
        first[problem.id] = row.where
        problems.append(problem)
    return problems


def read_rows(source: Source, limit: int | None = None) -> list[Row]:
    """The first `limit` rows of `source` (all if None), each a mapping."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if not isinstance(source, (str, os.PathLike)):
        return _checked((f"dataset row {i}", row) for i, row in enumerate(itertools.islice(source, limit)))
    path = Path(source)
    if not path.is_file():
        raise RecordError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _checked((f"{path}: row {i}", row) for i, row in enumerate(_parquet(path, limit)))
    if suffix not in (".json", ".jsonl"):
        raise RecordError(f"{path}: unknown format {suffix!r}; expected .json, .jsonl or .parquet")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RecordError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise RecordError(f"{path}:{e.lineno}: bad JSON: {e.msg} (column {e.colno})") from None
        return _checked((f"{path}: item {i}", row) for i, row in enumerate(items[:limit]))
    # JSON lines; also what `datasets` writes to a `.json` file.
    return _checked(itertools.islice(_json_lines(path, text), limit))


def text_field(row: Mapping[str, Any], name: str) -> str:
    """Field `name` of a row, which must be non-empty text."""
    value = row[name]
    if not isinstance(value, str):
        raise ValueError(f"field {name!r}: expected text, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"field {name!r} is empty")
    return value


def optional_id(row: Mapping[str, Any], name: str, prefix: str, text: str) -> str:
    """The row's own id in field `name` if it has one, else a stable one from a hash of `text`."""
    if row.get(name) is not None:
        value = row[name]
        if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
            raise ValueError(f"field {name!r}: expected non-empty text or an integer")
        return str(value)
    return f"{prefix}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _json_lines(path: Path, text: str) -> Iterable[tuple[str, Any]]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{lineno}", json.loads(line)
        except json.JSONDecodeError as e:
            raise RecordError(f"{path}:{lineno}: bad JSON: {e.msg} (column {e.colno})") from None


def _parquet(path: Path, limit: int | None) -> list[dict[str, Any]]:
    import pyarrow.parquet  # only parquet readers pay for it

    try:
        table = pyarrow.parquet.read_table(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise RecordError(f"{path}: not a readable parquet file ({e})") from None
    return table.slice(0, limit).to_pylist() if limit is not None else table.to_pylist()


def _checked(rows: Iterable[tuple[str, Any]]) -> list[Row]:
    out = []
    for where, data in rows:
        if not isinstance(data, Mapping):
            raise RecordError(f"{where}: expected an object, got {type(data).__name__}")
        out.append(Row(where, data))
    return out
