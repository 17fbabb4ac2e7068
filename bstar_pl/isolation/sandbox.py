"""Run untrusted programs against tests: one locked-down child process per program, a thread pool of them.

Enforced (the child's side is `sandbox_child.py`; `protections()` says which kernel fences are up here):
- always, by the kernel: wall time (the parent SIGKILLs the child's whole process group), CPU time (RLIMIT_CPU),
  address space (RLIMIT_AS), size of any file written (RLIMIT_FSIZE), open files (RLIMIT_NOFILE), no core dumps.
  Always, by construction: stdout read with a byte cap, a fresh temporary working directory (removed after), a
  fixed environment (none of the parent's variables), `python -I -S -B` (no user site, no PYTHON* variables, no
  .pth files, no bytecode written), expected outputs kept in the parent.
- by the kernel where it can (Linux x86-64 for seccomp, Landlock ABI >= 6, i.e. Linux >= 6.12, for the signal
  fence): seccomp (no sockets, no fork/vfork/non-thread clone, no exec, no ptrace, signals only to itself),
  Landlock (writes only inside the working directory and to /dev/null; no TCP; no signals or ptrace out of the
  sandbox, hence no reading the parent's /proc/PID/environ), and every capability dropped (a root parent's child
  cannot raise its limits back or signal other users).
- always, best effort: a Python audit hook refusing the same (processes, sockets, ctypes, writes and file changes
  outside the working directory, signals to others). A determined program can get around an audit hook; it is
  the only fence for writes and processes where the kernel ones are missing.
RLIMIT_NPROC is not used: it counts all processes and threads of the real user (it would stop the threads of an
unprivileged user who has other processes; root ignores it), so the seccomp filter is what stops fork bombs.
Not covered: reading files the user may read, how many files the program creates in its directory, memory and
disk pressure from many children together. Production use wants a container or nsjail (namespaces, cgroups,
read-only mounts); this is a fence for a research loop on one's own machine.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import secrets
import selectors
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

CHILD = Path(__file__).with_name("sandbox_child.py")
# The child's whole environment: nothing of the parent's; one thread for numeric libraries.
ENV = {"LC_ALL": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
REASONS = ("pass", "wrong answer", "timeout", "error", "output too large")
STDERR_BYTES = 4096  # the tail kept for error messages


@dataclass(frozen=True)
class Limits:
    """Per-program limits. The wall limit is min(wall_s, startup_s + test_s * number of tests)."""

    test_s: float = 4.0  # per test, in the child (SIGALRM); APPS uses 4 s
    wall_s: float = 60.0  # whole program, enforced by the parent (kills the process group)
    startup_s: float = 2.0  # interpreter start and imports, added once
    memory_mb: int = 1024  # address space (RLIMIT_AS)
    output_bytes: int = 8 << 20  # everything the program writes to stdout, all tests together
    file_mb: int = 64  # the largest file it may write (RLIMIT_FSIZE)
    open_files: int = 64  # RLIMIT_NOFILE

    def wall(self, n_tests: int) -> float:
        return min(self.wall_s, self.startup_s + self.test_s * n_tests)


@dataclass(frozen=True)
class Job:
    """A program and its tests. Standard input: `inputs` are stdin texts and `check(i, stdout_text)` judges test
    i. Call-based (`fn_name` set): `inputs` are argument lists and `check(i, return_value)` gets the JSON-decoded
    value. The run stops at the first test that fails; `check` runs in the parent, so the program never sees the
    expected outputs."""

    code: str
    inputs: Sequence[Any]
    check: Callable[[int, Any], bool]
    fn_name: str | None = None


@dataclass(frozen=True)
class Result:
    """How a program ended: `reason` is one of REASONS; `detail` says which test and why, in one line."""

    reason: str
    tests_passed: int
    tests_total: int
    seconds: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.reason == "pass"


def run(job: Job, limits: Limits = Limits()) -> Result:
    """Run one program against its tests. Never raises for anything the program does."""
    return _run(job, limits)[0]


def run_many(
    jobs: Sequence[Job], limits: Limits = Limits(), workers: int | None = None, progress: bool = True
) -> list[Result]:
    """Run programs in parallel (threads, each waiting on one child); results in the order of `jobs`."""
    workers = workers or os.cpu_count() or 1
    results: list[Result | None] = [None] * len(jobs)
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(jobs), desc="sandbox", unit="prog", disable=not progress) as bar,
    ):
        futures = {pool.submit(_run, job, limits): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()[0]
            bar.update()
    return results  # type: ignore[return-value]


def protections() -> dict[str, Any]:
    """The fences the child raised on this machine, from a trivial run: `landlock_abi` (0: none), `seccomp`,
    `capabilities_dropped`."""
    result, header = _run(Job("", [""], check=lambda i, out: True), Limits())
    if header is None:
        raise RuntimeError(f"the sandbox child did not start: {result.detail}")
    return header


def _run(job: Job, limits: Limits) -> tuple[Result, dict[str, Any] | None]:
    start = time.monotonic()
    n, wall = len(job.inputs), limits.wall(len(job.inputs))
    marker = f"\0\0{secrets.token_hex(8)}\0"
    with tempfile.TemporaryDirectory(prefix="bstar-sandbox-", ignore_cleanup_errors=True) as tmp:
        work = Path(tmp)
        (work / "solution.py").write_text(job.code, encoding="utf-8", errors="replace")
        if job.fn_name is None:
            for i, text in enumerate(job.inputs):
                (work / f"{i}.in").write_text(text, encoding="utf-8", errors="replace")
        spec = {
            "marker": marker,
            "n_tests": n,
            "fn_name": job.fn_name,
            "inputs": list(job.inputs) if job.fn_name is not None else [],
            "test_s": limits.test_s,
            "cpu_s": math.ceil(wall),
            "memory_bytes": limits.memory_mb << 20,
            "file_bytes": limits.file_mb << 20,
            "open_files": limits.open_files,
            "site_paths": site_paths(),
        }
        (work / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        reader = _Reader(job, marker.encode(), limits.output_bytes)
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", str(CHILD), "spec.json"],
            cwd=work,
            env=ENV,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, killed as a whole
            close_fds=True,
        )
        try:
            reader.pump(proc, start + wall)
        finally:
            _kill_group(proc)
    return reader.result(n, proc.returncode, time.monotonic() - start, wall), reader.header


class _Reader:
    """Reads the child's output as it comes: splits stdout into tests at the marker and judges each test at once,
    so a wrong answer stops the run. Keeps the tail of stderr for error messages."""

    def __init__(self, job: Job, marker: bytes, cap: int) -> None:
        self.job, self.marker, self.cap = job, marker, cap
        self.buffer, self.scanned, self.total = bytearray(), 0, 0
        self.stderr = b""
        self.header: dict[str, Any] | None = None
        self.passed = 0
        self.failure: tuple[str, str] | None = None  # (reason, detail), decided while reading

    def pump(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        """Read until both pipes close, a test fails, the output cap is passed, or the deadline."""
        assert proc.stdout is not None and proc.stderr is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ, "out")
            selector.register(proc.stderr, selectors.EVENT_READ, "err")
            while selector.get_map() and self.failure is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.failure = ("timeout", f"test {self.passed}: wall limit")
                    return
                for key, _ in selector.select(remaining):
                    data = os.read(key.fd, 1 << 16)
                    if not data:
                        selector.unregister(key.fileobj)
                    elif key.data == "err":
                        self.stderr = (self.stderr + data)[-STDERR_BYTES:]
                    else:
                        self.feed(data)

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        if self.total > self.cap:
            self.failure = ("output too large", f"test {self.passed}: more than {self.cap} bytes on stdout")
            return
        self.buffer += data
        while self.failure is None:
            k = self.buffer.find(self.marker, self.scanned)
            end = self.buffer.find(b"\n", k + len(self.marker)) if k >= 0 else -1
            if end < 0:
                # Resume the search where it stopped, less a marker's length (one may be arriving in pieces).
                self.scanned = max(0, (k if k >= 0 else len(self.buffer)) - len(self.marker))
                return
            output, line = bytes(self.buffer[:k]), bytes(self.buffer[k + len(self.marker) : end])
            del self.buffer[: end + 1]
            self.scanned = 0
            self.record(output, line)

    def record(self, output: bytes, line: bytes) -> None:
        """One test's output and the child's record of how it ran."""
        try:
            record = json.loads(line)
            i, status = record["i"], record.get("status")
        except (ValueError, KeyError, TypeError):
            self.failure = ("error", f"test {self.passed}: garbled record on stdout")
            return
        if i == -1 and self.header is None:
            self.header = record.get("protections", {})
            return
        if self.header is None or i != self.passed:
            self.failure = ("error", f"test {self.passed}: unexpected record on stdout")
        elif status == "timeout":
            self.failure = ("timeout", f"test {i}: {record.get('detail') or 'test time limit'}")
        elif status != "ok":
            self.failure = ("error", f"test {i}: {record.get('detail', '')}")
        else:
            got = record.get("value") if self.job.fn_name is not None else output.decode("utf-8", "replace")
            try:
                ok = bool(self.job.check(i, got))
            except Exception as e:  # a value the comparison cannot handle is a wrong value
                ok = False
                got = f"{got!r} ({type(e).__name__})"
            if ok:
                self.passed += 1
            else:
                self.failure = ("wrong answer", f"test {i}: got {_snippet(got)}")

    def result(self, n: int, returncode: int | None, seconds: float, wall: float) -> Result:
        if self.failure is not None:
            reason, detail = self.failure
            if detail.endswith("wall limit"):
                detail += f" ({wall:.1f} s)"
        elif self.passed == n:
            reason, detail = "pass", ""
        elif returncode in (-signal.SIGXCPU, -signal.SIGKILL):
            reason, detail = "timeout", f"test {self.passed}: CPU limit"
        elif self.header is None:
            reason, detail = "error", f"the sandbox did not start (exit {returncode}): {_last_line(self.stderr)}"
        else:
            reason, detail = "error", f"test {self.passed}: exited ({returncode}) {_last_line(self.stderr)}".strip()
        return Result(reason, self.passed, n, round(seconds, 4), detail)


@functools.cache
def site_paths() -> list[str]:
    """The environment's site-packages, put on the child's sys.path (so numpy imports) without running .pth files."""
    paths = sysconfig.get_paths()
    return sorted({paths["purelib"], paths["platlib"]})


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group, then reap it. Before the reap the group id cannot be reused."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _snippet(value: Any, size: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    return repr(text[:size] + ("..." if len(text) > size else ""))


def _last_line(data: bytes) -> str:
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:300] if lines else ""
