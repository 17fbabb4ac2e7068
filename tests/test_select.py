"""What an iteration trains on: its selection (balance.py's rule over scored samples), the oracle's reference
solutions, and SFT examples replayed beside them."""

from __future__ import annotations

import pytest

from bstar_pl.config import Config, Selection
from bstar_pl.phases.select import chosen, gold_examples, replayed
from bstar_pl.records import Problem, Sample, Scored, SFTExample
from bstar_pl.settings import ConfigError

POOL = [Problem("a", "What is 1 + 2?", "3", "1 + 2 = 3\n\n# Answer\n\n3"), Problem("b", "What is 2 - 1?", "1", "x")]


def scored(pid: str, text: str, reward: float, truncated: bool = False) -> Scored:
    return Scored(Sample(pid, 1.0, 0, text, 3, "length" if truncated else "stop"), reward >= 1.0, reward)


def test_selection_keeps_rewards_above_tau_distinct_texts_best_first() -> None:
    rows = [
        scored("a", "x", 1.1),
        scored("a", "x", 1.1),  # the same text again: kept once
        scored("a", "y", 1.3),
        scored("a", "z", 0.2),  # at or below τ = 0.5: out
        scored("b", "w", 0.9, truncated=True),  # cut off: never selected
        scored("b", "v", 0.6),
    ]
    picked = chosen(POOL, rows, 0.5, Config(selection=Selection(n_target=10)), 1)
    assert [(s.problem_id, s.output, s.reward) for s in picked] == [("a", "y", 1.3), ("a", "x", 1.1), ("b", "v", 0.6)]
    assert picked[0].query == POOL[0].question


def test_oracle_data_is_the_pools_reference_solutions() -> None:
    assert gold_examples(POOL) == [SFTExample("What is 1 + 2?", POOL[0].solution), SFTExample("What is 2 - 1?", "x")]
    with pytest.raises(ConfigError, match="pool problem 'c' has none"):
        gold_examples([*POOL, Problem("c", "What is 1 + 1?", "2")])


def test_replay_mixes_in_the_asked_share_of_sft_examples() -> None:
    sft = [SFTExample(f"q{i}", f"o{i}") for i in range(100)]
    half = replayed(sft, 30, 0.5, seed=0, iteration=1)
    assert len(half) == 30 and len({e.query for e in half}) == 30 and set(half) <= set(sft)  # no repeats
    assert replayed(sft, 30, 0.5, seed=0, iteration=1) == half != replayed(sft, 30, 0.5, seed=0, iteration=2)
    assert len(replayed(sft, 30, 0.25, seed=0, iteration=1)) == 10
    assert len(replayed(sft[:5], 30, 0.5, seed=0, iteration=1)) == 30  # a small SFT set repeats
