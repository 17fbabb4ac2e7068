"""The B-STaR text format: the policy prompt, steps separated by a blank line, a final answer block."""

from __future__ import annotations

PROMPT = "# Question\n\n{question}\n\n# Solution\n\n"
STEP_SEPARATOR = "\n\n"
ANSWER_HEADER = "# Answer"


def prompt(question: str) -> str:
    """The policy prompt for one question (the reference's "metamath" template)."""
    return PROMPT.format(question=question)


def solution(steps: list[str], answer: str) -> str:
    """A response in B-STaR format: one step per block, then `# Answer` and the answer."""
    return STEP_SEPARATOR.join([*steps, ANSWER_HEADER, answer])


def split_response(text: str) -> tuple[list[str], str | None]:
    """Split a response into its steps and its answer (None when there is no answer block)."""
    blocks = text.split(STEP_SEPARATOR)
    for i, block in enumerate(blocks):
        if block.strip() == ANSWER_HEADER:
            answer = STEP_SEPARATOR.join(blocks[i + 1 :]).strip()
            return blocks[:i], answer or None
    return blocks, None
