"""The tiny model kit: the directory is a real HF checkpoint that transformers and vLLM load and run."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bstar_pl.models.tiny import Shape, build_model, make_tiny
from bstar_pl.prompt import prompt
from bstar_pl.tasks import arithmetic


def test_tokenizer_round_trips_the_format_exactly(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    assert len(tokenizer) == 64 and tokenizer.pad_token_id != tokenizer.eos_token_id
    spec = arithmetic.ArithmeticSpec(min_terms=2, max_terms=6, max_operand=99, operators="+-*")
    for p in arithmetic.generate("test", 50, spec, seed=5):
        text = prompt(p.question) + p.solution
        ids = tokenizer(text).input_ids
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
        # Prompt and target tokenised apart concatenate to the same ids: the "\n\n" boundary is clean.
        apart = tokenizer(prompt(p.question)).input_ids + tokenizer(p.solution, add_special_tokens=False).input_ids
        assert apart == ids


def test_transformers_loads_and_generates(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert 0.9e6 < sum(p.numel() for p in model.parameters()) < 1.2e6
    ids = torch.tensor([tokenizer(prompt("What is 1 + 2?")).input_ids])
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 8)


def test_same_seed_same_weights_and_different_seed_different_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    a = make_tiny(tmp_path / "a", shape=Shape(layers=2))
    b = make_tiny(tmp_path / "b", shape=Shape(layers=2), seed=1)
    assert (a / "tokenizer.json").read_bytes() == (tiny_model_dir / "tokenizer.json").read_bytes()
    wa = AutoModelForCausalLM.from_pretrained(a).state_dict()
    wb = AutoModelForCausalLM.from_pretrained(b).state_dict()
    assert wa.keys() == wb.keys() and not torch.equal(wa["lm_head.weight"], wb["lm_head.weight"])
    again = AutoModelForCausalLM.from_pretrained(make_tiny(tmp_path / "a2", shape=Shape(layers=2))).state_dict()
    assert all(torch.equal(wa[k], again[k]) for k in wa)


def test_head_dimension_below_what_vllm_cpu_supports_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="head dimension >= 32"):
        build_model(tmp_path, AutoTokenizer.from_pretrained(tiny_model_dir), Shape(hidden=64, heads=4))


@pytest.mark.engine
def test_vllm_engine_samples_several_at_two_temperatures_in_one_call(tiny_model_dir: Path) -> None:
    from vllm import LLM, SamplingParams

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    llm = LLM(model=str(tiny_model_dir), dtype="float32", enforce_eager=True, max_model_len=256, seed=0)
    try:
        ids = tokenizer(prompt("What is 3 + 4?")).input_ids
        params = [SamplingParams(n=4, temperature=t, max_tokens=24, seed=i) for i, t in enumerate((0.3, 1.2))]
        outputs = llm.generate([{"prompt_token_ids": ids}] * 2, params, use_tqdm=False)
    finally:
        del llm
        gc.collect()
    assert [len(o.outputs) for o in outputs] == [4, 4]
    for o in outputs:
        for c in o.outputs:
            assert 0 < len(c.token_ids) <= 24 and c.finish_reason in ("stop", "length")
            assert c.text == tokenizer.decode(c.token_ids, skip_special_tokens=True)
    # A random model at temperature 1.2 does not repeat itself.
    assert len({c.text for c in outputs[1].outputs}) > 1
