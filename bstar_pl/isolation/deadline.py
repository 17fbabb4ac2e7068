"""Run computations on untrusted input (grading model answers) in a child process under a hard deadline.

Signal-based timeouts (math-verify's) only work in the main thread and cannot interrupt a long C call
(big-integer arithmetic for `9^{9^{9^9}}`). A process can always be killed, from any thread: a call
past its deadline kills its worker, and the next call gets a new one.

Processes: a "zygote" is a fresh interpreter (`python -c`, not a fork of the caller, which may hold
vLLM and torch threads, and not multiprocessing's spawn, which re-imports the caller's main script). It
imports the grader and warms its caches once, then forks workers on request (a few ms each), so a
killed worker is replaced at once. The worker's socket reaches the caller by fd passing.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

MEMORY_LIMIT = 4 << 30  # bytes of address space per worker: a pathological answer fails, not the machine
START_TIMEOUT = 300.0  # seconds for a zygote to import and warm up (slow on a busy machine)
_ROOT = str(Path(__file__).resolve().parents[2])  # the directory holding the bstar_pl package
_inside = False


class Timeout(Exception):
    """A call did not finish before its deadline; its worker was killed."""


class CallFailed(Exception):
    """A call raised in the worker, or the worker died; the message says which."""


def inside() -> bool:
    """True in a guard's processes: code there runs under a deadline already and needs no second guard."""
    return _inside


class Guard:
    """A worker process that runs calls one at a time, each under a hard deadline.

    `preload` names modules to import and `warm_up` (if given) runs once in the zygote, before any
    call: import time and first-use caches (sympy's take ~0.2 s per kind of expression) then count
    against no deadline and are shared by every worker. `fn` and `warm_up` must be picklable (module-
    level functions travel by name). Thread-safe: calls from several threads queue up. The processes
    die with the thread that started them (Linux's parent-death signal is per thread), so no orphan
    keeps computing; a later call starts new ones. After a fork, the copy starts its own.
    """

    def __init__(self, preload: Sequence[str] = (), warm_up: Callable[[], Any] | None = None) -> None:
        self.preload = tuple(preload)
        self.warm_up = warm_up
        self._lock = threading.Lock()
        self._owner = os.getpid()
        self._zygote: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._worker: tuple[int, Connection] | None = None  # (pid, connection)

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        """`fn(*args)` in the worker; raises Timeout past `timeout` seconds, CallFailed if it raised or
        the worker died, RuntimeError if no zygote can start (a broken install, not a bad input)."""
        (result,) = self.call_many(fn, [args], timeout)
        if isinstance(result, (Timeout, CallFailed)):
            raise result
        return result

    def call_many(self, fn: Callable[..., Any], calls: Sequence[tuple[Any, ...]], timeout: float) -> list[Any]:
        """`fn(*args)` for every `args` in `calls`, each under its own `timeout`; a failed call's result is
        its Timeout or CallFailed instance. The worker runs the calls back to back and streams the
        results (no round trip per call); after a timeout the rest go to a new worker."""
        results: list[Any] = []
        retried = False
        with self._lock:
            if self._owner != os.getpid():  # inherited through a fork: those processes are not ours
                self._zygote, self._control, self._worker, self._owner = None, None, None, os.getpid()
            while len(results) < len(calls):
                _, conn = self._get_worker()
                try:
                    conn.send((fn, list(calls[len(results) :])))
                    while len(results) < len(calls):
                        if not conn.poll(timeout):
                            self._end_worker()
                            results.append(Timeout(f"{fn.__name__} took more than {timeout:g} s"))
                            break
                        ok, value = conn.recv()
                        results.append(value if ok else CallFailed(value))
                except (EOFError, OSError) as e:  # the worker died (e.g. out of memory)
                    outside = self._zygote is None or self._zygote.poll() is not None
                    self._end_worker()
                    if outside and not retried:  # killed with its zygote (its thread ended): not this input
                        retried = True
                        continue
                    results.append(CallFailed(f"{fn.__name__}: the grading process died ({type(e).__name__})"))
        return results

    def close(self) -> None:
        """Stop the processes (a later call starts new ones)."""
        with self._lock:
            if self._owner != os.getpid():
                return
            self._end_worker()
            self._close_zygote()

    def _get_worker(self) -> tuple[int, Connection]:
        if self._worker is not None:
            return self._worker
        for attempt in range(2):  # a dead zygote is replaced once
            control = self._get_zygote()
            ours, theirs = socket.socketpair()
            try:
                socket.send_fds(control, [b"F"], [theirs.fileno()])
                pid = int.from_bytes(_read_exactly(control, 4), "little")
                self._worker = (pid, Connection(ours.detach()))
                return self._worker
            except OSError:
                ours.close()
                self._close_zygote()
                if attempt:
                    raise RuntimeError("the grading zygote stopped answering") from None
            finally:
                theirs.close()
        raise AssertionError("unreachable")

    def _get_zygote(self) -> socket.socket:
        if self._control is not None and self._zygote is not None and self._zygote.poll() is None:
            return self._control
        self._close_zygote()
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))}
        code = f"from bstar_pl.isolation.deadline import zygote; zygote({theirs.fileno()}, {os.getpid()})"
        try:
            self._zygote = subprocess.Popen(
                [sys.executable, "-c", code], pass_fds=(theirs.fileno(),), env=env, stdin=subprocess.DEVNULL
            )
        finally:
            theirs.close()
        self._control = ours
        setup = Connection(os.dup(ours.fileno()))
        try:
            setup.send((self.preload, self.warm_up))
            ready = setup.poll(START_TIMEOUT) and setup.recv() == "ready"
        except (EOFError, OSError):  # it died while starting: its traceback is on stderr
            ready = False
        finally:
            setup.close()
        if not ready:
            self._close_zygote()
            raise RuntimeError(f"a grading process importing {', '.join(self.preload) or 'nothing'} did not start")
        return ours

    def _close_zygote(self) -> None:
        if self._control is not None:
            self._control.close()
        if self._zygote is not None:
            self._zygote.kill()
            self._zygote.wait()
        self._zygote, self._control = None, None

    def _end_worker(self) -> None:
        if self._worker is None:
            return
        pid, conn = self._worker
        conn.close()
        # Safe by pid: while the zygote lives it reaps dead workers only when asked for a new one, so
        # this pid is still the worker's (alive or a zombie), never a stranger's. A dead zygote's
        # workers died with it (parent-death signal) and their pids may be reused: leave them.
        if self._zygote is not None and self._zygote.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._worker = None


def zygote(control_fd: int, parent: int) -> None:
    """The zygote: import and warm up, then fork one worker per request until the parent goes away."""
    global _inside
    _inside = True
    _die_with_parent(parent)
    control = socket.socket(fileno=control_fd)
    setup = Connection(os.dup(control_fd))
    try:
        preload, warm_up = setup.recv()
        for name in preload:
            __import__(name)
        if warm_up is not None:
            warm_up()
        setup.send("ready")
    except (EOFError, OSError):
        return
    finally:
        setup.close()
    zygote_pid = os.getpid()
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(control, 1, 1)
        except OSError:
            return
        if not fds:  # the parent closed the control socket
            return
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:  # reap workers that ended
                pass
        pid = os.fork()
        if pid == 0:
            control.close()
            _die_with_parent(zygote_pid)
            with contextlib.suppress(ValueError, OSError):  # a lower hard limit may apply already
                resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
            _serve(Connection(fds[0]))
            os._exit(0)
        os.close(fds[0])
        control.sendall(pid.to_bytes(4, "little"))


def _serve(conn: Connection) -> None:
    """A worker's loop: answer batches of calls, one reply per call, until the parent closes the connection."""
    while True:
        try:
            fn, calls = conn.recv()
        except (EOFError, OSError):
            return
        for args in calls:
            try:
                reply = (True, fn(*args))
            except BaseException as e:  # any failure on untrusted input is an answer, not a crash
                # Only the type: printing an exception about a huge expression can itself take forever.
                reply = (False, f"{fn.__name__} raised {type(e).__name__}")
            try:
                conn.send(reply)
            except (OSError, ValueError):
                return


def _die_with_parent(parent: int) -> None:
    """Be killed when the parent ends, even in the middle of a long C call; exit if it already has."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data
