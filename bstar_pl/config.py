"""The loop's configuration: one YAML file, `bstar-pl iterate --config FILE`.

Defaults are the paper's (Mistral-7B on MATH); configs/iterate/ holds the runs. `check` validates
everything that can be checked before any work starts, so a typo never costs an hour of sampling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bstar_pl.modes import MODES
from bstar_pl.prompt import PromptFormat
from bstar_pl.settings import (
    EngineSettings,
    Reward,
    TestSet,
    check_engine,
    check_policy,
    check_reward,
    check_test,
    need,
)
from bstar_pl.tasks import NAMES

Mode = Literal["bstar", "online_rft", "iterative_rft", "rest_em", "control", "oracle"]  # what each does: modes.py


@dataclass
class Grid:
    """An inclusive grid start, start + step, …, stop."""

    start: float
    stop: float
    step: float

    def values(self) -> list[float]:
        from bstar_pl.balance import grid

        return grid(self.start, self.stop, self.step)


@dataclass
class Data:
    """Args:
    task: one of bstar_pl.tasks.NAMES; grades responses and loads the files below.
    pool: the queries sampled and trained on each iteration (M of them).
    pool_size: use the first this many pool queries (None: all).
    search: the fixed queries on which (t, τ) is searched; default: the first queries of the pool.
    search_size: how many search queries (paper: 600).
    tests: name -> test set (problems file, its task when not the run's, sampled metrics), evaluated
        after every iteration (e.g. MATH500, and GSM8K out of domain).
    sft: the SFT data, trained on by the `control` mode (same steps, no self-generated data) and replayed
        with `train.replay`.
    """

    task: str = "math"
    pool: Path = Path("data/pool.jsonl")
    pool_size: int | None = None
    search: Path | None = None
    search_size: int = 600
    tests: dict[str, TestSet] = field(default_factory=dict)
    sft: Path | None = None


@dataclass
class Search:
    """The (temperature, threshold) grid searched by the balance score (paper: 0.5…1.2 by 0.05, -1…1 by 0.01),
    with `samples` responses per search query at every temperature. `balance_over`: the queries the score
    averages over, "selected" (the paper: those with at least one selected response) or "all" (beyond the
    paper: a query with nothing selected counts as 0, so the score sees how many queries the data covers).
    `strategy` (phases/search.py): "full" samples every query at every temperature (the paper's search);
    "halving" races the temperatures over rounds of fresh queries within `budget` x the pool's responses,
    dropping a temperature `z` standard errors below the leader or in the worse half. `confidence` (beyond the
    paper; 0 = its maximum): pick the cell with the best lower bound, score - confidence x its standard error
    over the search queries, instead of the best score, which favours cells that few queries decide."""

    temperatures: Grid = field(default_factory=lambda: Grid(0.5, 1.2, 0.05))
    thresholds: Grid = field(default_factory=lambda: Grid(-1.0, 1.0, 0.01))
    samples: int = 64
    balance_over: Literal["selected", "all"] = "selected"
    strategy: Literal["full", "halving"] = "full"
    budget: float = 0.2
    z: float = 2.0
    confidence: float = 0.0


@dataclass
class Selection:
    """Args:
    n_target: responses to select per iteration, N (paper: 67,500).
    n_star: distinct correct responses per query that count as enough; None: ceil(N / M).
    temperature / threshold: the fixed (t, τ) of the baselines (Online RFT: 1.0, 0.0).
    inject_gold: add each problem's reference solution to its candidates with reward 1.0, as the
        reference code always did; off by default, since it is not self-generated data.
    drop_unaligned: leave out responses whose steps the PRM could not score.
    """

    n_target: int = 67_500
    n_star: int | None = None
    temperature: float = 1.0
    threshold: float = 0.0
    inject_gold: bool = False
    drop_unaligned: bool = True


@dataclass
class Sampling:
    """The per-iteration sample of the pool: `samples` responses per query (paper: 64)."""

    samples: int = 64


@dataclass
class Train:
    """Args:
    steps: optimizer steps per iteration (paper: 500 at batch 128).
    micro_batch_size / accumulate: batch per rank per pass; step batch = micro × ranks × accumulate.
    lr / lr_min / warmup_steps: peak, floor and warmup of the cosine schedule, which spans all
        iterations in the continuing modes and one iteration otherwise (paper: 4.12e-6 -> 2e-7).
    checkpoint_every: steps between checkpoints inside an iteration (the resume points).
    replay: the share of each iteration's training examples drawn from the SFT data (`data.sft`), the rest
        being the selected responses; 0 (the paper's rule) trains on the selected data alone. Replaying old
        data is how Lee et al. (2025) keep a self-improving model from forgetting what it could do.
    freeze_layers: keep the input embeddings (with tied embeddings, the output layer too) and the first this
        many decoder layers fixed (0: all train); the backward pass then stops at the first trained layer.
    """

    steps: int = 500
    micro_batch_size: int = 4
    accumulate: int = 32
    lr: float = 4.12e-6
    lr_min: float = 2e-7
    warmup_steps: int = 0
    weight_decay: float = 0.0
    gradient_clip: float = 1.0
    max_prompt_len: int = 768
    max_target_len: int = 768
    checkpoint_every: int = 100
    replay: float = 0.0
    freeze_layers: int = 0
    accelerator: str = "auto"
    param_dtype: str | None = None
    export_dtype: str | None = None
    activation_checkpointing: bool = False


@dataclass
class Config:
    """A B-STaR run (or a baseline) from an initial policy.

    Args:
        out: the run directory; re-running the same command resumes it.
        policy: the initial policy P0, an HF model directory (an SFT model in the paper).
        mode: bstar (search t, τ every iteration), online_rft (fixed t, τ; weights, optimizer and
            schedule carry over), iterative_rft (weights only carry over), rest_em (every iteration
            trains from P0), control (trains on the SFT data for the same steps), oracle (trains on the
            pool's reference solutions for the same steps: an upper bound for self-generated data).
        iterations: how many (paper: 9); 0 evaluates P0 alone (its metrics under this run's settings).
        seed: seeds sampling, data order and ties in selection.
        prompt: the policy's prompt format (`chat: true` for an instruct model's chat template), used
            alike for sampling, training and the PRM.
    """

    out: Path = Path("runs/iterate")
    policy: Path = Path("model")
    mode: Mode = "bstar"
    iterations: int = 9
    seed: int = 0
    data: Data = field(default_factory=Data)
    search: Search = field(default_factory=Search)
    selection: Selection = field(default_factory=Selection)
    reward: Reward = field(default_factory=Reward)
    sampling: Sampling = field(default_factory=Sampling)
    engine: EngineSettings = field(default_factory=EngineSettings)
    train: Train = field(default_factory=Train)
    prompt: PromptFormat = field(default_factory=PromptFormat)


def check(cfg: Config) -> None:
    """Raise ConfigError naming the first field that cannot work; touch nothing."""
    need(cfg.iterations >= 0, "iterations", f"must be >= 0, got {cfg.iterations}")
    need(cfg.data.task in NAMES, "data.task", f"unknown task {cfg.data.task!r}; expected one of {NAMES}")
    check_policy(cfg.policy, cfg.prompt, "policy")
    files = {"data.pool": cfg.data.pool, "data.search": cfg.data.search}
    for name, test in cfg.data.tests.items():
        check_test(test, f"data.tests.{name}.")
    need(0 <= cfg.train.replay < 1, "train.replay", f"must be in [0, 1), got {cfg.train.replay}")
    if MODES[cfg.mode].data == "sft" or cfg.train.replay > 0:
        need(cfg.data.sft is not None, "data.sft", "the control mode and replay read the SFT data: give its file")
        files["data.sft"] = cfg.data.sft
    for name, path in files.items():
        need(path is None or path.exists(), name, f"{path} does not exist")
    for name, value in (("data.pool_size", cfg.data.pool_size), ("data.search_size", cfg.data.search_size)):
        need(value is None or value >= 1, name, f"must be >= 1, got {value}")
    check_search(cfg.search)
    need(cfg.selection.temperature > 0, "selection.temperature", f"must be > 0, got {cfg.selection.temperature}")
    need(cfg.selection.n_target >= 1, "selection.n_target", "must be >= 1")
    need(cfg.selection.n_star is None or cfg.selection.n_star >= 1, "selection.n_star", "must be >= 1")
    need(cfg.sampling.samples >= 1, "sampling.samples", "must be >= 1")
    check_engine(cfg.engine)
    check_reward(cfg.reward)
    for name in ("steps", "micro_batch_size", "accumulate", "checkpoint_every"):
        need(getattr(cfg.train, name) >= 1, f"train.{name}", "must be >= 1")
    need(0 < cfg.train.lr_min <= cfg.train.lr, "train.lr_min", "need 0 < lr_min <= lr")
    need(cfg.train.freeze_layers >= 0, "train.freeze_layers", f"must be >= 0, got {cfg.train.freeze_layers}")


def check_search(search: Search) -> None:
    for name, g in (("search.temperatures", search.temperatures), ("search.thresholds", search.thresholds)):
        need(g.step > 0 and g.stop >= g.start, name, f"empty grid {g}")
    need(search.temperatures.start > 0, "search.temperatures", "temperatures must be > 0 (0 is greedy)")
    need(search.samples >= 1, "search.samples", "must be >= 1")
    need(search.budget > 0, "search.budget", "must be > 0 (a share of the pool's responses)")
    need(search.z > 0, "search.z", "must be > 0")
    need(search.confidence >= 0, "search.confidence", "must be >= 0 (standard errors below the score)")
