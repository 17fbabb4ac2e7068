"""evaluate.py with hand-computed numbers."""

from __future__ import annotations

import pytest

from bstar_pl.evaluate import format_table, sample_metrics, temperature_key
from bstar_pl.records import Problem, Sample
from bstar_pl.tasks.arithmetic import check_steps, is_correct

P1 = Problem(id="a", question="What is 1 + 2 + 3?", answer="6")
P2 = Problem(id="b", question="What is 5 - 1?", answer="4")
GOOD_A = "1 + 2 = 3\n\n3 + 3 = 6\n\n# Answer\n\n6"
OTHER_A = "2 + 3 = 5\n\n1 + 5 = 6\n\n# Answer\n\n6"
LUCKY_A = "1 + 2 = 4\n\n4 + 2 = 6\n\n# Answer\n\n6"  # right answer, false steps
GOOD_B = "5 - 1 = 4\n\n# Answer\n\n4"


def sample(pid: str, t: float, i: int, text: str, finish: str = "stop") -> Sample:
    return Sample(problem_id=pid, temperature=t, index=i, text=text, n_tokens=10, finish_reason=finish)


def test_metrics_by_hand() -> None:
    samples = [
        sample("a", 1.0, 0, GOOD_A),
        sample("a", 1.0, 1, GOOD_A),
        sample("a", 1.0, 2, OTHER_A),
        sample("a", 1.0, 3, LUCKY_A),
        sample("b", 1.0, 0, "5 - 1 = 3\n\n# Answer\n\n3"),
        sample("b", 1.0, 1, "5 - 1 = 4", "length"),
        sample("b", 1.0, 2, "x"),
        sample("b", 1.0, 3, "y"),
        sample("b", 0.5, 0, GOOD_B),
    ]
    table = sample_metrics([P1, P2], samples, is_correct, check_steps, s=3)
    assert list(table) == ["0.50", "1.00"]
    row = table["1.00"]
    assert row["problems"] == 2 and row["k"] == 4
    assert row["accuracy"] == pytest.approx(4 / 8)
    assert row["clean_accuracy"] == pytest.approx(3 / 8)
    assert row["pass_at_k"] == pytest.approx(1 / 2)
    assert row["pass_at_k_3"] == pytest.approx(1 / 2)  # a: three distinct correct texts
    assert row["unique_correct"] == pytest.approx(3 / 2)
    assert row["truncated"] == pytest.approx(1 / 8)
    assert table["0.50"]["accuracy"] == 1.0 and table["0.50"]["problems"] == 1
    assert "pass_at_k_3" in format_table(table).splitlines()[0]


def test_temperature_keys_are_one_spelling() -> None:
    assert temperature_key(0.7) == temperature_key(0.70000001) == "0.70"
    assert temperature_key(1) == "1.00"
