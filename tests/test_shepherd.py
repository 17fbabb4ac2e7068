"""shepherd.py: Math-Shepherd labels from completions, by hand; the whole recipe on a trained tiny policy (slow)."""

from __future__ import annotations

import pytest

from bstar_pl.prm.shepherd import step_labels
from bstar_pl.records import Problem
from bstar_pl.tasks import arithmetic

PROBLEM = Problem(id="p", question="What is 2 + 3 - 1?", answer="4")
STEPS = ["2 + 3 = 5", "5 - 1 = 4\n\n# Answer\n\n4"]
BAD_STEPS = ["2 + 3 = 6", "6 - 1 = 5\n\n# Answer\n\n5"]


def correct(text: str) -> bool:
    return arithmetic.is_correct(text, PROBLEM)


def test_a_step_is_good_if_any_completion_reaches_the_answer() -> None:
    # Completions continue after step 1's separator; the final step is labelled by the solution's own answer.
    assert step_labels(STEPS, [["5 - 1 = 4\n\n# Answer\n\n4", "5 - 1 = 3\n\n# Answer\n\n3"]], correct) == [1.0, 1.0]
    assert step_labels(BAD_STEPS, [["6 - 1 = 5\n\n# Answer\n\n5"] * 4], correct) == [0.0, 0.0]
    # An arithmetic slip that a later slip cancels still reaches the answer: Math-Shepherd says "good".
    assert step_labels(BAD_STEPS, [["6 - 1 = 4\n\n# Answer\n\n4", "x"]], correct) == [1.0, 0.0]


def test_soft_labels_are_the_share_of_good_completions() -> None:
    done = [["5 - 1 = 4\n\n# Answer\n\n4", "5 - 1 = 3\n\n# Answer\n\n3", "", "5 - 1 = 4\n\n# Answer\n\n4"]]
    assert step_labels(STEPS, done, correct, soft=True) == [0.5, 1.0]
    assert step_labels(STEPS, [[]], correct, soft=True) == [0.0, 1.0]  # no completion (context full): not good


def test_one_completion_list_per_step_but_the_last() -> None:
    with pytest.raises(ValueError, match="2 steps need 1 completion lists, got 2"):
        step_labels(STEPS, [[], []], correct)
