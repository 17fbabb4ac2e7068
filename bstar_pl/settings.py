"""Settings every command shares, declared once: the vLLM engine, the reward (answer check and PRM) and a test set;
with their checks, which name the field that cannot work before any work starts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bstar_pl.prompt import PromptFormat
from bstar_pl.tasks import NAMES


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field."""


@dataclass
class EngineSettings:
    """The vLLM engine, for every command that samples (iterate, evaluate, prm-data, launch/sample.py).

    Args:
        max_new_tokens: the response limit (paper: 768); a longer response is cut and kept as truncated.
        max_model_len: prompt + response tokens the engine holds per sequence.
        dtype: the engine's weights and compute ("auto": the checkpoint's; "float32" on CPU for exact agreement
            with fp32 training).
        gpu_memory_utilization: the share of GPU memory the engine may take (weights and KV cache).
        tensor_parallel_size: GPUs per engine, for a model too large for one.
        enable_sleep_mode: free the engine's GPU memory while the trainer trains (GPU only).
    """

    max_new_tokens: int = 768
    max_model_len: int = 2048
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.85
    tensor_parallel_size: int = 1
    enable_sleep_mode: bool = False


@dataclass
class Reward:
    """r = 1[correct] + weight · PRM solution score ("min", "last" or "prod" of its step scores);
    without a PRM (`prm: null`), r = 1[correct]. A step score is the PRM's logit clipped to ±`clip`
    (`score: logit`, the paper's scale: r_prm = min / 5 in [-1, 1]) or its sigmoid (`score: probability`).
    `batch_tokens`: padded tokens per PRM forward pass. `workers`: grading processes, each response under a hard
    deadline (0: one per core; 1: grade in this process, as a cheap grader such as arithmetic's should)."""

    prm: Path | None = None
    aggregate: Literal["min", "last", "prod"] = "min"
    weight: float = 0.2
    score: Literal["logit", "probability"] = "logit"
    clip: float = 5.0
    batch_tokens: int = 16_384
    workers: int = 1


@dataclass
class TestSet:
    """A test set evaluated after every iteration: greedy Pass@1 and, with k > 0, k samples per problem at
    `temperature` for Pass@K, Pass@K-S (paper: P@32-4), majority vote and, with a PRM, Reward@K-S.

    Args:
        path: the problems file.
        task: grades it (default: the run's task).
        size: evaluate only the first this many problems (None: all).
        k / s / temperature: the sampled metrics; k = 0 evaluates greedily only.
    """

    path: Path
    task: str | None = None
    size: int | None = None
    k: int = 0
    s: int = 4
    temperature: float = 1.0


def need(ok: bool, field_name: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"config field {field_name!r}: {why}")


def check_policy(policy: Path, prompt: PromptFormat, field_name: str) -> None:
    need((policy / "config.json").is_file(), field_name, f"{policy} is not an HF model directory (no config.json)")
    need(not prompt.chat or has_chat_template(policy), "prompt.chat", f"{policy} has no chat template")


def check_test(test: TestSet, prefix: str) -> None:
    need(test.path.is_file(), f"{prefix}path", f"{test.path} does not exist")
    need(test.task in (None, *NAMES), f"{prefix}task", f"unknown task {test.task!r}; expected one of {NAMES}")
    need(test.size is None or test.size >= 1, f"{prefix}size", f"must be >= 1, got {test.size}")
    need(test.k >= 0, f"{prefix}k", f"must be >= 0, got {test.k}")
    need(test.s >= 1, f"{prefix}s", f"must be >= 1, got {test.s}")
    need(test.k == 0 or test.temperature > 0, f"{prefix}temperature", "must be > 0 for sampling")


def check_reward(reward: Reward) -> None:
    need(
        reward.prm is None or (reward.prm / "config.json").is_file(), "reward.prm", f"{reward.prm} is no PRM directory"
    )
    need(reward.weight >= 0, "reward.weight", "must be >= 0")
    need(reward.clip > 0, "reward.clip", "must be > 0")
    need(reward.batch_tokens >= 1, "reward.batch_tokens", "must be >= 1")
    need(reward.workers >= 0, "reward.workers", "must be >= 0 (0: one per core)")
    why = "'prod' multiplies probabilities: it needs reward.score: probability"
    need(reward.aggregate != "prod" or reward.score == "probability", "reward.aggregate", why)


def check_engine(engine: EngineSettings) -> None:
    for name in ("max_new_tokens", "max_model_len", "tensor_parallel_size"):
        need(getattr(engine, name) >= 1, f"engine.{name}", f"must be >= 1, got {getattr(engine, name)}")
    need(0 < engine.gpu_memory_utilization <= 1, "engine.gpu_memory_utilization", "must be in (0, 1]")


def has_chat_template(model: Path) -> bool:
    """Whether an HF model directory's tokenizer carries a chat template (its own file or in its config)."""
    if (model / "chat_template.jinja").is_file():
        return True
    config = model / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("chat_template"))
