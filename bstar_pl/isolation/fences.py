"""The kernel and interpreter fences of the sandbox's child process: resource limits, no capabilities, no new
privileges, Landlock (writes only inside the working directory), seccomp (no sockets, fork or exec) and an audit
hook. Standard library only: sandbox_child.py imports this file by path, inside the sandbox.
"""

from __future__ import annotations

import ctypes
import os
import resource
import struct
import sys
from typing import Any

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.syscall.restype = ctypes.c_long
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


def libc(name: str, *args: Any) -> int:
    """A libc call with integer arguments widened to C longs (the kernel reads whole registers)."""
    return getattr(LIBC, name)(*(ctypes.c_long(a) if isinstance(a, int) else a for a in args))


def lock_down(spec: dict[str, Any], workdir: str) -> dict[str, Any]:
    """Apply every fence, strongest last-but-one (the audit hook, best effort, goes last); return which took hold."""
    set_limits(spec)
    protections = {"capabilities_dropped": drop_capabilities()}
    libc("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    protections["landlock_abi"] = landlock(workdir)
    protections["seccomp"] = seccomp()
    audit_hook(workdir)
    return protections


def set_limits(spec: dict[str, Any]) -> None:
    """Kernel resource limits; hard = soft, so the program cannot raise them (once capabilities are gone)."""
    cpu = int(spec["cpu_s"])
    for name, value in (
        ("RLIMIT_AS", spec["memory_bytes"]),
        ("RLIMIT_FSIZE", spec["file_bytes"]),
        ("RLIMIT_NOFILE", spec["open_files"]),
        ("RLIMIT_CORE", 0),
    ):
        resource.setrlimit(getattr(resource, name), (value, value))
    # SIGXCPU at the soft limit, SIGKILL one second later.
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))


def drop_capabilities() -> bool:
    """Clear every capability (a no-op unless we run as root): root without CAP_SYS_RESOURCE cannot raise the
    limits back, without CAP_KILL it cannot signal other users' processes, without CAP_SYS_ADMIN it cannot mount."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable x 2 words: all zero
    return libc("capset", ctypes.byref(Header(0x20080522, 0)), data) == 0


def landlock(workdir: str) -> int:
    """Landlock (Linux >= 5.13): writes only beneath `workdir` (and to /dev/null); with ABI >= 4 no TCP bind or
    connect; with ABI >= 6 no signals to processes outside this sandbox. Returns the ABI in force, 0 if none."""
    abi = libc("syscall", 444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    if abi < 1:
        return 0
    # WRITE_FILE, REMOVE_DIR, REMOVE_FILE, MAKE_CHAR .. MAKE_SYM; REFER (ABI 2); TRUNCATE (ABI 3). Reading is free.
    write = (
        (1 << 1) | sum(1 << b for b in range(4, 13)) | ((1 << 13) if abi >= 2 else 0) | ((1 << 14) if abi >= 3 else 0)
    )
    file_rights = (1 << 1) | ((1 << 14) if abi >= 3 else 0)

    class RulesetAttr(ctypes.Structure):
        _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = [("allowed", ctypes.c_uint64), ("fd", ctypes.c_int32)]

    attr = RulesetAttr(write, 0b11 if abi >= 4 else 0, 0b11 if abi >= 6 else 0)  # TCP bind+connect; unix+signal
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = libc("syscall", 444, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        return 0
    try:
        for path, rights in ((workdir, write), ("/dev/null", file_rights)):
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                if libc("syscall", 445, ruleset, 1, ctypes.byref(PathBeneath(rights, fd)), 0) != 0:
                    return 0
            finally:
                os.close(fd)
        return abi if libc("syscall", 446, ruleset, 0) == 0 else 0
    finally:
        os.close(ruleset)


def seccomp() -> bool:
    """A seccomp filter (x86-64 only): no sockets, no new processes (threads are allowed), no exec, no ptrace,
    no signals to any process but this one. Denied calls fail with EPERM (clone3 with ENOSYS, so that glibc
    falls back to clone, whose flags the filter can read)."""
    if os.uname().machine != "x86_64":
        return False
    pid = os.getpid()
    allow, eperm, enosys, kill = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38, 0x80000000
    # socket, socketpair, fork, vfork, execve, execveat, ptrace, tkill, process_vm_readv/writev, pidfd_send_signal,
    # pidfd_open, pidfd_getfd
    denied = (41, 53, 57, 58, 59, 322, 101, 200, 310, 311, 424, 434, 438)
    prog: list[tuple[int, Any, Any, int]] = [
        (0x20, 0, 0, 4),  # A = arch
        (0x15, 0, "kill", 0xC000003E),  # AUDIT_ARCH_X86_64, else kill the process
        (0x20, 0, 0, 0),  # A = syscall number
        (0x35, "eperm", 0, 0x40000000),  # x32 ABI numbers
        *((0x15, "eperm", 0, nr) for nr in denied),
        (0x15, "clone", 0, 56),
        (0x15, "enosys", 0, 435),  # clone3
        (0x15, "signal", 0, 62),  # kill(pid, sig)
        (0x15, "signal", 0, 234),  # tgkill(tgid, tid, sig)
        (0x06, 0, 0, allow),
        ("clone", 0x20, 0, 0, 16),  # A = low word of the flags
        (0x45, "allow", "eperm", 0x10000),  # CLONE_THREAD
        ("signal", 0x20, 0, 0, 16),  # A = pid (or tgid)
        (0x15, "allow", 0, pid),
        (0x15, "allow", 0, 0),  # kill(0, sig): own process group, which holds only this process
        (0x15, "allow", "eperm", (-pid) & 0xFFFFFFFF),
        ("allow", 0x06, 0, 0, allow),
        ("eperm", 0x06, 0, 0, eperm),
        ("enosys", 0x06, 0, 0, enosys),
        ("kill", 0x06, 0, 0, kill),
    ]
    labels = {ins[0]: i for i, ins in enumerate(prog) if isinstance(ins[0], str)}
    code = b""
    for i, ins in enumerate(prog):
        op, jt, jf, k = ins[1:] if isinstance(ins[0], str) else ins
        jt, jf = (labels[j] - i - 1 if isinstance(j, str) else j for j in (jt, jf))
        code += struct.pack("HBBI", op, jt, jf, k)

    class Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]

    return libc("prctl", PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(Fprog(len(prog), code)), 0, 0) == 0


def audit_hook(workdir: str) -> None:
    """Python-level fence (best effort: a determined program can get around it; the kernel fences above are the
    real ones where present): no process or socket creation, no native code via ctypes, no signals to others,
    no file writes or changes outside `workdir`."""
    blocked = {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen"}
    blocked |= {"socket.__new__", "socket.socketpair", "ctypes.dlopen", "ctypes.dlsym", "ctypes.addressof"}
    blocked |= {"ctypes.cdata", "ctypes.call_function", "os.killpg", "signal.pthread_kill"}
    changing = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.truncate", "os.link", "os.symlink", "os.chmod"}
    changing |= {"os.chown", "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move"}
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    pid, root = os.getpid(), os.path.realpath(workdir) + os.sep
    realpath = os.path.realpath

    def inside(path: Any) -> bool:
        if isinstance(path, int):
            return True  # an open descriptor: it was checked when it was opened
        real = os.fsdecode(realpath(path))
        return real in ("/dev/null", root[:-1]) or real.startswith(root)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            if isinstance(args[2], int) and args[2] & writing and not inside(args[0]):
                raise PermissionError(f"sandbox: no writing outside the working directory: {args[0]!r}")
        elif event in blocked:
            raise PermissionError(f"sandbox: {event} is not allowed")
        elif event == "os.kill" and args[0] not in (0, pid, -pid):
            raise PermissionError("sandbox: signals go to this process only")
        elif event in changing and not all(inside(a) for a in args if isinstance(a, (str, bytes, os.PathLike))):
            raise PermissionError(f"sandbox: {event} outside the working directory")

    sys.addaudithook(hook)
