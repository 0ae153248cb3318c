"""The process table for the scrapers' `process` probes: read once, matched within a budget.

Command lines come from /proc (psutil where there is none), capped at 4 KB each;
a scan is shared by the scrapers that ask at the same time; a user's regex runs in
a forked child that is killed when its time is up.
"""

import os
import threading
import time
import warnings

CMDLINE_BYTES = 4096      # of each command line read and matched: any user can make a 1 MB one
MATCH_SECONDS = 2.0       # budget of one process probe's regex over all command lines


def _proc_rows(proc="/proc") -> list[tuple[int, str, int | None]]:
    """(pid, first 4 KB of the command line, None) of every process, read from /proc.

    Cheaper than psutil, and bounded: psutil reads the whole command line. The uid is
    read later, only when a probe asks for it (`proc_uid`).
    """
    rows = []
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            fd = os.open(f"{proc}/{name}/cmdline", os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # gone, or not ours to read
        try:
            raw = os.read(fd, CMDLINE_BYTES)
        except OSError:
            continue
        finally:
            os.close(fd)
        if raw:  # empty: kernel threads, zombies
            rows.append((int(name), _cmdline_text(raw.rstrip(b"\0").split(b"\0")), None))
    return rows


def _cmdline_text(args) -> str:
    joined = " ".join(a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a) for a in args)
    return joined[:CMDLINE_BYTES]


def proc_uid(pid: int, proc="/proc") -> int | None:
    """The real uid of `pid` from /proc/PID/status (None when it is gone).

    Not the owner of /proc/PID: a process that makes itself non-dumpable
    (prctl PR_SET_DUMPABLE 0) has its /proc directory owned by root.
    """
    try:
        with open(f"{proc}/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class ProcessTable:
    """Command lines of all processes, one scan shared by the scrapers that ask together.

    Scans run one at a time: psutil hands out shared Process objects and sets `.info`
    on them. A caller waiting for the lock takes the result of a scan that started
    after it asked, exactly what its own scan would have seen, so twenty scrapers
    checked at once cost about two scans instead of twenty in a row.
    """

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._last: tuple | None = None  # (process_iter, started, [(pid, cmdline text, uid)])

    def snapshot(self, process_iter) -> list[tuple[int, str, int | None]]:
        """Rows (pid, command line text, real uid or None: ask /proc) of every process.

        `process_iter` is psutil's (or a stand-in); None reads /proc directly.
        """
        asked = self.clock()
        with self._lock:
            if self._last and self._last[0] is process_iter and self._last[1] >= asked:
                return self._last[2]
            started = self.clock()
            if process_iter is None:
                rows = _proc_rows()
            else:
                rows = []
                for proc in process_iter(["cmdline", "uids"]):
                    info = getattr(proc, "info", None) or {}
                    # No command line: kernel threads, zombies, processes we may not read.
                    if info.get("cmdline"):
                        uids = info.get("uids")
                        rows.append((proc.pid, _cmdline_text(info["cmdline"]),
                                     uids[0] if uids else None))
            self._last = (process_iter, started, rows)
            return rows


PROCESS_TABLE = ProcessTable()  # shared by every scraper of the run


def search_all(regex, texts: list[str], budget: float) -> tuple[list[int], bool]:
    """Indexes of `texts` that `regex` finds a match in, and whether the budget ran out.

    A regex can take minutes on a 4 KB line ("(a+)+b", ".*a.*b.*c") and Python's re
    holds the GIL meanwhile, stalling every other check. So the matching runs in a
    forked child that is killed when `budget` seconds are up; what it found by then
    is kept.
    """
    if not texts:
        return [], False
    import select
    import signal

    # Python 3.12+ warns about fork() in a threaded process: the child here touches no
    # lock (regex, os.write, os._exit), and logging re-creates its own at fork.
    warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child: match, report indexes, exit without cleanup
        try:
            os.close(read_end)
            for i, text in enumerate(texts):
                if regex.search(text):
                    os.write(write_end, i.to_bytes(4, "little"))
        finally:
            os._exit(0)
    os.close(write_end)
    data, timed_out = b"", False
    deadline = time.monotonic() + budget
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                timed_out = True
                os.kill(child, signal.SIGKILL)
                break
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(read_end)
        os.waitpid(child, 0)
    whole = len(data) - len(data) % 4
    return [int.from_bytes(data[i:i + 4], "little") for i in range(0, whole, 4)], timed_out
