"""Daily report figures: the business day from the database, errors and health from logs.

Measuring only; `checks/business.py` judges and `templates/` renders. Aggregation
happens in the database (COUNT, AVG, GROUP BY, ORDER BY ... LIMIT 5), never by
pulling rows into Python; logs are streamed with a substring prefilter before any
JSON parsing.
"""

import glob
import gzip
import json
import os
import re
from datetime import date, datetime, time as dtime, timedelta, timezone
from typing import NamedTuple


class ReportError(Exception):
    """The data source cannot be used: one clear line naming what is wrong."""


class Window(NamedTuple):
    day: date
    start: datetime  # aware, in the report's time zone
    end: datetime

    @property
    def hours(self) -> float:
        return (self.end - self.start).total_seconds() / 3600  # 23 or 25 on DST days


def window_for(day: date, tz) -> Window:
    """The calendar day `day` in `tz`, from midnight to midnight (DST-aware)."""
    start = datetime.combine(day, dtime(0), tz)
    end = datetime.combine(day + timedelta(days=1), dtime(0), tz)
    # Normalise through UTC so a DST day really is 23 or 25 hours long.
    return Window(day, start.astimezone(timezone.utc).astimezone(tz), end.astimezone(timezone.utc).astimezone(tz))


def default_day(now: datetime, tz) -> date:
    return now.astimezone(tz).date() - timedelta(days=1)


# --- the business database -------------------------------------------------------------

def quote_ident(name: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


class Database:
    """A read-only connection to sqlite:///PATH or postgresql://..., with `:name` parameters."""

    def __init__(self, url: str, base_dir: str = "."):
        self.url = url
        if url.startswith("sqlite://"):
            import sqlite3

            path = url[len("sqlite://"):]
            path = path if os.path.isabs(path) else os.path.join(base_dir, path)
            if not os.path.isfile(path):
                raise ReportError(f"report.database: {path} does not exist")
            try:
                self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            except sqlite3.Error as exc:
                raise ReportError(f"report.database: cannot open {path}: {exc}") from None
            self.kind, self.errors = "sqlite", (sqlite3.Error,)
        else:
            try:
                import psycopg
            except ImportError:
                raise ReportError("report.database: PostgreSQL needs the postgres extra "
                                  "(pip install 'monitor[postgres]')") from None
            try:
                self.conn = psycopg.connect(url.replace("postgres://", "postgresql://", 1), connect_timeout=5,
                                            autocommit=True)
                self.conn.read_only = True
            except psycopg.Error as exc:
                raise ReportError(f"report.database: cannot connect: {str(exc).strip().splitlines()[0]}") from None
            self.kind, self.errors = "postgresql", (psycopg.Error,)

    def rows(self, sql: str, params: dict) -> list:
        if self.kind == "postgresql":  # :name -> %(name)s
            sql = re.sub(r"(?<!:):([A-Za-z_]\w*)", r"%(\1)s", sql.replace("%", "%%"))
        try:
            cursor = self.conn.execute(sql, params)
            return cursor.fetchall()
        except self.errors as exc:
            raise ReportError(_db_reason(exc)) from None

    def close(self):
        self.conn.close()


def _db_reason(exc) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "no such table" in text or "does not exist" in text and "relation" in text:
        return f"report.table: {text}"
    if "no such column" in text or "column" in text and "does not exist" in text:
        return f"report.columns: {text}"
    return f"report.database: {text}"


def _source_sql(cfg: dict, db: Database) -> tuple[str, str, str, str]:
    """Return (FROM clause, time, source, roi expressions) for the configured table or query."""
    if cfg["query"]:
        return f"({cfg['query']}) AS q", "q.time", "q.source", "q.roi"
    cols = cfg["columns"]
    return quote_ident(cfg["table"]), quote_ident(cols["time"]), quote_ident(cols["source"]), quote_ident(cols["roi"])


def _time_filter(cfg: dict, db: Database, column: str, start: datetime, end: datetime) -> tuple[str, dict]:
    """A WHERE clause selecting [start, end), and its parameters (`:start`, `:end`, ...)."""
    if cfg["query"]:
        # The user's query takes :start and :end itself; pass them in the column's format.
        return "1=1", _bounds(cfg, db, start, end)
    if cfg["time_format"] == "epoch" or db.kind == "postgresql":
        return f"{column} >= :start AND {column} < :end", _bounds(cfg, db, start, end)
    # ISO text: a date-granular range first so the index on the column is used, then
    # the exact instant comparison (julianday understands "T", "Z" and offsets).
    params = {"lo": (start - timedelta(days=1)).astimezone(timezone.utc).date().isoformat(),
              "hi": (end + timedelta(days=1)).astimezone(timezone.utc).date().isoformat(),
              **_bounds(cfg, db, start, end)}
    return (f"{column} >= :lo AND {column} < :hi AND julianday({column}) >= julianday(:start) "
            f"AND julianday({column}) < julianday(:end)"), params


def _after(cfg: dict, db: Database, column: str) -> str:
    """An expression true when the row's time is at or after `:split`."""
    if cfg["time_format"] == "iso" and db.kind == "sqlite":
        return f"julianday({column}) >= julianday(:split)"
    return f"{column} >= :split"


def _bounds(cfg: dict, db: Database, start: datetime, end: datetime, split: datetime | None = None) -> dict:
    def show(moment):
        if cfg["time_format"] == "epoch":
            return moment.timestamp()
        if db.kind == "postgresql":
            return moment
        return moment.astimezone(timezone.utc).isoformat()

    out = {"start": show(start), "end": show(end)}
    if split is not None:
        out["split"] = show(split)
    return out


def business_figures(cfg: dict, window: Window, base_dir: str = ".") -> dict:
    """Opportunities, average ROI, the best five, active sources; and the day before's totals.

    Two scans: one GROUP BY over the day and the day before (totals and sources of
    both), one ORDER BY ROI ... LIMIT 5 over the day.
    """
    if not cfg.get("database"):
        raise ReportError("report.database is not configured")
    db = Database(cfg["database"], base_dir)
    try:
        source, t, s, r = _source_sql(cfg, db)
        roi = f"CAST({r} AS {'REAL' if db.kind == 'sqlite' else 'double precision'})"
        day_before = window_for(window.day - timedelta(days=1), window.start.tzinfo)
        where, params = _time_filter(cfg, db, t, day_before.start, window.end)
        params.update(_bounds(cfg, db, day_before.start, window.end, split=window.start))
        groups = db.rows(f"SELECT CASE WHEN {_after(cfg, db, t)} THEN 1 ELSE 0 END, {s}, COUNT(*), "
                         f"SUM({roi}), COUNT({r}) FROM {source} WHERE {where} GROUP BY 1, 2", params)
        where, params = _time_filter(cfg, db, t, window.start, window.end)
        top = db.rows(f"SELECT {t}, {s}, {roi} FROM {source} WHERE {where} AND {r} IS NOT NULL "
                      f"ORDER BY {roi} DESC LIMIT 5", params)
    finally:
        db.close()
    days = {0: [0, 0.0, 0], 1: [0, 0.0, 0]}  # count, sum of ROI, rows with ROI
    sources = {}
    for today, src, count, roi_sum, with_roi in groups:
        totals = days[int(today)]
        totals[0] += count
        totals[1] += float(roi_sum or 0)
        totals[2] += with_roi
        if today and src is not None:
            sources[str(src)] = sources.get(str(src), 0) + count

    def average(totals):
        return round(totals[1] / totals[2], 4) if totals[2] else None

    return {
        "opportunities_found": days[1][0],
        "avg_roi": average(days[1]),
        "roi_missing": days[1][0] - days[1][2],
        "top_opportunities": [{"time": _show_time(tm), "source": src, "roi": round(float(v), 4)}
                              for tm, src, v in top],
        "sources": dict(sorted(sources.items(), key=lambda kv: -kv[1])),
        "previous": {"opportunities_found": days[0][0], "avg_roi": average(days[0])},
    }


def _show_time(value):
    return value.isoformat() if hasattr(value, "isoformat") else value


def change(today: dict, before: dict) -> dict:
    """Day-over-day change of opportunities and average ROI."""
    out = {}
    for key in ("opportunities_found", "avg_roi"):
        now, prev = today.get(key), before.get(key)
        entry = {"previous": prev, "delta": None, "percent": None}
        if now is not None and prev is not None:
            entry["delta"] = round(now - prev, 4)
            entry["percent"] = round(100.0 * (now - prev) / prev, 1) if prev else None
        out["opportunities" if key == "opportunities_found" else "avg_roi"] = entry
    return out


# --- logs ------------------------------------------------------------------------------

_PLAIN = re.compile(rb"^\s*\[?(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)\]?"
                    rb"[\s\-|\[]*(ERROR|CRITICAL)\b")
_LEVELS = (b"ERROR", b"CRITICAL")


def log_files(patterns: list[str]) -> list[str]:
    """Files matching the patterns, their `.gz` twins, and archives in `archive/` beside them."""
    found = set()
    for pattern in patterns:
        found.update(glob.glob(pattern))
        found.update(glob.glob(pattern + ".gz"))
        folder = os.path.join(os.path.dirname(pattern), "archive")
        if os.path.isdir(folder):
            found.update(glob.glob(os.path.join(folder, "*.log.gz")))
    return sorted(f for f in found if os.path.isfile(f))


def _open(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def parse_time(text: str, tz) -> datetime | None:
    text = text.strip().replace(",", ".")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=tz)


def error_record(line: bytes, tz) -> tuple[str, datetime | None] | None:
    """Given a candidate line, return (level, time) if it is an ERROR/CRITICAL record.

    Returns None for a line that is not an error record, and ("?", None) for one
    that looks like one but cannot be parsed.
    """
    stripped = line.lstrip()
    if stripped.startswith(b"{"):
        try:
            record = json.loads(line)
        except ValueError:
            return "?", None
        if not isinstance(record, dict):
            return None
        level = str(record.get("levelname") or record.get("level") or "").upper()
        if level not in ("ERROR", "CRITICAL"):
            return None
        stamp = record.get("asctime") or record.get("timestamp") or record.get("time")
        when = parse_time(str(stamp), tz) if stamp is not None else None
        return (level, when) if when else ("?", None)
    match = _PLAIN.match(line)
    if not match:
        return None
    when = parse_time(match.group(1).decode(), tz)
    return (match.group(2).decode(), when) if when else ("?", None)


def _candidate_lines(handle, chunk_size: int = 1 << 20, max_line: int = 1 << 20):
    """Yield the lines of `handle` that contain ERROR or CRITICAL, scanning big chunks.

    bytes.find in C skips the 97% of lines that cannot match, without copying the
    chunk; only lines around a hit are cut out. A line longer than `max_line` is
    cut to its first `max_line` bytes.
    """
    tail = b""  # the unfinished line carried over from the previous chunk
    while True:
        chunk = handle.read(chunk_size)
        if not chunk:
            if _has_level(tail):
                yield tail
            return
        first = chunk.find(b"\n")
        if first == -1:
            tail = (tail + chunk)[:max_line]
            continue
        head = (tail + chunk[:first])[:max_line]
        if _has_level(head):
            yield head
        last = chunk.rfind(b"\n")
        yield from _hits(chunk, first + 1, last, max_line)
        tail = chunk[last + 1:][:max_line]


def _has_level(line: bytes) -> bool:
    return any(level in line for level in _LEVELS)


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


def count_errors(patterns: list[str], window: Window, max_line: int = 1 << 20) -> dict:
    """ERROR and CRITICAL records inside the window, from JSON-lines and plain-text logs."""
    tz = window.start.tzinfo
    counts = {"ERROR": 0, "CRITICAL": 0}
    per_file, unparseable, unreadable = {}, 0, []
    for path in log_files(patterns):
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
        except (OSError, EOFError) as exc:
            unreadable.append(f"{path}: {getattr(exc, 'strerror', None) or exc}")
        if n:
            per_file[path] = n
    return {"count": counts["ERROR"] + counts["CRITICAL"], "error": counts["ERROR"],
            "critical": counts["CRITICAL"], "per_file": per_file, "unparseable_lines": unparseable,
            "unreadable": unreadable}


def health_summary(logs_folder: str, window: Window, every_minutes: int = 5) -> dict:
    """Runs of `monitor health` seen in the window vs expected, percent ok, incidents per check."""
    files = log_files([os.path.join(logs_folder, "health.log")])
    runs = []
    for path in files:
        if os.path.basename(path).startswith("health") or path.endswith("health.log"):
            try:
                with _open(path) as handle:
                    for line in handle:
                        if b'"event": "run"' not in line and b'"event":"run"' not in line:
                            continue
                        try:
                            record = json.loads(line)
                        except ValueError:
                            continue
                        when = parse_time(str(record.get("asctime", "")), window.start.tzinfo)
                        if when and window.start <= when < window.end and isinstance(record.get("checks"), dict):
                            runs.append((when, record.get("overall_status"), record["checks"]))
            except (OSError, EOFError):
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
