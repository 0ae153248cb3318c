"""Which log lines are ERROR or CRITICAL records: the one classifier of the daily report's
error count (`report/logs.py`) and of the `log:<name>` checks (`checks/logfiles.py`).

Measuring only. A log is read into one reused buffer a block of whole lines at a time
(`Blocks`); in each block one compiled regex pass finds the candidate lines (`candidates`):
in JSON lines a `levelname`/`level` field saying ERROR or CRITICAL, in plain text a level
word, or the operator's own pattern. Only those lines are looked at closer (`error_record`).

A line is judged by its own shape: one whose first byte that is not white space is "{"
by the JSON rule, any other by the plain rule (`plain_level`): the FIRST level word of its
head decides, so "INFO retrying after ERROR" is no error.
"""

import functools
import json
import re
from datetime import datetime, timezone

from monitor.report.window import parse_time

# A time at the start of a plain-text line ("2026-11-25 10:00:00,123", "[2026-11-25T10:00:00Z]").
_PLAIN_TIME = re.compile(rb"\s*\[?(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)\]?")
# logfmt's time field ("time=2026-11-25T10:00:00Z level=error msg=...").
_LOGFMT_TIME = re.compile(rb'(?<![\w.])(?:time|ts|timestamp)="?(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}'
                          rb'(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)')
# The level words of the plain rule (syslog's and the loggers' names). Right after the line's
# time a level word may be written in lower or title case too (zap's console "error").
_WORDS = rb"TRACE|DEBUG|INFO|NOTICE|WARNING|WARN|ERROR|CRITICAL|FATAL|ALERT|EMERG"
_AFTER_TIME = re.compile(rb"\]?[\s\-|\[]*(" + _WORDS + rb"|" + _WORDS.lower() + rb"|" + _WORDS.title() + rb")\b")
# Elsewhere in the line's head: the first level word in upper case as a whole word
# ("- ERROR -", "[ERROR]", "ERROR:root:", "app[12]: ERROR"), or logfmt's level field.
_FIRST_LEVEL = re.compile(rb"(?<!\w)(?:(" + _WORDS + rb")(?!\w)|(?i:level)=\"?([A-Za-z]+))")
# How far into a line its level is looked for: a syslog prefix, a time, a logger name.
PLAIN_HEAD = 200
_ERROR_CLASS = {b"ERROR": "ERROR", b"CRITICAL": "CRITICAL", b"FATAL": "CRITICAL", b"ALERT": "CRITICAL",
                b"EMERG": "CRITICAL"}
# The prefilter of plain-text lines: a line the plain rule (or the JSON rule) may call an
# error holds one of these (upper case anywhere; "rror" is "error" and "Error" after a time
# or in logfmt). One `find` pass each per block: 1.5x faster than one regex alternation.
HINTS = (b"ERROR", b"CRITICAL", b"FATAL", b"ALERT", b"EMERG", b"rror", b"ritical", b"atal")
# The prefilter of JSON-lines logs, one pass per block: a "levelname" or "level" field whose
# value is ERROR or CRITICAL as loggers spell them (compact or spaced JSON). A message that
# merely mentions "error" is no candidate, so only lines that can count are parsed. It
# starts with the letters, not the quote: `re` tries the pattern at each occurrence of its
# first byte, and JSON lines hold far more quotes than "l"s.
LEVEL_FIELD = re.compile(rb'level(?:name"|")[ \t]*+:[ \t]*+"(ERROR|CRITICAL|error|critical|Error|Critical)"')
_SPACE = b" \t\r\n"
_BLANK_LEAD = re.compile(rb"[ \t\r\n\x0b\x0c]*")


def plain_level(line) -> str | None:
    """Given a plain-text line (not JSON), return "ERROR" or "CRITICAL" if the plain rule
    makes it an error record, else None.

    The first level word within its first PLAIN_HEAD bytes decides: ERROR, or CRITICAL,
    FATAL, ALERT, EMERG (the critical class); a logfmt `level=` field (any case) counts as
    a level word where it stands. A line that starts with white space and no time
    continues the record above it (a traceback) and is not judged.
    """
    lead = _PLAIN_TIME.match(line)
    if lead:
        after = _AFTER_TIME.match(line, lead.end())
        if after:  # the level word right after the time decides
            return _ERROR_CLASS.get(after.group(1).upper())
    elif line[:1] in (b" ", b"\t"):
        return None
    found = _FIRST_LEVEL.search(line, lead.end() if lead else 0, PLAIN_HEAD)
    return _ERROR_CLASS.get(found.group(1) or found.group(2).upper()) if found else None


def is_error_line(line) -> bool:
    """Whether a whole line is an error record without reading its time: the JSON rule for a
    line starting with "{" (`is_error_json` of a line the level field finds), else the plain rule."""
    if line[_BLANK_LEAD.match(line).end():][:1] == b"{":
        return LEVEL_FIELD.search(line) is not None and is_error_json(line)
    return plain_level(line) is not None


def is_error_json(line) -> bool:
    """Given a line LEVEL_FIELD found, whether it is an error record: `error_record`'s
    verdict (its top-level levelname/level, not one nested deeper: an INFO record quoting an
    upstream's {"level": "error"}); a line that does not parse (cut at the line cap) counts,
    as its level field says; one that does not start with "{" is judged by the plain rule."""
    return error_record(line, timezone.utc) is not None


def is_json_lines(data) -> bool:
    """Whether a log whose first bytes (white space aside) are `data` is JSON lines."""
    return data.lstrip(_SPACE).startswith(b"{")


class Blocks:
    """The whole lines of an open binary file, a block at a time, in one reused buffer.

    Iterating yields (buffer, lo, hi): buffer[lo:hi] is whole lines (the last one without
    its newline only at the end of the file, with `partial_last`). The buffer is reused:
    slice what must be kept. A line longer than the buffer (`size`, the hard cap of a line)
    is yielded as its head (one line without a newline), the rest of it skipped.

    At most `limit` bytes are read, and only whole lines are taken from them: a line the
    limit cuts is left for the next reader (unless it is longer than the buffer). `consumed`
    counts the bytes of the lines yielded (and skipped), so a caller that keeps an offset
    resumes at the start of a line that was not complete yet; `skipping` says the offset
    is inside an over-long line whose rest is to be skipped (pass it back to go on), and
    `exhausted` that the limit stopped the reading (perhaps just at the end).
    """

    def __init__(self, handle, size: int = 1 << 20, limit: int | None = None, partial_last: bool = True,
                 skipping: bool = False):
        self.handle, self.limit, self.partial_last = handle, limit, partial_last
        self.size = max(1, size)
        self.consumed, self.skipping, self.exhausted = 0, skipping, False

    def __iter__(self):
        buf = bytearray(self.size)
        view, size, have, skipping = memoryview(buf), self.size, 0, self.skipping
        left = self.limit
        while True:
            want = size - have if left is None else min(size - have, left)
            n = self.handle.readinto(view[have:have + want]) if want else 0
            if not n:
                self.skipping, self.exhausted = skipping, left == 0
                if have and not skipping and self.partial_last and left != 0:
                    self.consumed += have
                    yield buf, 0, have
                return
            have += n
            if left is not None:
                left -= n
            if skipping:  # the rest of an over-long line: up to its newline
                newline = buf.find(b"\n", 0, have)
                drop = have if newline == -1 else newline + 1
                self.consumed += drop
                have -= drop
                buf[:have] = buf[drop:drop + have]  # a copy: memcpy must not overlap
                skipping = newline == -1
                if skipping or not have:
                    continue
            end = buf.rfind(b"\n", 0, have)
            if end == -1:
                if have == size:  # one line longer than the buffer: its head stands for it
                    self.consumed += have
                    yield buf, 0, have
                    have, skipping = 0, True
                continue
            self.consumed += end + 1
            yield buf, 0, end + 1
            have -= end + 1
            buf[:have] = buf[end + 1:end + 1 + have]


def candidates(data, lo: int, hi: int, json_lines: bool, max_line: int, pattern=None):
    """The lines of data[lo:hi] (whole lines) that may be error records, each once, in order,
    each cut to its first `max_line` bytes.

    `pattern` (compiled bytes regex): lines it matches. Else in a JSON-lines log (`json_lines`):
    an ERROR or CRITICAL level field; in any other: a level word (HINTS), which also finds
    the JSON records among its lines.
    """
    spans = _hint_spans(data, lo, hi) if pattern is None and not json_lines else \
        _spans(data, lo, hi, _to_line_end(pattern or LEVEL_FIELD))
    for start, end in spans:
        yield data[start:min(end, start + max_line)]


def error_records(data, lo: int, hi: int, json_lines: bool, max_line: int, tz):
    """(level, time) of each error record among the whole lines of data[lo:hi]: what
    `error_record` says of each of `candidates` (same lines, same cuts), in one frame.

    The report's count over a day of logs: JSON lines come straight from one finditer of
    the level field (30k a day among a million lines; three generator levels cost 15 %).
    """
    if not json_lines:
        for start, end in _hint_spans(data, lo, hi):
            record = error_record(data[start:min(end, start + max_line)], tz)
            if record is not None:
                yield record
        return
    rfind = data.rfind
    for match in _FIELD_LINE.finditer(data, lo, hi):
        start = rfind(b"\n", lo, match.start()) + 1 or lo
        # The match ends its line (no newline in it): the line is data[start:match.end()].
        record = error_record(data[start:min(match.end(), start + max_line)], tz)
        if record is not None:
            yield record


def count_block(data, lo: int, hi: int, json_lines: bool, pattern=None) -> tuple[int, int, tuple | None]:
    """(records, errors, (start, end) of the last error line) of the whole lines data[lo:hi].

    Every line is a record. Without a time to read, a line is an error by its top-level
    level (JSON lines: only the lines the level field finds are parsed, `is_error_json`),
    by the plain rule (`is_error_line`: a plain-text log, whose JSON lines are judged as
    JSON lines), or by `pattern`.
    """
    records = data.count(b"\n", lo, hi) + (hi > lo and data[hi - 1] != 10)
    errors, last = 0, None
    if pattern is None and not json_lines:
        for start, end in _hint_spans(data, lo, hi):
            if is_error_line(data[start:min(end, start + max(PLAIN_HEAD, 1 << 16))]):
                errors += 1
                last = (start, end)
        return records, errors, last
    match = None
    if pattern is not None:
        for match in _to_line_end(pattern).finditer(data, lo, hi):
            errors += 1
    else:  # each line the level field finds: its top-level level decides
        rfind, count = data.rfind, data.count
        for found in _FIELD_LINE.finditer(data, lo, hi):  # the match ends its line
            at, end = found.span()
            start = rfind(b"\n", lo, at) + 1 or lo
            # Most error records are flat: a line whose first "{" before the field is its first
            # byte, holding "level" once, has its one level key ("level" or "levelname", quoted)
            # at the top, and a parse would say what the field said (a parse each: +0.5 s a GB,
            # 140k errors; three C calls each here, as few as found: +0.05 s a GB).
            if (rfind(b"{", start, at) == start and data[at - 1] == 34 and count(b"level", start, end) == 1) \
                    or is_error_json(data[start:end]):
                errors += 1
                match = found
    if match is not None:  # a pattern that matched a newline ends its line there
        last = (data.rfind(b"\n", lo, match.start()) + 1 or lo, match.end() - data.endswith(b"\n", 0, match.end()))
    return records, errors, last


@functools.lru_cache(maxsize=32)
def _to_line_end(pattern):
    """`pattern` then the rest of its line: one match per line, found by one finditer in C
    (a search call per error from Python cost ~8 % of an appended gigabyte). Made once per pattern."""
    flags = _GLOBAL_FLAGS.match(pattern.pattern).group()  # "(?i)" must stay at the very start
    # A verbose pattern may end in a "# comment": a newline ends it before the group closes.
    close = b"\n)" if pattern.flags & re.VERBOSE else b")"
    return re.compile(flags + b"(?:" + pattern.pattern[len(flags):] + close + rb"[^\n]*", pattern.flags)


_GLOBAL_FLAGS = re.compile(rb"(?:\(\?[aiLmsux]+\))*")
_FIELD_LINE = _to_line_end(LEVEL_FIELD)


def _spans(data, lo: int, hi: int, line_pattern):
    """(start, end) of the lines of data[lo:hi] that `line_pattern` (a `_to_line_end`) finds,
    each once, in order; `end` excludes the newline."""
    rfind = data.rfind
    for match in line_pattern.finditer(data, lo, hi):
        yield rfind(b"\n", lo, match.start()) + 1 or lo, match.end() - data.endswith(b"\n", 0, match.end())


def _hint_spans(data, lo: int, hi: int):
    """(start, end) of the lines of data[lo:hi] holding one of HINTS, each once, in order."""
    ends = {}  # line start -> line end
    for hint in HINTS:
        pos = data.find(hint, lo, hi)
        while pos != -1:
            start = data.rfind(b"\n", lo, pos) + 1 or lo
            end = data.find(b"\n", pos, hi)
            ends[start] = end = hi if end == -1 else end
            pos = data.find(hint, end, hi)
    for start in sorted(ends):
        yield start, ends[start]


def error_record(line, tz) -> tuple[str, datetime | None] | None:
    """Given a candidate line, return (level, time) if it is an ERROR/CRITICAL record.

    Returns None for a line that is not an error record, (level, None) for an error record
    whose time cannot be read, and ("?", None) for a JSON line that cannot be parsed.
    """
    # The first test is the common case and copies nothing (lstrip copies a bytearray).
    if line.startswith(b"{") or line.lstrip().startswith(b"{"):
        try:
            text = line.decode("utf-8", "surrogatepass")
            # json.loads without its frames (_SCAN, below), the blank match only
            # where the line does not start with its value.
            record, end = _SCAN(text, 0 if text.startswith("{") else _BLANK(text, 0).end())
            if end != len(text) and _BLANK(text, end).end() != len(text):
                return "?", None
        except (ValueError, RecursionError, StopIteration):  # RecursionError: "[[[[..." nested past the stack
            return "?", None
        if type(record) is not dict:  # the scanner builds plain dicts
            return None
        level = str(record.get("levelname") or record.get("level") or "").upper()
        if level != "ERROR" and level != "CRITICAL":
            return None
        stamp = record.get("asctime") or record.get("timestamp") or record.get("time")
        if type(stamp) is str:  # most loggers: ISO text, which the C parser reads (Z and "," too)
            try:
                when = datetime.fromisoformat(stamp)
                return level, when if when.tzinfo else when.replace(tzinfo=tz)
            except ValueError:
                pass
        return level, parse_time(stamp, tz) if stamp is not None else None
    level = plain_level(line)
    return (level, _plain_time(line, tz)) if level else None


# json.loads' own C scanner, called straight: loads() adds three Python frames and two
# regex matches per line, half the cost of a short record (30k error lines a day).
_SCAN = json.JSONDecoder().scan_once
_ERROR_LEVELS = frozenset(("ERROR", "CRITICAL"))
_BLANK = json.decoder.WHITESPACE.match


def _plain_time(line, tz) -> datetime | None:
    """The time a plain line starts with, or its logfmt time field; None without one
    (syslog's "Dec  1 10:00:00" has no year)."""
    match = _PLAIN_TIME.match(line) or _LOGFMT_TIME.search(line, 0, PLAIN_HEAD)
    return parse_time(match.group(1).decode(), tz) if match else None


def record_time(line, tz) -> datetime | None:
    """The time of any record, error or not: a JSON record's time field, or the time a plain
    line starts with (or its logfmt time field); None when it has none that can be read."""
    if line.lstrip().startswith(b"{"):
        try:
            record = json.loads(line.decode("utf-8", "surrogatepass"))
        except (ValueError, RecursionError):
            return None
        stamp = (record.get("asctime") or record.get("timestamp") or record.get("time")
                 if isinstance(record, dict) else None)
        return parse_time(stamp, tz) if stamp is not None else None
    return _plain_time(line, tz)
