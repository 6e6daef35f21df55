"""One process creation that makes the zygote's children its parent's: `clone(CLONE_PARENT)`.

The supervisor must be the parent of every actor (its pid is then the
supervisor's until reaped, and a pidfd on it is race-free). A plain fork in the
zygote makes the zygote the parent; the fallback (`edgert.proc.zygote`) forks
twice and lets the kernel re-parent the grandchild to the supervisor, a child
subreaper, which costs a second fork and a wait. `clone(CLONE_PARENT)` creates
the process as a child of the zygote's own parent in one step.

`Cloner.fork()` does what `os.fork()` does around glibc's `fork()`, with the
raw system call (a NULL stack: the child runs on a copy of the caller's, as
after a fork):

- CPython's `PyOS_BeforeFork`, then `PyOS_AfterFork_Parent` or
  `PyOS_AfterFork_Child` (the documented API for "fork() or any similar
  function"): the import lock, the `os.register_at_fork` handlers (logging's
  locks, `random`'s seed, `threading`'s state), the thread and signal state;
  the `os.fork` audit event; the garbage collector is held off in between;
- what glibc's `fork()` does for a single-threaded caller: the flags it uses
  (`CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID` on the main thread's tid field,
  found with `PR_GET_TID_ADDRESS` and checked to hold this thread's tid, so
  `pthread_self()` in the child names the child) and its robust-mutex list
  registered again in the child (`set_robust_list`). Its other child-side work
  resets locks that only another thread could have held: the zygote has one
  thread. `pthread_atfork` handlers of C libraries are not run: the zygote
  loads edgert, pyzmq, msgpack and the drivers, none of which registers one
  (a driver's C library that does would need the fallback).

`Cloner.probe()` returns None, with the reason, where this cannot be had: an
ABI whose clone number and argument order this module does not know (known:
x86-64, i386, arm64, 32-bit ARM EABI; the last three put `tls` before
`child_tid`), a C library whose tid address is not its thread's tid (musl) or that caches
the pid (glibc before 2.25: only its own fork updates the cache), a
kernel without `PR_GET_TID_ADDRESS` (CONFIG_CHECKPOINT_RESTORE), or more than
one thread. A clone refused at run time (seccomp: EPERM or ENOSYS) raises
OSError, and the zygote falls back for good.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys

__all__ = ["Cloner"]

CLONE_PARENT = 0x00008000
CLONE_CHILD_CLEARTID = 0x00200000
CLONE_CHILD_SETTID = 0x01000000
SIGCHLD = 17  # the same number on every ABI below
PR_GET_TID_ADDRESS = 40

# MULTIARCH -> (clone, get_robust_list, set_robust_list, tls before child_tid)
ABIS = {
    "x86_64-linux-gnu": (56, 274, 273, False),
    "i386-linux-gnu": (120, 312, 311, True),
    "aarch64-linux-gnu": (220, 100, 99, True),
    "arm-linux-gnueabihf": (120, 339, 338, True),
    "arm-linux-gnueabi": (120, 339, 338, True),
}


class Cloner:
    """Creates processes that are children of this process's parent. Single-threaded use."""

    def __init__(
        self, numbers: tuple[int, int, int, bool], tid_address: int, robust: tuple[int, int]
    ):
        self._clone_nr, _, self._set_robust_nr, self._tls_first = numbers
        self._tid_address = tid_address
        self._robust = robust
        libc = ctypes.PyDLL(None, use_errno=True)  # the GIL stays held, as in os.fork
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._syscall.argtypes = [ctypes.c_long] + [ctypes.c_size_t] * 5
        api = ctypes.pythonapi
        self._before = api.PyOS_BeforeFork
        self._after_parent = api.PyOS_AfterFork_Parent
        self._after_child = api.PyOS_AfterFork_Child
        for f in (self._before, self._after_parent, self._after_child):
            f.restype = None
            f.argtypes = []

    @classmethod
    def probe(cls) -> tuple[Cloner | None, str]:
        """A Cloner for this process, or None and why it cannot be had."""
        if not sys.platform.startswith("linux"):
            return None, f"not Linux ({sys.platform})"
        abi = _multiarch()
        numbers = ABIS.get(abi)
        if numbers is None:
            return None, f"clone's arguments on {abi or 'this ABI'} are not known here"
        if _threads() != 1:
            return None, "more than one thread"
        libc_version = _glibc_version()
        if libc_version is None or libc_version < (2, 25):
            # before 2.25 glibc caches the pid, and only its own fork() updates the cache:
            # getpid() in a raw clone's child would give the zygote's
            return None, f"not glibc 2.25 or later ({os.confstr('CS_GNU_LIBC_VERSION')})"
        libc = ctypes.CDLL(None, use_errno=True)
        addr = ctypes.c_void_p()
        if libc.prctl(PR_GET_TID_ADDRESS, ctypes.byref(addr), 0, 0, 0) != 0:
            return None, f"prctl(PR_GET_TID_ADDRESS): {os.strerror(ctypes.get_errno())}"
        if not addr.value or ctypes.c_int.from_address(addr.value).value != os.getpid():
            return None, "the C library's tid address does not hold the thread's tid"
        head, size = ctypes.c_void_p(), ctypes.c_size_t()
        syscall = libc.syscall
        syscall.restype = ctypes.c_long
        if syscall(numbers[1], 0, ctypes.byref(head), ctypes.byref(size)) != 0:
            return None, f"get_robust_list: {os.strerror(ctypes.get_errno())}"
        return cls(numbers, addr.value, (head.value or 0, size.value)), ""

    def fork(self) -> int:
        """Like `os.fork()`, but the child's parent is this process's parent: 0 in the
        child, its pid here. Raises OSError when the kernel refuses."""
        sys.audit("os.fork")
        flags = CLONE_PARENT | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD
        ctid = self._tid_address
        args = (flags, 0, 0, 0, ctid) if self._tls_first else (flags, 0, 0, ctid, 0)
        collecting = gc.isenabled()
        gc.disable()  # nothing but the clone between the two halves
        self._before()
        pid = self._syscall(self._clone_nr, *args)
        if pid == 0:
            # as glibc's fork: no robust mutex is inherited, so the list is empty again
            # (its head points at itself: `list` is the head's first field) before it is
            # registered for this process
            head = self._robust[0]
            if head:
                ctypes.c_void_p.from_address(head).value = head
            self._syscall(self._set_robust_nr, *self._robust, 0, 0, 0)
            self._after_child()
        else:
            err = ctypes.get_errno()
            self._after_parent()
        if collecting:
            gc.enable()
        if pid < 0:
            raise OSError(err, f"clone: {os.strerror(err)}")
        return pid


def _multiarch() -> str:
    """The platform triplet (sysconfig's MULTIARCH): from `sys.implementation`, where
    CPython keeps it. sysconfig's first lookup loads and copies every build variable,
    1.4 MB that a forked zygote kept for this one string."""
    arch = getattr(sys.implementation, "_multiarch", None)
    if arch:
        return str(arch)
    import sysconfig

    return sysconfig.get_config_var("MULTIARCH") or ""


def _glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the C library when it is glibc, else None."""
    try:
        name, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").split()
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (ValueError, OSError):
        return None


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0
