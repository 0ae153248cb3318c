"""The report's figures from logs: ERROR and CRITICAL records, and the day's health runs.

Measuring only; `checks/business.py` judges. Logs are streamed in big chunks with a
prefilter (one regex pass per chunk for JSON lines) before any JSON parsing.
"""

import contextlib
import glob
import gzip
import json
import os
import re
import zlib
from datetime import date, datetime

from monitor.report.window import Window, parse_time
from monitor.state import open_regular


_PLAIN = re.compile(rb"^\s*\[?(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)\]?"
                    rb"[\s\-|\[]*(ERROR|CRITICAL)\b", re.IGNORECASE)
# The prefilter of plain-text logs: both spellings of the two levels (structlog, pino and
# Go loggers write "error"). Whole words: a longer needle skips further.
_LEVELS = (b"ERROR", b"CRITICAL", b"error", b"critical")
# The prefilter of JSON-lines logs, one pass per chunk: a "levelname" or "level" field whose
# value is ERROR or CRITICAL as loggers spell them (compact or spaced JSON). A message that
# merely mentions "error" is no candidate, so only lines that can count are parsed. It
# starts with the letters, not the quote: `re` tries the pattern at each occurrence of its
# first byte, and JSON lines hold far more quotes than "l"s.
_LEVEL_FIELD = re.compile(rb'level(?:name"|")[ \t]*+:[ \t]*+"(?:ERROR|CRITICAL|error|critical|Error|Critical)"')
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


def error_record(line: bytes, tz) -> tuple[str, datetime | None] | None:
    """Given a candidate line, return (level, time) if it is an ERROR/CRITICAL record.

    Returns None for a line that is not an error record, and ("?", None) for one
    that looks like one but cannot be parsed.
    """
    stripped = line.lstrip()
    if stripped.startswith(b"{"):
        try:
            # Decoded first: json.loads would guess the encoding of bytes on every line.
            record = json.loads(line.decode("utf-8", "surrogatepass"))
        except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the stack
            return "?", None
        if not isinstance(record, dict):
            return None
        level = str(record.get("levelname") or record.get("level") or "").upper()
        if level not in ("ERROR", "CRITICAL"):
            return None
        stamp = record.get("asctime") or record.get("timestamp") or record.get("time")
        when = parse_time(stamp, tz) if stamp is not None else None
        return (level, when) if when else ("?", None)
    match = _PLAIN.match(line)
    if not match:
        return None
    when = parse_time(match.group(1).decode(), tz)
    return (match.group(2).decode().upper(), when) if when else ("?", None)


def _candidate_lines(handle, chunk_size: int = 1 << 20, max_line: int = 1 << 20):
    """Yield the lines of `handle` that may be ERROR or CRITICAL records, scanning big chunks.

    A file that starts with "{" (after white space) is read as JSON lines: one regex pass per
    chunk finds the level fields that say ERROR or CRITICAL. Any other file (plain text,
    or garbage) keeps the plain prefilter: lines holding a level word. Either way only
    the lines around a hit are cut out of the chunk, never the whole chunk; a line
    longer than `max_line` is cut to its first `max_line` bytes.
    """
    has, hits = _has_level, _hits
    tail = b""  # the unfinished line carried over from the previous chunk
    kind_known = False  # until the first byte that is not white space: "{" makes it JSON lines
    while True:
        chunk = handle.read(chunk_size)
        if not kind_known and chunk.strip(b" \t\r\n"):
            kind_known = True
            if chunk.lstrip(b" \t\r\n").startswith(b"{"):
                has, hits = _has_level_field, _field_hits
        if not chunk:
            if has(tail):
                yield tail
            return
        first = chunk.find(b"\n")
        if first == -1:
            tail = (tail + chunk)[:max_line]
            continue
        head = (tail + chunk[:first])[:max_line]
        if has(head):
            yield head
        last = chunk.rfind(b"\n")
        yield from hits(chunk, first + 1, last, max_line)
        tail = chunk[last + 1:][:max_line]


def _has_level(line: bytes) -> bool:
    return any(level in line for level in _LEVELS)


def _has_level_field(line: bytes) -> bool:
    return _LEVEL_FIELD.search(line) is not None


def _hits(data: bytes, lo: int, hi: int, max_line: int):
    """Lines of data[lo:hi] (whole lines) holding a level word, each once, in order."""
    ends = {}  # line start -> line end
    for level in _LEVELS:
        pos = data.find(level, lo, hi)
        while pos != -1:
            start = data.rfind(b"\n", lo, pos) + 1 or lo
            end = data.find(b"\n", pos, hi)
            ends[start] = end = hi if end == -1 else end
            pos = data.find(level, end, hi)
    for start in sorted(ends):
        yield data[start:min(ends[start], start + max_line)]


def _field_hits(data: bytes, lo: int, hi: int, max_line: int):
    """Lines of data[lo:hi] (whole lines) with an ERROR/CRITICAL level field, each once, in order."""
    search = _LEVEL_FIELD.search
    match = search(data, lo, hi)
    while match:
        pos = match.start()
        start = data.rfind(b"\n", lo, pos) + 1 or lo
        end = data.find(b"\n", pos, hi)
        end = hi if end == -1 else end
        yield data[start:min(end, start + max_line)]
        match = search(data, end, hi)


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
    tz = window.start.tzinfo
    counts = {"ERROR": 0, "CRITICAL": 0}
    per_file, unparseable, unreadable = {}, 0, []
    for path in log_files(patterns, window.day):
        if _is_own_log(path, own_logs):
            continue
        n = 0
        try:
            with _open(path) as handle:
                for line in _candidate_lines(handle, max_line=max_line):
                    record = error_record(line, tz)
                    if record is None:
                        continue
                    level, when = record
                    if when is None:
                        unparseable += 1
                    elif window.start <= when < window.end:
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
    for i, (when, _, checks) in enumerate(runs):
        step = ((runs[i + 1][0] - when).total_seconds() if i + 1 < len(runs) else every_minutes * 60)
        step = min(step, every_minutes * 60 * 2)  # a gap in the runs is not downtime of a check
        for check, status in checks.items():
            if status != "ok":
                entry = incidents.setdefault(check, {"incidents": 0, "downtime_seconds": 0})
                if previous.get(check, "ok") == "ok":
                    entry["incidents"] += 1
                entry["downtime_seconds"] += int(step)
            previous[check] = status
    return {"runs_seen": len(runs), "runs_expected": expected,
            "percent_ok": round(100.0 * ok / len(runs), 1) if runs else None,
            "incidents": incidents}
