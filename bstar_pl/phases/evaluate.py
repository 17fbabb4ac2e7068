"""Evaluate: a policy on test sets, greedy Pass@1 and, where a set asks for K samples, the sampled metrics
(metrics/policy.py). One evaluation serves the loop, after every iteration, and `bstar-pl evaluate`, for one policy
and one test set: `responses` samples, `grade` scores and measures.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from bstar_pl import settings, tasks
from bstar_pl.atomic import atomic_write_text
from bstar_pl.config import Config
from bstar_pl.engine import Engine
from bstar_pl.metrics.data import format_table
from bstar_pl.metrics.policy import metrics_table, policy_metrics
from bstar_pl.phases.sample import generate
from bstar_pl.phases.score import load_prm, score_samples
from bstar_pl.prm.scorer import PRMScorer
from bstar_pl.prompt import PLAIN, PromptFormat
from bstar_pl.records import Problem, Sample, Scored, write_jsonl
from bstar_pl.rundir import Clock, RunDir
from bstar_pl.seeding import derive_seed
from bstar_pl.settings import EngineSettings, Reward, TestSet
from bstar_pl.tasks import Task

TestSets = dict[str, tuple[Task, list[Problem], TestSet]]


def evaluate(engine: Engine, rd: RunDir, i: int, tests: TestSets, prm: PRMScorer | None, cfg: Config) -> dict[str, Any]:
    """The phase: P_i on every test set, its responses kept as `test_<name>.jsonl` (read back on resume)."""
    reward, seed, found = cfg.reward, derive_seed(cfg.seed, i, "evaluation"), {}
    for name, (task, problems, spec) in tests.items():
        path = rd.iteration(i) / f"test_{name}.jsonl"
        if (samples := rd.read(path, Sample)) is None:
            samples = rd.keep(path, responses(engine, rd.policy(i), problems, spec, seed, rd.clock), Sample)
        found[name], _ = grade(problems, samples, task, spec, prm, reward, rd.clock)
    return {"test": found} if found else {}


def responses(
    engine: Engine, policy: Path, problems: list[Problem], spec: TestSet, seed: int, clock: Clock
) -> list[Sample]:
    """One greedy response per problem, then `spec.k` samples at `spec.temperature` where k > 0."""
    greedy = generate(engine, policy, problems, [0.0], 1, seed, clock, "evaluation")
    if spec.k == 0:
        return greedy
    return greedy + generate(engine, policy, problems, [spec.temperature], spec.k, seed, clock, "evaluation")


def grade(
    problems: list[Problem],
    samples: list[Sample],
    task: Task,
    spec: TestSet,
    prm: PRMScorer | None,
    reward: Reward,
    clock: Clock,
) -> tuple[dict[str, Any], list[Scored]]:
    """`policy_metrics` of the responses, and the responses graded. The PRM, where there is one, ranks the K
    samples for Reward@K-S; a greedy response is graded only."""
    greedy = [x for x in samples if x.temperature == 0.0]
    sampled = [x for x in samples if x.temperature != 0.0]
    prm = prm if sampled else None
    with clock.timed("evaluation_scoring"):
        greedy_scored = score_samples(problems, greedy, task, workers=reward.workers)
        sampled_scored = score_samples(
            problems, sampled, task, prm, reward.aggregate, reward.weight, workers=reward.workers
        )
    rewards = prm is not None
    metrics = policy_metrics(
        problems, greedy_scored, sampled_scored, task.extract_answer, spec.s, rewards, task.check_steps
    )
    return metrics, greedy_scored + sampled_scored


def evaluate_policy(
    policy: Path,
    test: TestSet,
    out: Path,
    engine: EngineSettings = EngineSettings(),
    reward: Reward = Reward(),
    seed: int = 0,
    prompt: PromptFormat = PLAIN,
    save_samples: bool = True,
) -> dict[str, Any]:
    """Evaluate `policy` on one test set: greedy Pass@1, and over `test.k` samples at `test.temperature` Pass@K,
    Pass@K-S (the paper reports P@32-4), majority vote and, with `reward.prm`, Reward@K-S and Best-of-K; per level
    and subject where problems have them (MATH). Writes `out` (JSON: the settings and the metrics) and, with
    `save_samples`, every graded response beside it (`<out stem>.samples.jsonl`).

    Args:
        policy: the policy, an HF model directory.
        test: the problems file (`path`), the task that loads and grades it (`task`, required here), the first
            `size` problems only, and `k` samples at `temperature` for the S of Pass@K-S (`s`).
        out: the JSON file of results, written atomically.
        engine: the vLLM engine's settings.
        reward: the PRM and how its step scores make a reward (r = 1[correct] + weight · min of them).
        seed: seeds the requests; the same seed gives the same samples.
        prompt: the policy's prompt format (`--prompt.chat true` for an instruct model's chat template).
        save_samples: also write the graded responses.
    """
    settings.check_policy(policy, prompt, "policy")
    settings.need(
        test.task is not None, "test.task", f"give the task that grades {test.path} ({', '.join(tasks.NAMES)})"
    )
    settings.check_test(test, "test.")
    settings.check_engine(engine)
    settings.check_reward(reward)
    settings.need(not out.is_dir(), "out", f"{out} is a directory; give the JSON file to write")
    task = tasks.get(test.task)
    problems = task.load(test.path, limit=test.size)
    if not problems:
        raise settings.ConfigError(f"config field 'test.path': {test.path} holds no problems")
    clock = Clock()
    served = Engine(policy, engine, seed=seed, prompt=prompt)
    samples = responses(served, policy, problems, test, seed, clock)
    prm = load_prm(reward, prompt) if test.k > 0 else None  # the PRM ranks samples; greedy needs none
    metrics, graded = grade(problems, samples, task, test, prm, reward, clock)
    if save_samples:
        write_jsonl(out.with_name(f"{out.stem}.samples.jsonl"), graded)
    chosen = {"policy": policy, "test": test, "engine": engine, "reward": reward, "seed": seed, "prompt": prompt}
    result = {"args": {k: plain(v) for k, v in chosen.items()}, "metrics": metrics}
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    sampled = f"; {test.k} samples at t={test.temperature:.2f}, S={test.s}" if test.k > 0 else ""
    print(f"\n{test.task} {test.path} ({len(problems)} problems), greedy Pass@1{sampled}:")
    print(format_table(metrics_table(metrics), label="subset"))
    print(f"\nmetrics in {out}")
    return metrics


def plain(value: object) -> object:
    """A setting as JSON: dataclasses as objects, paths as text."""
    if dataclasses.is_dataclass(value):
        return {k: plain(v) for k, v in dataclasses.asdict(value).items()}
    return str(value) if isinstance(value, Path) else value
