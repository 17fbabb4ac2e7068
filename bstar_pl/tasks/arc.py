"""ARC-Challenge: multiple-choice science questions; the reward is the chosen letter matching the key.

Rows follow `allenai/ai2_arc`: `{id, question, choices: {text, label}, answerKey}`. Choices are shown
as (A), (B), ... by position, and the key is mapped to the letter at its position, so the 22 test
items labelled 1-4 are graded like the rest (the reference compared "3" with a letter: always wrong).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from bstar_pl.records import Problem
from bstar_pl.tasks.loading import Source, load_problems, text_field
from bstar_pl.template import split_response

LETTERS = "ABCDEFGH"
INSTRUCTION = 'Reason step by step, then end with "Final answer: (X)", where X is the letter of the correct choice.'
# "Final answer: (C)", "[C]", "C" or "C."; a bare letter must be a capital standing alone, so that
# "Final answer: a dry palm" is no answer "A".
_FINAL = re.compile(r"(?i:final\s+answer)(?:\s+(?i:is))?\s*:?\s*(?:\(([A-Ha-h])\)|\[([A-Ha-h])\]|([A-H])(?![A-Za-z]))")
_BLOCK = re.compile(r"\(?([A-H])\)?\.?")


def load(source: Source, limit: int | None = None) -> list[Problem]:
    """ARC problems; `question` holds the question, the lettered choices and the answer instruction."""
    return load_problems(source, limit, problem)


def problem(row: Mapping[str, Any]) -> Problem:
    """One row as a Problem (a ValueError names a bad field). `info["labels"]` keeps the file's labels."""
    question = text_field(row, "question").strip()
    choices = row["choices"]
    if not isinstance(choices, Mapping):
        raise ValueError("field 'choices': expected an object {text: [...], label: [...]}")
    texts, labels = list(choices["text"]), [str(x) for x in choices["label"]]
    if not 2 <= len(texts) == len(labels) <= len(LETTERS) or len(set(labels)) != len(labels):
        raise ValueError(f"field 'choices': need 2-{len(LETTERS)} distinct labels, one per text")
    key = str(row["answerKey"]).strip()
    if key not in labels:
        raise ValueError(f"field 'answerKey': {key!r} is not one of the labels {labels}")
    lines = [question, *(f"({LETTERS[i]}) {str(text).strip()}" for i, text in enumerate(texts))]
    return Problem(
        id=text_field(row, "id"),
        question="\n".join(lines) + "\n\n" + INSTRUCTION,
        answer=LETTERS[labels.index(key)],
        info={"labels": labels},
    )


def extract_answer(text: str) -> str | None:
    """The letter of the last "Final answer: (X)", else of a `# Answer` block that is just a letter."""
    matches = list(_FINAL.finditer(text))
    if matches:
        return next(g for g in matches[-1].groups() if g).upper()
    _, block = split_response(text)
    m = _BLOCK.fullmatch(block.strip()) if block is not None else None
    return m[1] if m else None


def is_correct(text: str, problem: Problem) -> bool:
    """The chosen letter is the key's letter. Never raises."""
    return extract_answer(text) == problem.answer
