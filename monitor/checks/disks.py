"""Disk and inode checks (kind `system`): space and inodes used on each of `system.disk_paths`.

Each path is measured with `statvfs` as `df` counts it, after making sure it is there and
mounted (a missing path, or one under an unmounted fstab entry, is critical). With the
carried state, each run also adds a point to the path's fill series, and the result says
when the filesystem will be full at the recent rate (`monitor/eta.py`), judged with
`system.fill_eta`. `system.checks` builds these between `load` and `network`.
"""

import os
import time
from functools import partial

from monitor import eta
from monitor.checks.procfs import fstab_mount_points, mount_points, normal_mount_point
from monitor.results import CRITICAL, OK, UNKNOWN, Result, Threshold, measured, worst
from monitor.runner import Check
from monitor.state import Carried
from monitor.units import format_size


def _holds(mount: str, path: str) -> bool:
    return mount == "/" or path == mount or path.startswith(mount + "/")


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"


def _denied(path: str) -> tuple[str, str]:
    return UNKNOWN, f"{path}: permission denied (monitor runs as {_user()}), cannot measure it"


def _mount_problem(path: str, fstab: str, mountinfo: str) -> tuple[str, str] | None:
    """Say why `path` cannot be measured (status, message), or None.

    Missing, unreachable (permission denied), or on a filesystem that `fstab` lists and
    the kernel has not mounted: then `statvfs` would measure the parent filesystem.
    Mounted means in the kernel's mount table (`mountinfo`), so bind mounts count,
    and fstab's mount points are compared as `mount` reads them (octal escapes,
    trailing slashes). A file is measured on the filesystem holding it, as `df FILE`.
    """
    try:
        os.stat(path)
    except PermissionError:
        return _denied(path)
    except (FileNotFoundError, NotADirectoryError):
        return CRITICAL, f"{path} does not exist (not mounted?)"
    except OSError as exc:  # a stale NFS handle, an I/O error
        return CRITICAL, f"{path}: {exc.strerror or exc}"
    real = os.path.realpath(path)
    listed = [p for p in fstab_mount_points(fstab) if _holds(p, real)]
    if not listed:
        return None
    mounted = mount_points(mountinfo)
    if mounted is None:  # no /proc: the kernel's word is not at hand, judge by the path
        unmounted = [p for p in listed if p != "/" and not os.path.ismount(p)]
    else:
        holder = max((m for m in mounted if _holds(m, real)), key=len, default="/")
        unmounted = [p for p in listed if len(p) > len(holder)]  # deeper than what holds it
    if not unmounted:
        return None
    point = max(unmounted, key=len)
    if point == real or point == normal_mount_point(path):
        return CRITICAL, f"{path} is listed in {fstab} but not mounted"
    return CRITICAL, f"{path} is under {point}, listed in {fstab} but not mounted"


def _measure(path: str, threshold: Threshold, fstab: str, mountinfo: str, statvfs):
    """statvfs(path), or a Result saying why the path cannot be measured."""
    problem = _mount_problem(path, fstab, mountinfo)
    if problem is None:
        try:
            return statvfs(path)
        except PermissionError:
            problem = _denied(path)
        except (FileNotFoundError, NotADirectoryError):
            problem = CRITICAL, f"{path} does not exist (not mounted?)"
        except OSError as exc:
            problem = CRITICAL, f"{path}: {exc.strerror or exc}"
    status, message = problem
    return Result(status, message, unit="%", warning=threshold.warning, critical=threshold.critical)


def disk(path: str, threshold: Threshold, fstab: str = "/etc/fstab", statvfs=os.statvfs,
         mountinfo: str = "/proc/self/mountinfo", trend=None) -> Result:
    """Percent of space used on the filesystem holding `path`, as `df` counts it.

    With a `trend` (`Trend`), the point is added to the path's series and the result
    also says when the filesystem will be full at the recent rate.
    """
    st = _measure(path, threshold, fstab, mountinfo, statvfs)
    if isinstance(st, Result):
        return st
    total, free, avail = st.f_blocks * st.f_frsize, st.f_bfree * st.f_frsize, st.f_bavail * st.f_frsize
    used = total - free
    # Like df: reserved root blocks count as neither used nor available.
    percent = round(100.0 * used / (used + avail), 1) if used + avail else 0.0
    result = measured(percent, threshold,
                      f"Disk {path} {percent:.1f}% used ({format_size(avail)} free of {format_size(total)})",
                      details={"path": path, "total_bytes": total, "free_bytes": avail, "used_bytes": used})
    return trend.judge(result, used, used + avail, _bytes_rate) if trend and used + avail else result


def inodes(path: str, threshold: Threshold, fstab: str = "/etc/fstab", statvfs=os.statvfs,
           mountinfo: str = "/proc/self/mountinfo", trend=None) -> Result:
    st = _measure(path, threshold, fstab, mountinfo, statvfs)
    if isinstance(st, Result):
        return st
    if not st.f_files:
        return Result(OK, f"{path}: the filesystem does not count inodes", unit="%",
                      warning=threshold.warning, critical=threshold.critical)
    used = st.f_files - st.f_ffree
    percent = round(100.0 * used / st.f_files, 1)  # as `df -i` counts IUse%
    result = measured(percent, threshold, f"Inodes {path} {percent:.1f}% used ({st.f_favail} free)",
                      details={"path": path, "total": st.f_files, "free": st.f_favail})
    return trend.judge(result, used, st.f_files, _inodes_rate) if trend else result


def _bytes_rate(per_second: float) -> str:
    return f"{format_size(per_second * 3600)}/h"


def _inodes_rate(per_second: float) -> str:
    return f"{per_second * 3600:.0f} inodes/h"


class Trend:
    """The fill series of one check (`eta:<check id>` in what health carries) and how it is judged.

    `judge` adds this run's point, estimates when 100 % is reached (monitor/eta.py) and
    returns the result with `details.eta_seconds` (null when not growing or too little
    data), `details.eta_note` saying how or why not, and the worse of its own status and
    `fill_eta`'s (lower is worse). `now` is the wall clock: the series outlives reboots;
    a clock set back restarts it.
    """

    def __init__(self, check_id: str, carried: Carried, settings: eta.Settings, fill_eta: Threshold,
                 now=time.time):
        self.key, self.carried, self.now = f"eta:{check_id}", carried, now
        self.settings, self.fill_eta = settings, fill_eta

    def judge(self, result: Result, used: float, total: float, show_rate) -> Result:
        now = round(self.now(), 1)
        points, restarted = eta.append(eta.points_of(self.carried.previous.get(self.key)), now, used, total)
        self.carried.save(self.key, points)
        found = eta.estimate(points, now, self.settings, show_rate)
        note = f"series restarted: {restarted}; {found.note}" if restarted else found.note
        details = {**result.details, "eta_seconds": None if found.seconds is None else round(found.seconds),
                   "eta_note": note}
        if found.seconds is None:
            return result.replace(details=details)
        status = worst(result.status, self.fill_eta.judge(found.seconds))
        message = f"{result.message}, {eta.told(found)}"
        return result.replace(status=status, message=message, details=details)


# --- what these checks export (the contract: monitor/checks/__init__.py) ----------------------

METRICS = {
    "monitor_disk_usage_percent": ("Disk space used percent, as df counts it.", ("path",)),
    "monitor_disk_fill_eta_seconds": ("Seconds until the filesystem is full at the rate of system.eta_window "
                                      "(only while it grows).", ("path",)),
    "monitor_inodes_fill_eta_seconds": ("Seconds until the filesystem has no free inode at the rate of "
                                        "system.eta_window (only while their use grows).", ("path",)),
}
MEASURES = {"disk": ("disk", False), "inodes": ("inodes", False)}


def path_checks(config: dict, carried: Carried | None) -> list:
    """A disk and an inodes check per `system.disk_paths` entry (for `system.checks`, in its order)."""
    cfg = config["system"]
    found, timeout, trend = [], cfg["timeout"], eta.settings_of(config)
    if carried is not None:  # the series of disks and quotas no longer configured go
        eta.drop_stale(carried.previous, time.time())
    kinds = (("disk", disk, cfg["disk_percent"]), ("inodes", inodes, cfg["inodes_percent"]))
    for path in cfg["disk_paths"]:
        for what, measure, threshold in kinds:
            check_id = f"{what}:{path}"
            series = Trend(check_id, carried, trend, cfg["fill_eta"]) if carried is not None else None
            # statvfs on a dead NFS mount never returns: no answer means the disk is gone.
            found.append(Check(check_id, "system", partial(measure, path, threshold, trend=series),
                               timeout, on_timeout=CRITICAL))
    return found


def check_ids(config: dict) -> list[str]:
    return [f"{what}:{p}" for p in config["system"]["disk_paths"] for what in ("disk", "inodes")]


def samples(result) -> list:
    what, _, path = result.id.partition(":")
    left = (result.details or {}).get("eta_seconds")
    if what == "inodes":  # its percent is monitor_check_value's
        return [("monitor_inodes_fill_eta_seconds", {"path": path}, left)]
    if what != "disk":
        return []
    return [("monitor_disk_usage_percent", {"path": path}, result.value),
            ("monitor_disk_fill_eta_seconds", {"path": path}, left)]


def levels(config: dict) -> dict:
    from monitor.fleet.kit import levels_of

    system = config["system"]
    return {"disk": levels_of(system["disk_percent"]), "inodes": levels_of(system["inodes_percent"]),
            "fill_eta": levels_of(system["fill_eta"])}


def rules(t: dict) -> dict:
    from monitor.fleet.kit import duration_text, health_runbook, num, pair

    runbook = health_runbook("system")
    rules = []
    for alert, name, metric, shown, text in (
        ("HostDiskUsageHigh", "disk", "monitor_disk_usage_percent", '{{ $value | printf "%.1f" }}%',
         "Disk {{ $labels.path }}"),
        ("HostInodesHigh", "inodes", 'monitor_check_value{kind="system",check=~"inodes:.*"}',
         '{{ $value | printf "%.1f" }}%', 'Inodes of {{ reReplaceAll "^inodes:" "" $labels.check }}'),
    ):
        levels = t[name]
        rules += pair(
            alert, lambda level, metric=metric: f"{metric} >= {num(level)}", levels, ("5m", "5m"),
            text + " usage high (SEVERITY)",
            f"{text} at {shown} on {{{{ $labels.instance }}}} "
            f"(warning from {num(levels.warning)}%, critical from {num(levels.critical)}%).",
            runbook)
    fill = t["fill_eta"]
    for alert, metric, what, full in (
            ("HostDiskFillingUp", "monitor_disk_fill_eta_seconds", "Disk {{ $labels.path }}", "be full"),
            ("HostInodesFillingUp", "monitor_inodes_fill_eta_seconds", "Inodes of {{ $labels.path }}",
             "have no free inode")):
        rules += pair(
            alert, lambda level, metric=metric: f"{metric} <= {num(level)}", fill, ("10m", "5m"),
            f"{what} filling up (SEVERITY)",
            f"{what} on {{{{ $labels.instance }}}} will {full} in {{{{ $value | humanizeDuration }}}} "
            f"at its recent rate (warning from {duration_text(fill.warning)}, critical from "
            f"{duration_text(fill.critical)}; the health check's message gives the rate).",
            runbook)
    return {"monitor_host": rules}


def panels(t: dict) -> list:
    from monitor.fleet.kit import INSTANCE as I, lower_worse, panel, target

    return [("Ahead", panel("timeseries", "Disk full in",
                            [target(f"monitor_disk_fill_eta_seconds{{{I}}}", "{{instance}} {{path}}"),
                             target(f"monitor_inodes_fill_eta_seconds{{{I}}}", "{{instance}} {{path}} inodes", "B")],
                            "Time until each of system.disk_paths is full (or out of inodes) at the rate of "
                            "system.eta_window; no line while a disk is not growing (system.fill_eta).", "s",
                            lower_worse(t["fill_eta"]), 0), 12, 8)]
