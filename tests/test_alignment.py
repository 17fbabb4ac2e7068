"""steps.py: how a response splits into PRM steps and which token each step's score is read at."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from bstar_pl.prm.alignment import SEP, align, encode_steps, prm_steps
from bstar_pl.prompt import prompt_ids, target_ids

RESPONSE = "1 + 2 = 3\n\n3 + 4 = 7\n\n# Answer\n\n7"


@pytest.mark.parametrize(
    ("response", "steps"),
    [
        (RESPONSE, ["1 + 2 = 3", "3 + 4 = 7\n\n# Answer\n\n7"]),
        ("# Answer\n\n7", ["# Answer\n\n7"]),
        ("1 + 2 = 3\n\n3 + 4", ["1 + 2 = 3", "3 + 4"]),  # no answer block: every block is a step
        ("1 + 2 = 3\n\n# Answer\n\n# Answer\n\n3", ["1 + 2 = 3\n\n# Answer\n\n# Answer\n\n3"]),
        ("", [""]),
    ],
)
def test_steps_rejoin_to_the_response(response: str, steps: list[str]) -> None:
    assert prm_steps(response) == steps
    assert SEP.join(steps) == response


def test_score_positions_by_hand() -> None:
    """Offsets of a made-up tokenisation of RESPONSE, whose steps are "1 + 2 = 3" and the rest (with the answer)."""
    offsets = [
        (0, 1), (1, 3), (3, 5), (5, 8), (8, 9),  # "1", " +", " 2", " = ", "3"  -> tokens 0-4
        (9, 11),  # "\n\n" -> token 5: step 0's score token
        (11, 12), (12, 14), (14, 16), (16, 19), (19, 21),  # "3", " +", " 4", " = ", "7\n"  -> tokens 6-10
        (21, 22), (22, 30), (30, 32), (32, 33),  # "\n", "# Answer", "\n\n", "7" -> tokens 11-14: 14 is the last
    ]  # fmt: skip
    step_of, ends = align(offsets, prm_steps(RESPONSE))
    assert ends == [5, 14]
    assert step_of == [0] * 6 + [1] * 9
    # A token "3\n" holds the separator's first character: the score is read there, before the second "\n".
    step_of, ends = align([*offsets[:4], (8, 10), (10, 11), *offsets[6:]], prm_steps(RESPONSE))
    assert ends == [4, 14] and step_of == [0] * 6 + [1] * 9


@pytest.mark.parametrize(
    ("offsets", "why"),
    [
        ([(0, 1), (1, 3), (3, 5), (5, 8), (8, 9), (9, 12), (12, 33)], "separator merged with the next step"),
        ([], "no tokens"),
    ],
)
def test_unalignable_tokenisations_are_flagged(offsets: list[tuple[int, int]], why: str) -> None:
    assert align(offsets, prm_steps(RESPONSE))[1] is None, why


def test_empty_final_step_is_flagged() -> None:
    steps = prm_steps("1 + 2 = 3\n\n")  # stopped after a separator: the final step has no text
    assert align([(0, 9), (9, 10), (10, 11)], steps)[1] is None


def sentencepiece_case(tokenizer: PreTrainedTokenizerBase) -> None:
    question = "What is 1 + 2 + 4?"
    st = encode_steps(tokenizer, question, prm_steps(RESPONSE))
    # The same ids as SFT and the sampler use: prompt, then the response and EOS tokenised on their own.
    assert st.input_ids == prompt_ids(tokenizer, question) + target_ids(tokenizer, RESPONSE)
    tokens = tokenizer.convert_ids_to_tokens(st.input_ids)
    newline = [i for i, t in enumerate(tokens) if t == "\n" and i >= st.prompt_len]
    assert st.ends == [newline[0], len(st.input_ids) - 2]  # first "\n" of step 0's separator; the "7" before EOS
    assert tokens[st.ends[1]] == "7" and tokens[-1] == tokenizer.eos_token


def test_real_tokenizer_positions(tiny_model_dir: Path) -> None:
    sentencepiece_case(AutoTokenizer.from_pretrained(tiny_model_dir))


def test_byte_level_bpe_positions(bpe_model_dir: Path) -> None:
    """A byte-level BPE that merges "\\n\\n" into one token, and "\\n\\n# Answer\\n\\n" too."""
    tokenizer = AutoTokenizer.from_pretrained(bpe_model_dir)
    question = "What is 1 + 2 + 4?"
    st = encode_steps(tokenizer, question, prm_steps(RESPONSE))
    assert st.input_ids == prompt_ids(tokenizer, question) + target_ids(tokenizer, RESPONSE)
    pieces = [tokenizer.decode([i]) for i in st.input_ids]
    assert pieces[st.ends[0]].startswith("\n") and "3" not in pieces[st.ends[0]]
    assert pieces[st.ends[1]].endswith("7") and st.ends[1] == len(st.input_ids) - 2
    # A step that begins like the answer header merges into the separator's token: flagged, not guessed.
    merged = "1 + 2 = 3\n\n# Answers\n\n3 + 4 = 7"
    assert any("\n\n#" in p for p in (tokenizer.decode([i]) for i in tokenizer(merged).input_ids))
    assert not encode_steps(tokenizer, question, prm_steps(merged)).aligned
