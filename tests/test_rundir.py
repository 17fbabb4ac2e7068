"""The run directory: artefacts read back where they exist, the config a run started with, and the lock that keeps a
second live process out while a killed one's lock never blocks the resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bstar_pl.records import Sample
from bstar_pl.rundir import Clock, RunDir, iteration_dir, locked
from bstar_pl.settings import ConfigError

HOLD = """
import sys, time
from pathlib import Path
from bstar_pl.rundir import locked
with locked(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(600)
"""


def holder(root: Path) -> subprocess.Popen[str]:
    """A child process that takes the lock of `root` and keeps it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_a_live_holder_keeps_a_second_process_out_and_is_named(tmp_path: Path) -> None:
    proc = holder(tmp_path)
    try:
        with (
            pytest.raises(ConfigError, match=rf"config field 'out': .* in use by process {proc.pid} on "),
            locked(tmp_path),
        ):
            pass
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holders_lock_does_not_block_the_resume(tmp_path: Path) -> None:
    proc = holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "run.lock").exists()  # the file stays; the kernel's lock went with the process
    with locked(tmp_path):
        assert f"process {os.getpid()}" in (tmp_path / "run.lock").read_text()


def test_an_artefact_is_read_back_once_written(tmp_path: Path) -> None:
    rd = RunDir(tmp_path, tmp_path / "p0")
    path = rd.iteration(1) / "samples.jsonl"
    assert rd.read(path, Sample) is None
    rows = [Sample("a", 1.0, 0, "text", 2, "stop")]
    assert rd.keep(path, rows, Sample) == rows and rd.read(path, Sample) == rows
    assert rd.keep(rd.iteration(1) / "search.json", {"t": 0.5}) == rd.read(rd.iteration(1) / "search.json")
    assert not list(path.parent.glob(".*.tmp"))  # written under a temporary name, then renamed


def test_layout_and_timings(tmp_path: Path) -> None:
    rd = RunDir(tmp_path, tmp_path / "p0")
    assert rd.policy(0) == tmp_path / "p0" and rd.policy(2) == iteration_dir(tmp_path, 2) / "policy"
    assert rd.checkpoints(2, continuing=True) == tmp_path / "checkpoints"
    assert rd.checkpoints(2, continuing=False) == tmp_path / "iter_02" / "checkpoints"
    with rd.clock.timed("sampling"):
        time.sleep(0.01)
    rd.clock.rate("sampling_tokens_per_s", 100, 0.5)
    metrics = rd.finish(1, {"iteration": 1})
    assert metrics["seconds"]["sampling"] > 0 and metrics["seconds"]["sampling_tokens_per_s"] == 200
    assert json.loads((tmp_path / "iter_01" / "metrics.json").read_text()) == metrics == rd.metrics(1)
    assert isinstance(rd.clock, Clock) and rd.clock.seconds == {}  # the next iteration starts afresh
