"""The `log:<name>` checks: the error rate of an application's logs since the previous run.

Measures, then judges with the shared thresholds. Each run reads only what was appended
since the last one (offset, inode and size per file in the carried state, as check_logfiles
does); a file renamed away (logrotate's default) is finished from its `.1` name, a
truncated one (copytruncate) read again from the start; a line still being written is
left for the next run. Which lines are error records is `monitor/logscan.py`'s to say,
as for the daily report.
"""

import glob
import os
import re
import stat
import time
from datetime import datetime, timedelta
from functools import partial

from monitor import logscan
from monitor.results import OK, UNKNOWN, Result, worst
from monitor.runner import Check
from monitor.units import format_duration, format_size

# The first run reads at most this much of a file's end (and of that, initial_window's records).
FIRST_RUN_TAIL = 1 << 20
LAST_LINE_CHARS = 300
TIMEOUT_SECONDS = 60.0
# Rules and panels for the logs that set one threshold only (and for other hosts' logs).
DEFAULT_LEVELS = {"errors_per_minute": (1, 10), "error_ratio": (0.05, 0.2)}


class Tally:
    """What the lines read this run hold: records, errors, the last error line, bytes."""

    def __init__(self, pattern, tz):
        self.pattern = re.compile(pattern.encode()) if pattern else None
        self.tz, self.records, self.errors, self.bytes_read, self.last_error = tz, 0, 0, 0, None

    def block(self, data, lo: int, hi: int, json_lines: bool) -> None:
        """Count the whole lines data[lo:hi]: every line is a record."""
        records, errors, last = logscan.count_block(data, lo, hi, json_lines, self.pattern)
        self.records += records
        self.errors += errors
        if last:
            self.last_error = data[last[0]:min(last[1], last[0] + 4 * LAST_LINE_CHARS)]

    def is_error(self, line) -> bool:
        if self.pattern is not None:
            return True
        record = logscan.error_record(line, self.tz)
        return record is not None and record[0] != "?"

    def tail(self, data, lo: int, hi: int, json_lines: bool, since: datetime) -> None:
        """The first run: only the records whose own time is `since` or later count."""
        for line in data[lo:hi].split(b"\n"):
            when = logscan.record_time(line, self.tz)
            if when is None or when < since:
                continue
            self.records += 1
            if self.prefilter(line, json_lines) and self.is_error(line):
                self.errors += 1
                self.last_error = line

    def prefilter(self, line, json_lines: bool) -> bool:
        if self.pattern is not None:
            return self.pattern.search(line) is not None
        return logscan.LEVEL_FIELD.search(line) is not None if json_lines else logscan.is_error_line(line)


def _open(path: str):
    """An application's log: symlinks followed (app.log -> app-2026.log), never a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise OSError(f"not a regular file: {path}")
    return os.fdopen(fd, "rb", buffering=0), info


def _read(handle, start: int, budget: int, tally: Tally, json_lines, since=None, cap=1 << 20) -> tuple[int, bool]:
    """Read whole lines from `start` within `budget` bytes; return (offset after them, JSON lines?)."""
    handle.seek(start)
    blocks = logscan.Blocks(handle, cap, limit=budget, partial_last=False)  # a longer line: its head
    for data, lo, hi in blocks:
        if json_lines is None:
            json_lines = logscan.is_json_lines(data[lo:min(hi, lo + 4096)])
        if since is None:
            tally.block(data, lo, hi, json_lines)
        else:
            tally.tail(data, lo, hi, json_lines, since)
    tally.bytes_read += blocks.consumed
    return start + blocks.consumed, json_lines


def scan(cfg: dict, previous: dict | None, now: float, tz) -> tuple[Tally, dict, list, int]:
    """Read what each file of `cfg` gained since `previous` (None: the first run).

    Returns the tally, the files' new state, the problems met and the bytes left unread.
    """
    tally, files, problems, left = Tally(cfg["pattern"], tz), {}, [], 0
    budget = cfg["max_bytes"]
    known = previous.get("files", {}) if previous else {}
    since = datetime.fromtimestamp(now, tz) - timedelta(seconds=cfg["initial_window"])
    for path in sorted(glob.glob(cfg["path"])):
        try:
            handle, info = _open(path)
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
            continue
        with handle:
            old = known.get(path) if isinstance(known.get(path), dict) else None
            start, json_lines, first = 0, None, previous is None
            if old and isinstance(old.get("offset"), int) and old.get("inode") == info.st_ino:
                start = old["offset"] if info.st_size >= old["offset"] else 0  # copytruncate: again from 0
            elif old and isinstance(old.get("offset"), int):  # renamed away: finish it under its new name
                budget, unread = _finish_rotated(path, old, budget, tally)
                if unread:  # max_bytes reached in it: the next run goes on there, then the new file
                    files[path] = {**old, "offset": old["offset"] + unread[0]}
                    left += unread[1] + info.st_size
                    continue
            elif first:  # the end of a file that may be a year old
                start = _line_start(handle, max(0, info.st_size - FIRST_RUN_TAIL), info.st_size)
            take = min(budget, max(0, info.st_size - start))
            offset, json_lines = _read(handle, start, take, tally, json_lines, since if first else None,
                                       min(1 << 20, cfg["max_bytes"]))
            budget -= offset - start
            if take < info.st_size - start:  # max_bytes reached: the rest is the next run's
                left += info.st_size - offset
            files[path] = {"inode": info.st_ino, "offset": offset, "size": info.st_size}
    return tally, files, problems, left


def _line_start(handle, at: int, end: int) -> int:
    """The first line that starts at or after `at` (a line cut in two is not a record)."""
    if at == 0:
        return 0
    handle.seek(at - 1)
    while at - 1 < end:
        chunk = handle.read(min(1 << 16, end - at + 1))
        if not chunk:
            break
        newline = chunk.find(b"\n")
        if newline != -1:
            return at + newline
        at += len(chunk)
    return end


def _finish_rotated(path: str, old: dict, budget: int, tally: Tally) -> tuple[int, tuple | None]:
    """Read the end of `path` renamed to `path.1` (same inode) within `budget`.

    Returns (budget left, None when it is finished, else (bytes read, bytes still unread))."""
    rotated = path + ".1"
    try:
        handle, info = _open(rotated)
    except OSError:
        return budget, None  # gone or compressed already: its unread end is lost
    with handle:
        if info.st_ino != old.get("inode") or info.st_size < old["offset"]:
            return budget, None
        take = min(budget, info.st_size - old["offset"])
        offset, _ = _read(handle, old["offset"], take, tally, None)
        read = offset - old["offset"]
        # Cut by the budget: unfinished. (A last line never ended is not waited for: the
        # writer has moved on to the new file.)
        return budget - read, ((read, info.st_size - offset) if take < info.st_size - old["offset"] else None)


def logfile(cfg: dict, carried, now=time.time, tz=None) -> Result:
    """Judge one [[logfiles]] entry by the errors appended since the previous run."""
    key, wall = f"log:{cfg['name']}", now()
    tz = tz or datetime.now().astimezone().tzinfo
    previous = carried.previous.get(key) if isinstance(carried.previous.get(key), dict) else None
    tally, files, problems, left = scan(cfg, previous, wall, tz)
    carried.save(key, {"time": wall, "files": files})
    if not files:
        message = f"no readable file matches {cfg['path']}" + (f" ({'; '.join(problems)})" if problems else "")
        return Result(UNKNOWN, message, details={"files": [], "problems": problems})
    since = previous.get("time") if previous else None
    window = wall - since if isinstance(since, (int, float)) and 0 < wall - since < 366 * 86400 \
        else cfg["initial_window"]
    per_minute = round(tally.errors * 60 / max(window, 1.0), 3)
    ratio = round(tally.errors / tally.records, 4) if tally.records else 0.0
    status, value, threshold, unit = OK, per_minute, cfg["errors_per_minute"], "/min"
    if cfg["errors_per_minute"]:
        status = cfg["errors_per_minute"].judge(per_minute)
    if cfg["error_ratio"]:
        by_ratio = cfg["error_ratio"].judge(ratio) if tally.records else OK
        if not cfg["errors_per_minute"] or worst(status, by_ratio) != status:
            value, threshold, unit = ratio, cfg["error_ratio"], "ratio"
        status = worst(status, by_ratio)
    message = (f"{tally.errors} error(s) in {tally.records} record(s) over {format_duration(window)} "
               f"({per_minute:g}/min, {ratio * 100:.1f}%)")
    if left:
        message += f"; {format_size(left)} not read yet (max_bytes {format_size(cfg['max_bytes'])}), next run"
    if problems:
        message += f"; unreadable: {'; '.join(problems)}"
    details = {"records": tally.records, "errors": tally.errors, "window_seconds": round(window, 1),
               "errors_per_minute": per_minute, "error_ratio": ratio, "bytes_read": tally.bytes_read,
               "bytes_left": left, "files": sorted(files), "last_error": _shown(tally.last_error)}
    return Result(status, message, value=value, unit=unit, warning=threshold.warning if threshold else None,
                  critical=threshold.critical if threshold else None, details=details)


def _shown(line) -> str | None:
    """A log line as it may be shown: cut, secrets masked, printable."""
    if line is None:
        return None
    from monitor.redact import scrub
    from monitor.text import clip

    text = bytes(line[:4 * LAST_LINE_CHARS]).decode("utf-8", "backslashreplace").strip()
    return clip(scrub(text), LAST_LINE_CHARS)


# --- what these checks export (the contract: monitor/checks/__init__.py) ----------------------

METRICS = {
    "monitor_log_errors_per_minute": ("Error records per minute appended to the log since the previous run.",
                                      ("log",)),
    "monitor_log_error_ratio": ("Error records / all records appended to the log since the previous run.",
                                ("log",)),
}
MEASURES = {"log": ("errors", False)}


def checks(config: dict, carried, shared=None) -> list:
    """One check per [[logfiles]] entry."""
    return [Check(f"log:{cfg['name']}", "logs", partial(logfile, cfg, carried), TIMEOUT_SECONDS)
            for cfg in config["logfiles"]]


def check_ids(config: dict) -> list[str]:
    return [f"log:{cfg['name']}" for cfg in config.get("logfiles") or []]


def samples(result) -> list:
    name, details = result.id.split(":", 1)[1], result.details or {}
    return [("monitor_log_errors_per_minute", {"log": name}, details.get("errors_per_minute")),
            ("monitor_log_error_ratio", {"log": name}, details.get("error_ratio"))]


def levels(config: dict) -> dict:
    from monitor.fleet.kit import Levels, per_name

    logs, out = config.get("logfiles") or [], {}
    for key, (warning, critical) in DEFAULT_LEVELS.items():
        fallback = Levels(warning, critical)
        for which in ("warning", "critical"):
            out[f"{key}_{which}"] = per_name(logs, key, "log", fallback,
                                             lambda t, which=which, fallback=fallback: getattr(t or fallback, which))
    return out


def rules(t: dict) -> dict:
    from monitor.fleet.kit import compare, health_runbook, level_text, num, rule

    runbook, out = health_runbook("logs"), []
    for alert, metric, key, shown, what in (
        ("LogErrorRateHigh", "monitor_log_errors_per_minute", "errors_per_minute",
         '{{ $value | printf "%.2f" }} errors/min', "errors per minute"),
        ("LogErrorRatioHigh", "monitor_log_error_ratio", "error_ratio",
         "{{ $value | humanizePercentage }} of its records", "error ratio"),
    ):
        for severity, for_ in (("warning", "10m"), ("critical", "5m")):
            levels = t[f"{key}_{severity}"]
            out.append(rule(alert, compare(metric, ">=", levels), for_, severity,
                            f"Log {{{{ $labels.log }}}}: {what} high ({severity})",
                            f"Log {{{{ $labels.log }}}} on {{{{ $labels.instance }}}} logged {shown} since the "
                            f"previous health run ({severity} from {level_text(levels, num)}).", runbook))
    return {"monitor_logs": out}


def panels(t: dict) -> list:
    from monitor.fleet.kit import INSTANCE as I, panel, steps, target

    row, legend = "Scraper Performance", "{{instance}} {{log}}"
    rate = t["errors_per_minute_warning"].default, t["errors_per_minute_critical"].default
    ratio = t["error_ratio_warning"].default, t["error_ratio_critical"].default
    return [
        (row, panel("timeseries", "Log errors per minute", [target(f"monitor_log_errors_per_minute{{{I}}}", legend)],
                    "ERROR/CRITICAL records per minute appended since the previous run (logfiles "
                    "errors_per_minute).", "none", steps("green", (rate[0], "yellow"), (rate[1], "red")), 0), 6, 8),
        (row, panel("timeseries", "Log error ratio", [target(f"monitor_log_error_ratio{{{I}}}", legend)],
                    "Error records / all records appended since the previous run (logfiles error_ratio).",
                    "percentunit", steps("green", (ratio[0], "yellow"), (ratio[1], "red")), 0, 1), 6, 8),
    ]
