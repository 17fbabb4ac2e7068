"""The B-STaR loop (DESIGN.md §1) as a hybrid: each rank's process holds a vLLM engine and a Lightning trainer.

    for each iteration i = 1 … I, from the policy P_{i-1}:
        search    (t_i, τ_i) by the balance score on the search queries   -> search.json
        sample    k responses per pool query at t_i                      -> samples.jsonl
        score     r = 1[correct] (+ PRM solution score / 5)               -> scored.jsonl
        select    r > τ_i, distinct texts, best first, until N           -> selected.jsonl
        train     the policy on the selected data, new weights into the engine in place -> policy/
        evaluate  the new policy on the test sets                        -> metrics.json

Every artefact is written to a temporary name and renamed; a phase whose artefact exists is read back
instead of recomputed, so re-running the same command resumes a killed run where it stopped (training
from its last checkpoint). Every rank computes every phase alike (the engine shards sampling over ranks);
rank 0 writes. The run directory must be on a file system that all ranks share.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from bstar_pl import balance, search_strategy, tasks
from bstar_pl.atomic import atomic_write_text
from bstar_pl.config import Config, ConfigError, check
from bstar_pl.data import load_examples
from bstar_pl.evaluate import policy_metrics, sample_metrics, selection_metrics
from bstar_pl.monitor import log_iteration
from bstar_pl.records import Problem, Sample, Scored, Selected, SFTExample, read_jsonl, write_jsonl
from bstar_pl.sampler import Sampler
from bstar_pl.scoring import score_samples
from bstar_pl.training import PolicyTrainer, world_size

T = TypeVar("T")


def iterate(cfg: Config, sampler: Sampler | None = None) -> list[dict[str, Any]]:
    """Run (or resume) the loop; return every iteration's metrics, iteration 0 being P0 itself.

    `sampler`: an engine to use instead of starting one (one process runs one engine well: the demo
    runs several configs on one); its weights are replaced by the policies of this run as needed.
    """
    check(cfg)
    init_distributed()
    remember(cfg)
    task = tasks.get(cfg.data.task)
    pool = task.load(cfg.data.pool, limit=cfg.data.pool_size)
    search_queries = task.load(cfg.data.search or cfg.data.pool, limit=cfg.data.search_size)
    graders = {name: tasks.get(t.task or cfg.data.task) for name, t in cfg.data.tests.items()}
    tests = {name: (graders[name], graders[name].load(t.path, limit=t.size)) for name, t in cfg.data.tests.items()}
    n_star = cfg.selection.n_star or balance.n_star(cfg.selection.n_target, len(pool))
    run = Run(cfg, task, sampler)

    history = [run.evaluate(0, tests)]
    history += [run.iteration(i, pool, search_queries, tests, n_star) for i in range(1, cfg.iterations + 1)]
    run.say(summary(history))
    return history


class Run:
    """The state one process carries through the loop: the engine, the trainer, the PRM, timings."""

    def __init__(self, cfg: Config, task: Any, sampler: Sampler | None = None) -> None:
        self.cfg, self.task = cfg, task
        self.rank = int(os.environ.get("RANK", "0"))
        self.sampler = sampler
        if sampler is not None:
            sampler.prompt = cfg.prompt  # a shared engine serves this run's prompt format
        self.serving: Path | None = None  # the policy whose weights the engine holds (None: unknown)
        self.trainer = PolicyTrainer(cfg)
        self.prm: Any = None
        self.seconds: dict[str, float] = {}

    def folder(self, i: int) -> Path:
        return self.cfg.out / f"iter_{i:02d}"

    def policy(self, i: int) -> Path:
        return self.cfg.policy if i == 0 else self.folder(i) / "policy"

    def iteration(
        self,
        i: int,
        pool: list[Problem],
        search_queries: list[Problem],
        tests: dict[str, tuple[Any, list[Problem]]],
        n_star: int,
    ) -> dict[str, Any]:
        """Iteration i: from P_{i-1} to P_i, each phase read back if its artefact exists."""
        folder = self.folder(i)
        if (folder / "metrics.json").exists():
            return json.loads((folder / "metrics.json").read_text())
        previous = self.policy(i - 1)
        search: dict[str, Any] = {}
        if self.cfg.mode == "control":
            examples = load_examples(self.cfg.data.sft)
            stats: dict[str, Any] = {"selected": {"size": len(examples)}}
        elif self.cfg.mode == "oracle":
            examples = gold_examples(pool)
            stats = {"selected": {"size": len(examples)}}
        else:
            search = self.phase(
                folder / "search.json", lambda: self.search(i, search_queries, n_star, previous, len(pool))
            )
            t, tau = search["temperature"], search["threshold"]
            samples = self.phase(folder / "samples.jsonl", lambda: self.sample(i, pool, t, previous), Sample)
            scored = self.phase(folder / "scored.jsonl", lambda: self.score(pool, samples), Scored)
            selected = self.phase(folder / "selected.jsonl", lambda: self.select(i, pool, scored, tau), Selected)
            if not selected:
                raise RuntimeError(f"iteration {i}: no response has reward > {tau}; nothing to train on")
            examples = [SFTExample(s.query, s.output) for s in selected]
            stats = {"temperature": t, "threshold": tau, **self.describe(i, pool, scored, selected, n_star)}
        if self.cfg.train.replay > 0 and self.cfg.mode != "control":
            old = replayed(load_examples(self.cfg.data.sft), len(examples), self.cfg.train.replay, self.cfg.seed, i)
            examples += old
            stats["replayed"] = len(old)
        if not (folder / "policy" / "config.json").exists():
            self.train(i, examples, previous)
        return self.evaluate(i, tests, stats, search)

    # Phases -------------------------------------------------------------------------------------

    def search(self, i: int, queries: list[Problem], n_star: int, policy: Path, pool_size: int) -> dict[str, Any]:
        """(t, τ) of this iteration: the best balance score the search strategy finds (B-STaR), or the fixed pair."""
        if self.cfg.mode != "bstar":
            return {"temperature": self.cfg.selection.temperature, "threshold": self.cfg.selection.threshold}
        c = self.cfg.search
        spec = search_strategy.Spec(
            c.temperatures.values(),
            c.thresholds.values(),
            c.samples,
            n_star,
            c.balance_over,
            derived_seed(self.cfg.seed, i, "select"),
            self.cfg.selection.drop_unaligned,
        )
        self.say(f"[iter {i}] search ({c.strategy}): {len(queries)} queries x {len(spec.temperatures)} temperatures")

        def draw(temperatures: list[float], problems: list[Problem], n: int) -> list[Scored]:
            samples = self.generate(policy, problems, temperatures, n, (i, "search_sampling"))
            return self.score(problems, samples, "search_scoring")

        strategy = search_strategy.Strategy(c.strategy, c.budget, c.z)
        outcome = search_strategy.run(strategy, spec, draw, queries, pool_size * self.cfg.sampling.samples)
        result = outcome.result
        self.say(
            f"[iter {i}] search: t={result.temperature} τ={result.threshold} balance={result.score:.4f} "
            f"({outcome.responses} responses)"
        )
        return {
            "temperature": result.temperature,
            "threshold": result.threshold,
            "balance_score": result.score,
            "best": list(result.best),
            "strategy": c.strategy,
            "responses": outcome.responses,
            "tokens": outcome.tokens,
            "queries": outcome.queries,
            "rounds": outcome.rounds,
            "temperatures": spec.temperatures,
            "thresholds": spec.thresholds,
            "scores": result.scores.round(6).tolist(),
        }

    def sample(self, i: int, pool: list[Problem], t: float, policy: Path) -> list[Sample]:
        self.say(f"[iter {i}] sample: {len(pool)} queries x {self.cfg.sampling.samples} at t={t}")
        return self.generate(policy, pool, [t], self.cfg.sampling.samples, (i, "sampling"))

    def score(self, problems: list[Problem], samples: list[Sample], purpose: str = "scoring") -> list[Scored]:
        self.say(f"score: {len(samples)} responses")
        r = self.cfg.reward
        prm = self.load_prm()
        with self.timed(purpose):
            return score_samples(problems, samples, self.task.is_correct, prm, r.aggregate, r.weight)

    def select(self, i: int, pool: list[Problem], scored: list[Scored], tau: float) -> list[Selected]:
        """The selection rule of balance.py over this iteration's pool samples."""
        with self.timed("selection"):
            candidates = list(scored)
            if self.cfg.selection.inject_gold:
                gold = [Sample(p.id, 0.0, 0, p.solution, 0, "stop") for p in pool if p.solution]
                candidates += [Scored(sample, True, 1.0) for sample in gold]
            chosen = self.chosen(i, pool, candidates, tau)
        self.say(f"[iter {i}] select: {len(chosen)} responses with reward > {tau}")
        return chosen

    def chosen(self, i: int, pool: list[Problem], scored: list[Scored], tau: float) -> list[Selected]:
        """balance.select over `scored`: reward > τ, distinct texts, best first, until N."""
        cands = self.candidates(i, scored, pool)
        by_id = {p.id: p for p in pool}
        return [
            Selected(s.sample.problem_id, by_id[s.sample.problem_id].question, s.sample.text, s.reward)
            for s in (scored[k] for k in balance.select(cands, tau, self.cfg.selection.n_target))
        ]

    def train(self, i: int, examples: list[SFTExample], previous: Path) -> None:
        self.say(f"[iter {i}] train: {self.cfg.train.steps} steps on {len(examples)} examples")
        if self.sampler is not None and self.sampler.sleep_mode:
            self.sampler.sleep()
        with self.timed("training"):
            tokens = self.trainer.train(i, examples, previous)
        self.seconds["training_tokens_per_s_per_rank"] = tokens / max(self.seconds["training"], 1e-9)
        with self.timed("export"):
            self.trainer.export(self.policy(i))
        if self.sampler is not None:
            with self.timed("swap"):
                self.trainer.swap(self.sampler, self.policy(i))
            self.serving = self.policy(i)

    def evaluate(
        self,
        i: int,
        tests: dict[str, tuple[Any, list[Problem]]],
        extra: dict[str, Any] | None = None,
        search: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """P_i on every test set (greedy Pass@1, and the sampled metrics where the set asks for K samples);
        with the iteration's other figures -> metrics.json."""
        path = self.folder(i) / "metrics.json"
        if path.exists():
            return json.loads(path.read_text())
        metrics: dict[str, Any] = {"iteration": i, "mode": self.cfg.mode, **(extra or {})}
        if search and "balance_score" in search:
            metrics["search"] = {
                k: search[k] for k in ("threshold", "balance_score", "responses", "tokens") if k in search
            }
        for name, (task, problems) in tests.items():
            metrics.setdefault("test", {})[name] = self.test(i, name, task, problems)
        timings = self.folder(i) / "timings.json"
        if self.seconds:
            earlier = json.loads(timings.read_text()) if timings.exists() else {}
            self.write(timings, json.dumps({**earlier, **self.seconds}, indent=2) + "\n")
            self.seconds = {}
        if timings.exists():
            metrics["seconds"] = json.loads(timings.read_text())
        self.write(path, json.dumps(metrics, indent=2) + "\n")
        if self.rank == 0:
            log_iteration(self.cfg.out / "tb" / "iterations", i, metrics, search)
        return metrics

    def test(self, i: int, name: str, task: Any, problems: list[Problem]) -> dict[str, Any]:
        """One test set's `policy_metrics`; its responses -> test_<name>.jsonl. The PRM, when the run has
        one, ranks the K samples for Reward@K-S; a greedy response is graded only."""
        spec = self.cfg.data.tests[name]

        def generate() -> list[Sample]:
            greedy = self.generate(self.policy(i), problems, [0.0], 1, (i, "evaluation"))
            if spec.k == 0:
                return greedy
            return greedy + self.generate(self.policy(i), problems, [spec.temperature], spec.k, (i, "evaluation"))

        samples = self.phase(self.folder(i) / f"test_{name}.jsonl", generate, Sample)
        greedy = [x for x in samples if x.temperature == 0.0]
        sampled = [x for x in samples if x.temperature != 0.0]
        r, prm = self.cfg.reward, self.load_prm() if sampled else None
        with self.timed("evaluation_scoring"):
            greedy_scored = score_samples(problems, greedy, task.is_correct)
            sampled_scored = score_samples(problems, sampled, task.is_correct, prm, r.aggregate, r.weight)
        check_steps = getattr(task, "check_steps", None)
        return policy_metrics(
            problems, greedy_scored, sampled_scored, task.extract_answer, spec.s, prm is not None, check_steps
        )

    # Helpers ------------------------------------------------------------------------------------

    def generate(
        self,
        policy: Path,
        problems: list[Problem],
        temperatures: list[float],
        n: int,
        purpose: tuple[int, str] = (0, "evaluation"),
    ) -> list[Sample]:
        """Sample from `policy`, starting the engine or loading those weights first when needed.

        `purpose` (iteration, phase) seeds the requests and names the timing."""
        s = self.cfg.sampling
        if self.sampler is None:
            self.sampler = Sampler(
                policy,
                dtype=s.dtype,
                max_model_len=s.max_model_len,
                max_new_tokens=s.max_new_tokens,
                tensor_parallel_size=s.tensor_parallel_size,
                gpu_memory_utilization=s.gpu_memory_utilization,
                enable_sleep_mode=s.enable_sleep_mode,
                seed=self.cfg.seed,
                distributed_executor_backend="external_launcher" if world_size() > 1 else None,
                prompt=self.cfg.prompt,
            )
            self.serving = policy
        elif self.serving != policy:
            self.sampler.reload(policy)
            self.serving = policy
        self.sampler.seed = derived_seed(self.cfg.seed, *purpose)
        started = time.perf_counter()
        with self.timed(purpose[1]):
            samples = self.sampler.generate(problems, temperatures, n, max_new_tokens=s.max_new_tokens)
        elapsed = time.perf_counter() - started
        self.seconds[f"{purpose[1]}_tokens_per_s"] = sum(x.n_tokens for x in samples) / max(elapsed, 1e-9)
        return samples

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Add the block's wall time to this iteration's `timings.json` entry `name`."""
        started = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def candidates(self, i: int, scored: list[Scored], queries: list[Problem]) -> balance.Candidates:
        seed = derived_seed(self.cfg.seed, i, "select")
        return search_strategy.candidate_rows(scored, queries, seed, self.cfg.selection.drop_unaligned)

    def describe(
        self, i: int, pool: list[Problem], scored: list[Scored], selected: list[Selected], n_star: int
    ) -> dict[str, Any]:
        """Figures of the pool sample and of the selected data, for metrics.json and TensorBoard.

        With a PRM, also `answer_only`: what the same rule would select from the same samples with the
        answer reward alone, so that the PRM's effect on the data (e.g. its share of correct answers
        reached through wrong steps) is measured on one sample rather than across runs."""
        check_steps = getattr(self.task, "check_steps", None)
        samples = [s.sample for s in scored]
        pool_metrics = sample_metrics(pool, samples, self.task.is_correct, check_steps)
        by_id = {p.id: p for p in pool}

        def stats(rows: list[Selected]) -> dict[str, float]:
            return selection_metrics(rows, by_id, self.task.is_correct, check_steps, n_star)

        figures = {"pool": next(iter(pool_metrics.values())) if pool_metrics else {}, "selected": stats(selected)}
        if self.cfg.reward.prm is not None:
            answer = [dataclasses.replace(s, reward=float(s.correct)) for s in scored]
            figures["answer_only"] = stats(self.chosen(i, pool, answer, 0.0))
        return figures

    def load_prm(self) -> Any:
        if self.cfg.reward.prm is not None and self.prm is None:
            from bstar_pl.scoring import PRMScorer

            device = "cuda" if torch.cuda.is_available() else "cpu"
            r = self.cfg.reward
            self.prm = PRMScorer(
                r.prm,
                device=device,
                max_batch_tokens=r.batch_tokens,
                score=r.score,
                clip=r.clip,
                prompt=self.cfg.prompt,
            )
        return self.prm

    def phase(self, path: Path, compute: Callable[[], T], record: type | None = None) -> T:
        """Read the artefact at `path` if it exists; else compute it (every rank) and write it (rank 0)."""
        if path.exists():
            return read_jsonl(path, record) if record else json.loads(path.read_text())
        value = compute()
        if self.rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            if record:
                write_jsonl(path, value)
            else:
                atomic_write_text(path, json.dumps(value, indent=1) + "\n")
        barrier()
        return value

    def write(self, path: Path, text: str) -> None:
        if self.rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)
        barrier()

    def say(self, message: str) -> None:
        if self.rank == 0:
            print(message, flush=True)


def gold_examples(pool: list[Problem]) -> list[SFTExample]:
    """The oracle's data: every pool problem's reference solution (what perfect self-generated data would be)."""
    missing = next((p.id for p in pool if not p.solution), None)
    if missing is not None:
        raise ConfigError(f"mode 'oracle' trains on reference solutions, but pool problem {missing!r} has none")
    return [SFTExample(p.question, p.solution) for p in pool]


def replayed(sft: list[SFTExample], new: int, share: float, seed: int, iteration: int) -> list[SFTExample]:
    """SFT examples to mix with `new` fresh ones so that they are `share` of the whole (seeded per iteration;
    drawn with replacement when the SFT data is smaller than asked)."""
    count = round(new * share / (1 - share))
    rng = np.random.default_rng(derived_seed(seed, iteration, "replay"))
    picks = rng.choice(len(sft), size=count, replace=count > len(sft))
    return [sft[k] for k in picks]


def derived_seed(seed: int, iteration: int, purpose: str) -> int:
    """A seed per (run seed, iteration, purpose): iterations and phases never repeat each other's draws."""
    digest = hashlib.sha256(f"{seed}/{iteration}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def init_distributed() -> None:
    """Under torchrun: join the process group before the engine starts (vLLM would otherwise make a
    world of its own, of size 1, and the trainer's device mesh would not fit in it)."""
    if world_size() > 1 and not torch.distributed.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def remember(cfg: Config) -> None:
    """Store the run's config; refuse to resume a run directory with a different one."""
    path = cfg.out / "config.json"
    now = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    if path.exists():
        before = json.loads(path.read_text())
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if changed:
            raise ConfigError(f"{path}: this run was started with a different {changed[0]!r}; use another `out`")
        return
    if int(os.environ.get("RANK", "0")) == 0:
        cfg.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(now, indent=2) + "\n")
    barrier()


def summary(history: list[dict[str, Any]]) -> str:
    """One line per iteration: chosen t and τ, selected size, and greedy accuracy on each test set."""
    lines = ["iter      t      τ   selected  " + "  ".join(f"{n:>10}" for n in history[0].get("test", {}))]
    for m in history:
        t = m.get("temperature")
        tau = m.get("threshold")
        size = m.get("selected", {}).get("size", "")
        accs = "  ".join(f"{v['accuracy']:>10.3f}" for v in m.get("test", {}).values())
        lines.append(
            f"{m['iteration']:>4}  {'' if t is None else f'{t:.2f}':>5}  {'' if tau is None else f'{tau:.2f}':>5}"
            f"  {size:>9}  {accs}"
        )
    return "\n".join(lines)
