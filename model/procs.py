"""Process hygiene for the processes lockstep starts (forked check workers, forked ranks): each
child joins a process group its parent owns, and dies with its parent if the parent is killed
outright (Linux ``PR_SET_PDEATHSIG``), so nothing is left behind whatever ends the parent.
Pure standard library."""
from __future__ import annotations

import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent exits (Linux; a no-op
    elsewhere).  If the parent ``parent_pid`` is already gone, exit now."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


def join_group(pgid: int) -> None:
    """Move this process (a freshly forked child) into process group ``pgid`` (0: a new group led
    by this process).  The parent makes the same call for the child, so whichever runs first wins."""
    try:
        os.setpgid(0, pgid)
    except OSError:
        pass


def place_child(pid: int, pgid: int) -> None:
    """The parent's half of :func:`join_group`."""
    try:
        os.setpgid(pid, pgid)
    except OSError:  # the child already moved itself, or has exited
        pass


def kill_group(pgid: int | None, sig: int) -> None:
    if not pgid:
        return
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def peak_rss_mb_of(pid: int) -> float:
    """The peak resident set size of live process ``pid`` so far, in MB (Linux: ``VmHWM`` in
    /proc/PID/status); 0.0 where it cannot be read (another OS, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return 0.0
