"""PRM steps of a response and the tokens their scores are read at, for any fast HF tokenizer (BPE too).

A response's steps are its blank-line-separated blocks with the answer block (`# Answer` and what follows) joined
to the last step, so `"\\n\\n".join(steps) == response`. A step's score is read at the token holding the first
character of the "\\n\\n" that ends it; the final step's (the one carrying the answer) at the last response token.
Token ids are the policy's own: `prompt_ids(question) + target_ids(response)`, as SFT and the engine build them.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from transformers import PreTrainedTokenizerBase

from bstar_pl.prompt import ANSWER_HEADER, PLAIN, STEP_SEPARATOR, PromptFormat, prompt_ids

SEP = STEP_SEPARATOR


def prm_steps(response: str) -> list[str]:
    """The PRM steps of a response: its blocks, the answer block joined to the step before it.

    A response without an answer block (e.g. cut by the length limit) is all steps; one that starts with the
    answer block is one step.
    """
    blocks = response.split(SEP)
    for i, block in enumerate(blocks):
        if block.strip() == ANSWER_HEADER:
            return [*blocks[: max(i - 1, 0)], SEP.join(blocks[max(i - 1, 0) :])]
    return blocks


@dataclass(frozen=True)
class StepTokens:
    """A (question, steps) pair as token ids, with where each step's tokens lie and where its score is read.

    `input_ids` is prompt + response + EOS. `step_of[i]` is the step of response token i (index into the response
    tokens, EOS excluded). `ends[j]` is the absolute position of step j's score token; None when the response
    cannot be aligned (see `align`).
    """

    input_ids: list[int]
    prompt_len: int
    step_of: list[int]
    ends: list[int] | None

    @property
    def aligned(self) -> bool:
        return self.ends is not None


def encode_steps(
    tokenizer: PreTrainedTokenizerBase, question: str, steps: Sequence[str], fmt: PromptFormat = PLAIN
) -> StepTokens:
    """Tokenise prompt and response as data.py does and align the response's tokens with its steps."""
    response = SEP.join(steps)
    try:
        enc = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        raise ValueError(
            f"{type(tokenizer).__name__} gives no offset mapping; the PRM needs a fast tokenizer"
        ) from None
    prompt = prompt_ids(tokenizer, question, fmt)
    step_of, ends = align([tuple(o) for o in enc.offset_mapping], steps)
    ids = [*prompt, *enc.input_ids, tokenizer.eos_token_id]
    return StepTokens(ids, len(prompt), step_of, None if ends is None else [len(prompt) + e for e in ends])


def align(offsets: Sequence[tuple[int, int]], steps: Sequence[str]) -> tuple[list[int], list[int] | None]:
    """Per token (character offsets into `SEP.join(steps)`) its step, and per step the index of its score token.

    Step j's characters, its separator included, are [start_j, start_{j+1}); a token belongs to the step its first
    character lies in. The score token of a non-final step is the first token reaching the separator's first
    character; it must not reach past the separator, or the score would see the next step. The final step's is
    the last token, which must reach into that step. Where any of this fails (a token merging a separator with the
    next step's text, an empty final step, no tokens at all), the ends are None: the caller flags the response.
    """
    starts = [0]
    for step in steps[:-1]:
        starts.append(starts[-1] + len(step) + len(SEP))
    step_of = [max(bisect_right(starts, a) - 1, 0) for a, _ in offsets]
    ends: list[int] = []
    i = 0
    for s in (start - len(SEP) for start in starts[1:]):
        while i < len(offsets) and offsets[i][1] <= s:
            i += 1
        if i == len(offsets) or offsets[i][0] > s or offsets[i][1] > s + len(SEP):
            return step_of, None
        ends.append(i)
    if not offsets or offsets[-1][1] <= starts[-1]:
        return step_of, None
    ends.append(len(offsets) - 1)
    if any(b <= a for a, b in pairwise(ends)):  # offsets out of order
        return step_of, None
    return step_of, ends
