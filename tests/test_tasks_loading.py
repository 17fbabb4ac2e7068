"""Task data from JSON, JSON lines, parquet and `datasets`; bad rows fail with one line saying where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bstar_pl import tasks
from bstar_pl.records import RecordError
from bstar_pl.tasks import gsm8k
from bstar_pl.tasks.loading import read_rows

ROWS = [
    {"question": "Tom has 2 apples and buys 3. How many?", "answer": "2+3=<<2+3=5>>5 apples\n#### 5"},
    {"question": "A house costs $1,000,000 more than nothing.", "answer": "Total\n#### 1,000,000"},
    {"question": "It is 3 degrees and falls by 5.", "answer": "3-5=<<3-5=-2>>-2\n#### -2"},
]


def write_formats(tmp_path: Path) -> dict[str, Path]:
    import pyarrow
    import pyarrow.parquet

    files = {"jsonl": tmp_path / "a.jsonl", "json": tmp_path / "a.json", "parquet": tmp_path / "a.parquet"}
    files["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n")
    files["json"].write_text(json.dumps(ROWS, indent=1))
    pyarrow.parquet.write_table(pyarrow.Table.from_pylist(ROWS), files["parquet"])
    return files


def test_every_format_gives_the_same_problems(tmp_path: Path) -> None:
    import datasets

    files = write_formats(tmp_path)
    expected = gsm8k.load(files["jsonl"])
    assert [p.answer for p in expected] == ["5", "1000000", "-2"]
    assert expected[0].solution == "2+3=5 apples\n\n# Answer\n\n5"
    assert gsm8k.load(files["json"]) == gsm8k.load(files["parquet"]) == expected
    assert gsm8k.load(datasets.Dataset.from_list(ROWS)) == gsm8k.load(ROWS) == expected
    assert gsm8k.load(str(files["parquet"]), limit=2) == gsm8k.load(ROWS, limit=2) == expected[:2]
    assert gsm8k.load(files["jsonl"], limit=0) == []
    # `datasets` writes JSON lines to a .json file: read as such.
    datasets.Dataset.from_list(ROWS).to_json(tmp_path / "hf.json")
    assert gsm8k.load(tmp_path / "hf.json") == expected


def test_ids_are_stable_unique_and_taken_from_the_file_where_present(tmp_path: Path) -> None:
    a, b = gsm8k.load(ROWS), gsm8k.load(list(reversed(ROWS)))
    assert {p.id for p in a} == {p.id for p in b} and len({p.id for p in a}) == 3
    assert gsm8k.load([{**ROWS[0], "id": 17}])[0].id == "17"
    with pytest.raises(RecordError, match=r"dataset row 1: id 'gsm8k-[0-9a-f]+' already used at dataset row 0"):
        gsm8k.load([ROWS[0], ROWS[0]])


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("bad.jsonl", json.dumps(ROWS[0]) + "\n{oops\n", r"bad\.jsonl:2: bad JSON"),
        ("bad.jsonl", json.dumps(ROWS[0]) + "\n[1, 2]\n", r"bad\.jsonl:2: expected an object, got list"),
        ("bad.jsonl", '{"question": "q"}\n', r"bad\.jsonl:1: missing field 'answer'"),
        ("bad.jsonl", '{"question": "q", "answer": "no final line"}\n', r"bad\.jsonl:1: field 'answer': no final"),
        ("bad.jsonl", '{"question": " ", "answer": "#### 1"}\n', r"bad\.jsonl:1: field 'question' is empty"),
        ("bad.jsonl", '{"question": 3, "answer": "#### 1"}\n', r"bad\.jsonl:1: field 'question': expected text"),
        ("bad.jsonl", '{"question": "q", "answer": "#### 1", "level": "hard"}\n', r"bad\.jsonl:1: field 'level'"),
        ("bad.json", "[\n" + json.dumps(ROWS[0]) + ",\n{oops}]", r"bad\.json:3: bad JSON"),
        ("bad.json", json.dumps([ROWS[0], "x"]), r"bad\.json: item 1: expected an object, got str"),
        ("bad.csv", "a,b\n", r"bad\.csv: unknown format '\.csv'"),
        ("bad.parquet", "not parquet", r"bad\.parquet: not a readable parquet file"),
    ],
)
def test_bad_input_fails_with_one_line_naming_the_place(tmp_path: Path, name: str, content: str, error: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(RecordError, match=error) as info:
        gsm8k.load(tmp_path / name)
    assert "\n" not in str(info.value)


def test_missing_file_and_bad_limit(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match=r"nothing\.jsonl: no such file"):
        gsm8k.load(tmp_path / "nothing.jsonl")
    with pytest.raises(ValueError, match="limit"):
        read_rows(ROWS, limit=-1)


def test_every_task_module_has_the_interface() -> None:
    for name in ("arithmetic", "gsm8k", "math", "arc"):
        module = tasks.get(name)
        assert callable(module.load) and callable(module.extract_answer) and callable(module.is_correct)
    with pytest.raises(ValueError, match="unknown task 'mmlu'"):
        tasks.get("mmlu")
