"""ARC-Challenge: lettered prompts, "Final answer: (X)" extraction, numeric answer keys mapped to letters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bstar_pl.records import Problem, RecordError
from bstar_pl.tasks import arc

ROW = {
    "id": "Q1",
    "question": "Which is a planet?",
    "choices": {"text": ["the Moon", "Mars", "the Sun", "Halley's comet"], "label": ["1", "2", "3", "4"]},
    "answerKey": "2",
}


def test_prompt_letters_the_choices_and_maps_a_numeric_key() -> None:
    (p,) = arc.load([ROW])
    assert p.id == "Q1" and p.answer == "B" and p.info == {"labels": ["1", "2", "3", "4"]}
    assert p.question.startswith("Which is a planet?\n(A) the Moon\n(B) Mars\n(C) the Sun\n(D) Halley's comet\n\n")
    assert p.question.endswith(arc.INSTRUCTION) and "Final answer: (X)" in p.question
    assert arc.is_correct("Mars orbits the Sun.\nFinal answer: (B)", p)
    assert not arc.is_correct("Final answer: (2)", p)  # the policy sees letters, so it answers with one


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("Mars is a planet.\nFinal answer: (B)", "B"),
        ("Final answer: [c]", "C"),
        ("Final Answer: D.", "D"),
        ("The final answer is (A)", "A"),
        ("Final answer: (A)\nOn reflection...\nFinal answer: (C)", "C"),  # the last one
        ("Final answer: a dry palm", None),  # a word, not a letter
        ("Final answer: Dry palms", None),  # the reference read this as "D"
        ("Final answer: (Z)", None),
        ("Steps.\n\n# Answer\n\n(B)", "B"),  # B-STaR format
        ("Steps.\n\n# Answer\n\nC", "C"),
        ("Steps.\n\n# Answer\n\nMars", None),
        ("", None),
        ("I think it is B.", None),  # no statement of a choice
        # the forms real models use
        ("The answer is B", "B"),
        ("Final answer is D", "D"),
        ("I think the correct answer is A", "A"),
        ("The answer is option C.", "C"),
        ("**Answer:** (A) evaporation", "A"),
        ("The best choice is $\\boxed{D}$.", "D"),
        ("C. it can't be A or D", "C"),  # a response that starts with its choice
        ("(B) Marcus", "B"),
        ("B\n\nPlants need light.", "B"),
        ("Reasoning first.\n\n**C**", "C"),  # a last line that is a lone letter
        ("(A) the Moon\n(B) Mars\nMars is a planet.", None),  # the choices listed, none chosen
        ("A plant needs light.", None),  # an article, not a choice
    ],
)
def test_extract_answer(text: str, letter: str | None) -> None:
    assert arc.extract_answer(text) == letter


@pytest.mark.parametrize("name", ["arc_challenge_test", "arc_challenge_train"])
def test_real_files_load_and_every_key_is_gradable(shared_data: Path, name: str) -> None:
    path = shared_data / f"{name}.jsonl"
    rows = [json.loads(line) for line in path.open()]
    problems = arc.load(path)
    assert len(problems) == len(rows) == len({p.id for p in problems}) == {"test": 1172, "train": 1119}[name[14:]]
    numeric = [(row, p) for row, p in zip(rows, problems) if row["answerKey"].isdigit()]
    assert len(numeric) == {"test": 22, "train": 23}[name[14:]]
    for row, p in numeric:
        assert p.answer == "ABCDE"[int(row["answerKey"]) - 1]  # the keys 1-4 label choices in order
    for row, p in zip(rows, problems):
        labels = row["choices"]["label"]
        assert p.answer == "ABCDEFGH"[labels.index(row["answerKey"])]
        assert f"({p.answer}) {row['choices']['text'][labels.index(row['answerKey'])].strip()}" in p.question
        assert arc.is_correct(f"Reasoning.\nFinal answer: ({p.answer})", p)
        assert not arc.is_correct(f"Reasoning.\nFinal answer: ({'B' if p.answer == 'A' else 'A'})", p)
    if name == "arc_challenge_test":
        assert (problems[0].id, problems[-1].id) == ("Mercury_7175875", "MEA_2013_8_15")


def test_bad_rows_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "arc.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + json.dumps({**ROW, "id": "Q2", "answerKey": "E"}) + "\n")
    with pytest.raises(RecordError, match=r"arc\.jsonl:2: field 'answerKey': 'E' is not one of the labels"):
        arc.load(path)
    with pytest.raises(RecordError, match=r"dataset row 0: field 'choices': need 2-8 distinct labels"):
        arc.load([{**ROW, "choices": {"text": ["x"], "label": ["A"]}}])
    with pytest.raises(RecordError, match=r"dataset row 0: missing field 'answerKey'"):
        arc.load([{k: v for k, v in ROW.items() if k != "answerKey"}])


def test_is_correct_never_raises_on_odd_text() -> None:
    p = Problem(id="a", question="q", answer="C")
    for text in ["Final answer: (C" * 10000, "\x00" * 1000, "# Answer\n\n" * 1000, "Final answer:"]:
        assert arc.is_correct(text, p) in (True, False)
