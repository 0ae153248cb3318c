"""The report's figures from logs: ERROR and CRITICAL records, and the day's health runs.

Measuring only; `checks/business.py` judges. Which lines are error records is
`monitor/logscan.py`'s to say (one regex pass per block, then only the candidates).
"""

import contextlib
import glob
import gzip
import json
import os
import re
import zlib
from datetime import date, timedelta, timezone

from monitor import logscan
from monitor.report.window import Window, parse_time
from monitor.state import open_regular


# The classifier is shared with the `log:<name>` checks; the names stay for the fuzz tests.
_LEVEL_FIELD = logscan.LEVEL_FIELD
error_record = logscan.error_record
# A corrupt .gz archive raises zlib.error, which is not an OSError.
_READ_ERRORS = (OSError, EOFError, zlib.error)


_ARCHIVE_DAY = re.compile(r"-(\d{4}-\d{2}-\d{2})\.log\.gz$")


def log_files(patterns: list[str], day: date | None = None) -> list[str]:
    """Files matching the patterns, their `.gz` twins, and archives in `archive/` beside them.

    Given `day`, daily archives (`NAME-YYYY-MM-DD.log.gz`, named after the host's
    local day) more than two days away are left out: a month of retention would
    otherwise be decompressed every morning for one day's records.
    """
    found = set()
    for pattern in patterns:
        found.update(glob.glob(pattern))
        found.update(glob.glob(pattern + ".gz"))
        folder = os.path.join(os.path.dirname(pattern), "archive")
        if os.path.isdir(folder):
            found.update(glob.glob(os.path.join(folder, "*.log.gz")))
    return sorted(f for f in found if os.path.isfile(f) and _near(f, day))


def _near(path: str, day: date | None) -> bool:
    match = _ARCHIVE_DAY.search(os.path.basename(path)) if day else None
    if not match:
        return True
    try:
        return abs((date.fromisoformat(match.group(1)) - day).days) <= 2
    except ValueError:
        return True


def _open(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


@contextlib.contextmanager
def _open_own(path: str):
    """One of monitor's own logs: never through a planted link, never a FIFO (UnsafeFile)."""
    with open(open_regular(path), "rb") as handle:
        if path.endswith(".gz"):
            with gzip.GzipFile(fileobj=handle, mode="rb") as unzipped:
                yield unzipped
        else:
            yield handle


def _candidate_lines(handle, chunk_size: int = 1 << 20, max_line: int = 1 << 20):
    """Yield the lines of `handle` that may be ERROR or CRITICAL records (`logscan.candidates`).

    A line longer than `max_line` is cut to its first `max_line` bytes.
    """
    for data, lo, hi, json_lines in _blocks(handle, max(chunk_size, max_line)):
        yield from logscan.candidates(data, lo, hi, json_lines, max_line)


def _blocks(handle, size: int):
    """`logscan.Blocks` of `handle`, each with whether the file is JSON lines.

    A file that starts with "{" (after white space) is read as JSON lines; any other file
    (plain text, or garbage) by level words. Blank blocks before the first byte that is not
    white space are left out: they hold no record, and cannot tell.
    """
    json_lines = None
    for data, lo, hi in logscan.Blocks(handle, size):
        if json_lines is None:
            head = data[lo:hi].lstrip(b" \t\r\n")
            if not head:
                continue
            json_lines = head.startswith(b"{")
        yield data, lo, hi, json_lines


OWN_LOGS = ("health", "backup", "report")


def _is_own_log(path: str, folder: str | None) -> bool:
    """monitor's own logs: their ERROR records are check results, not scraper errors."""
    if not folder:
        return False
    where = os.path.dirname(os.path.abspath(path))
    folder = os.path.abspath(folder)
    name = os.path.basename(path)
    return where in (folder, os.path.join(folder, "archive")) and any(
        name == f"{own}.log" or name.startswith(f"{own}-") or name.startswith(f"{own}.log")
        for own in OWN_LOGS)


def count_errors(patterns: list[str], window: Window, max_line: int = 1 << 20,
                 own_logs: str | None = None) -> dict:
    """ERROR and CRITICAL records inside the window, from JSON-lines and plain-text logs.

    `own_logs` is monitor's logs folder: its health/backup/report logs are skipped
    (the default pattern `logs/*.log` would otherwise count check results as errors).
    """
    tz, since, until = window.start.tzinfo, window.start, window.end
    # The bounds in UTC too: most loggers write UTC ("Z", "+00:00"), which fromisoformat reads
    # as the `timezone.utc` object itself, and times sharing that tzinfo compare field by field.
    # The window's own ZoneInfo costs two utcoffset() look-ups per record (~20 ms for 30k).
    # Same answers: aware times of different zones compare as instants.
    utc = timezone.utc
    since_utc, until_utc = since.astimezone(utc), until.astimezone(utc)
    counts = {"ERROR": 0, "CRITICAL": 0}
    per_file, unparseable, unreadable = {}, 0, []
    for path in log_files(patterns, window.day):
        if _is_own_log(path, own_logs):
            continue
        n = 0
        try:
            with _open(path) as handle:
                for data, lo, hi, json_lines in _blocks(handle, max(1 << 20, max_line)):
                    for level, when in logscan.error_records(data, lo, hi, json_lines, max_line, tz):
                        if when is None:
                            unparseable += 1
                        elif (since_utc <= when < until_utc) if when.tzinfo is utc else (since <= when < until):
                            counts[level] += 1
                            n += 1
        except _READ_ERRORS as exc:
            unreadable.append(f"{path}: {getattr(exc, 'strerror', None) or exc}")
        if n:
            per_file[path] = n
    return {"count": counts["ERROR"] + counts["CRITICAL"], "error": counts["ERROR"],
            "critical": counts["CRITICAL"], "per_file": per_file, "unparseable_lines": unparseable,
            "unreadable": unreadable}


def health_summary(logs_folder: str, window: Window, every_minutes: int = 5) -> dict:
    """Runs of `monitor health` seen in the window vs expected, percent ok, incidents per check."""
    files = log_files([os.path.join(logs_folder, "health.log")], window.day)
    runs = []
    for path in files:
        if os.path.basename(path).startswith("health") or path.endswith("health.log"):
            try:
                with _open_own(path) as handle:
                    for line in handle:
                        if b'"event": "run"' not in line and b'"event":"run"' not in line:
                            continue
                        try:
                            record = json.loads(line)
                        except (ValueError, RecursionError):
                            continue
                        when = parse_time(str(record.get("asctime", "")), window.start.tzinfo)
                        if when and window.start <= when < window.end and isinstance(record.get("checks"), dict):
                            runs.append((when, record.get("overall_status"), record["checks"]))
            except _READ_ERRORS:
                continue
    runs.sort(key=lambda r: r[0])
    expected = round(window.hours * 60 / every_minutes)
    ok = sum(1 for _, status, _ in runs if status == "ok")
    incidents: dict[str, dict] = {}
    previous: dict[str, str] = {}
    spans: list[list] = []  # [start, end] of each stretch with a check not ok (the chart shades them)
    for i, (when, _, checks) in enumerate(runs):
        step = ((runs[i + 1][0] - when).total_seconds() if i + 1 < len(runs) else every_minutes * 60)
        step = min(step, every_minutes * 60 * 2)  # a gap in the runs is not downtime of a check
        if any(status != "ok" for status in checks.values()):
            end = when + timedelta(seconds=step)
            if spans and spans[-1][1] >= when:
                spans[-1][1] = end
            elif len(spans) < 50:
                spans.append([when, end])
        for check, status in checks.items():
            if status != "ok":
                entry = incidents.setdefault(check, {"incidents": 0, "downtime_seconds": 0})
                if previous.get(check, "ok") == "ok":
                    entry["incidents"] += 1
                entry["downtime_seconds"] += int(step)
            previous[check] = status
    return {"runs_seen": len(runs), "runs_expected": expected,
            "percent_ok": round(100.0 * ok / len(runs), 1) if runs else None,
            "incidents": incidents,
            "down_spans": [[a.isoformat(), min(b, window.end).isoformat()] for a, b in spans]}
