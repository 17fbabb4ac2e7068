"""A run directory: where each iteration's artefacts live, the rule that an artefact which exists is read back
instead of recomputed (so re-running a command resumes it), the config it was started with, the wall time of each
phase, and a lock that keeps a second process out while one works in it.

    RUN/config.json           the config; a resume with another is refused
    RUN/run.lock              held (flock) by the live process of rank 0; a killed process's lock holds nothing
    RUN/iter_XX/...           search.json, samples.jsonl, scored.jsonl, selected.jsonl, policy/, test_<name>.jsonl,
                              timings.json, metrics.json (iteration 0: the initial policy P0)

Every rank computes every phase alike; rank 0 writes, and the others wait at a barrier. The directory must be on a
file system that all ranks share.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from bstar_pl import dist
from bstar_pl.atomic import atomic_write_text
from bstar_pl.config import Config
from bstar_pl.records import read_jsonl, write_jsonl
from bstar_pl.settings import ConfigError

T = TypeVar("T")


class RunDir:
    """Paths and artefacts of one run (module doc). `p0` is the initial policy, iteration 0's."""

    def __init__(self, root: Path, p0: Path) -> None:
        self.root, self.p0 = root, p0
        self.clock = Clock()

    def iteration(self, i: int) -> Path:
        return iteration_dir(self.root, i)

    def checkpoints(self, i: int, continuing: bool) -> Path:
        """Training checkpoints: one folder where one schedule spans the iterations, else one per iteration."""
        return self.root / "checkpoints" if continuing else self.iteration(i) / "checkpoints"

    def policy(self, i: int) -> Path:
        """P_i: the initial policy for i = 0, else the HF checkpoint iteration i exported."""
        return self.p0 if i == 0 else self.iteration(i) / "policy"

    def trained(self, i: int) -> bool:
        return (self.policy(i) / "config.json").exists()

    def metrics(self, i: int) -> dict[str, Any] | None:
        """Iteration i's metrics.json, or None while the iteration is not finished."""
        path = self.iteration(i) / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else None

    def read(self, path: Path, record: type | None = None) -> Any:
        """The artefact at `path` (JSON lines of `record`, else JSON), or None where it was not written yet."""
        if not path.exists():
            return None
        return read_jsonl(path, record) if record else json.loads(path.read_text())

    def keep(self, path: Path, value: T, record: type | None = None) -> T:
        """Write `value` as the artefact at `path` (rank 0; JSON lines of `record`, else JSON) and return it."""
        if dist.rank() == 0:
            if record:
                write_jsonl(path, value)
            else:
                atomic_write_text(path, json.dumps(value, indent=1) + "\n")
        dist.barrier()
        return value

    def write(self, path: Path, text: str) -> None:
        if dist.rank() == 0:
            atomic_write_text(path, text)
        dist.barrier()

    def finish(self, i: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """Write iteration i's timings (added to those of an earlier, interrupted attempt) and its metrics.json."""
        timings = self.iteration(i) / "timings.json"
        if self.clock.seconds:
            earlier = json.loads(timings.read_text()) if timings.exists() else {}
            self.write(timings, json.dumps({**earlier, **self.clock.seconds}, indent=2) + "\n")
            self.clock = Clock()
        if timings.exists():
            metrics["seconds"] = json.loads(timings.read_text())
        self.write(self.iteration(i) / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        return metrics


def iteration_dir(root: Path, i: int) -> Path:
    """The one spelling of the layout: iteration i's folder in the run directory `root`."""
    return root / f"iter_{i:02d}"


@contextmanager
def opened(cfg: Config) -> Iterator[RunDir]:
    """The run directory of `cfg`, locked for this process (rank 0 holds the lock) and bound to this config."""
    with locked(cfg.out):
        remember(cfg)
        yield RunDir(cfg.out, cfg.policy)


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold `root`/run.lock while the block runs (rank 0 only). The lock is the kernel's (flock), so it ends with the
    process that holds it, however that ends: a lock file left by a killed run never blocks its resume."""
    if dist.rank() != 0:
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / "run.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise ConfigError(
                f"config field 'out': {root} is in use by {holder}; wait for it, or use another"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def remember(cfg: Config) -> None:
    """Store the run's config; refuse to resume a run directory with a different one."""
    path = cfg.out / "config.json"
    now = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    dist.barrier()  # every rank looks before rank 0 writes: all take the same branch, and so the same barriers
    if path.exists():
        before = json.loads(path.read_text())
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if changed:
            raise ConfigError(f"{path}: this run was started with a different {changed[0]!r}; use another `out`")
        return
    if dist.rank() == 0:
        atomic_write_text(path, json.dumps(now, indent=2) + "\n")
    dist.barrier()


class Clock:
    """Wall seconds per phase of one iteration (`timings.json`), and throughputs beside them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Add the block's wall time to the entry `name`."""
        started = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def rate(self, name: str, amount: float, seconds: float) -> None:
        self.seconds[name] = amount / max(seconds, 1e-9)
