"""CPU-seconds and memory of a process tree, sampled from /proc while it runs.

``resource.getrusage(RUSAGE_CHILDREN)`` misses ddla's warm agents (they are forked by the
forkserver, which is never reaped while the launcher lives) and Flower's Ray workers (children
of the raylet), so benchmarks that compare whole runs sample the tree instead: every process
descending from ``root``, its CPU time (utime + stime) and its proportional set size (PSS, from
``/proc/PID/smaps_rollup``: shared pages such as torch's libraries and the memory-mapped
training set are split between the processes that map them, so the sum is the tree's real
footprint; RSS would count them once per process). When the root is the calling process (a
launcher run in-process), the CPU of the harness's own threads (the monitor's, and any that
call :meth:`TreeMonitor.exclude_this_thread`) is left out: it is the benchmark's, not the run's.

    >>> import os
    >>> mon = TreeMonitor(os.getpid(), interval_s=0.05)
    >>> with mon:
    ...     _ = sum(range(10**6))
    >>> mon.cpu_s() > 0 and mon.peak_pss_mb() > 0
    True
"""

from __future__ import annotations

import os
import threading

HZ = os.sysconf("SC_CLK_TCK")


def _stat(pid: str) -> tuple[int, float] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    fields = s[s.rfind(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / HZ


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _thread_cpu(pid: int, tid: int) -> float:
    st = _stat(f"{pid}/task/{tid}")
    return st[1] if st is not None else 0.0


def tree(root: int) -> dict[int, float]:
    """``{pid: cpu_seconds}`` of ``root`` and every live descendant."""
    snap = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _stat(d)) is not None:
            snap[int(d)] = st
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in snap.items():
        kids.setdefault(ppid, []).append(pid)
    out, stack = {}, [root]
    while stack:
        p = stack.pop()
        if p in snap and p not in out:
            out[p] = snap[p][1]
            stack.extend(kids.get(p, []))
    return out


class TreeMonitor:
    """Sample ``root``'s process tree every ``interval_s`` in a thread (a context manager).

    CPU of a process that exits between samples is counted up to its last sample (an
    undercount of at most ``interval_s`` of CPU per exiting process); :meth:`mark` stamps the
    running CPU total so a caller can take the CPU of a phase (e.g. the training rounds)."""

    def __init__(self, root: int, interval_s: float = 0.1) -> None:
        self.root, self.interval_s = root, interval_s
        self._base = tree(root)  # CPU already spent before the monitor started is not counted
        self._last: dict[int, float] = {}
        self._peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.marks: dict[str, float] = {}
        self._excluded: set[int] = set()  # native ids of harness threads in the root process
        self._excluded_cpu: dict[int, float] = {}

    def exclude_this_thread(self) -> None:
        """Leave the calling thread's CPU out (it must run in the root process)."""
        if self.root == os.getpid():
            self._excluded.add(threading.get_native_id())

    def _sample(self) -> None:
        now = tree(self.root)
        for t in list(self._excluded):  # an exited thread's CPU stays in its process: keep the last
            self._excluded_cpu[t] = max(self._excluded_cpu.get(t, 0.0), _thread_cpu(self.root, t))
        if self.root in now:  # the root's CPU less its harness threads' CPU
            now[self.root] -= sum(self._excluded_cpu.values())
        self._last.update(now)
        self._peak_kb = max(self._peak_kb, sum(_pss_kb(p) for p in now))

    def _run(self) -> None:
        self.exclude_this_thread()
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> TreeMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def mark(self, name: str) -> None:
        """Record the tree's CPU-seconds so far under ``name`` (sampled now)."""
        self._sample()
        self.marks[name] = self.cpu_s()

    def cpu_s(self) -> float:
        """CPU-seconds of every process seen in the tree (the root included) since the start."""
        return sum(c - self._base.get(p, 0.0) for p, c in self._last.items())

    def peak_pss_mb(self) -> float:
        """The largest PSS sum over the tree at any sample, in MB."""
        return self._peak_kb / 1024
