"""Which log lines are ERROR or CRITICAL records: the one classifier of the daily report's
error count (`report/logs.py`) and of the `log:<name>` checks (`checks/logfiles.py`).

Measuring only. A log is read into one reused buffer a block of whole lines at a time
(`Blocks`); in each block one compiled regex pass finds the candidate lines (`candidates`):
in JSON lines a `levelname`/`level` field saying ERROR or CRITICAL, in plain text a level
word, or the operator's own pattern. Only those lines are looked at closer (`error_record`).
"""

import functools
import json
import re
from datetime import datetime

from monitor.report.window import parse_time

PLAIN = re.compile(rb"^\s*\[?(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)\]?"
                   rb"[\s\-|\[]*(ERROR|CRITICAL)\b", re.IGNORECASE)
# The prefilter of plain-text logs: both spellings of the two levels (structlog, pino and
# Go loggers write "error"). Whole words: a longer needle skips further.
LEVELS = (b"ERROR", b"CRITICAL", b"error", b"critical")
# The prefilter of JSON-lines logs, one pass per block: a "levelname" or "level" field whose
# value is ERROR or CRITICAL as loggers spell them (compact or spaced JSON). A message that
# merely mentions "error" is no candidate, so only lines that can count are parsed. It
# starts with the letters, not the quote: `re` tries the pattern at each occurrence of its
# first byte, and JSON lines hold far more quotes than "l"s.
LEVEL_FIELD = re.compile(rb'level(?:name"|")[ \t]*+:[ \t]*+"(ERROR|CRITICAL|error|critical|Error|Critical)"')
_SPACE = b" \t\r\n"


def is_json_lines(data) -> bool:
    """Whether a log whose first bytes (white space aside) are `data` is JSON lines."""
    return data.lstrip(_SPACE).startswith(b"{")


class Blocks:
    """The whole lines of an open binary file, a block at a time, in one reused buffer.

    Iterating yields (buffer, lo, hi): buffer[lo:hi] is whole lines (the last one without
    its newline only at the end of the file, with `partial_last`). The buffer is reused:
    slice what must be kept. A line longer than the buffer is yielded as its head (one
    line without a newline), the rest of it skipped. At most `limit` bytes are read;
    `consumed` counts the bytes of the lines yielded (and skipped), so a caller that keeps
    an offset resumes at the start of a line that was not complete yet.
    """

    def __init__(self, handle, size: int = 1 << 20, limit: int | None = None, partial_last: bool = True):
        self.handle, self.limit, self.partial_last = handle, limit, partial_last
        self.size = max(1, min(size, limit) if limit else size)
        self.consumed = 0

    def __iter__(self):
        buf = bytearray(self.size)
        view, size, have, skipping = memoryview(buf), self.size, 0, False
        left = self.limit
        while True:
            want = size - have if left is None else min(size - have, left)
            n = self.handle.readinto(view[have:have + want]) if want else 0
            if not n:
                if have and not skipping and self.partial_last:
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


def has_level(line) -> bool:
    return any(level in line for level in LEVELS)


def candidates(data, lo: int, hi: int, json_lines: bool, max_line: int, pattern=None):
    """The lines of data[lo:hi] (whole lines) that may be error records, each once, in order,
    each cut to its first `max_line` bytes.

    `pattern` (compiled bytes regex): lines it matches. Else JSON lines: an ERROR or CRITICAL
    level field; plain text: a level word.
    """
    if pattern is None and not json_lines:
        yield from _word_hits(data, lo, hi, max_line)
        return
    for match in _to_line_end(pattern or LEVEL_FIELD).finditer(data, lo, hi):
        start = data.rfind(b"\n", lo, match.start()) + 1 or lo
        end = match.end() - data.endswith(b"\n", 0, match.end())
        yield data[start:min(end, start + max_line)]


def error_records(data, lo: int, hi: int, json_lines: bool, max_line: int, tz):
    """(level, time) of each error record among the whole lines of data[lo:hi]: what
    `error_record` says of each of `candidates` (same lines, same cuts), in one frame.

    The report's count over a day of logs: JSON lines come straight from one finditer of
    the level field (30k a day among a million lines; three generator levels cost 15 %).
    """
    if not json_lines:
        for start, end in _word_spans(data, lo, hi):
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

    Every line is a record. Without a time to read, a line is an error by its level field
    alone (JSON lines, no JSON parse: the check's appended gigabyte must not cost one per
    error), by its time followed by a level word (plain text), or by `pattern`.
    """
    records = data.count(b"\n", lo, hi) + (hi > lo and data[hi - 1] != 10)
    errors, last = 0, None
    if pattern is None and not json_lines:
        for start, end in _word_spans(data, lo, hi):
            if PLAIN.match(data[start:min(end, start + (1 << 16))]):
                errors += 1
                last = (start, end)
        return records, errors, last
    match = None
    for match in _to_line_end(pattern or LEVEL_FIELD).finditer(data, lo, hi):
        errors += 1
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


def _word_hits(data, lo: int, hi: int, max_line: int):
    for start, end in _word_spans(data, lo, hi):
        yield data[start:min(end, start + max_line)]


def _word_spans(data, lo: int, hi: int):
    """(start, end) of the lines of data[lo:hi] holding a level word, each once, in order."""
    ends = {}  # line start -> line end
    for level in LEVELS:
        pos = data.find(level, lo, hi)
        while pos != -1:
            start = data.rfind(b"\n", lo, pos) + 1 or lo
            end = data.find(b"\n", pos, hi)
            ends[start] = end = hi if end == -1 else end
            pos = data.find(level, end, hi)
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
    match = PLAIN.match(line)
    if not match:
        return None
    return match.group(2).decode().upper(), parse_time(match.group(1).decode(), tz)


# json.loads' own C scanner, called straight: loads() adds three Python frames and two
# regex matches per line, half the cost of a short record (30k error lines a day).
_SCAN = json.JSONDecoder().scan_once
_BLANK = json.decoder.WHITESPACE.match


# A time at the start of a plain-text line ("2026-11-25 10:00:00,123", "[2026-11-25T10:00:00Z]").
_PLAIN_TIME = re.compile(rb"\s*\[?(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)")


def record_time(line, tz) -> datetime | None:
    """The time of any record, error or not: a JSON record's time field, or the time a plain
    line starts with; None when it has none that can be read."""
    if line.lstrip().startswith(b"{"):
        try:
            record = json.loads(line.decode("utf-8", "surrogatepass"))
        except (ValueError, RecursionError):
            return None
        stamp = (record.get("asctime") or record.get("timestamp") or record.get("time")
                 if isinstance(record, dict) else None)
        return parse_time(stamp, tz) if stamp is not None else None
    match = _PLAIN_TIME.match(line)
    return parse_time(match.group(1).decode(), tz) if match else None

