"""The business day from the database: opportunities, average ROI, the best five, sources.

Measuring only; `checks/business.py` judges and `templates/` renders. Aggregation
happens in the database (COUNT, AVG, GROUP BY, ORDER BY ... LIMIT 5), never by
pulling rows into Python.
"""

import os
import re
from datetime import datetime, timedelta, timezone

from monitor.report.day_scan import FILTERED_SOURCES, day_scan as _day_scan  # noqa: F401 (tests)
from monitor.report.window import ReportError, Window, parse_time


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


# Stored ISO text is UTC by its shape: "T", whole seconds, a fraction or none, then "Z",
# "+00:00" or nothing (naive text counts as UTC). Such text orders as its instant, so a
# plain text range over the column's index selects it exactly. Any other row (an offset,
# a space, no seconds) is judged by julianday(), and only where it can change a figure.
_UTC_SHAPES = ("????-??-??T??:??:??+00:00", "????-??-??T??:??:??Z", "????-??-??T??:??:??",
               "????-??-??T??:??:??.*+00:00", "????-??-??T??:??:??.*Z")
# The widest UTC offsets in use are -12:00 and +14:00: a row written in any zone lies,
# as text, within 14 h of its instant.
MARGIN = timedelta(hours=14)


def _utc_text(column: str, shapes: tuple = _UTC_SHAPES) -> str:
    return "(" + " OR ".join(f"{column} GLOB '{shape}'" for shape in shapes) + ")"


def _text(moment: datetime, date_only: bool = False) -> str:
    """An instant as the UTC text it is compared with: whole seconds, "T", no suffix."""
    moment = moment.astimezone(timezone.utc)
    return moment.date().isoformat() if date_only else moment.strftime("%Y-%m-%dT%H:%M:%S")


def _time_filter(cfg: dict, db: Database, column: str, start: datetime, end: datetime) -> tuple[str, dict]:
    """A WHERE clause selecting [start, end) whatever the rows' offsets, and its parameters.

    ISO text in SQLite: the index range is the window widened by the 14 h margin (from
    midnight of its first day: text with a space or a bare date sorts before "T"); UTC
    text inside it is compared as text, julianday() judges the other rows only.
    """
    if cfg["query"]:
        # The user's query takes :start and :end itself; pass them in the column's format.
        return "1=1", _bounds(cfg, db, start, end)
    if cfg["time_format"] == "epoch" or db.kind == "postgresql":
        return f"{column} >= :start AND {column} < :end", _bounds(cfg, db, start, end)
    params = {"lo": _text(start - MARGIN, date_only=True), "hi": _text(end + MARGIN),
              "s": _text(start), "e": _text(end), **_bounds(cfg, db, start, end)}
    return (f"{column} >= :lo AND {column} < :hi AND CASE WHEN {_utc_text(column)} "
            f"THEN {column} >= :s AND {column} < :e ELSE julianday({column}) >= julianday(:start) "
            f"AND julianday({column}) < julianday(:end) END"), params


def _odd_in_margins(db: Database, source: str, column: str, start: datetime, end: datetime,
                    lower: bool = True, shapes: tuple = _UTC_SHAPES) -> bool:
    """True if a row of another shape than UTC text lies in the 14 h margins around [start, end).

    The margins are those `_time_filter` reads: from midnight of the day 14 h before
    `start` (text with a space or a bare date sorts before "T") up to `start`, and from
    `end` to 14 h after it. One pass over the index (the rows themselves are not read)
    that stops at the first such row. Without `lower`, the upper margin only (the days
    below were proven by `history`).
    """
    odd = f"AND NOT {_utc_text(column, shapes)})"
    low = f"EXISTS (SELECT 1 FROM {source} WHERE {column} >= :lo AND {column} < :s {odd} OR " if lower else ""
    found = db.rows(f"SELECT {low}EXISTS (SELECT 1 FROM {source} WHERE {column} >= :e AND {column} < :hi {odd}",
                    {"e": _text(end), "hi": _text(end + MARGIN),
                     **({"lo": _text(start - MARGIN, date_only=True), "s": _text(start)} if lower else {})})
    return bool(found[0][0])


def _bounds(cfg: dict, db: Database, start: datetime, end: datetime) -> dict:
    def show(moment):
        if cfg["time_format"] == "epoch":
            return moment.timestamp()
        if db.kind == "postgresql":
            return moment
        return moment.astimezone(timezone.utc).isoformat()

    return {"start": show(start), "end": show(end)}


def business_figures(cfg: dict, window: Window, base_dir: str = ".") -> dict:
    """Opportunities, average ROI, the best five, active sources; and the 28 days before.

    Two scans over the day: its counts per source and totals (`_day_scan`), and
    ORDER BY ROI ... LIMIT 5; then the days before, grouped by day in the database
    (`history.history`: day -1 gives the day before's totals). ISO text in SQLite is
    read by plain text ranges while the rows that count are all UTC text
    (`_utc_figures`), else each row is judged by its instant (`_time_filter`).
    """
    if not cfg.get("database"):
        raise ReportError("report.database is not configured")
    db = Database(cfg["database"], base_dir)
    try:
        source, t, s, r = _source_sql(cfg, db)
        roi = f"CAST({r} AS {'REAL' if db.kind == 'sqlite' else 'double precision'})"
        fast = db.kind == "sqlite" and cfg["time_format"] == "iso" and not cfg["query"]
        from monitor.report import history

        if fast:  # the order to try the UTC shapes in; every value in what is read proven UTC at once?
            from monitor.report import utc_proof

            lowest = min(w.start for w in history.day_windows(window))
            fast = utc_proof.plan(db, cfg, source, t, window, _UTC_SHAPES,
                                  (_text(lowest - MARGIN, date_only=True), _text(window.end + MARGIN)))
        # The days before first: their scan proves all below the day UTC text (or not).
        past = history.history(db, cfg, (source, t, s, r, roi), window, fast)
        # Sources likely in the day: a guess for its scan, proven there by the counts.
        known = [name for day in past["sources"] for name in day] + list(cfg.get("expected_sources") or ())
        found = _utc_figures(db, source, t, s, r, roi, window, past.utc, known, fast) if fast else None
        if fast and fast.proven and not fast.confirmed():  # a row of another shape written meanwhile
            fast.proven = False
            past = history.history(db, cfg, (source, t, s, r, roi), window, fast)
            found = _utc_figures(db, source, t, s, r, roi, window, past.utc, known, fast)
        if found is None:
            where, params = _time_filter(cfg, db, t, window.start, window.end)
            sources, totals = _day_scan(db, source, s, r, roi, where, params, known=known)
            top = db.rows(f"SELECT {t}, {s}, {roi} FROM {source} WHERE {where} AND {r} IS NOT NULL "
                          f"ORDER BY {roi} DESC LIMIT 5", params)
            if past.utc:  # a row of another shape in the day's first 14 h may be day -1's
                past = history.history(db, cfg, (source, t, s, r, roi), window)
        else:
            sources, totals, top = found
        hours = (history.hourly(db, cfg, (source, t, s, r, roi), window, utc_proven=found is not None)
                 if cfg.get("hourly") else None)
        before = (past["days"][0]["count"], past["days"][0]["roi_sum"], past["days"][0]["with_roi"])
    finally:
        db.close()

    def average(count, roi_sum, with_roi):
        return round(float(roi_sum or 0) / with_roi, 4) if with_roi else None

    shown = {}
    for src, count in sources.items():
        shown[str(src)] = shown.get(str(src), 0) + count
    return {
        "opportunities_found": totals[0],
        "avg_roi": average(*totals),
        "roi_missing": totals[0] - totals[2],
        "top_opportunities": [{"time": _show_time(tm, window.start.tzinfo), "source": src,
                               "roi": round(float(v), 4)} for tm, src, v in top],
        "sources": dict(sorted(shown.items(), key=lambda kv: -kv[1])),
        "previous": {"opportunities_found": before[0], "avg_roi": average(*before)},
        "history": past, "hourly": hours,
        "damaged_values": len(db.damaged),
    }


def _utc_figures(db: Database, source: str, t: str, s: str, r: str, roi: str, day: Window, below: bool = False,
                 known=(), utc=None):
    """The day's two scans by plain text ranges over the index, if every row that can count is UTC text.

    The common case (one writer, UTC). The rows `_time_filter` would read lie in the
    day's text range or in the 14 h margins around it: the margins are checked on the
    index alone, and the day's scan counts the rows of another shape among those it
    reads anyway (the best five read the same rows as the day's counts). If any is
    found, None: `_time_filter` then judges them by their instants. `below`: the days
    before were proven UTC text (`history`), so only the upper margin is checked;
    `utc` (a `utc_proof.Utc`): the shapes' order, and nothing to check if proven.
    """
    shapes = utc.shapes if utc else _UTC_SHAPES
    proven = bool(utc and utc.proven)
    if not proven and _odd_in_margins(db, source, t, day.start, day.end, lower=not below, shapes=shapes):
        return None
    odd, where = "" if proven else f"NOT {_utc_text(t, shapes)}", f"{t} >= :s AND {t} < :e"
    params = {"s": _text(day.start), "e": _text(day.end)}
    sources, day_totals = _day_scan(db, source, s, r, roi, where, params, odd, known)
    if odd and day_totals[3]:
        return None
    top = db.rows(f"SELECT {t}, {s}, {roi} FROM {source} WHERE {where} AND {r} IS NOT NULL "
                  f"ORDER BY {roi} DESC LIMIT 5", params)
    return sources, day_totals[:3], top


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
