"""Per-process CPU time and peak memory, read from /proc (Linux only)."""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode()
    except OSError:
        return None
    # the command name is in parentheses and may contain spaces
    return raw[raw.rindex(")") + 2:].split()


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU seconds of `pid` (plus its reaped children's when asked)."""
    f = _stat_fields(pid)
    if f is None:
        return 0.0
    # fields after ")": state ppid ... utime(idx 11) stime(12) cutime(13) cstime(14)
    ticks = int(f[11]) + int(f[12])
    if reaped_children:
        ticks += int(f[13]) + int(f[14])
    return ticks / CLOCK_TICKS


def status_kb(pid: int, key: str) -> int | None:
    """A `kB` figure from /proc/<pid>/status, e.g. VmHWM (peak resident set) or VmRSS."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def tree(roots: Iterable[int]) -> list[int]:
    """`roots` and all their descendants."""
    children: dict[int, list[int]] = {}
    for pid in _all_pids():
        f = _stat_fields(pid)
        if f is not None:
            children.setdefault(int(f[1]), []).append(pid)
    out, stack = [], list(roots)
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack.extend(children.get(pid, ()))
    return out


def pids_with_cmdline(fragment: str) -> list[int]:
    """Processes whose command line contains `fragment`, without their descendants that
    also match (i.e. the roots)."""
    me = os.getpid()
    found = {p for p in _all_pids() if p != me and fragment in _cmdline(p)}
    roots = []
    for pid in found:
        f = _stat_fields(pid)
        if f is not None and int(f[1]) not in found:
            roots.append(pid)
    return roots


@dataclass
class Group:
    """A named set of processes: `roots()` gives the root pids; descendants are included."""

    name: str
    roots: Callable[[], list[int]]
    with_descendants: bool = False

    def cpu(self) -> float:
        roots = self.roots()
        pids = tree(roots) if self.with_descendants else roots
        total = sum(cpu_seconds(p) for p in pids)
        # exited children (e.g. short-lived PostgreSQL backends) are charged to their parent
        total += sum(cpu_seconds(p, reaped_children=True) - cpu_seconds(p) for p in roots)
        return total


@dataclass
class CpuMeter:
    """CPU used by each group over a measured window, in cores (1.0 = one core busy)."""

    groups: list[Group]
    _start: dict[str, float] = field(default_factory=dict)
    _t0: float = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._start = {g.name: g.cpu() for g in self.groups}

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._t0, 1e-9)
        return {g.name: round((g.cpu() - self._start.get(g.name, 0.0)) / wall, 2)
                for g in self.groups}
