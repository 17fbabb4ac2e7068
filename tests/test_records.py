"""records.py: round trip, atomic writes, and one clear `path:line:` error per kind of malformed row."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bstar_pl.atomic import atomic_path
from bstar_pl.records import Problem, RecordError, Sample, Scored, Selected, SFTExample, read_jsonl, write_jsonl

SAMPLE = {
    "problem_id": "p1",
    "temperature": 0.7,
    "index": 0,
    "text": "1 + 2 = 3",
    "n_tokens": 9,
    "finish_reason": "stop",
}


def test_round_trip_every_record(tmp_path: Path) -> None:
    sample = Sample(**SAMPLE)
    cases = {
        Problem: [Problem(id="p1", question="What is 1 + 2?", answer="3", solution="1 + 2 = 3\n\n# Answer\n\n3")],
        Sample: [sample, Sample(**{**SAMPLE, "index": 1, "text": "", "finish_reason": "length"})],
        Scored: [Scored(sample=sample, correct=True, reward=1.1, step_scores=[0.5, 0.9])],
        Selected: [Selected(problem_id="p1", query="What is 1 + 2?", output="1 + 2 = 3", reward=1.0)],
        SFTExample: [SFTExample(query="q", output="o")],
    }
    for cls, records in cases.items():
        path = tmp_path / f"{cls.__name__}.jsonl"
        assert write_jsonl(path, records) == len(records)
        assert read_jsonl(path, cls) == records
    assert read_jsonl(tmp_path / "Sample.jsonl", Sample)[1].truncated


def test_float_field_takes_json_integer(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps({**SAMPLE, "temperature": 1}) + "\n\n")  # and a blank line is skipped
    (sample,) = read_jsonl(path, Sample)
    assert sample.temperature == 1.0 and isinstance(sample.temperature, float)


def test_narrow_view_ignores_extra_fields(tmp_path: Path) -> None:
    path = tmp_path / "selected.jsonl"
    write_jsonl(path, [Selected(problem_id="p", query="q", output="o", reward=1.0)])
    assert read_jsonl(path, SFTExample, ignore_unknown=True) == [SFTExample(query="q", output="o")]
    with pytest.raises(RecordError, match="unknown field 'problem_id'"):
        read_jsonl(path, SFTExample)


BAD_ROWS = {
    "bad JSON": ('{"id": "p1", "question": ', "bad JSON"),
    "not an object": ("[1, 2]", "expected a JSON object, got array"),
    "missing field": ('{"id": "p1", "question": "q"}', "missing field 'answer'"),
    "wrong type": ('{"id": "p1", "question": "q", "answer": 3}', "field 'answer': expected str, got number"),
    "null": ('{"id": "p1", "question": null, "answer": "3"}', "field 'question': expected str, got null"),
    "empty text": ('{"id": "p1", "question": "  ", "answer": "3"}', "field 'question' is empty"),
    "unknown field": ('{"id": "p1", "question": "q", "answer": "3", "anwser": "3"}', "unknown field 'anwser'"),
}


@pytest.mark.parametrize("case", BAD_ROWS)
def test_malformed_problem_row_names_file_and_line(tmp_path: Path, case: str) -> None:
    row, what = BAD_ROWS[case]
    path = tmp_path / "problems.jsonl"
    good = json.dumps({"id": "p0", "question": "q", "answer": "1"})
    path.write_text(f"{good}\n{good}\n{row}\n")
    with pytest.raises(RecordError) as info:
        read_jsonl(path, Problem)
    message = str(info.value)
    assert message.startswith(f"{path}:3: ") and what in message
    assert "\n" not in message


BAD_SAMPLES = {
    "bool is not an int": ({"index": True}, "field 'index': expected int, got boolean"),
    "unknown finish reason": ({"finish_reason": "abort"}, "field 'finish_reason': expected one of"),
    "negative count": ({"n_tokens": -1}, "must not be negative"),
}


@pytest.mark.parametrize("case", BAD_SAMPLES)
def test_malformed_sample_row(tmp_path: Path, case: str) -> None:
    change, what = BAD_SAMPLES[case]
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps({**SAMPLE, **change}) + "\n")
    with pytest.raises(RecordError, match=rf"^{path}:1: .*{what}"):
        read_jsonl(path, Sample)


def test_nested_and_list_fields_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "scored.jsonl"
    path.write_text(json.dumps({"sample": {**SAMPLE, "text": 5}, "correct": True, "reward": 1.0}) + "\n")
    with pytest.raises(RecordError, match=r":1: field 'sample.text': expected str"):
        read_jsonl(path, Scored)
    path.write_text(json.dumps({"sample": SAMPLE, "correct": True, "reward": 1.0, "step_scores": [0.1, "x"]}) + "\n")
    with pytest.raises(RecordError, match=r":1: field 'step_scores\[1\]': expected float, got string"):
        read_jsonl(path, Scored)


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match=r"nope.jsonl: no such file"):
        read_jsonl(tmp_path / "nope.jsonl", Problem)
    (tmp_path / "bin.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(RecordError, match=r"bin.jsonl: not UTF-8"):
        read_jsonl(tmp_path / "bin.jsonl", Problem)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "problems.jsonl"
    old = [Problem(id="p1", question="q", answer="1")]
    write_jsonl(path, old)

    def records() -> object:
        yield Problem(id="p2", question="q", answer="2")
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(path, records())
    assert read_jsonl(path, Problem) == old
    assert os.listdir(tmp_path) == ["problems.jsonl"]


def test_atomic_directory_replaces_only_when_complete(tmp_path: Path) -> None:
    out = tmp_path / "policy"
    with atomic_path(out, directory=True) as tmp:
        (tmp / "config.json").write_text("{}")
    with pytest.raises(RuntimeError), atomic_path(out, directory=True) as tmp:
        (tmp / "half.bin").write_text("x")
        raise RuntimeError("crash")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy"]
    assert [p.name for p in out.iterdir()] == ["config.json"]
    with atomic_path(out, directory=True) as tmp:
        (tmp / "model.safetensors").write_text("new")
    assert [p.name for p in out.iterdir()] == ["model.safetensors"]
