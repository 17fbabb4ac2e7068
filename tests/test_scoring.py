"""scoring.py: step scores read at the right tokens, batching that changes nothing, rewards, unaligned responses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from bstar_pl.phases.score import score_samples
from bstar_pl.prm.alignment import prm_steps
from bstar_pl.prm.model import HEAD_FILE, MARKER, load_reward_model, save_reward_model
from bstar_pl.prm.scorer import PRMScorer, StepScores, length_batches, solution_score
from bstar_pl.records import Problem, Sample
from bstar_pl.tasks import arithmetic

QUESTION = "What is 1 + 2 + 4?"
RESPONSES = [
    "1 + 2 = 3\n\n3 + 4 = 7\n\n# Answer\n\n7",
    "2 + 4 = 6\n\n1 + 6 = 7\n\n# Answer\n\n7",
    "1 + 2 = 3\n\n# Answer\n\n3",
    "# Answer\n\n7",
    "1 + 2 = 3\n\n3 + 4 = 8\n\n8 - 1 = 7\n\n7 + 0 = 7\n\n# Answer\n\n7",
    "1 + 2 = 3\n\n3 + 4",  # cut by the length limit: no answer, every block a step
]


@pytest.fixture(scope="module")
def prm_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a fresh head, saved as a PRM directory (random scores, but fixed ones)."""
    torch.manual_seed(0)
    return save_reward_model(load_reward_model(tiny_model_dir), tiny_model_dir, tmp_path_factory.mktemp("prm") / "p")


def test_prm_directory_holds_backbone_head_and_tokenizer(prm_dir: Path) -> None:
    names = {p.name for p in prm_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", HEAD_FILE, MARKER} <= names


def test_scores_are_read_at_each_steps_end(prm_dir: Path) -> None:
    """The hand-found positions: the first "\\n" after each step but the last, then the answer's last token."""
    scorer = PRMScorer(prm_dir)
    (result,) = scorer.score([QUESTION], [RESPONSES[0]], progress=False)
    st = scorer.encode(QUESTION, RESPONSES[0])
    tokens = scorer.tokenizer.convert_ids_to_tokens(st.input_ids)
    first_newline = tokens.index("\n", st.prompt_len)
    assert tokens[first_newline - 1] == "3" and tokens[-2:] == ["7", scorer.tokenizer.eos_token]
    with torch.no_grad():
        logits = scorer.model(torch.tensor([st.input_ids]))[0]
    expected = logits[[first_newline, len(tokens) - 2]]
    assert result == StepScores(pytest.approx(expected.tolist(), abs=1e-6), True) and len(result.scores) == 2
    (probability,) = PRMScorer(prm_dir, score="probability").score([QUESTION], [RESPONSES[0]], progress=False)
    assert probability.scores == pytest.approx(torch.sigmoid(expected).tolist(), abs=1e-6)


def test_logits_are_clipped_to_the_papers_range(prm_dir: Path) -> None:
    """±5 by default, so that r_prm = min / 5 lies in [-1, 1], the range of the paper's threshold grid."""
    for shift, bound in ((100.0, 5.0), (-100.0, -5.0)):
        scorer = PRMScorer(prm_dir)
        scorer.model.head.bias.data += shift
        (result,) = scorer.score([QUESTION], [RESPONSES[0]], progress=False)
        assert result.scores == [bound, bound]
    scorer = PRMScorer(prm_dir, clip=2.0)
    scorer.model.head.bias.data += 100.0
    assert scorer.score([QUESTION], [RESPONSES[0]], progress=False)[0].scores == [2.0, 2.0]
    with pytest.raises(ValueError, match="score must be"):
        PRMScorer(prm_dir, score="sigmoid")


def test_batching_by_length_changes_no_score(prm_dir: Path) -> None:
    questions = [QUESTION] * len(RESPONSES)
    alone = [
        PRMScorer(prm_dir, max_batch_tokens=1).score([q], [r], progress=False)[0] for q, r in zip(questions, RESPONSES)
    ]
    batched = PRMScorer(prm_dir, max_batch_tokens=160).score(questions, RESPONSES, progress=False)
    for a, b, response in zip(alone, batched, RESPONSES):
        assert b.aligned and len(b.scores) == len(prm_steps(response))
        assert b.scores == pytest.approx(a.scores, abs=1e-5)


def test_length_batches_respect_the_budget() -> None:
    assert length_batches([2, 3, 3, 5, 9], 10) == [[0, 1, 2], [3], [4]]
    assert length_batches([20], 10) == [[0]]  # too long for the budget: alone


def test_unaligned_response_is_flagged_not_scored(prm_dir: Path) -> None:
    results = PRMScorer(prm_dir).score([QUESTION] * 3, ["1 + 2 = 3\n\n", "", RESPONSES[0]], progress=False)
    assert results[:2] == [StepScores([], False), StepScores([], False)]
    assert results[2].aligned


def test_solution_score() -> None:
    assert solution_score([0.9, 0.2, 0.5]) == 0.2
    assert solution_score([0.9, 0.2, 0.5], "last") == 0.5
    assert solution_score([0.9, 0.2, 0.5], "prod") == pytest.approx(0.09)
    with pytest.raises(ValueError, match="no step scores"):
        solution_score([])
    with pytest.raises(ValueError, match="how must be"):
        solution_score([0.5], "mean")


def test_rewards_with_and_without_prm(prm_dir: Path) -> None:
    problem = Problem(id="p", question=QUESTION, answer="7")
    texts = [RESPONSES[0], RESPONSES[2], "1 + 2 = 3\n\n"]
    samples = [Sample("p", 1.0, i, t, 5, "stop") for i, t in enumerate(texts)]
    plain = score_samples([problem], samples, arithmetic)
    assert [(s.correct, s.reward, s.step_scores, s.aligned) for s in plain] == [
        (True, 1.0, [], True),
        (False, 0.0, [], True),
        (False, 0.0, [], True),
    ]
    scored = score_samples([problem], samples, arithmetic, PRMScorer(prm_dir), how="min", progress=False)
    for s in scored[:2]:
        assert s.aligned and s.reward == pytest.approx(float(s.correct) + min(s.step_scores) / 5)
        assert -1.0 <= s.reward - float(s.correct) <= 1.0
    assert (scored[2].aligned, scored[2].step_scores, scored[2].reward) == (False, [], 0.0)
    with pytest.raises(ValueError, match="unknown problem 'q'"):
        score_samples([problem], [Sample("q", 1.0, 0, "x", 1, "stop")], arithmetic)


def test_grading_on_several_processes_gives_the_same_rewards() -> None:
    """`reward.workers`: the same verdicts from grading processes (each response under a deadline) as in process."""
    problems = arithmetic.generate("dev", 6, seed=3)
    texts = [p.solution for p in problems] + ["1 + 1 = 3\n\n# Answer\n\n3"] * len(problems)
    samples = [Sample(p.id, 1.0, k, t, 5, "stop") for k, (p, t) in enumerate(zip(problems * 2, texts))]
    here = score_samples(problems, samples, arithmetic)
    assert sum(s.correct for s in here) == len(problems)
    assert score_samples(problems, samples, arithmetic, workers=2, progress=False) == here


def test_bpe_prm_scores(bpe_model_dir: Path, tmp_path: Path) -> None:
    """A byte-level BPE tokenizer ("\\n\\n" is one token, merges cross it): the same reading rules hold."""
    out = save_reward_model(load_reward_model(bpe_model_dir), bpe_model_dir, tmp_path / "bpe_prm")
    scorer = PRMScorer(out)
    results = scorer.score([QUESTION] * 2, [RESPONSES[0], "1 + 2 = 3\n\n# Answers\n\n3 + 4 = 7"], progress=False)
    assert results[0].aligned and len(results[0].scores) == 2
    assert results[1] == StepScores([], False)  # "\n\n# Answer" merged into one token across a step boundary


SHARDED = """
import json, sys, torch
from bstar_pl.prm.scorer import PRMScorer
torch.distributed.init_process_group("gloo")
questions, responses = json.loads(sys.argv[2])
scores = PRMScorer(sys.argv[1], max_batch_tokens=160).score(questions, responses, progress=False)
if torch.distributed.get_rank() == 1:  # every rank holds every score: the second one reports
    print(json.dumps([[s.scores, s.aligned] for s in scores]))
"""


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ranks_score_like_one_process(prm_dir: Path, tmp_path: Path) -> None:
    """Each rank runs half the length batches; the gathered scores equal one process's bit for bit."""
    import json
    import subprocess
    import sys

    questions, responses = [QUESTION] * 24, [RESPONSES[i % len(RESPONSES)] + " " * (i // 6) for i in range(24)]
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    run = subprocess.run(
        [*torchrun, str(script), str(prm_dir), json.dumps([questions, responses])],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    two = json.loads(run.stdout.strip().splitlines()[-1])
    one = PRMScorer(prm_dir, max_batch_tokens=160).score(questions, responses, progress=False)
    assert two == [[s.scores, s.aligned] for s in one]
    assert sum(aligned for _, aligned in two) >= 16
