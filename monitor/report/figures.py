"""Daily report figures: the business day from the database, errors and health from logs.

Measuring only; `checks/business.py` judges and `templates/` renders. Aggregation
happens in the database (COUNT, AVG, GROUP BY, ORDER BY ... LIMIT 5), never by
pulling rows into Python; logs are streamed with a substring prefilter before any
JSON parsing.
"""

import contextlib
import glob
import gzip
import json
import os
import re
import zlib
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
        # Aware datetimes sharing one tzinfo subtract as wall-clock times (always 24 h):
        # the instants must be compared, so a DST day is 23 or 25 hours.
        return (self.end.timestamp() - self.start.timestamp()) / 3600


def window_for(day: date, tz) -> Window:
    """The calendar day `day` in `tz`, from midnight to midnight (DST-aware)."""
    start = datetime.combine(day, dtime(0), tz)
    end = datetime.combine(day + timedelta(days=1), dtime(0), tz)
    # Normalise through UTC so a DST day really is 23 or 25 hours long.
    return Window(day, start.astimezone(timezone.utc).astimezone(tz), end.astimezone(timezone.utc).astimezone(tz))


def default_day(now: datetime, tz) -> date:
    return now.astimezone(tz).date() - timedelta(days=1)


# --- the business database -------------------------------------------------------------

def quote_ident(name: str, kind: str = "postgresql") -> str:
    """Quote a (dotted) identifier for the database `kind`.

    SQLite reads a double-quoted name that matches no column as a string literal, so
    a misspelt column would silently count nothing; a name in backticks is always
    an identifier there, and a missing one is an error naming it.
    """
    mark = "`" if kind == "sqlite" else '"'
    return ".".join(mark + part.replace(mark, mark * 2) + mark for part in name.split("."))


# Each statement's limit on the server: the two scans fit in the checks' 60 s, and a
# table locked by a migration at 09:00 ends as a message, not a query left running.
STATEMENT_TIMEOUT = 25.0


class Database:
    """A read-only connection to sqlite:///PATH or postgresql://..., with `:name` parameters."""

    def __init__(self, url: str, base_dir: str = ".", statement_timeout: float = STATEMENT_TIMEOUT):
        self.url = url
        self.damaged: set[bytes] = set()  # distinct values read that were not UTF-8
        if url.startswith("sqlite://"):
            import sqlite3

            path = url[len("sqlite://"):]
            path = path if os.path.isabs(path) else os.path.join(base_dir, path)
            if not os.path.isfile(path):
                raise ReportError(f"report.database: {path} does not exist")
            try:
                self.conn = sqlite3.connect(_sqlite_uri(path), uri=True, timeout=5)
            except sqlite3.Error as exc:
                raise ReportError(f"report.database: cannot open {path}: {exc}") from None
            # A value that is not UTF-8 must not cost the report ("Could not decode to
            # UTF-8"): its bytes are kept, and shown as \xff by monitor.text.
            self.conn.text_factory = self._decode
            self.kind, self.errors = "sqlite", (sqlite3.Error,)
        else:
            try:
                import psycopg
            except ImportError:
                raise ReportError("report.database: PostgreSQL needs the postgres extra "
                                  "(pip install 'monitor[postgres]')") from None
            try:
                # Not autocommit: psycopg applies read_only to the transactions it opens
                # (BEGIN READ ONLY), and ignores it in autocommit mode.
                self.conn = psycopg.connect(url.replace("postgres://", "postgresql://", 1), connect_timeout=5)
                self.conn.read_only = True
                self._text_loaders(psycopg)
                self.conn.execute("SELECT set_config('statement_timeout', %s, false)",
                                  [str(int(statement_timeout * 1000))])
            except psycopg.Error as exc:
                raise ReportError(f"report.database: cannot connect: {str(exc).strip().splitlines()[0]}") from None
            self.kind, self.errors = "postgresql", (psycopg.Error,)

    def _decode(self, raw: bytes) -> str:
        """Text from the database: UTF-8, else its bytes kept as surrogates and counted."""
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            if len(self.damaged) < 100_000:  # bounded: one per distinct value
                self.damaged.add(bytes(raw))
            return raw.decode("utf-8", "surrogateescape")

    def _text_loaders(self, psycopg) -> None:
        """Decode text columns with `_decode`, whatever the database's encoding.

        A SQL_ASCII database stores whatever bytes its writers sent and converts
        nothing: psycopg would hand back bytes (every source shown as b'uniswap' and
        no expected source found), or, with a UTF8 client encoding, fail the whole
        query on the first bad byte. Other encodings are converted to UTF-8 by the
        server, so valid text decodes the same way everywhere.
        """
        decode = self._decode

        class Text(psycopg.adapt.Loader):
            def load(self, data):
                return decode(bytes(data))

        if self.conn.info.encoding != "ascii":  # SQL_ASCII: the server converts nothing
            self.conn.execute("SELECT set_config('client_encoding', 'UTF8', false)")
        for name in ("text", "varchar", "bpchar", "name", 705):  # 705: "unknown", a bare literal
            self.conn.adapters.register_loader(name, Text)

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


def _sqlite_uri(path: str) -> str:
    """A read-only URI for `path` that leaves no file behind.

    `mode=ro` alone still creates `-wal` and `-shm` beside a WAL-mode database that
    has none (no writer since the last clean close): owned by the monitor's user,
    they can lock the scraper out of its own database. With no `-wal` there is
    nothing beyond the main file to read, so it is opened immutable instead.
    """
    from urllib.parse import quote

    # "sqlite:////abs" (SQLAlchemy's spelling) leaves "//abs", which a URI reads as a host.
    uri = f"file:{quote('/' + os.path.abspath(path).lstrip('/'))}?mode=ro"
    try:
        with open(path, "rb") as handle:
            header = handle.read(20)
    except OSError:
        return uri
    wal_mode = header[:16] == b"SQLite format 3\x00" and header[18:20] == b"\x02\x02"
    if wal_mode and not os.path.exists(path + "-wal"):
        uri += "&immutable=1"
    return uri


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
        source, t, s, r = f"({cfg['query']}) AS q", "q.time", "q.source", "q.roi"
    else:
        cols = cfg["columns"]
        source, t, s, r = (quote_ident(name, db.kind) for name in (cfg["table"], cols["time"], cols["source"],
                                                                    cols["roi"]))
    if db.kind == "postgresql" and cfg["time_format"] == "iso":
        # ISO text compares with the timestamptz bounds only once cast; on a timestamp
        # column the cast is a no-op, so its index still serves the range.
        t = f"CAST({t} AS timestamptz)"
    return source, t, s, r


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


def _bounds(cfg: dict, db: Database, start: datetime, end: datetime) -> dict:
    def show(moment):
        if cfg["time_format"] == "epoch":
            return moment.timestamp()
        if db.kind == "postgresql":
            return moment
        return moment.astimezone(timezone.utc).isoformat()

    return {"start": show(start), "end": show(end)}


def business_figures(cfg: dict, window: Window, base_dir: str = ".") -> dict:
    """Opportunities, average ROI, the best five, active sources; and the day before's totals.

    Three scans, each over one day: GROUP BY source for the day (its totals too),
    ORDER BY ROI ... LIMIT 5 for the day, and COUNT/AVG for the day before. (One
    GROUP BY over both days costs more: SQLite sorts twice as many rows.)
    """
    if not cfg.get("database"):
        raise ReportError("report.database is not configured")
    db = Database(cfg["database"], base_dir)
    try:
        source, t, s, r = _source_sql(cfg, db)
        roi = f"CAST({r} AS {'REAL' if db.kind == 'sqlite' else 'double precision'})"
        where, params = _time_filter(cfg, db, t, window.start, window.end)
        groups = db.rows(f"SELECT {s}, COUNT(*), SUM({roi}), COUNT({r}) FROM {source} WHERE {where} "
                         f"GROUP BY {s}", params)
        top = db.rows(f"SELECT {t}, {s}, {roi} FROM {source} WHERE {where} AND {r} IS NOT NULL "
                      f"ORDER BY {roi} DESC LIMIT 5", params)
        day_before = window_for(window.day - timedelta(days=1), window.start.tzinfo)
        where, params = _time_filter(cfg, db, t, day_before.start, day_before.end)
        before = db.rows(f"SELECT COUNT(*), SUM({roi}), COUNT({r}) FROM {source} WHERE {where}", params)[0]
    finally:
        db.close()
    damaged = len(db.damaged)
    days = {0: [before[0], float(before[1] or 0), before[2]], 1: [0, 0.0, 0]}  # count, ROI sum, with ROI
    sources = {}
    for src, count, roi_sum, with_roi in groups:
        totals = days[1]
        totals[0] += count
        totals[1] += float(roi_sum or 0)
        totals[2] += with_roi
        if src is not None:
            sources[str(src)] = sources.get(str(src), 0) + count

    def average(totals):
        return round(totals[1] / totals[2], 4) if totals[2] else None

    return {
        "opportunities_found": days[1][0],
        "avg_roi": average(days[1]),
        "roi_missing": days[1][0] - days[1][2],
        "top_opportunities": [{"time": _show_time(tm, window.start.tzinfo), "source": src,
                               "roi": round(float(v), 4)} for tm, src, v in top],
        "sources": dict(sorted(sources.items(), key=lambda kv: -kv[1])),
        "previous": {"opportunities_found": days[0][0], "avg_roi": average(days[0])},
        "damaged_values": damaged,
    }


def _show_time(value, tz):
    """A row's time as ISO 8601 in the report's zone, whatever the column stores.

    Epoch numbers would otherwise reach the message as "1795600000", and ISO text as
    written by each writer (Z, +02:00, none); naive text counts as UTC, as in the
    window's SQL. Text that is no time is shown as it is.
    """
    if isinstance(value, datetime):
        return (value.astimezone(tz) if value.tzinfo else value).isoformat()
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            when = parse_time(value, timezone.utc)
            return when.astimezone(tz).isoformat() if when else value
    if isinstance(value, (int, float)):
        when = parse_time(value, timezone.utc)
        return when.astimezone(tz).isoformat() if when else value
    return value


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
                    rb"[\s\-|\[]*(ERROR|CRITICAL)\b", re.IGNORECASE)
# The prefilter: both spellings of the two levels (structlog, pino and Go loggers write
# "error"). Whole words: a longer needle skips further, "rror" costs 40% more.
_LEVELS = (b"ERROR", b"CRITICAL", b"error", b"critical")
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
    from monitor.state import open_regular

    with open(open_regular(path), "rb") as handle:
        if path.endswith(".gz"):
            with gzip.GzipFile(fileobj=handle, mode="rb") as unzipped:
                yield unzipped
        else:
            yield handle


def parse_time(text, tz) -> datetime | None:
    """An aware datetime from ISO 8601 text (naive: in `tz`) or epoch seconds/milliseconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        try:
            seconds = text / 1000 if abs(text) > 1e11 else text  # pino and Go loggers write milliseconds
            return datetime.fromtimestamp(seconds, timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    text = str(text).strip().replace(",", ".")
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
