"""Host counters read straight from Linux's /proc, with psutil's names and meanings.

Why not psutil here: importing it costs ~35 ms, more than every host check together
and a third of a cron run's whole budget. These four files are all the host checks
need. The numbers match psutil's (same formulas; tests compare the two), and on a
system without /proc `host_source()` returns psutil itself. The mount tables the disk
checks compare (the kernel's and /etc/fstab) are read here too.
"""

import os
import re
from typing import NamedTuple


class CpuTimes(NamedTuple):
    user: float
    nice: float
    system: float
    idle: float
    iowait: float = 0.0
    irq: float = 0.0
    softirq: float = 0.0
    steal: float = 0.0
    guest: float = 0.0
    guest_nice: float = 0.0


class Memory(NamedTuple):
    total: int
    available: int
    percent: float


class Swap(NamedTuple):
    total: int
    used: int
    free: int
    percent: float


class NicCounters(NamedTuple):
    bytes_sent: int
    bytes_recv: int
    packets_sent: int
    packets_recv: int
    errin: int
    errout: int
    dropin: int
    dropout: int


class ProcSource:
    """The subset of psutil's API the host checks use, read from `proc` (default /proc)."""

    def __init__(self, proc: str = "/proc"):
        self.proc = proc
        self._boot: float | None = None

    def _read(self, name: str) -> str:
        with open(os.path.join(self.proc, name)) as handle:
            return handle.read()

    def _stat_lines(self) -> list[str]:
        return self._read("stat").splitlines()

    def boot_time(self) -> float:
        """Boot time, read once: the CPU and network checks both ask for it."""
        if self._boot is None:
            for line in self._stat_lines():
                if line.startswith("btime "):
                    self._boot = float(line.split()[1])
                    break
            else:
                raise OSError(f"no btime line in {self.proc}/stat")
        return self._boot

    def cpu_times(self) -> CpuTimes:
        line = self._stat_lines()[0]
        ticks = os.sysconf("SC_CLK_TCK")
        values = [int(v) / ticks for v in line.split()[1:11]]
        return CpuTimes(*values)

    def process_cpu(self) -> float:
        """CPU seconds this process has used (all its threads, since it started).

        `os.times()` for the real /proc (the same ticks, no file to read); otherwise
        utime + stime of `self/stat` under `proc`, so a test can fake it.
        """
        if self.proc == "/proc":
            times = os.times()
            return times.user + times.system
        try:
            stat = self._read("self/stat")
        except OSError:
            return 0.0
        fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces and ")"
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _meminfo(self) -> dict[str, int]:
        info = {}
        for line in self._read("meminfo").splitlines():
            key, _, rest = line.partition(":")
            fields = rest.split()
            if fields:
                info[key] = int(fields[0]) * (1024 if len(fields) > 1 else 1)
        return info

    def virtual_memory(self) -> Memory:
        info = self._meminfo()
        total = info["MemTotal"]
        available = info.get("MemAvailable")
        if available is None:  # kernels before 3.14; psutil estimates it the same way
            available = info.get("MemFree", 0) + info.get("Cached", 0) + info.get("Buffers", 0)
        percent = round(100.0 * (total - available) / total, 1) if total else 0.0
        return Memory(total, available, percent)

    def swap_memory(self) -> Swap:
        info = self._meminfo()
        total, free = info.get("SwapTotal", 0), info.get("SwapFree", 0)
        used = total - free
        return Swap(total, used, free, round(100.0 * used / total, 1) if total else 0.0)

    def net_io_counters(self, pernic: bool = True) -> dict[str, NicCounters]:
        nics = {}
        for line in self._read("net/dev").splitlines()[2:]:
            name, _, rest = line.partition(":")
            v = [int(x) for x in rest.split()]
            if len(v) < 16:
                continue
            # receive: bytes packets errs drop fifo frame compressed multicast; then transmit
            nics[name.strip()] = NicCounters(bytes_sent=v[8], bytes_recv=v[0], packets_sent=v[9],
                                             packets_recv=v[1], errin=v[2], errout=v[10],
                                             dropin=v[3], dropout=v[11])
        return nics


def _unescape(field: bytes) -> str:
    """A path as fstab and mountinfo write it: `\\040` is a space, `\\011` a tab, and so on."""
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8) & 0xFF]), field))


def normal_mount_point(path: str) -> str:
    """A mount point the way `mount` compares it: no trailing slash, no `.`/`..`/`//` parts."""
    return "/" + os.path.normpath(path).lstrip("/")


def mount_points(mountinfo: str = "/proc/self/mountinfo") -> set[str] | None:
    """What the kernel has mounted in this process's namespace; None without /proc."""
    try:
        with open(mountinfo, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    points = set()
    for line in data.splitlines():
        fields = line.split()  # id parent major:minor root MOUNT-POINT options ...
        if len(fields) > 4:
            points.add(normal_mount_point(_unescape(fields[4])))
    return points


def fstab_mount_points(fstab: str = "/etc/fstab") -> list[str]:
    """Mount points `mount -a` would mount: not comments, swap or `noauto` entries."""
    try:
        with open(fstab, "rb") as handle:
            data = handle.read(1 << 20)  # a real fstab is a few hundred bytes
    except OSError:
        return []
    points = []
    for line in data.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0].startswith(b"#"):
            continue
        fstype = fields[2] if len(fields) > 2 else b""
        options = fields[3].split(b",") if len(fields) > 3 else []
        point = _unescape(fields[1])
        if fstype != b"swap" and b"noauto" not in options and point.startswith("/"):
            points.append(normal_mount_point(point))
    return points


def host_source():
    """Return the counters source for this system: /proc on Linux, else psutil."""
    if os.path.exists("/proc/stat") and os.path.exists("/proc/net/dev"):
        return ProcSource()
    import psutil

    return psutil
