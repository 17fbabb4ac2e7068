"""The CPU mini-reproduction of B-STaR, the README's main command: everything offline, both cores busy.

    base model -> task data (easy SFT levels, a hard pool and test levels) -> SFT (P0)
    -> jobs, `workers` at a time, each its own process with one vLLM engine:
         P0 on the test set (once: every run starts from these greedy responses, which are the same for all)
         PRM (Math-Shepherd labels from P0, then a PRM fit) -> B-STaR, Online RFT (t = 1.0, τ = 0.0, same PRM)
         control (the same steps on the SFT data), oracle (the same steps on the pool's reference solutions)
    -> summary.json (per method and seed: Pass@1 and hard-level Pass@1 per iteration) and the report

Every run is `bstar-pl iterate --config configs/iterate/tiny.yaml` with the run's mode, seed and paths as
overrides, exactly what a user would type; its log is `logs/<run>.log`. Each phase writes its artefact
atomically and is skipped when it exists: re-running the same command resumes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bstar_pl.atomic import atomic_write_text
from bstar_pl.config import Mode
from bstar_pl.models.tiny import Shape, make_tiny
from bstar_pl.rundir import iteration_dir
from bstar_pl.tasks import curriculum

MODES = ("bstar", "online_rft", "control", "oracle")
PRM_MODES = ("bstar", "online_rft")  # the runs that score with the PRM (and so wait for it)
# The order runs of one seed start in: one that needs no PRM runs beside the PRM job, then the two that wait for
# it, the control last. Measured on 2 cores (PRM 165 s, B-STaR 550, Online RFT 460, oracle 300, control 305):
# a makespan of ~930 s after P0 against ~1,015 s with the control beside the PRM and the oracle last.
START_ORDER = ("oracle", "online_rft", "bstar", "iterative_rft", "rest_em", "control")
CLI = [sys.executable, "-m", "bstar_pl.cli"]


@dataclass
class Job:
    """Commands run one after another in fresh processes; starts when the jobs named in `after` are done."""

    name: str
    commands: list[list[str]]
    after: tuple[str, ...] = ()
    done: Path | None = None  # the artefact that marks the job finished (skip the job when it exists)
    prepare: Callable[[], None] | None = None  # called just before the first command starts
    started: float = field(default=0.0, compare=False)


def demo(
    out: Path = Path("runs/demo"),
    iterate_config: Path = Path("configs/iterate/tiny.yaml"),
    seeds: int = 1,
    iterations: int = 4,
    modes: tuple[Mode, ...] = MODES,
    workers: int = 2,
    hidden: int = 64,
    heads: int = 2,
    sft_epochs: int = 4,
    sft_lr: float = 2e-3,
    prm: bool = True,
    prm_problems: int = 200,
    prm_epochs: int = 3,
    hard_levels: tuple[int, ...] = (4, 5),
    seed: int = 0,
) -> Path:
    """Build the tiny model and the arithmetic data, fine-tune P0, then run the PRM and every (mode, seed) in
    parallel processes, write `summary.json` and the report; return the report's path.

    `iterate_config` is the iterate config every run starts from (its paths are replaced by this demo's); `hard_levels`
    are the test levels beyond the SFT data, whose Pass@1 the summary and the report's first figure lead with.
    """
    started = time.perf_counter()
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    base = out / "base"
    if not (base / "config.json").exists():
        make_tiny(base, shape=Shape(hidden=hidden, heads=heads), seed=seed)
    data = out / "data"
    if not (data / "test.jsonl").exists():
        curriculum.write_splits(data, seed=seed)
    policy = out / "sft" / "policy"
    if not (policy / "config.json").exists():
        sft(base, data / "sft.jsonl", out / "sft", sft_epochs, sft_lr, seed, threads=workers)
    print(f"demo: P0 ready after {time.perf_counter() - started:.0f} s", flush=True)

    runs = {(mode, s): out / "runs" / f"{mode}_seed{s}" for s in range(seed, seed + seeds) for mode in modes}
    jobs = plan(out, iterate_config, runs, iterations, prm_problems if prm else 0, prm_epochs, seed)
    schedule(jobs, workers, out / "logs")

    from bstar_pl.report.markdown import write_report

    seconds = time.perf_counter() - started
    summary = summarize(list(runs.values()), data / "test.jsonl", hard_levels, seconds)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    path = write_report(list(runs.values()), out / "report", hard_levels=hard_levels)
    print(f"\ndemo: done in {seconds:.0f} s; summary: {out / 'summary.json'}; report: {path}")
    return path


def plan(
    out: Path,
    config: Path,
    runs: dict[tuple[str, int], Path],
    iterations: int,
    prm_problems: int,
    prm_epochs: int,
    seed: int,
) -> list[Job]:
    """The jobs after P0: its evaluation (once, shared by every run), the PRM (labels and fit; none without
    `prm_problems`), then every (mode, seed) run in START_ORDER, each waiting for what it needs."""
    prm_dir, p0 = out / "prm" / "model", iteration_dir(out / "p0", 0)
    jobs = [Job("p0", [iterate_args(config, out, p0.parent, "control", seed, 0, None)], done=p0 / "metrics.json")]
    if prm_problems:
        policy, dev = out / "sft" / "policy", out / "data" / "dev.jsonl"
        jobs.append(prm_job(out, policy, dev, prm_dir, prm_problems, prm_epochs, seed))
    for (mode, s), run in sorted(runs.items(), key=lambda item: (item[0][1], START_ORDER.index(item[0][0]))):
        uses_prm = bool(prm_problems) and mode in PRM_MODES
        argv = iterate_args(config, out, run, mode, s, iterations, prm_dir if uses_prm else None)
        done = iteration_dir(run, iterations) / "metrics.json"
        after = ("p0", "prm") if uses_prm else ("p0",)
        jobs.append(Job(run.name, [argv], after, done, prepare=lambda run=run: share_p0(p0, iteration_dir(run, 0))))
    return jobs


def iterate_args(
    config: Path, out: Path, run: Path, mode: str, seed: int, iterations: int, prm: Path | None
) -> list[str]:
    """`bstar-pl iterate` for one demo run: the config, with this demo's paths, mode and seed."""
    data = out / "data"
    tests = {"test": {"path": str(data / "test.jsonl")}}
    return [
        *CLI,
        "iterate",
        f"--config={config}",
        f"--out={run}",
        f"--policy={out / 'sft' / 'policy'}",
        f"--mode={mode}",
        f"--seed={seed}",
        f"--iterations={iterations}",
        f"--data.pool={data / 'pool.jsonl'}",
        f"--data.sft={data / 'sft.jsonl'}",
        f"--data.tests={json.dumps(tests)}",
        f"--reward.prm={prm if prm is not None else 'null'}",
    ]


def prm_job(out: Path, policy: Path, problems: Path, model: Path, n: int, epochs: int, seed: int) -> Job:
    """Math-Shepherd labels from P0 on `n` dev problems (disjoint from pool and test), then a PRM fit on them."""
    labels = out / "prm" / "prm_data.jsonl"
    label = [*CLI, "prm-data", f"--policy={policy}", f"--problems={problems}", f"--out={labels}", f"--limit={n}"]
    label += ["--solutions=8", "--completions=4", "--engine.max_new_tokens=96", "--engine.max_model_len=512"]
    label += ["--engine.dtype=float32"]
    label += [f"--seed={seed}"]
    fit = [*CLI, "prm", "fit", "--config=configs/prm/tiny.yaml", f"--model.model_path={policy}"]
    fit += [f"--model.export_dir={model}", f"--data.train_file={labels}", f"--trainer.max_epochs={epochs}"]
    fit += [f"--trainer.logger.init_args.save_dir={out / 'prm'}", f"--seed_everything={seed}"]
    return Job("prm", [label, fit] if not labels.exists() else [fit], done=model / "config.json")


def share_p0(source: Path, target: Path) -> None:
    """Give a run P0's test responses (greedy, so the same in every run: one evaluation serves all); the run
    grades them as its iteration 0 instead of generating them again. A run that has its own keeps it."""
    for path in sorted(source.glob("test_*.jsonl")):
        if not (target / path.name).exists():
            target.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target / path.name, path.read_text())


def schedule(jobs: list[Job], workers: int, logs: Path) -> None:
    """Run the jobs, at most `workers` at once, each as soon as the jobs it waits for are done; stop at the
    first failure (naming the job and its log). Jobs whose `done` artefact exists are skipped."""
    logs.mkdir(parents=True, exist_ok=True)
    pending = [j for j in jobs if j.done is None or not j.done.exists()]
    finished = {j.name for j in jobs} - {j.name for j in pending}
    running: dict[str, tuple[Job, subprocess.Popen[bytes], Any]] = {}
    while pending or running:
        for job in [j for j in pending if set(j.after) <= finished][: max(workers - len(running), 0)]:
            pending.remove(job)
            job.started = time.perf_counter()
            if job.prepare is not None:
                job.prepare()
            log = open(logs / f"{job.name}.log", "ab")  # noqa: SIM115 -- closed when the job ends
            running[job.name] = (job, start(job.commands[0], log), log)
            print(f"demo: {job.name} started (log: {logs / job.name}.log)", flush=True)
        time.sleep(0.5)
        for name, (job, process, log) in list(running.items()):
            if process.poll() is None:
                continue
            if process.returncode != 0:
                for _, other, _ in running.values():
                    other.kill()
                raise RuntimeError(f"demo: job {name} failed (exit {process.returncode}); see {log.name}")
            job.commands.pop(0)
            if job.commands:
                running[name] = (job, start(job.commands[0], log), log)
                continue
            log.close()
            del running[name]
            finished.add(name)
            print(f"demo: {name} done in {time.perf_counter() - job.started:.0f} s", flush=True)
        if pending and not running and not any(set(j.after) <= finished for j in pending):
            raise RuntimeError(f"demo: jobs {[j.name for j in pending]} wait for jobs that never ran")


def start(argv: list[str], log: Any) -> subprocess.Popen[bytes]:
    """Start one command with its output appended to `log`."""
    log.write(("$ " + " ".join(argv) + "\n").encode())
    log.flush()
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)


def sft(base: Path, train_file: Path, out: Path, epochs: int, lr: float, seed: int, threads: int) -> None:
    """Fine-tune `base` on the reference solutions with `threads` CPU threads (nothing else runs yet: on 2 idle
    cores a step took 0.27-0.36 s against 0.51 s on one); resumes from the last epoch checkpoint after a crash."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from bstar_pl.train.builders import Optim
    from bstar_pl.train.data import SFTDataModule
    from bstar_pl.train.sft import SFTModule

    torch.set_num_threads(threads)
    module = SFTModule(str(base), optim=Optim(lr=lr, lr_min=lr / 10, warmup_steps=50), export_dir=str(out / "policy"))
    data = SFTDataModule(str(train_file), micro_batch_size=64, max_prompt_len=64, max_target_len=96, seed=seed)
    L.seed_everything(seed)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        gradient_clip_val=1.0,
        log_every_n_steps=10,
        logger=TensorBoardLogger(out, name="logs"),
        callbacks=[ModelCheckpoint(out / "checkpoints", save_last=True, every_n_epochs=1)],
        enable_model_summary=False,
    )
    last = out / "checkpoints" / "last.ckpt"
    trainer.fit(module, datamodule=data, ckpt_path=last if last.exists() else None)
    torch.set_num_threads(1)


def summarize(runs: list[Path], test_file: Path, hard_levels: tuple[int, ...], seconds: float) -> dict[str, Any]:
    """summary.json: per method a list over seeds of Pass@1 and hard-level Pass@1 per iteration (0 = P0) and the
    (t, τ) each iteration sampled and selected with (None where a mode samples nothing)."""
    from bstar_pl.records import Problem, read_jsonl
    from bstar_pl.report.runs import levels_accuracy, load_run

    problems = read_jsonl(test_file, Problem)
    hard = [p for p in problems if p.info.get("level") in hard_levels]
    methods: dict[str, list[dict[str, Any]]] = {}
    p0: dict[str, float] = {}
    for path in runs:
        run = load_run(path)
        rows = [m["test"]["test"] for m in run.iterations]
        entry = {
            "seed": run.config["seed"],
            "pass1": [r["accuracy"] for r in rows],
            "pass1_hard": [levels_accuracy(r, hard_levels) for r in rows],
            "temperature": [m.get("temperature") for m in run.iterations[1:]],
            "threshold": [m.get("threshold") for m in run.iterations[1:]],
        }
        methods.setdefault(run.config["mode"], []).append(entry)
        p0 = {"pass1": entry["pass1"][0], "pass1_hard": entry["pass1_hard"][0]}
    return {
        "hard_levels": list(hard_levels),
        "test_size": len(problems),
        "hard_size": len(hard),
        "seconds": round(seconds, 1),
        "p0": p0,
        "methods": methods,
    }
