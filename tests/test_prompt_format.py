"""Prompt formats: the plain B-STaR prompt and an instruct model's chat template, alike for SFT, sampling
and the PRM; a chat format without a chat template fails clearly."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from bstar_pl.config import Config, Data, check
from bstar_pl.prm.alignment import encode_steps, prm_steps
from bstar_pl.prompt import PLAIN, PromptFormat, prompt, prompt_ids
from bstar_pl.records import SFTExample
from bstar_pl.settings import ConfigError, has_chat_template
from bstar_pl.train.data import IGNORE, encode

CHATML = (
    "{% for m in messages %}{{ '<s>' + m['role'] + '\\n' + m['content'] + '</s>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<s>assistant\\n' }}{% endif %}"
)
QUESTION = "What is 1 + 2 + 4?"
RESPONSE = "1 + 2 = 3\n\n3 + 4 = 7\n\n# Answer\n\n7"


@pytest.fixture(scope="module")
def chat_model_dir(bpe_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The BPE tiny model with a ChatML-like chat template (BPE merges may cross the template's newlines)."""
    out = tmp_path_factory.mktemp("chat") / "model"
    shutil.copytree(bpe_model_dir, out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(out)
    return out


def test_chat_prompt_is_the_rendered_template(chat_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(chat_model_dir)
    fmt = PromptFormat(chat=True, system="Be brief.", instruction="Solve it.")
    expected = "<s>system\nBe brief.</s>\n<s>user\nSolve it.\n\nWhat is 1 + 2 + 4?</s>\n<s>assistant\n"
    ids = prompt_ids(tokenizer, QUESTION, fmt)
    assert tokenizer.decode(ids) == expected
    assert ids == tokenizer(expected, add_special_tokens=False).input_ids  # no second BOS
    assert tokenizer.decode(prompt_ids(tokenizer, QUESTION, PromptFormat(chat=True, instruction=""))).startswith(
        "<s>user\nWhat is"
    )
    assert prompt_ids(tokenizer, QUESTION) == tokenizer(prompt(QUESTION)).input_ids  # plain stays plain


def test_sft_and_prm_encode_the_chat_prompt_the_sampler_sends(chat_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(chat_model_dir)
    fmt = PromptFormat(chat=True)
    p = prompt_ids(tokenizer, QUESTION, fmt)
    enc = encode(tokenizer, SFTExample(QUESTION, RESPONSE), 512, 512, fmt)
    assert enc.input_ids[: len(p)] == p and enc.labels[: len(p)] == [IGNORE] * len(p)
    assert enc.labels[len(p) :] == enc.input_ids[len(p) :] and enc.input_ids[-1] == tokenizer.eos_token_id
    st = encode_steps(tokenizer, QUESTION, prm_steps(RESPONSE), fmt)
    assert st.input_ids == enc.input_ids and st.prompt_len == len(p) and st.ends is not None and len(st.ends) == 2


def test_chat_without_a_template_fails_clearly(bpe_model_dir: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(bpe_model_dir)
    with pytest.raises(ValueError, match="no chat template"):
        prompt_ids(tokenizer, QUESTION, PromptFormat(chat=True))
    assert not has_chat_template(bpe_model_dir)
    pool = tmp_path / "pool.jsonl"
    pool.write_text('{"id": "a", "question": "What is 1 + 1?", "answer": "2"}\n')
    cfg = Config(policy=bpe_model_dir, data=Data(task="arithmetic", pool=pool))
    cfg.prompt = PromptFormat(chat=True)
    with pytest.raises(ConfigError, match=r"prompt\.chat"):
        check(cfg)
    cfg.prompt = PLAIN
    check(cfg)


def test_chat_template_is_found_in_either_place(chat_model_dir: Path) -> None:
    assert has_chat_template(chat_model_dir)
