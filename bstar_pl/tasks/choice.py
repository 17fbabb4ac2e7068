"""Multiple-choice answers: the letter a response chose, in the forms models write it ("Final answer:
(C)", "The answer is B", "C. it can't be A or D", "(B) Marcus", `\\boxed{D}`), for any lettered task.
"""

from __future__ import annotations

import re

from bstar_pl.prompt import split_response
from bstar_pl.tasks.final_answer import last_boxed

# A chosen letter: (C), [C], **C**, \text{C} or C alone. A bare letter must be a capital not followed by
# a letter, so that "Final answer: a dry palm" is no "A" and "Dry palms" no "D".
_LETTER = (
    r"(?:\(\s*([A-Ha-h])\s*\)|\[\s*([A-Ha-h])\s*\]|\*\*\(?([A-H])\)?\*\*"
    r"|\\(?:text|textbf|mathrm)\{\s*\(?([A-H])\)?\s*\}|\b([A-H])(?![A-Za-z'’]))"
)
# Statements of the choice; the last one wins: "Final answer: (C)", "final answer D", "The (correct)
# answer is B", "the best option is (A)", "Answer: C", "The answer is option C".
_STATED = re.compile(
    r"(?i:final\s+answer(?:\s+is)?(?:\s*\*\*)?\s*:?|(?:answer|option|choice)\s+(?:is|would\s+be)\s*:?"
    r"|answer(?:\s*\*\*)?\s*:)\s*(?:\*\*)?\s*(?i:(?:option|choice)\s+)?" + _LETTER
)
# A response or an answer block that starts with its choice: "C. it can't be A or D", "(B) Marcus", "B".
_LEADING = re.compile(r"\s*(?:\*\*)?(?:\(([A-H])\)|([A-H])(?:[.):]|\*\*|\s*$|\s*\n))")
_LABELS = re.compile(r"^\s*(?:\(([A-H])\)|([A-H])[.)])", re.MULTILINE)  # lines that start with a choice label
_LONE = re.compile(r"\s*(?:\*\*)?(?:\\text\{)?\(?([A-H])\)?\}?(?:\*\*)?\.?\s*")


def letter(text: str) -> str | None:
    """The chosen letter (upper case), from the first of these that gives one: the last statement of
    the choice; a `# Answer` block that starts with a letter; the last `\\boxed{}` holding one; a response
    that starts with its letter; a last line that is a lone letter. None if none does: "I think it is
    B." states no choice."""
    matches = list(_STATED.finditer(text))
    if matches:
        return next(g for g in matches[-1].groups() if g).upper()
    _, block = split_response(text)
    lines = text.strip().rsplit("\n", 1)
    # A response that starts by listing the choices ("(A) the Moon\n(B) Mars") has not chosen one.
    listing = len({m[1] or m[2] for m in _LABELS.finditer(text)}) > 1
    for candidate, pattern in (
        (block, _LEADING),
        (last_boxed(text), _LONE),
        (None if listing else text, _LEADING),
        (lines[-1] if len(lines) > 1 else None, _LONE),
    ):
        if candidate is None:
            continue
        m = pattern.match(candidate) if pattern is _LEADING else pattern.fullmatch(candidate)
        if m:
            return next(g for g in m.groups() if g)
    return None
