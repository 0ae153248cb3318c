"""The days before the report's, from the database: what "normal" is measured from.

Measuring only; `baseline.py` computes the medians and `checks/business.py` judges.
Opportunities and ROI per day over the 28 days before the reported one, per source
over the last 7 of them, and the reported day hour by hour (for the chart). Each is
one statement over one indexed range: the days (or hours) are a VALUES list of
[start, end) bounds in the report's zone, joined on the time column and grouped by
day, so the database counts and sums and a day is cut at local midnight, DST days
included. ISO text in SQLite takes the same two paths as the day's figures: plain
text ranges while every row that can count is UTC text, else each row judged by
its instant (`database._time_filter`, margins and julianday()).
"""

import re
from datetime import timedelta

from monitor.report.database import (_UTC_SHAPES, Database, _bounds, _odd_in_margins, _text, _time_filter,
                                     _utc_text)
from monitor.report.window import Window, window_for

HISTORY_DAYS = 28  # four same weekdays back
SOURCE_DAYS = 7


def day_windows(window: Window, days: int = HISTORY_DAYS) -> list[Window]:
    """The `days` calendar days before `window`'s, newest first (day -1 is index 0)."""
    return [window_for(window.day - timedelta(days=n), window.start.tzinfo) for n in range(1, days + 1)]


def hour_ranges(window: Window) -> list[tuple]:
    """The reported day's hours as (start, end) instants: 23, 24 or 25 of them."""
    step, start, out = timedelta(hours=1), window.start, []
    while start < window.end:
        out.append((start, min(start + step, window.end)))
        start += step
    return out


def history(db: Database, cfg: dict, parts: tuple, window: Window, fast=False) -> "Ranges":
    """Per-day figures of the 28 days before `window`: {"days": [...], "sources": [...]}.

    `days[i]` is day -(i+1): {"day", "count", "roi_sum", "with_roi"}; `sources[i]`
    (i < 7) maps each source to its rows that day. One scan gives the rows of every
    day (on the time index alone) and the ROI sums of day -1 (the change from the day
    before) and of the same weekdays (-14, -21, -28); then, once three of days
    -1..-7 have rows, one more reads those by source (their ROI sums added up here).
    With `fast` (ISO text in SQLite), plain text ranges while every row is UTC text:
    the result's `utc` says so, and the caller proves the reported day's first 14 h.
    """
    windows = day_windows(window)
    full = {0, 13, 20, 27}
    counts = per_range(db, cfg, parts, [(w.start, w.end) for w in windows], fast=fast,
                       count_only=lambda i: i not in full)
    has = [counts.get(i, {}).get(None, (0,))[0] > 0 for i in range(len(windows))]
    learn = sum(has[:SOURCE_DAYS]) >= 3
    recent = [i for i in range(SOURCE_DAYS) if has[i] and learn]
    by_source = per_range(db, cfg, parts, [(windows[i].start, windows[i].end) for i in recent], by_source=True,
                          fast=fast, utc_proven=counts.utc)
    days, sources = [], []
    for i, w in enumerate(windows):
        count, roi_sum, with_roi = counts.get(i, {}).get(None, (0, 0, 0))
        groups = by_source.get(recent.index(i), {}) if i in recent else {}
        if i in recent:
            count, roi_sum, with_roi = (sum(g[k] or 0 for g in groups.values()) for k in range(3))
        if i < SOURCE_DAYS:
            sources.append({str(name): g[0] for name, g in groups.items() if name is not None and g[0]})
        days.append({"day": w.day.isoformat(), "count": count, "roi_sum": float(roi_sum or 0),
                     "with_roi": with_roi or 0, "roi_read": i in full or i in recent,
                     "sources_read": i < SOURCE_DAYS and learn})
    return Ranges({"days": days, "sources": sources}, counts.utc)


def hourly(db: Database, cfg: dict, parts: tuple, window: Window, utc_proven: bool = False) -> list[int]:
    """Opportunities in each hour of the reported day (local hours: 23, 24 or 25).

    `utc_proven`: every row the day's scan read was UTC text, so each hour is a plain range."""
    hours = hour_ranges(window)
    found = per_range(db, cfg, parts, hours, count_only=lambda i: True, fast=utc_proven, utc_proven=utc_proven)
    return [found.get(i, {}).get(None, (0,))[0] for i in range(len(hours))]


class Ranges(dict):
    """What `per_range` found; `utc`: every row it read (and the span's lower margin) is UTC text."""

    def __init__(self, found: dict, utc: bool = False):
        super().__init__(found)
        self.utc = utc


def per_range(db: Database, cfg: dict, parts: tuple, ranges: list[tuple], by_source: bool = False,
              count_only=lambda i: False, fast=False, utc_proven: bool = False) -> Ranges:
    """{range index: {source or None: (rows, ROI sum, rows with ROI)}} for [start, end) `ranges`.

    One statement, one aggregate per range (UNION ALL: each an index range on the time
    column, no sort across them); a user query runs once per range, given its bounds as
    :start and :end (it selects the rows, as it does for the day). Without `by_source` each range has one
    entry, under None; a range `count_only(i)` is counted on the index alone (ROI 0).
    `fast` (ISO text in SQLite): plain text ranges while the rows read and the span's
    lower 14 h margin prove to be UTC text (or `utc_proven` says so); the upper
    margin is the caller's. Otherwise each row is judged by its instant.
    """
    if not ranges:
        return Ranges({}, utc_proven)
    source, t, s, r, roi = parts

    def figures(i):
        return "COUNT(*), 0, 0" if count_only(i) else f"COUNT(*), SUM({roi}), COUNT({r})"

    key = s if by_source else "NULL"
    if cfg["query"]:
        # The user's query takes :start and :end itself (as for the day): once per range, its own bounds.
        def bounded(i, a, b):
            return "1=1", {f"{k}_{i}": v for k, v in _bounds(cfg, db, a, b).items()}

        def query(i):
            text = re.sub(r"(?<!:):(start|end)\b", lambda m: f":{m[1]}_{i}", cfg["query"])
            return f"({text}) AS q"

        return Ranges(_union(db, ranges, bounded, query, figures, key, by_source))

    def plain(i, a, b):
        return f"{t} >= :s_{i} AND {t} < :e_{i}", {f"s_{i}": _text(a), f"e_{i}": _text(b)}

    if fast and (utc_proven or getattr(fast, "proven", False)):
        return Ranges(_union(db, ranges, plain, source, figures, key, by_source), utc=True)
    start, shapes = min(a for a, _ in ranges), getattr(fast, "shapes", _UTC_SHAPES)
    if fast and not _odd_in_margins(db, source, t, start, start, shapes=shapes):
        odd = f"COUNT(*) FILTER (WHERE NOT {_utc_text(t, shapes)})"
        found = _union(db, ranges, plain, source, lambda i: f"{figures(i)}, {odd}", key, by_source)
        if not any(row[-1] for rows in found.values() for row in rows.values()):
            return Ranges({i: {k: v[:3] for k, v in rows.items()} for i, rows in found.items()}, utc=True)
    sqlite_iso = db.kind == "sqlite" and cfg["time_format"] == "iso"

    def where(i, a, b):
        if not sqlite_iso:
            return f"{t} >= :start_{i} AND {t} < :end_{i}", {f"{k}_{i}": v for k, v in _bounds(cfg, db, a, b).items()}
        clause, params = _time_filter(cfg, db, t, a, b)
        clause = re.sub(r"(?<!:):([A-Za-z_]\w*)", lambda m: f":{m[1]}_{i}" if m[1] in params else m[0], clause)
        return clause, {f"{name}_{i}": value for name, value in params.items()}

    return Ranges(_union(db, ranges, where, source, figures, key, by_source))


def _union(db, ranges, where, source, figures, key, by_source) -> dict:
    branches, params = [], {}
    for i, (a, b) in enumerate(ranges):
        clause, values = where(i, a, b)
        params.update(values)
        branches.append(f"SELECT {i}, {key}, {figures(i)} FROM {source(i) if callable(source) else source} "
                        f"WHERE {clause}"
                        + (f" GROUP BY {key}" if by_source else ""))
    out: dict = {}
    for row in db.rows(" UNION ALL ".join(branches), params):
        if row[2]:
            out.setdefault(row[0], {})[row[1]] = tuple(row[2:])
    return out
