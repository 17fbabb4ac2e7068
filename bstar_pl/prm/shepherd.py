"""Math-Shepherd step labels (the recipe the paper used and did not release): a step is good if the policy can still
reach the gold answer from it.

Per problem, S solutions are sampled from the policy (paper: 15); from after each of their steps, c completions
(paper: 8). A step is labelled 1 if any of its completions is correct (hard estimate), or with the fraction that
are (soft). The final step carries the answer and is labelled by the solution's own correctness.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bstar_pl.engine import Engine
from bstar_pl.prm.alignment import SEP, prm_steps
from bstar_pl.prm.rows import write_prm
from bstar_pl.prompt import PLAIN, PromptFormat
from bstar_pl.records import PRMExample, Problem, read_jsonl
from bstar_pl.settings import EngineSettings


def step_labels(
    steps: Sequence[str], completions: Sequence[Sequence[str]], correct: Callable[[str], bool], soft: bool = False
) -> list[float]:
    """Labels of a solution's steps. `completions[j]` continue the response after step j (j < K - 1); the full
    text `steps[0..j] + completion` is graded. A step without completions (its prefix filled the context) gets 0."""
    if len(completions) != len(steps) - 1:
        raise ValueError(f"{len(steps)} steps need {len(steps) - 1} completion lists, got {len(completions)}")
    labels = []
    for j, texts in enumerate(completions):
        prefix = SEP.join(steps[: j + 1]) + SEP
        hits = [correct(prefix + text) for text in texts]
        labels.append(sum(hits) / len(hits) if soft and hits else float(any(hits)))
    labels.append(float(correct(SEP.join(steps))))
    return labels


def shepherd_examples(
    engine: Engine,
    problems: Sequence[Problem],
    is_correct: Callable[[str, Problem], bool],
    solutions: int = 15,
    completions: int = 8,
    temperature: float = 0.8,
    completion_temperature: float | None = None,
    soft: bool = False,
    max_new_tokens: int | None = None,
    progress: bool = True,
) -> list[PRMExample]:
    """prm-v4 examples for `problems` from the policy `engine` serves.

    Distinct non-empty solutions of a problem each give one example; identical step prefixes (shared by several
    solutions) are completed once, so they get one label.
    """
    samples = engine.generate(problems, [temperature], solutions, max_new_tokens=max_new_tokens, progress=progress)
    by_id = {p.id: p for p in problems}
    seen: set[tuple[str, str]] = set()
    chosen: list[tuple[Problem, list[str]]] = []
    for s in samples:
        if s.text.strip() and (s.problem_id, s.text) not in seen:
            seen.add((s.problem_id, s.text))
            chosen.append((by_id[s.problem_id], prm_steps(s.text)))
    slots: dict[tuple[str, str], int] = {}
    for problem, steps in chosen:
        for j in range(len(steps) - 1):
            slots.setdefault((problem.id, SEP.join(steps[: j + 1]) + SEP), len(slots))
    requests = [(f"{pid}/{_digest(prefix)}", by_id[pid].question, prefix) for pid, prefix in slots]
    texts = engine.complete(
        requests,
        completion_temperature or temperature,
        completions,
        max_new_tokens=max_new_tokens,
        progress=progress,
    )
    examples = []
    for problem, steps in chosen:
        done = [texts[slots[(problem.id, SEP.join(steps[: j + 1]) + SEP)]] for j in range(len(steps) - 1)]
        labels = step_labels(steps, done, lambda text, p=problem: is_correct(text, p), soft)
        examples.append(PRMExample(input=problem.question, output=steps, label=labels))
    return examples


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prm_data(
    policy: Path,
    problems: Path,
    out: Path,
    task: str = "arithmetic",
    solutions: int = 15,
    completions: int = 8,
    temperature: float = 0.8,
    completion_temperature: float | None = None,
    soft: bool = False,
    limit: int | None = None,
    engine: EngineSettings = EngineSettings(),
    seed: int = 0,
    prompt: PromptFormat = PLAIN,
) -> dict[str, float]:
    """Write Math-Shepherd PRM data (prm-v4 JSON lines) for a problems file, sampling from the policy directory.

    `limit` takes the first problems only; `engine` sets the vLLM engine (`--engine.max_new_tokens 96`); `prompt` is
    the policy's prompt format. Returns and prints counts: examples, steps, share of steps labelled good.
    """
    from bstar_pl.tasks import get

    started = time.perf_counter()
    chosen = read_jsonl(problems, Problem)[:limit]
    served = Engine(policy, engine, seed=seed, prompt=prompt)
    examples = shepherd_examples(
        served, chosen, get(task).is_correct, solutions, completions, temperature, completion_temperature, soft
    )
    write_prm(out, examples)
    labels = [v for e in examples for v in e.label]
    stats = {
        "problems": len(chosen),
        "examples": len(examples),
        "steps": len(labels),
        "good_steps": sum(labels) / max(len(labels), 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"prm-data: {stats} -> {out}")
    return stats
