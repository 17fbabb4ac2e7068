"""Tasks. Every task is a module here with the same interface (`Task`), so the loop needs no cases:

load(source, limit=None) -> list[Problem]   problems from a local file (JSON, JSON lines,
                                            parquet) or a `datasets` dataset; `question`
                                            holds all the policy sees (e.g. ARC's choices)
extract_answer(text) -> str | None          the final answer of a response, None if none
is_correct(text, problem) -> bool           the task's reward; never raises, never hangs
check_steps                                 (text, problem) -> bool: every step of a right answer is
                                            right, where the task can tell (arithmetic); else None

`bstar_pl.isolation.pool.grade_all(task, texts, problems)` grades many responses on all cores.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Protocol, cast

from bstar_pl.records import Problem

NAMES = ("arithmetic", "gsm8k", "math", "arc", "apps")


class Task(Protocol):
    """A task module (module doc)."""

    __name__: str
    check_steps: Callable[[str, Problem], bool] | None

    def load(self, source: object, limit: int | None = None) -> list[Problem]: ...

    def extract_answer(self, text: str) -> str | None: ...

    def is_correct(self, text: str, problem: Problem) -> bool: ...


def get(name: str) -> Task:
    """The task module called `name`; a clear error for a name that is not a task."""
    if name not in NAMES:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(NAMES)}")
    return cast(Task, importlib.import_module(f"bstar_pl.tasks.{name}"))
