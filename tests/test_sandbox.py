"""The sandbox: ordinary programs run and are judged per test; hostile ones end within their limits, fail, and
leave this process (their parent) unharmed."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bstar_pl.isolation import sandbox
from bstar_pl.isolation.sandbox import Job, Limits, protections, run, run_many

# Short limits for programs that must fail; roomy ones for programs that must pass (the machine may be busy).
FAST = Limits(test_s=1.0, wall_s=3.0, startup_s=1.0, memory_mb=512, output_bytes=1 << 20)
OK = Limits(test_s=10.0, wall_s=30.0, memory_mb=512, output_bytes=1 << 20)


def job(code: str, inputs: list[str] | None = None, want: list[str] | None = None) -> tuple[Job, list[str]]:
    """A standard-input job expecting `want` (default "5" for one test), and the list its outputs land in."""
    inputs, want = inputs or ["2 3\n"], want or ["5"]
    seen: list[str] = []
    return Job(code, inputs, lambda i, out: seen.append(out) is None and out.split() == want[i].split()), seen


def test_standard_input_programs_are_judged_test_by_test() -> None:
    j, seen = job("a, b = map(int, input().split())\nprint(a + b)", ["2 3\n", "10 -4\n", "1 1\n"], ["5", "6", "2"])
    result = run(j, OK)
    assert result.passed and (result.tests_passed, result.tests_total) == (3, 3) and result.reason == "pass"
    assert seen == ["5\n", "6\n", "2\n"]
    # A wrong answer stops the run: the third test is never judged.
    j, seen = job("print(5)", ["2 3\n", "1 1\n", "0 0\n"], ["5", "2", "0"])
    result = run(j, OK)
    assert result.reason == "wrong answer" and result.tests_passed == 1 and "test 1" in result.detail
    assert len(seen) == 2


@pytest.mark.parametrize(
    "code",
    [
        "print(sum(map(int, open(0).read().split())))",  # reading fd 0 directly
        "import sys\nprint(sum(map(int, sys.stdin.buffer.read().split())))",
        "import sys\nsys.stdout.write(str(sum(map(int, sys.stdin.readline().split()))))\nexit()",
        "import os\nos.write(1, b'5')",
        "import atexit, io, os\nbuf = io.StringIO()\natexit.register(lambda: os.write(1, buf.getvalue().encode()))\n"
        "buf.write('5')",
        "import sys, threading\nthreading.stack_size(1 << 26)\nsys.setrecursionlimit(10**5)\n"
        "def depth(n): return 0 if n == 0 else 1 + depth(n - 1)\n"
        "threading.Thread(target=lambda: print(depth(3000) - 2995)).start()",
        "open('scratch.txt', 'w').write('5')\nprint(open('scratch.txt').read())",  # the working directory is its own
        "open('/dev/null', 'w').write('noise')\nprint(5)",
        "import numpy as np\nprint(int(np.array([2, 3]).sum()))",
        "a, b = map(int, input().split())\nif a:\n    print(a + b)\n    return\nprint(0)",  # APPS allows this
    ],
    ids=["open0", "buffer", "exit", "os.write", "atexit", "thread", "own-files", "dev-null", "numpy", "top-return"],
)
def test_common_ways_of_reading_and_writing_work(code: str) -> None:
    result = run(job(code)[0], OK)
    assert result.passed, result


def test_call_based_programs_return_values() -> None:
    seen: list[object] = []

    def check(i: int, value: object) -> bool:
        seen.append(value)
        return value == [[3, 1], 7][i]

    code = "class Solution:\n    def f(self, xs, k):\n        print('debug output is ignored')\n"
    code += "        return tuple(sorted(xs, reverse=True)) if k == 0 else sum(xs) + k"
    result = run(Job(code, [[[1, 3], 0], [[2, 3], 2]], check, fn_name="f"), OK)
    assert result.passed and seen == [[3, 1], 7]
    plain = run(Job("def f(x):\n    return x * 2", [[2], [3]], lambda i, v: v == [4, 6][i], fn_name="f"), OK)
    assert plain.passed
    missing = run(Job("def g(x):\n    return x", [[2]], lambda i, v: True, fn_name="f"), FAST)
    assert missing.reason == "error" and "no function 'f'" in missing.detail


@pytest.mark.parametrize(
    ("code", "reason", "detail"),
    [
        ("print(", "error", "SyntaxError"),
        ("raise ValueError('boom')", "error", "ValueError: boom"),
        ("import sys\nsys.exit(3)", "error", "exit code 3"),
        ("import os\nos._exit(0)", "error", "exited"),
        ("print(4)", "wrong answer", "got '4\\n'"),
    ],
)
def test_broken_programs_fail_with_a_reason(code: str, reason: str, detail: str) -> None:
    result = run(job(code)[0], FAST)
    assert (result.reason, result.passed) == (reason, False) and detail in result.detail, result


# Each hostile program. All must end within the wall limit (FAST.wall(1) = 2 s), plus slack for a busy machine.
HOSTILE = {
    "infinite-loop": "while True:\n    pass",
    "sleep": "import time\ntime.sleep(100)",
    "ignores-the-alarm": "import signal\nsignal.signal(signal.SIGALRM, signal.SIG_IGN)\nwhile True:\n    pass",
    "fork-bomb": "import os\nwhile True:\n    os.fork()",
    "subprocess": "import subprocess\nsubprocess.run('yes > /dev/null', shell=True)\nprint(5)",
    "10-GB": "x = bytearray(10 * 2**30)\nprint(5)",
    "write-outside": "open({path!r}, 'w').write('x')\nprint(5)",
    "write-outside-os": "import os\nos.close(os.open({path!r}, os.O_WRONLY | os.O_CREAT))\nprint(5)",
    "socket": "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint(5)",
    "environment": "import os\nprint(os.environ.get('BSTAR_SANDBOX_SECRET'))",
    "parent-environment": "import os\nprint(open(f'/proc/{{os.getppid()}}/environ').read().count('SECRET=5'))",
    "kill-parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nprint(5)",
    "signal-everyone": "import os\nos.kill(-1, 0)\nprint(5)",
    "huge-output": "while True:\n    print('x' * 10000)",
    "huge-file": "open('big.bin', 'wb').write(bytes(100 << 20))\nprint(5)",  # RLIMIT_FSIZE is 64 MB
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_programs_end_in_time_fail_and_do_no_harm(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BSTAR_SANDBOX_SECRET", "5")  # what "environment" must print to pass
    target = tmp_path / "escaped.txt"  # outside the program's working directory
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.01)
    code = HOSTILE[name].format(path=str(target), port=listener.getsockname()[1])
    start = time.monotonic()
    result = run(job(code)[0], FAST)
    elapsed = time.monotonic() - start
    assert not result.passed, result
    assert elapsed < FAST.wall(1) + 2.0, (elapsed, result)
    assert not target.exists()
    with pytest.raises(TimeoutError):
        listener.accept()  # nothing connected
    listener.close()
    expected = {"infinite-loop": "timeout", "ignores-the-alarm": "timeout", "sleep": "timeout"}
    expected |= {"huge-output": "output too large", "environment": "wrong answer"}
    assert result.reason == expected.get(name, "error"), result
    # Still here, and the sandbox still works.
    assert run(job("print(5)")[0], OK).passed


def test_kernel_fences_hold_without_the_python_audit_hook(tmp_path: Path) -> None:
    """The audit hook is easy to get around; the kernel-level fences must hold on their own."""
    found = protections()
    if not (found["seccomp"] and found["landlock_abi"] >= 6):
        pytest.skip(f"kernel fences not available here: {found}")
    probe = f"""
import importlib.util, os, resource, socket, sys, threading
spec = importlib.util.spec_from_file_location("fences", {str(sandbox.CHILD.with_name("fences.py"))!r})
child = importlib.util.module_from_spec(spec)
spec.loader.exec_module(child)
child.set_limits({{"cpu_s": 5, "memory_bytes": 1 << 30, "file_bytes": 1 << 20, "open_files": 64}})
child.drop_capabilities()
child.libc("prctl", child.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
assert child.landlock(os.getcwd()) and child.seccomp()
attempts = {{
    "fork": os.fork,
    "exec": lambda: os.execv("/bin/true", ["true"]),
    "socket": socket.socket,
    "unix-socket": lambda: socket.socket(socket.AF_UNIX),
    "write-outside": lambda: open({str(tmp_path / "escaped.txt")!r}, "w"),
    "signal-parent": lambda: os.kill(os.getppid(), 0),
    "signal-everyone": lambda: os.kill(-1, 0),
    "raise-memory-limit": lambda: resource.setrlimit(resource.RLIMIT_AS, (-1, -1)),
    "allocate-2-GB": lambda: bytearray(2 << 30),
}}
for name, attempt in attempts.items():
    try:
        attempt()
        print(name, "ALLOWED")
    except (OSError, ValueError, MemoryError):
        print(name, "denied")
open("inside.txt", "w").write("fine")
thread = threading.Thread(target=lambda: print("thread", "ran"))
thread.start()
thread.join()
"""
    work = tmp_path / "work"
    work.mkdir()
    out = subprocess.run([sys.executable, "-I", "-S", "-c", probe], cwd=work, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "thread ran" in lines and (work / "inside.txt").read_text() == "fine"
    assert [line for line in lines if line.endswith("ALLOWED")] == []
    assert len([line for line in lines if line.endswith("denied")]) == 9
    assert not (tmp_path / "escaped.txt").exists()


def test_the_child_gets_none_of_our_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BSTAR_SANDBOX_SECRET", "hunter2")
    j, seen = job("import os\nprint(sorted(os.environ))")
    run(j, OK)
    assert seen == [f"{sorted(sandbox.ENV)}\n"]


def test_run_many_keeps_the_order_of_jobs() -> None:
    jobs = [job(f"print({k})", want=[str(k)])[0] for k in range(6)]
    jobs[3] = job("while True: pass", want=["3"])[0]
    results = run_many(jobs, Limits(test_s=1.0, startup_s=10.0), workers=2, progress=False)
    assert [r.reason for r in results] == ["pass"] * 3 + ["timeout"] + ["pass"] * 2


def test_limits_scale_with_the_number_of_tests() -> None:
    limits = Limits(test_s=2.0, wall_s=30.0, startup_s=1.0)
    assert limits.wall(3) == 7.0 and limits.wall(100) == 30.0
