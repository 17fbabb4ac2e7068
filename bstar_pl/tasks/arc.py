"""ARC-Challenge: multiple-choice science questions; the reward is the chosen letter matching the key.

Rows follow `allenai/ai2_arc`: `{id, question, choices: {text, label}, answerKey}`. Choices are shown
as (A), (B), ... by position, and the key is mapped to the letter at its position, so the 22 test
items labelled 1-4 are graded like the rest (the reference compared "3" with a letter: always wrong).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bstar_pl.records import Problem
from bstar_pl.tasks import choice
from bstar_pl.tasks.loading import Source, load_problems, text_field

LETTERS = "ABCDEFGH"
INSTRUCTION = 'Reason step by step, then end with "Final answer: (X)", where X is the letter of the correct choice.'


check_steps = None  # a right answer's steps cannot be verified here (the PRM judges them)


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
    """The chosen letter, in the forms models write it (see `choice.letter`), else None."""
    return choice.letter(text)


def is_correct(text: str, problem: Problem) -> bool:
    """The chosen letter is the key's letter. Never raises."""
    return extract_answer(text) == problem.answer
