"""The B-STaR text format: the policy prompt, steps separated by a blank line, a final answer block; and its
token ids, which training, sampling and the PRM build with the same two functions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

PROMPT = "# Question\n\n{question}\n\n# Solution\n\n"
STEP_SEPARATOR = "\n\n"
ANSWER_HEADER = "# Answer"
INSTRUCTION = (
    "Solve the following problem step by step. Put each step in its own paragraph, separated by a blank line. "
    "End with a line '# Answer', a blank line, and the final answer alone (a number or expression)."
)


@dataclass(frozen=True)
class PromptFormat:
    """How a question becomes the policy's prompt; training, sampling and the PRM must use the same one.

    `chat: false` (base and SFT models): the B-STaR prompt above as plain text, tokenised with the
    tokenizer's default special tokens. `chat: true` (instruct models): the tokenizer's own chat template
    with an optional `system` message and a user message of `instruction` and the question, ending in the
    assistant's header. Either way the response follows in B-STaR format and ends with EOS, which for a
    chat model is its end-of-turn token.
    """

    chat: bool = False
    system: str | None = None
    instruction: str = INSTRUCTION

    def messages(self, question: str) -> list[dict[str, str]]:
        """The chat messages of one question (chat mode)."""
        user = f"{self.instruction}\n\n{question}" if self.instruction else question
        return [
            *([{"role": "system", "content": self.system}] if self.system else []),
            {"role": "user", "content": user},
        ]


PLAIN = PromptFormat()


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


def prompt_ids(tokenizer: PreTrainedTokenizerBase, query: str, fmt: PromptFormat = PLAIN) -> list[int]:
    """Token ids of the policy prompt, the same for training, sampling and the PRM: the plain B-STaR prompt
    with default special tokens, or the tokenizer's chat template rendered and tokenised as it stands."""
    if not fmt.chat:
        return tokenizer(prompt(query)).input_ids
    if not tokenizer.chat_template:
        raise ValueError(f"prompt.chat is set but {tokenizer.name_or_path} has no chat template")
    text = tokenizer.apply_chat_template(fmt.messages(query), add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False).input_ids


def target_ids(tokenizer: PreTrainedTokenizerBase, output: str) -> list[int]:
    """Token ids of a response followed by EOS, the token the engine stops on."""
    return [*tokenizer(output, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
