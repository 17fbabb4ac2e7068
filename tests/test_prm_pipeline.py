"""The PRM recipe end to end on the arithmetic task (slow): SFT a tiny policy, label its solutions Math-Shepherd style,
train the PRM from the policy, score held-out samples. Labels are checked against the exact step checker, and the PRM
must rank right answers above wrong ones (run with -s to see the figures). Which recipes beat a random pick within a
problem (Best-of-K), the implicit PRM from a base that knows more arithmetic among them, is a measurement, not a
regression check: bench/prm_ranking.py (README, "Process reward model")."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import lightning as L
import pytest

from bstar_pl.engine import Engine
from bstar_pl.models.tiny import make_tiny
from bstar_pl.prm.alignment import SEP
from bstar_pl.prm.data import PRMDataModule
from bstar_pl.prm.module import PRMModule
from bstar_pl.prm.rows import read_prm
from bstar_pl.prm.scorer import PRMScorer, solution_score
from bstar_pl.prm.shepherd import shepherd_examples
from bstar_pl.records import PRMExample, Problem, Sample, write_jsonl
from bstar_pl.settings import EngineSettings
from bstar_pl.tasks import arithmetic as A
from bstar_pl.train.builders import Optim
from bstar_pl.train.data import SFTDataModule
from bstar_pl.train.sft import SFTModule

pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.fit]
POOL = A.ArithmeticSpec(min_terms=3, max_terms=4)  # longer than SFT's: mixed outcomes, as in the demo


def sft(cpu_trainer: Callable, out: Path, steps: int, spec: A.ArithmeticSpec, problems: int) -> Path:
    """The tiny model (seed 0) SFT'd `steps` steps on `problems` training problems of `spec`; returns the policy."""
    L.seed_everything(0)
    module = SFTModule(
        str(make_tiny(out / "base")), optim=Optim(lr=1e-3, lr_min=1e-5, warmup_steps=20), export_dir=str(out / "sft")
    )
    # Length-grouped batches, as when the PRM figures in the README were measured.
    data = SFTDataModule(micro_batch_size=32, max_prompt_len=64, max_target_len=96, length_group=64)
    data.set_examples(A.sft_examples(A.generate("train", problems, spec, seed=0)), steps=steps)
    cpu_trainer(steps, gradient_clip_val=1.0).fit(module, datamodule=data)
    return out / "sft"


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory, cpu_trainer: Callable) -> Path:
    """The demo's SFT recipe (900 steps of 2-3 term one-digit problems): about 40% of 3-4 term samples are right.

    A weaker policy (500 steps: a quarter right) gave labels and a PRM no better than chance: it is the teacher.
    Left-to-right references: the policy learns faster than from random orders and becomes a teacher in 900 steps."""
    return sft(
        cpu_trainer, tmp_path_factory.mktemp("pipeline"), 900, A.ArithmeticSpec(max_terms=3, random_order=False), 2000
    )


@pytest.fixture(scope="module")
def sampler(policy: Path) -> Iterator[Engine]:
    engine = Engine(policy, EngineSettings(dtype="float32", max_model_len=256, max_new_tokens=64), seed=0)
    yield engine
    del engine
    gc.collect()


@pytest.fixture(scope="module")
def labelled(sampler: Engine) -> tuple[list[Problem], list[PRMExample]]:
    problems = A.generate("train", 200, POOL, seed=1)
    return problems, shepherd_examples(sampler, problems, A.is_correct, 8, 4, temperature=0.8, progress=False)


@pytest.fixture(scope="module")
def prm(
    policy: Path,
    labelled: tuple[list[Problem], list[PRMExample]],
    tmp_path_factory: pytest.TempPathFactory,
    cpu_trainer: Callable,
) -> Path:
    out = tmp_path_factory.mktemp("prm") / "prm"
    L.seed_everything(0)
    module = PRMModule(str(policy), optim=Optim(lr=3e-4, lr_min=3e-6, warmup_steps=5), export_dir=str(out))
    data = PRMDataModule(micro_batch_size=32, max_prompt_len=64, max_target_len=96)
    data.set_examples(labelled[1])
    cpu_trainer(max_epochs=10).fit(module, datamodule=data)
    return out


def exact_prefix_labels(steps: list[str], problem: Problem) -> list[float]:
    """The checkable truth for each non-final step: 1 while every step so far is a true step on terms still present."""
    terms = A._terms(*A.parse(problem.question))
    ok, labels = True, []
    for step in steps[:-1]:
        m = A._STEP.match(step)
        ok = ok and m is not None and A._apply(terms, int(m[1]), m[2], int(m[3]), int(m[4]))
        labels.append(float(ok))
    return labels


def test_labels_agree_with_the_step_checker(labelled: tuple[list[Problem], list[PRMExample]]) -> None:
    problems, examples = labelled
    by_question = {p.question: p for p in problems}
    counts = {(truth, label): 0 for truth in (0.0, 1.0) for label in (0.0, 1.0)}
    for e in examples:
        problem = by_question[e.input]
        assert e.label[-1] == float(A.is_correct(SEP.join(e.output), problem))  # the final step: the answer
        for truth, label in zip(exact_prefix_labels(e.output, problem), e.label):
            counts[(truth, label)] += 1
    wrong_steps = counts[(0.0, 0.0)] + counts[(0.0, 1.0)]
    agree = (counts[(0.0, 0.0)] + counts[(1.0, 1.0)]) / sum(counts.values())
    print(f"\nlabels: {len(examples)} solutions; (exact, Monte Carlo) step counts {counts}; agreement {agree:.3f}")
    assert wrong_steps >= 30 and counts[(1.0, 1.0)] >= 30, "too few steps of one kind to judge"
    # After a false step only compensating slips reach the gold answer: nearly all such steps are labelled 0.
    assert counts[(0.0, 0.0)] / wrong_steps >= 0.85
    assert agree >= 0.75  # a true step is labelled 0 when all c completions from it fail: the policy is weak


def auc(positive: list[float], negative: list[float]) -> float:
    """Probability that a random positive outranks a random negative (ties count half)."""
    wins = sum((p > n) + 0.5 * (p == n) for p in positive for n in negative)
    return wins / (len(positive) * len(negative))


@pytest.fixture(scope="module")
def samples(sampler: Engine) -> list[tuple[Problem, Sample]]:
    """8 samples at t = 0.8 of each of 300 held-out problems."""
    problems = {p.id: p for p in A.generate("dev", 300, POOL, seed=0)}
    return [(problems[s.problem_id], s) for s in sampler.generate(list(problems.values()), [0.8], 8, progress=False)]


def held_out(samples: list[tuple[Problem, Sample]], prm: Path) -> list[tuple[str, bool, float]]:
    """(problem id, answer correct, min step score) of each sample, unaligned ones scoring 0."""
    scores = PRMScorer(prm).score([p.question for p, _ in samples], [s.text for _, s in samples], False)
    return [
        (p.id, A.is_correct(s.text, p), solution_score(x.scores) if x.aligned else 0.0)
        for (p, s), x in zip(samples, scores)
    ]


def test_prm_ranks_correct_above_incorrect_samples(samples: list[tuple[Problem, Sample]], prm: Path) -> None:
    held = held_out(samples, prm)
    value = auc([v for _, c, v in held if c], [v for _, c, v in held if not c])
    print(f"\nheld-out AUC (answer correct vs not, min step score): {value:.3f}")
    assert value >= 0.8


def test_prm_data_command(policy: Path, tmp_path: Path) -> None:
    """`bstar-pl prm-data` in its own process (one vLLM engine per process): prm-v4 rows that read back."""
    problems = tmp_path / "problems.jsonl"
    write_jsonl(problems, A.generate("train", 3, POOL, seed=2))
    out = tmp_path / "prm.jsonl"
    args = ["--policy", str(policy), "--problems", str(problems), "--out", str(out), "--solutions=2", "--completions=2"]
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("bstar-pl")),
            "prm-data",
            *args,
            "--engine.max_new_tokens=48",
            "--engine.max_model_len=256",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert 1 <= len(read_prm(out)) <= 6 and "prm-data: {'problems': 3" in done.stdout
