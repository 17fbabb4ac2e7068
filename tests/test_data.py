"""SFT data: tokenisation and masking, truncation that keeps EOS, input formats, errors, length-grouped sharding."""

from __future__ import annotations

import json
import random
from pathlib import Path

import datasets
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from bstar_pl.prompt import prompt, prompt_ids
from bstar_pl.records import RecordError, Selected, SFTExample, load_examples, write_jsonl
from bstar_pl.tasks import arithmetic
from bstar_pl.train.batches import StepSampler, padding_waste, step_batches
from bstar_pl.train.data import IGNORE, encode


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_encode_masks_the_prompt_and_ends_with_eos(tokenizer: PreTrainedTokenizerBase) -> None:
    example = SFTExample("What is 2 + 3?", "2 + 3 = 5\n\n# Answer\n\n5")
    e = encode(tokenizer, example, 512, 512)
    p = prompt_ids(tokenizer, example.query)
    assert p == tokenizer(prompt(example.query)).input_ids
    assert e.input_ids[: len(p)] == p and e.labels[: len(p)] == [IGNORE] * len(p)
    assert e.labels[len(p) :] == e.input_ids[len(p) :]
    assert e.input_ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(e.input_ids[len(p) : -1]) == example.output
    assert not e.prompt_cut and not e.target_cut


def test_truncation_cuts_prompt_left_target_right_and_keeps_eos(tokenizer: PreTrainedTokenizerBase) -> None:
    example = SFTExample("What is 1 + 2 + 3 + 4 + 5?", "1 + 2 = 3\n\n3 + 3 = 6\n\n6 + 4 = 10\n\n# Answer\n\n15")
    full = encode(tokenizer, example, 512, 512)
    n_prompt = full.labels.count(IGNORE)
    e = encode(tokenizer, example, 8, 6)
    assert e.prompt_cut and e.target_cut
    assert e.input_ids[:8] == full.input_ids[n_prompt - 8 : n_prompt]  # the prompt's end survives
    assert e.input_ids[8:] == [*full.input_ids[n_prompt : n_prompt + 5], tokenizer.eos_token_id]
    assert e.labels == [IGNORE] * 8 + e.input_ids[8:]


def test_load_examples_from_every_format(tmp_path: Path) -> None:
    rows = [{"query": "What is 1 + 1?", "output": "1 + 1 = 2\n\n# Answer\n\n2"}, {"query": "q", "output": "o"}]
    want = [SFTExample(**r) for r in rows]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_jsonl(tmp_path / "selected.jsonl", [Selected("p1", r["query"], r["output"], 1.0) for r in rows])
    dataset = datasets.Dataset.from_list(rows)
    dataset.save_to_disk(str(tmp_path / "ds"))
    for source in ("a.json", "a.jsonl", "selected.jsonl", "ds"):
        assert load_examples(tmp_path / source) == want, source
    assert load_examples(dataset) == want


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("bad.jsonl", '{"query": "q", "output": "o"}\n{"query": "q"}\n', "bad.jsonl:2: missing field 'output'"),
        ("bad.jsonl", '{"query": "q", "output": "o"}\n\n{"query": "q", "output": 3}\n', "bad.jsonl:3: field 'output'"),
        ("bad.json", '[{"query": "q", "output": "o"}, {"query": "", "output": "o"}]', "bad.json[1]: field 'query'"),
        ("bad.json", '[{"query": "q",\n "output": }]', "bad.json:2: bad JSON"),
    ],
)
def test_malformed_rows_fail_naming_file_and_line(tmp_path: Path, name: str, text: str, where: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(RecordError, match=f"^{tmp_path}/{where}".replace("[", r"\[").replace("]", r"\]")):
        load_examples(tmp_path / name)


def test_ranks_see_what_accumulation_sees() -> None:
    """Two ranks × 1 micro-batch per step get the same examples as one rank accumulating 2."""
    lengths = [random.Random(i).randint(5, 50) for i in range(100)]
    args = {"lengths": lengths, "micro_batch_size": 4, "steps": 12, "seed": 3, "shuffle": True}
    one = list(StepSampler(num_replicas=1, rank=0, accumulate=2, **args))
    ranks = [list(StepSampler(num_replicas=2, rank=r, accumulate=1, **args)) for r in (0, 1)]
    assert len(one) == 24 and [len(b) for b in ranks] == [12, 12]
    assert one[0::2] == ranks[0] and one[1::2] == ranks[1]
    steps = [set(a) | set(b) for a, b in zip(*ranks)]
    assert all(len(s) == 8 for s in steps)  # ranks never share an example within a step


def test_a_stream_longer_than_the_data_uses_every_example_before_repeating() -> None:
    lengths = list(range(10, 47))  # 37 examples, 80 drawn: two full epochs and 6 of a third
    flat = [i for b in step_batches(lengths, step_size=8, n_steps=10, seed=0) for i in b]
    counts = sorted(flat.count(i) for i in range(37))
    assert counts == [2] * 31 + [3] * 6


def test_length_grouping_keeps_padding_waste_low(tokenizer: PreTrainedTokenizerBase) -> None:
    problems = arithmetic.generate("train", 512, arithmetic.ArithmeticSpec(min_terms=2, max_terms=6), seed=0)
    lengths = [len(encode(tokenizer, e, 512, 512).input_ids) for e in arithmetic.sft_examples(problems)]
    grouped = step_batches(lengths, step_size=16, n_steps=32, seed=0)
    shuffled = [list(range(i, i + 16)) for i in range(0, 512, 16)]
    grouped_waste = padding_waste([[lengths[i] for i in b] for b in grouped])
    shuffled_waste = padding_waste([[lengths[i] for i in b] for b in shuffled])
    assert grouped_waste < 0.05 < shuffled_waste, (grouped_waste, shuffled_waste)


def test_windows_of_a_stream_concatenate_to_the_stream() -> None:
    """Training a stream in fits of a few steps each (a checkpoint after each) sees the same batches."""
    lengths = [random.Random(i).randint(5, 50) for i in range(60)]
    args = {"lengths": lengths, "micro_batch_size": 4, "num_replicas": 1, "rank": 0, "accumulate": 1}
    whole = StepSampler(steps=10, seed=1, shuffle=True, **args)
    whole.set_epoch(3)  # a window ignores the epoch; the whole stream is epoch-dependent
    parts = []
    for start in range(0, 10, 4):
        part = StepSampler(steps=10, seed=1, shuffle=True, window=(start, min(start + 4, 10)), **args)
        part.set_epoch(start)
        parts += list(part)
    whole.set_epoch(0)
    assert parts == list(whole) and len(parts) == 10
    with pytest.raises(ValueError, match="window"):
        StepSampler(steps=10, seed=1, shuffle=True, window=(8, 12), **args)


def test_length_group_one_leaves_batches_random() -> None:
    """length_group=1 draws batches as random as a plain shuffle: lengths are not sorted together."""
    lengths = [10] * 256 + [50] * 256  # two kinds of example, told apart by length
    mixed = {}
    for group in (1, 64):
        sampler = StepSampler(lengths, 16, 1, 0, 1, 16, seed=0, shuffle=True, group=group)
        mixed[group] = sum(len({lengths[i] for i in batch}) == 2 for batch in sampler.step_batches())
    assert mixed[1] >= 14 and mixed[64] <= 1, mixed  # sorted together, only the batch at the boundary mixes
