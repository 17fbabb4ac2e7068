"""Grade many responses on all cores: one guarded grading process per worker, each response under a
hard deadline, with a progress bar. A response whose grading hangs or fails counts as wrong.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType

from tqdm import tqdm

from bstar_pl.isolation.deadline import Guard
from bstar_pl.records import Problem

CHUNK = 64  # responses per request to a worker


def grade_all(
    task: ModuleType,
    texts: Sequence[str],
    problems: Sequence[Problem],
    workers: int | None = None,
    timeout: float = 5.0,
    progress: bool = True,
) -> list[bool]:
    """`task.is_correct(texts[i], problems[i])` for every i, in `workers` processes (default: the cores
    this process may use).

    `timeout` bounds each response (seconds); past it the worker is killed and replaced and the
    response counts as wrong, as does one whose grading raised. Results come back in input order.
    """
    if len(texts) != len(problems):
        raise ValueError(f"{len(texts)} texts but {len(problems)} problems")
    n = len(texts)
    workers = max(1, min(workers or len(os.sched_getaffinity(0)), n))
    results = [False] * n
    if n == 0:
        return results
    warm_up = functools.partial(_warm_up, task.__name__)
    guards = [Guard(preload=(task.__name__,), warm_up=warm_up) for _ in range(workers)]
    # Threads only feed the processes; they wait on sockets, so the GIL is no bottleneck. Responses go
    # out in chunks (results stream back one by one, each under its own deadline): a round trip per
    # response would cost more than grading an integer answer.
    chunk = max(1, min(CHUNK, n // (4 * workers)))
    next_index = iter(range(0, n, chunk))
    lock = threading.Lock()
    errors: list[BaseException] = []
    stop = threading.Event()
    bar = tqdm(total=n, desc=f"grading {task.__name__.rsplit('.', 1)[-1]}", disable=not progress, unit="resp")

    def work(guard: Guard) -> None:
        try:
            while not stop.is_set():
                with lock:
                    start = next(next_index, None)
                if start is None:
                    return
                calls = [(task.__name__, texts[i], problems[i]) for i in range(start, min(start + chunk, n))]
                for i, result in enumerate(guard.call_many(_grade, calls, timeout), start=start):
                    # A Timeout or CallFailed (the grader hung or crashed on this response) counts as wrong.
                    results[i] = result is True
                with lock:
                    bar.update(len(calls))
        except BaseException as e:  # e.g. a grading process that cannot start: report it, do not hang
            errors.append(e)
            stop.set()

    _feed(work, guards, stop, bar)
    if errors:
        raise errors[0]
    return results


def _feed(work: Callable[[Guard], None], guards: list[Guard], stop: threading.Event, bar: tqdm) -> None:
    """Run `work` for each grading process in a thread of its own, then stop the processes (on Ctrl-C too)."""
    threads = [threading.Thread(target=work, args=(g,), name=f"grade-{k}", daemon=True) for k, g in enumerate(guards)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        stop.set()  # no thread starts another call
        bar.close()
        for guard in guards:
            guard.close()


def _grade(module: str, text: str, problem: Problem) -> bool:
    """Runs in a grading process: the task's own reward."""
    return bool(importlib.import_module(module).is_correct(text, problem))


def _warm_up(module: str) -> None:
    """Runs in a fresh grading process, before the deadline clock: first-use costs of the grader."""
    importlib.import_module(module).is_correct("# Answer\n\n1", Problem(id="warm-up", question="warm-up", answer="1"))
    if "bstar_pl.tasks.grading" in sys.modules:  # the task grades with math-verify
        sys.modules["bstar_pl.tasks.grading"].warm_up()
