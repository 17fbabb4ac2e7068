"""Tasks. Every task is a module here with the same three functions, so the driver needs no cases:

load(source, limit=None) -> list[Problem]   problems from a local file (JSON, JSON lines,
                                            parquet) or a `datasets` dataset; `question`
                                            holds all the policy sees (e.g. ARC's choices)
extract_answer(text) -> str | None          the final answer of a response, None if none
is_correct(text, problem) -> bool           the task's reward; never raises, never hangs

`batch.grade_all(task, texts, problems)` grades many responses on all cores.
"""

from __future__ import annotations

import importlib
from types import ModuleType

NAMES = ("arithmetic", "gsm8k", "math", "arc", "apps")


def get(name: str) -> ModuleType:
    """The task module called `name`; a clear error for a name that is not a task."""
    if name not in NAMES:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(NAMES)}")
    return importlib.import_module(f"bstar_pl.tasks.{name}")
