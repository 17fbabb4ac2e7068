"""The inside of the sandbox: locks this process down, then runs one untrusted program against its tests.

Started by `bstar_pl/isolation/sandbox.py` as `python -I -S -B sandbox_child.py spec.json` in a fresh temporary
directory with an empty environment. Standalone on purpose (standard library only): `-I` keeps the package off
sys.path; the fences (fences.py, beside this file) are imported by path before the program runs, and the path is
removed again.

Protocol: after each test, the program's output is followed on stdout by MARKER + one JSON line
`{"i", "status", "detail", "value", "seconds"}`; the header record (i = -1) lists the protections in force.
The parent compares outputs itself, so the expected outputs never enter this process.
"""

from __future__ import annotations

import atexit
import builtins
import contextlib
import json
import os
import signal
import sys
import threading
import time
from typing import Any


class TestTimeout(BaseException):
    """Raised by SIGALRM; a BaseException so that `except Exception` in the program does not swallow it."""


def run_tests(spec: dict[str, Any], code: Any, report: Any, channel: int) -> None:
    """Run every test in this one process, stopping at the first that fails to run; the parent judges outputs."""
    fn_name, timeout = spec["fn_name"], spec["test_s"]
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    for i in range(spec["n_tests"]):
        start, value, status, detail = time.monotonic(), None, "ok", ""
        os.dup2(channel, 1)  # in case the program closed its stdout
        if fn_name is None:
            fd = os.open(f"{i}.in", os.O_RDONLY)
            os.dup2(fd, 0)
            os.close(fd)
            sys.stdin = open(0, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
            namespace = {"__name__": "__main__", "__builtins__": builtins}
        sys.stdout = stdout = open(1, "w", encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        try:
            try:
                ALARM.arm(timeout)
                if fn_name is None or i == 0:
                    exec(code, namespace)
                if fn_name is not None:
                    value = json.loads(json.dumps(call(namespace, fn_name, spec["inputs"][i]), default=repr))
                status, detail = finish(start + timeout)
            except SystemExit as e:
                status, detail = ("ok", "") if e.code in (None, 0) else ("error", f"exit code {e.code}")
                if status == "ok":
                    status, detail = finish(start + timeout)
            finally:
                ALARM.disarm()
        except TestTimeout:
            status = "timeout"
        except BaseException as e:
            status, detail = "error", f"{type(e).__name__}: {e}"[:500]
        seconds = time.monotonic() - start
        if status == "ok" and seconds > timeout:
            status = "timeout"  # the program swallowed the alarm
        flush(sys.stdout, stdout, sys.__stdout__)
        report({"i": i, "status": status, "detail": detail, "value": value, "seconds": round(seconds, 4)})
        if status != "ok":
            return


class Alarm:
    """The per-test time limit: SIGALRM raises TestTimeout, but only while armed, so that an alarm that arrives
    as a test ends cannot escape into the sandbox's own code."""

    def __init__(self) -> None:
        self.armed = False
        signal.signal(signal.SIGALRM, self.fire)

    def fire(self, signum: int, frame: Any) -> None:
        if self.armed:
            self.armed = False
            raise TestTimeout

    def arm(self, seconds: float) -> None:
        self.armed = True
        signal.setitimer(signal.ITIMER_REAL, seconds)

    def disarm(self) -> None:
        self.armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)


def call(namespace: dict[str, Any], fn_name: str, args: Any) -> Any:
    """APPS call-based: a method of `class Solution` (a fresh instance per test) or a plain function."""
    cls = namespace.get("Solution")
    fn = getattr(cls(), fn_name, None) if isinstance(cls, type) else namespace.get(fn_name)
    if not callable(fn):
        raise NameError(f"no function {fn_name!r} in the program")
    return fn(*args) if isinstance(args, list) else fn(args)


def finish(deadline: float) -> tuple[str, str]:
    """What the program left running at the end of a test: its threads (joined) and atexit handlers (run)."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return "timeout", "a thread was still running"
    atexit._run_exitfuncs()
    atexit._clear()
    return "ok", ""


def flush(*streams: Any) -> None:
    """Flush the program's stdout, ours and the original, before the record that closes the test goes out."""
    for stream in streams:
        with contextlib.suppress(BaseException):  # the program closed or broke it: what it wrote is what it wrote
            stream.flush()


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    workdir, marker, channel = os.getcwd(), spec["marker"].encode(), os.dup(1)

    def report(record: dict[str, Any]) -> None:
        data = marker + json.dumps(record).encode() + b"\n"
        while data:
            data = data[os.write(channel, data) :]

    sys.path.extend(spec["site_paths"])
    with open("solution.py", encoding="utf-8", errors="replace") as f:
        source = f.read()
    protections = fences.lock_down(spec, workdir)
    report({"i": -1, "protections": protections})
    sys.argv = ["solution.py"]
    builtins.exit = builtins.quit = sys.exit  # `-S` skips site.py, which defines them
    try:
        code = compile_program(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        report({"i": 0, "status": "error", "detail": f"{type(e).__name__}: {e}"[:500], "value": None, "seconds": 0})
        return
    run_tests(spec, code, report, channel)


def compile_program(source: str) -> Any:
    """Compile the program. APPS's harness runs standard-input programs inside a function, so a `return` at the
    top level works there (some reference solutions rely on it); only for that error is the program wrapped too."""
    try:
        return compile(source, "solution.py", "exec")
    except SyntaxError as e:
        if "'return' outside function" not in str(e):
            raise
    body = "".join("    " + line for line in source.splitlines(keepends=True))
    return compile(f"def _program():\n{body}\n\n_program()\n", "solution.py", "exec")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import fences

    del sys.path[0]
    ALARM = Alarm()
    main()
    # Skip interpreter shutdown: the program's leftover daemon threads and finalisers have nothing more to say.
    os._exit(0)
