"""evaluate.py with hand-computed numbers, and `bstar-pl evaluate` end to end."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from bstar_pl.cli import main
from bstar_pl.metrics.data import format_table, sample_metrics
from bstar_pl.metrics.policy import majority_correct, metrics_table, policy_metrics, ranking_auc, top_all_correct
from bstar_pl.records import Problem, Sample, Scored, read_jsonl, temperature_key
from bstar_pl.tasks.arithmetic import ArithmeticSpec, check_steps, extract_answer, is_correct
from bstar_pl.tasks.curriculum import write_splits

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


# policy_metrics -------------------------------------------------------------------------------------

WRONG_A = "1 + 2 = 3\n\n3 + 3 = 7\n\n# Answer\n\n7"
NO_ANSWER = "1 + 2 = 3"


def scored(pid: str, i: int, text: str, t: float = 1.0, prm: float | None = None, aligned: bool = True) -> Scored:
    """A graded response; with `prm` (a PRM solution score in [0, 1]) r = 1[correct] + prm / 5."""
    ok = is_correct(text, {"a": P1, "b": P2}[pid])
    reward = float(ok) + (prm / 5 if prm is not None else 0.0)
    return Scored(sample(pid, t, i, text), ok, reward, [] if prm is None else [prm], aligned)


def test_pass_at_k_s_counts_distinct_correct_texts() -> None:
    # a: GOOD_A twice, OTHER_A once -> two distinct correct of four; b: one correct of four.
    sampled = [scored("a", i, x) for i, x in enumerate([GOOD_A, GOOD_A, OTHER_A, WRONG_A])]
    sampled += [scored("b", i, x) for i, x in enumerate([GOOD_B, "x", "y", "z"])]
    greedy = [scored("a", 0, LUCKY_A, 0.0), scored("b", 0, "x", 0.0)]
    m2 = policy_metrics([P1, P2], greedy, sampled, extract_answer, s=2, check=check_steps)
    assert (m2["k"], m2["s"], m2["temperature"], m2["problems"]) == (4, 2, 1.0, 2)
    assert m2["accuracy"] == 0.5 and m2["clean_accuracy"] == 0.0  # a's greedy answer is right, its steps not
    assert m2["pass_at_k"] == 1.0
    assert m2["pass_at_k_s"] == 0.5  # a: 2 distinct >= 2; b: 1 < 2
    assert m2["unique_correct"] == pytest.approx((2 + 1) / 2)
    assert m2["sample_accuracy"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    m3 = policy_metrics([P1, P2], greedy, sampled, extract_answer, s=3)
    assert m3["pass_at_k_s"] == 0.0  # three correct texts in a, but only two distinct
    assert "reward_at_k_s" not in m3 and "best_of_k" not in m3 and "clean_accuracy" not in m3


def test_reward_at_k_s_ranks_by_the_prm_and_averages_over_ties() -> None:
    # PRM term r - 1[correct]: wrong 0.9 > correct 0.5 = wrong 0.5 = correct 0.5 > correct 0.1.
    rows = [
        scored("a", 0, WRONG_A, prm=0.9),
        scored("a", 1, GOOD_A, prm=0.5),
        scored("a", 2, WRONG_A, prm=0.5),
        scored("a", 3, OTHER_A, prm=0.5),
        scored("a", 4, GOOD_A, prm=0.1),
    ]
    # By r itself every correct response would rank first and all of these would be 1.
    assert top_all_correct(rows, 1) == 0.0
    assert top_all_correct(rows[1:], 1) == pytest.approx(2 / 3)  # one of the three tied at 0.5
    assert top_all_correct(rows[1:], 2) == pytest.approx(1 / 3)  # C(2,2)/C(3,2)
    assert top_all_correct(rows[1:], 3) == 0.0
    assert top_all_correct([rows[1], rows[3], rows[4]], 3) == 1.0
    assert top_all_correct(rows[:2], 3) == 0.0  # fewer than s responses
    # An unaligned response (no PRM score) ranks below every scored one.
    unaligned = [scored("a", 0, WRONG_A, aligned=False), scored("a", 1, GOOD_A, prm=0.0)]
    assert top_all_correct(unaligned, 1) == 1.0
    m = policy_metrics([P1], [], rows[1:], extract_answer, s=2, rewards=True)
    assert m["reward_at_k_s"] == pytest.approx(1 / 3) and m["best_of_k"] == pytest.approx(2 / 3)
    assert "accuracy" not in m  # no greedy responses given


def test_prm_auc_within_ranks_correct_against_wrong_samples_of_one_problem() -> None:
    # a: correct 0.5, 0.1 against wrong 0.9, 0.5 -> pairs (0.5 v 0.9) 0, (0.5 v 0.5) 1/2, (0.1 v ...) 0 -> 1/8.
    a = [scored("a", 0, WRONG_A, prm=0.9), scored("a", 1, GOOD_A, prm=0.5)]
    a += [scored("a", 2, WRONG_A, prm=0.5), scored("a", 3, GOOD_A, prm=0.1)]
    # b: correct -0.9, 0.2 against wrong 0.0 and an unaligned one, which ranks last -> 3 of 4 pairs won.
    b = [scored("b", 0, GOOD_B, prm=-0.9), scored("b", 1, "x", aligned=False)]
    b += [scored("b", 2, "y", prm=0.0), scored("b", 3, GOOD_B, prm=0.2)]
    assert ranking_auc(a) == pytest.approx(1 / 8) and ranking_auc(b) == pytest.approx(3 / 4)
    assert ranking_auc([scored("a", 0, GOOD_A, prm=0.1)] * 2) is None  # no wrong response: nothing to rank
    m = policy_metrics([P1, P2], [], a + b, extract_answer, s=1, rewards=True)
    assert m["prm_auc_within"] == pytest.approx((1 / 8 + 3 / 4) / 2) and m["prm_auc_problems"] == 2
    # Best-of-4 (a: 0, b: 1) equals the random pick (1/2 each): a within-problem AUC near 0.5 on average.
    assert m["best_of_k"] == pytest.approx(1 / 2) and m["sample_accuracy"] == pytest.approx(1 / 2)
    none = policy_metrics([P1], [], [scored("a", i, GOOD_A, prm=0.1) for i in range(2)], extract_answer, rewards=True)
    assert none["prm_auc_within"] is None and none["prm_auc_problems"] == 0
    assert "prm_auc_within" not in policy_metrics([P1], [], a, extract_answer)  # no PRM


def test_reward_at_k_s_equals_the_mean_over_tie_orders() -> None:
    """Against brute force: every order of tied responses equally likely."""
    rng = random.Random(0)
    for _ in range(200):
        n, s = rng.randint(1, 6), rng.randint(1, 4)
        rows = [
            scored("a", i, rng.choice([GOOD_A, WRONG_A]), prm=rng.choice([0.2, 0.6]), aligned=rng.random() < 0.8)
            for i in range(n)
        ]
        orders = list(itertools.permutations(rows))
        ranked = [sorted(o, key=lambda x: (x.aligned, round(x.reward - x.correct, 9)), reverse=True) for o in orders]
        want = sum(len(r) >= s and all(x.correct for x in r[:s]) for r in ranked) / len(orders)
        assert top_all_correct(rows, s) == pytest.approx(want)


def test_majority_vote_ties_go_to_the_answer_sampled_first() -> None:
    six, seven = GOOD_A, WRONG_A
    tie = [scored("a", 0, seven), scored("a", 1, six), scored("a", 2, six), scored("a", 3, seven)]
    assert not majority_correct(tie, extract_answer)
    # Sample order, not list order: 6 first by index wins, though it comes last in the list.
    swapped = [scored("a", 3, seven), scored("a", 2, seven), scored("a", 1, six), scored("a", 0, six)]
    assert majority_correct(swapped, extract_answer)
    assert majority_correct([scored("a", 0, NO_ANSWER), scored("a", 1, NO_ANSWER), scored("a", 2, six)], extract_answer)
    assert not majority_correct([scored("a", 0, NO_ANSWER)], extract_answer)
    # Distinct texts with one answer vote together: 6 (twice, two texts) beats 7 (once, sampled first).
    assert majority_correct([scored("a", 0, seven), scored("a", 1, GOOD_A), scored("a", 2, OTHER_A)], extract_answer)


def test_metrics_per_level_and_subject() -> None:
    levels = {"p1": 1, "p2": 2, "p3": 10, "p4": 2}
    problems = [
        Problem(
            id=pid,
            question="What is 5 - 1?",
            answer="4",
            info={"level": lvl, "subject": "Algebra" if lvl < 10 else "Geometry"},
        )
        for pid, lvl in levels.items()
    ] + [Problem(id="p5", question="What is 5 - 1?", answer="4")]
    ok = {"p1": True, "p2": False, "p3": True, "p4": True, "p5": False}
    greedy = [Scored(sample(pid, 0.0, 0, GOOD_B if good else "x"), good, float(good)) for pid, good in ok.items()]
    m = policy_metrics(problems, greedy, [], extract_answer)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert list(m["by_level"]) == ["1", "2", "10"]  # numeric order; p5 has no level
    assert m["by_level"]["2"] == {"problems": 2, "accuracy": 0.5, "truncated": 0.0}
    assert m["by_level"]["10"]["accuracy"] == 1.0
    assert m["by_subject"]["Algebra"]["problems"] == 3 and m["by_subject"]["Algebra"]["accuracy"] == pytest.approx(
        2 / 3
    )
    rows = metrics_table(m)
    assert list(rows) == ["all", "level 1", "level 2", "level 10", "subject Algebra", "subject Geometry"]
    assert "level 10" in format_table(rows, label="problems")


def test_policy_metrics_refuses_inconsistent_responses() -> None:
    a = [scored("a", i, GOOD_A) for i in range(3)]
    with pytest.raises(ValueError, match="unknown problem 'b'"):
        policy_metrics([P1], [], [*a, scored("b", 0, GOOD_B)], extract_answer)
    with pytest.raises(ValueError, match="problem 'b' has no sampled response"):
        policy_metrics([P1, P2], [], a, extract_answer)
    with pytest.raises(ValueError, match="problem 'b': 1 sampled responses, expected 3"):
        policy_metrics([P1, P2], [], [*a, scored("b", 0, GOOD_B)], extract_answer)
    with pytest.raises(ValueError, match="2 greedy responses"):
        policy_metrics([P1], [scored("a", 0, GOOD_A, 0.0), scored("a", 1, GOOD_A, 0.0)], [], extract_answer)
    with pytest.raises(ValueError, match="several temperatures"):
        policy_metrics([P1], [], [scored("a", 0, GOOD_A, 0.5), scored("a", 1, GOOD_A, 1.0)], extract_answer)


def test_format_table_marks_missing_values() -> None:
    text = format_table({"all": {"problems": 3, "accuracy": 0.5}, "level 1": {"problems": 1}}, label="set")
    header, first, second = text.splitlines()
    assert header.split() == ["set", "problems", "accuracy"]
    assert first.split() == ["all", "3", "0.500"] and second.split() == ["level", "1", "1", "-"]


# bstar-pl evaluate ----------------------------------------------------------------------------------


def run_evaluate(*args: str) -> subprocess.CompletedProcess[str]:
    """The console script in a child process: the test process may hold a vLLM engine of its own."""
    script = Path(sys.executable).with_name("bstar-pl")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    return subprocess.run([str(script), "evaluate", *args], capture_output=True, text=True, env=env, timeout=600)


ENGINE = ("--engine.max_model_len", "512", "--engine.max_new_tokens", "64", "--engine.dtype", "float32")


@pytest.mark.engine
@pytest.mark.slow
def test_evaluate_command_end_to_end(sft_policy: tuple[Path, Path], tmp_path: Path) -> None:
    policy, _ = sft_policy
    # The SFT split's 3-term chains, which the fine-tuned policy gets right now and then.
    easy = ArithmeticSpec(min_terms=3, max_terms=3)
    files = write_splits(tmp_path / "data", n_sft=20, n_pool=10, n_dev=5, n_test=40, pool_spec=easy, test_spec=easy)
    out = tmp_path / "eval" / "test.json"
    test = ("--test.task", "arithmetic", "--test.path", str(files["test"]), "--test.k", "8", "--test.s", "2")
    done = run_evaluate("--policy", str(policy), *test, "--test.temperature", "1.0", "--out", str(out), *ENGINE)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    m = result["metrics"]
    assert result["args"]["test"]["k"] == 8 and (m["problems"], m["k"], m["s"], m["temperature"]) == (40, 8, 2, 1.0)
    assert "reward_at_k_s" not in m  # no PRM, no Reward@K-S
    assert m["pass_at_k"] > 0 and m["accuracy"] < 1 and m["sample_accuracy"] < 1  # some right, some wrong
    assert m["clean_accuracy"] <= m["accuracy"] and m["pass_at_k_s"] <= m["pass_at_k"]
    # The saved responses are the ones measured: the same metrics computed again from them.
    rows = read_jsonl(out.with_name("test.samples.jsonl"), Scored)
    greedy = [x for x in rows if x.sample.temperature == 0.0]
    sampled = [x for x in rows if x.sample.temperature > 0.0]
    assert len(greedy) == 40 and len(sampled) == 320
    problems = read_jsonl(files["test"], Problem)
    assert policy_metrics(problems, greedy, sampled, extract_answer, 2, check=check_steps) == m
    assert all(x.correct == is_correct(x.sample.text, {p.id: p for p in problems}[x.sample.problem_id]) for x in rows)
    table = done.stdout.splitlines()
    assert any(line.split()[:2] == ["all", "40"] for line in table) and "pass_at_k_s" in done.stdout


def test_evaluate_command_fails_on_bad_arguments_before_starting_an_engine(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    args = ["evaluate", "--policy", str(tiny_model_dir), "--test.task", "arithmetic", "--out", str(tmp_path / "e.json")]
    with pytest.raises(SystemExit, match=r"config field 'test.path': .*missing.jsonl does not exist"):
        main([*args, "--test.path", str(tmp_path / "missing.jsonl")])
    (tmp_path / "t.jsonl").write_text('{"id": "1", "question": "What is 1 + 1?"}\n')
    with pytest.raises(SystemExit, match=r"t.jsonl:1: missing field 'answer'"):
        main([*args, "--test.path", str(tmp_path / "t.jsonl")])
    with pytest.raises(SystemExit, match=r"config field 'policy'"):
        main([*args[:2], str(tmp_path), *args[3:], "--test.path", str(tmp_path / "t.jsonl")])
    with pytest.raises(SystemExit, match=r"config field 'test.task'"):
        main(["evaluate", "--policy", str(tiny_model_dir), "--test.path", str(tmp_path / "t.jsonl"), "--out", "x.json"])
    assert not (tmp_path / "e.json").exists()


@pytest.mark.engine
@pytest.mark.slow
def test_evaluate_command_on_math500_and_gsm8k(tiny_model_dir: Path, shared_data: Path, tmp_path: Path) -> None:
    """The real test files through their own tasks (a random tiny model: the figures are ~0, the plumbing is real)."""
    for task, file in (("math", "math500_test.jsonl"), ("gsm8k", "gsm8k_test.jsonl")):
        out = tmp_path / f"{task}.json"
        test = ("--test.task", task, "--test.path", str(shared_data / file), "--test.size", "12", "--test.k", "2")
        done = run_evaluate("--policy", str(tiny_model_dir), *test, "--test.s", "2", "--out", str(out), *ENGINE)
        assert done.returncode == 0, done.stderr[-3000:]
        m = json.loads(out.read_text())["metrics"]
        assert m["problems"] == 12 and m["k"] == 2 and 0 <= m["accuracy"] <= 1
        if task == "math":  # MATH500 rows carry level and subject
            assert sum(row["problems"] for row in m["by_level"].values()) == 12
            assert sum(row["problems"] for row in m["by_subject"].values()) == 12
        else:
            assert "by_level" not in m
