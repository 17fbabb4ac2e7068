"""`bstar-pl evaluate`: a policy (and optionally a PRM) on one test set; metrics to a JSON file and a table.

It starts the process's one vLLM engine; a caller that already holds one calls `evaluate.evaluate_policy`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Literal

from bstar_pl import tasks
from bstar_pl.atomic import atomic_write_text
from bstar_pl.config import ConfigError
from bstar_pl.evaluate import evaluate_policy, format_table, metrics_table
from bstar_pl.template import PLAIN, PromptFormat


def evaluate(
    policy: Path,
    task: str,
    data: Path,
    out: Path,
    k: int = 32,
    temperature: float = 1.0,
    s: int = 4,
    prm: Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    max_new_tokens: int = 768,
    max_model_len: int = 2048,
    dtype: str = "auto",
    gpu_memory_utilization: float = 0.85,
    prm_aggregate: Literal["min", "last", "prod"] = "min",
    prm_weight: float = 0.2,
    prm_score: Literal["logit", "probability"] = "logit",
    prm_batch_tokens: int = 16_384,
    save_samples: bool = True,
    prompt: PromptFormat = PLAIN,
) -> dict[str, Any]:
    """Evaluate `policy` on the test set `data` of `task`: greedy Pass@1, and over `k` samples at
    `temperature` Pass@K, Pass@K-S, majority vote and, with a PRM, Reward@K-S and Best-of-K; per level
    and subject where problems have them (MATH). Writes `out` (JSON: the arguments and the metrics) and,
    with `save_samples`, every graded response beside it (`<out stem>.samples.jsonl`).

    Args:
        policy: the policy, an HF model directory.
        task: the task that loads and grades `data` (bstar_pl.tasks.NAMES).
        data: the test set's file.
        out: the JSON file of results, written atomically.
        k: samples per problem (0: greedy only); the paper reports P@32-4.
        temperature: sampling temperature of the k samples.
        s: the S of Pass@K-S and Reward@K-S.
        prm: a PRM directory; Reward@K-S and Best-of-K are reported only with one.
        limit: evaluate only the first this many problems.
        seed: seeds the requests; the same seed gives the same samples.
        max_new_tokens / max_model_len / dtype / gpu_memory_utilization: the vLLM engine.
        prm_aggregate / prm_weight: r = 1[correct] + prm_weight · (min, last or prod of the step scores).
        prm_score: a step score is the PRM's logit clipped to ±5 ("logit") or its sigmoid ("probability").
        prm_batch_tokens: padded tokens per PRM forward pass.
        save_samples: also write the graded responses.
        prompt: the policy's prompt format (`--prompt.chat true` for an instruct model's chat template).
    """
    check(policy, task, data, out, k, temperature, s, prm, limit)
    if prm_aggregate == "prod" and prm_score != "probability":
        raise ConfigError("config field 'prm_aggregate': 'prod' multiplies probabilities; set prm_score: probability")
    module = tasks.get(task)
    problems = module.load(data, limit=limit)
    if not problems:
        raise ConfigError(f"config field 'data': {data} holds no problems")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import torch

    from bstar_pl.sampler import Sampler

    sampler = Sampler(
        policy,
        dtype=dtype,
        max_model_len=max_model_len,
        max_new_tokens=max_new_tokens,
        gpu_memory_utilization=gpu_memory_utilization,
        seed=seed,
        prompt=prompt,
    )
    scorer = None
    if prm is not None:
        from bstar_pl.scoring import PRMScorer

        device = "cuda" if torch.cuda.is_available() else "cpu"
        scorer = PRMScorer(prm, device=device, max_batch_tokens=prm_batch_tokens, score=prm_score, prompt=prompt)
    samples_out = out.with_name(f"{out.stem}.samples.jsonl") if save_samples else None
    metrics = evaluate_policy(
        sampler, problems, module, k, temperature, s, scorer, seed,
        how=prm_aggregate, weight=prm_weight, samples_out=samples_out,
    )  # fmt: skip
    args = {"policy": policy, "task": task, "data": data, "prm": prm, "k": k, "temperature": temperature, "s": s}
    args |= {"limit": limit, "seed": seed, "max_new_tokens": max_new_tokens, "prm_aggregate": prm_aggregate}
    args |= {"prm_score": prm_score, "prompt": dataclasses.asdict(prompt)}
    result = {"args": {key: str(v) if isinstance(v, Path) else v for key, v in args.items()}, "metrics": metrics}
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    sampled = f"; {k} samples at t={temperature:.2f}, S={s}" if k > 0 else ""
    print(f"\n{task} {data} ({len(problems)} problems), greedy Pass@1{sampled}:")
    print(format_table(metrics_table(metrics), label="subset"))
    print(f"\nmetrics in {out}")
    return metrics


def check(
    policy: Path,
    task: str,
    data: Path,
    out: Path,
    k: int,
    temperature: float,
    s: int,
    prm: Path | None,
    limit: int | None,
) -> None:
    """Fail on the first argument that cannot work, before the engine starts (a minute on a big model)."""

    def need(ok: bool, name: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"config field {name!r}: {why}")

    need((policy / "config.json").is_file(), "policy", f"{policy} is not an HF model directory (no config.json)")
    need(task in tasks.NAMES, "task", f"unknown task {task!r}; expected one of {', '.join(tasks.NAMES)}")
    try:
        tasks.get(task)
    except ImportError as e:
        raise ConfigError(f"config field 'task': task {task!r} is not available here ({e})") from None
    need(data.is_file(), "data", f"{data} does not exist")
    need(prm is None or (prm / "config.json").is_file(), "prm", f"{prm} is not a PRM directory (no config.json)")
    need(k >= 0, "k", f"must be >= 0, got {k}")
    need(s >= 1, "s", f"must be >= 1, got {s}")
    need(k == 0 or temperature > 0, "temperature", f"must be > 0 for sampling, got {temperature}")
    need(limit is None or limit >= 1, "limit", f"must be >= 1, got {limit}")
    need(not out.is_dir(), "out", f"{out} is a directory; give the JSON file to write")
