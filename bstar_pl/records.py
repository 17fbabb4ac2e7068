"""The records that pass between stages (problem -> sample -> scored -> selected) and their JSON lines.

Writing is atomic. Reading validates every row and fails with one line, `path:line: what is wrong`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bstar_pl.atomic import atomic_path

NONEMPTY = {"nonempty": True}
FINISH_REASONS = ("stop", "length")


class RecordError(ValueError):
    """A malformed record; the message is one line naming the file and line (or the field)."""


@dataclass(frozen=True)
class Problem:
    """A question with its gold answer and, where known, a reference solution in B-STaR format."""

    id: str = field(metadata=NONEMPTY)
    question: str = field(metadata=NONEMPTY)
    answer: str = field(metadata=NONEMPTY)
    solution: str = ""
    # Task-specific data the grader or the report needs (MATH level and subject, APPS tests, ...).
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    """One sampled response. `index` numbers the samples of one (problem, temperature)."""

    problem_id: str = field(metadata=NONEMPTY)
    temperature: float
    index: int
    text: str  # may be empty: a model can stop at once, and that is data too
    n_tokens: int
    finish_reason: str  # "stop", or "length" when cut by the token limit (kept, never dropped)

    def __post_init__(self) -> None:
        if self.finish_reason not in FINISH_REASONS:
            raise ValueError(f"field 'finish_reason': expected one of {FINISH_REASONS}, got {self.finish_reason!r}")
        if self.temperature < 0 or self.index < 0 or self.n_tokens < 0:
            raise ValueError("fields 'temperature', 'index' and 'n_tokens' must not be negative")

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


def temperature_key(t: float) -> str:
    """The one spelling of a temperature wherever one keys a table or a seed (the reference mixed two)."""
    return f"{t:.2f}"


@dataclass(frozen=True)
class Scored:
    """A sample with its reward: r = 1[correct] + min(step_scores) / 5 (no PRM: step_scores empty).

    `aligned` is False when a PRM was used but could not place the response's steps on its tokens: then
    step_scores is empty and the reward is 1[correct] alone (see scoring.score_samples).
    """

    sample: Sample
    correct: bool
    reward: float
    step_scores: list[float] = field(default_factory=list)
    aligned: bool = True


@dataclass(frozen=True)
class SFTExample:
    """A supervised example in the reference's "metamath" format; the prompt is built from `query`."""

    query: str = field(metadata=NONEMPTY)
    output: str = field(metadata=NONEMPTY)


@dataclass(frozen=True)
class PRMExample:
    """A PRM training example in the reference's "prm-v4" format: a question, the response's steps (joined by a
    blank line they are the response; the last one carries the answer) and one label per step in [0, 1]."""

    input: str = field(metadata=NONEMPTY)
    output: list[str]
    label: list[float]

    def __post_init__(self) -> None:
        if not self.output or len(self.output) != len(self.label):
            raise ValueError(
                f"fields 'output' and 'label' must be non-empty lists of one length, got {len(self.output)} steps "
                f"and {len(self.label)} labels"
            )
        for i, value in enumerate(self.label):
            if not 0 <= value <= 1:
                raise ValueError(f"field 'label[{i}]': expected a number in [0, 1], got {value}")


@dataclass(frozen=True)
class Selected:
    """A training example chosen for this iteration, in the SFT `{query, output}` format."""

    problem_id: str = field(metadata=NONEMPTY)
    query: str = field(metadata=NONEMPTY)
    output: str = field(metadata=NONEMPTY)
    reward: float


R = TypeVar("R")


def to_dict(record: Any) -> dict[str, Any]:
    return record if isinstance(record, dict) else dataclasses.asdict(record)


def write_jsonl(path: str | os.PathLike[str], records: Iterable[Any]) -> int:
    """Write records as JSON lines atomically; return how many were written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(to_dict(record), ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike[str], cls: type[R], ignore_unknown: bool = False) -> list[R]:
    """Read and validate every row of a JSON-lines file as `cls`; blank lines are skipped.

    `ignore_unknown` lets a reader take a narrower view of richer rows (e.g. `SFTExample` of
    `selected.jsonl`); by default an unknown field is an error, since it is usually a typo.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise RecordError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    records = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecordError(f"{path}:{lineno}: bad JSON: {e.msg} (column {e.colno})") from None
        try:
            records.append(from_dict(cls, row, ignore_unknown=ignore_unknown))
        except (TypeError, ValueError) as e:
            raise RecordError(f"{path}:{lineno}: {e}") from None
    return records


def from_dict(cls: type[R], row: Any, prefix: str = "", ignore_unknown: bool = False) -> R:
    """Build a dataclass from a decoded JSON object, checking fields, types and non-empty text."""
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object{f' in {prefix!r}' if prefix else ''}, got {_json_type(row)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(row) - set(fields))
    if unknown and not ignore_unknown:
        raise ValueError(f"unknown field {prefix + unknown[0]!r}")
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        if name not in row:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"missing field {key!r}")
            continue
        value = _check(hints[name], row[name], key)
        if f.metadata.get("nonempty") and not value.strip():
            raise ValueError(f"field {key!r} is empty")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ValueError(f"{prefix}{e}" if prefix else str(e)) from None


def _check(hint: Any, value: Any, key: str) -> Any:
    """Return `value` (converted where JSON is looser than Python) if it has type `hint`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
        origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, prefix=f"{key}.")
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"field {key!r}: expected an object, got {_json_type(value)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"field {key!r}: expected a list, got {_json_type(value)}")
        (item,) = typing.get_args(hint)
        return [_check(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    # bool is a subclass of int in Python but not in JSON: `true` is no count.
    if not isinstance(value, hint) or (hint is not bool and isinstance(value, bool)):
        raise ValueError(f"field {key!r}: expected {hint.__name__}, got {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def load_examples(source: str | os.PathLike[str] | Any) -> list[SFTExample]:
    """SFT examples from a JSON-lines file, a JSON list, a `datasets` directory or a `datasets.Dataset`.

    Rows may carry more fields (`selected.jsonl` does); a malformed row fails naming file and line.
    """
    if not isinstance(source, str | os.PathLike):
        return _rows(source, "dataset")
    path = Path(source)
    if path.is_dir():
        import datasets

        return _rows(datasets.load_from_disk(str(path)), str(path))
    if path.suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RecordError(f"{path}: no such file") from None
        except json.JSONDecodeError as e:
            raise RecordError(f"{path}:{e.lineno}: bad JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(rows, list):
            raise RecordError(f"{path}: expected a JSON list of {{query, output}} objects")
        return _rows(rows, str(path))
    return read_jsonl(path, SFTExample, ignore_unknown=True)


def _rows(rows: Any, where: str) -> list[SFTExample]:
    """Validate in-memory rows; errors name `where` and the row index."""
    examples = []
    for i, row in enumerate(rows):
        try:
            examples.append(from_dict(SFTExample, row, ignore_unknown=True))
        except (TypeError, ValueError) as e:
            raise RecordError(f"{where}[{i}]: {e}") from None
    return examples
