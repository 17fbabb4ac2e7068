"""prm_data.py: prm-v4 and Math-Shepherd rows in, one clear `path:line:` error per malformed row, token weights out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from bstar_pl.prm.alignment import encode_steps
from bstar_pl.prm.data import collate_prm, encode_prm
from bstar_pl.prm.module import step_loss
from bstar_pl.prm.rows import from_shepherd, read_prm, write_prm
from bstar_pl.records import PRMExample, RecordError

GOOD = {"input": "What is 1 + 2 + 4?", "output": ["1 + 2 = 3", "3 + 4 = 8\n\n# Answer\n\n8"], "label": [1, 0]}
QUESTION = "Tom has 3 apples and buys 4 more. How many does he have?"
SHEPHERD = {
    "input": f"{QUESTION} Step 1: He has 3 + 4 = 7 apples. ки\nStep 2: He eats one. The answer is: 6 ки",
    "label": f"{QUESTION} Step 1: He has 3 + 4 = 7 apples. +\nStep 2: He eats one. The answer is: 6 -",
    "task": "GSM8K",
}


def write_rows(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_prm_v4_round_trip_writes_integer_labels(tmp_path: Path) -> None:
    examples = [PRMExample(**GOOD), PRMExample(input="q", output=["a"], label=[1.0])]
    path = tmp_path / "prm.jsonl"
    assert write_prm(path, examples) == 2
    assert json.loads(path.read_text().splitlines()[0])["label"] == [1, 0]  # as the reference's reader parses them
    assert read_prm(path) == examples


def test_math_shepherd_rows_read_as_they_are(tmp_path: Path) -> None:
    expected = PRMExample(
        input=QUESTION,
        output=["Step 1: He has 3 + 4 = 7 apples.", "Step 2: He eats one. The answer is: 6"],
        label=[1, 0],
    )
    assert from_shepherd(SHEPHERD) == expected
    assert read_prm(write_rows(tmp_path / "shepherd.jsonl", [SHEPHERD, GOOD])) == [expected, PRMExample(**GOOD)]


def test_soft_labels_need_the_flag(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "soft.jsonl", [{**GOOD, "label": [0.75, 0]}])
    assert read_prm(path, soft_labels=True)[0].label == [0.75, 0.0]
    with pytest.raises(RecordError, match=r"soft\.jsonl:1: field 'label\[0\]': expected 0 or 1, got 0\.75"):
        read_prm(path)


SHEPHERD_LABEL = SHEPHERD["label"]
BAD_ROWS = {
    "fewer labels than steps": ({**GOOD, "label": [1]}, "non-empty lists of one length, got 2 steps and 1 labels"),
    "more labels than steps": ({**GOOD, "label": [1, 0, 1]}, "got 2 steps and 3 labels"),
    "no steps": ({**GOOD, "output": [], "label": []}, "got 0 steps and 0 labels"),
    "label out of range": ({**GOOD, "label": [1, 2]}, r"field 'label\[1\]': expected a number in \[0, 1\], got 2"),
    "negative label": ({**GOOD, "label": [-1, 0]}, r"field 'label\[0\]': expected a number in \[0, 1\], got -1"),
    "label as text": ({**GOOD, "label": [1, "0"]}, r"field 'label\[1\]': expected float, got string"),
    "label as boolean": ({**GOOD, "label": [True, False]}, r"field 'label\[0\]': expected float, got boolean"),
    "steps not a list": ({**GOOD, "output": "1 + 2 = 3"}, "field 'output': expected a list, got string"),
    "no question": ({**GOOD, "input": " "}, "field 'input' is empty"),
    "shepherd: bad mark": (
        {**SHEPHERD, "label": SHEPHERD_LABEL.replace("apples. +", "apples. ?")},
        "expected '\\+' or '-' at step tag 1",
    ),
    "shepherd: texts differ": (
        {**SHEPHERD, "label": SHEPHERD_LABEL.replace("eats", "ate")},
        "differ after step tag 1",
    ),
    "shepherd: no first step": (
        {
            **SHEPHERD,
            "input": SHEPHERD["input"].replace("Step 1", "First"),
            "label": SHEPHERD_LABEL.replace("Step 1", "First"),
        },
        "no 'Step 1:'",
    ),
}


@pytest.mark.parametrize("case", BAD_ROWS, ids=list(BAD_ROWS))
def test_malformed_rows_fail_with_path_and_line(tmp_path: Path, case: str) -> None:
    row, message = BAD_ROWS[case]
    path = write_rows(tmp_path / "prm.jsonl", [GOOD, row])
    with pytest.raises(RecordError, match=f"^{path}:2: .*{message}"):
        read_prm(path)


def test_bad_json_and_json_lists(tmp_path: Path) -> None:
    path = tmp_path / "prm.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + '{"input": ' + "\n")
    with pytest.raises(RecordError, match=f"^{path}:3: bad JSON"):
        read_prm(path)
    listed = tmp_path / "prm.json"
    listed.write_text(json.dumps([GOOD, {**GOOD, "label": [1]}]))
    with pytest.raises(RecordError, match=rf"^{listed}: item 1: "):
        read_prm(listed)


def test_every_step_token_carries_its_label_and_nothing_else_weighs(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    example = PRMExample(**GOOD)
    st = encode_steps(tokenizer, example.input, example.output)
    enc = encode_prm(tokenizer, example, 64, 64, "all")
    n = len(enc.input_ids)
    assert enc.input_ids == st.input_ids
    assert enc.weights == [0.0] * st.prompt_len + [1.0] * (n - st.prompt_len - 1) + [0.0]  # not the prompt, not EOS
    first, second = st.prompt_len + len("1 + 2 = 3") - 2, st.ends[1]  # a token inside each step (digits split)
    assert enc.labels[first] == 1.0 and enc.labels[second] == 0.0 and enc.labels[st.ends[0]] == 1.0
    end = encode_prm(tokenizer, example, 64, 64, "end")
    assert [i for i, w in enumerate(end.weights) if w] == st.ends
    cut = encode_prm(tokenizer, example, 4, 6, "all")
    assert len(cut.input_ids) == 10 and cut.prompt_cut and cut.target_cut
    assert cut.input_ids == st.input_ids[st.prompt_len - 4 : st.prompt_len + 6]


def test_padding_and_prompt_never_reach_the_loss(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    short = PRMExample(input="What is 1 + 2?", output=["1 + 2 = 3\n\n# Answer\n\n3"], label=[1])
    batch = collate_prm([encode_prm(tokenizer, PRMExample(**GOOD), 64, 64), encode_prm(tokenizer, short, 64, 64)], 0)
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()  # row 1 is padded
    logits = torch.randn(batch["input_ids"].shape, requires_grad=True)
    step_loss(logits, batch["labels"], batch["weights"]).backward()
    assert (logits.grad != 0).equal(batch["weights"] > 0)


def test_unalignable_response_is_dropped(tiny_model_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    empty_final = PRMExample(input="What is 1 + 2?", output=["1 + 2 = 3", ""], label=[1, 0])
    assert encode_prm(tokenizer, empty_final, 64, 64) is None
