"""Proving ISO text in SQLite to be UTC text, at less than a GLOB per row when possible.

The report reads ISO text by plain text ranges while every row that can count has a
UTC shape (`database._UTC_SHAPES`); that is proven by a GLOB per row read. Two ways
to spend less, with the same shapes accepted:

- the writer's shape first: the OR of the shapes stops at the first that matches,
  so the shape of the day's first row is tried before the others (a fraction and
  "+00:00", the fourth shape, costs four GLOBs a row when tried in the default order);
- each distinct value once: a loose index scan walks the time column's index from
  value to next value (one seek each) over the whole span the report reads, and
  GLOBs each value. Rows written in batches that share their time (a scraper stamping
  a cycle's finds with the cycle's time) have few distinct values; it stops after
  WALK_LIMIT of them, when the GLOB per row is cheaper. Only for a table whose SQL
  and indexes declare no COLLATE (the walk steps over values equal under the
  column's collation, which a NOCASE column would merge) and whose time column has
  an index that serves the walk (else every step would be a full scan).
"""

import fnmatch
import re
WALK_LIMIT = 1024  # seeks: ~2 ms on the bench's machine when the values are all distinct
_WALK = "_monitor_utc_walk"  # the recursive CTE's name


class Utc:
    """The UTC shapes in the order to try them; `proven`: every value in the span is UTC text."""

    def __init__(self, shapes: tuple, walk=None):
        self.shapes, self.walk = shapes, walk
        self.proven = bool(walk and walk())

    def __bool__(self) -> bool:
        return True

    def confirmed(self) -> bool:
        """Walk again (after the scans): a value of another shape written meanwhile would show here."""
        return bool(self.walk and self.walk())


def plan(db, cfg: dict, source: str, t: str, window, shapes: tuple, span: tuple) -> Utc:
    """How the report's ISO text in SQLite is proven UTC over `span`: the text bounds of all it reads."""
    from monitor.report.database import _text

    first = db.rows(f"SELECT {t} FROM {source} WHERE {t} >= :s AND {t} < :e LIMIT 1",
                    {"s": _text(window.start), "e": _text(window.end)})
    value = first[0][0] if first else None
    if isinstance(value, str):
        shapes = tuple(sorted(shapes, key=lambda shape: not fnmatch.fnmatchcase(value, shape)))
    walk = None
    if _walkable(db, cfg["table"], source, t, span):
        def walk():
            return _walk(db, source, t, shapes, span)
    return Utc(shapes, walk)


def _walkable(db, table: str, source: str, t: str, span: tuple) -> bool:
    if "." in table or table == _WALK:
        return False
    schema = db.rows("SELECT type, sql FROM sqlite_master WHERE tbl_name = :name COLLATE NOCASE", {"name": table})
    if not any(kind == "table" for kind, _ in schema):
        return False
    if any(sql and (re.search(r"\bCOLLATE\b", sql, re.I) or re.match(r"\s*CREATE\s+VIRTUAL\b", sql, re.I))
           for _, sql in schema):
        return False
    plans = db.rows(f"EXPLAIN QUERY PLAN SELECT MIN({t}) FROM {source} WHERE {t} > :v AND {t} < :hi",
                    {"v": span[0], "hi": span[1]})
    return len(plans) == 1 and bool(re.match(r"SEARCH\b.*\b(INDEX|PRIMARY KEY)\b", str(plans[0][-1])))


def _walk(db, source: str, t: str, shapes: tuple, span: tuple) -> bool:
    """True if the walk reached the span's end within WALK_LIMIT values, all of them UTC text."""
    from monitor.report.database import _utc_text

    found = db.rows(f"WITH RECURSIVE {_WALK}(v) AS ("
                    f"SELECT (SELECT MIN({t}) FROM {source} WHERE {t} >= :lo AND {t} < :hi) UNION ALL "
                    f"SELECT (SELECT MIN({t}) FROM {source} WHERE {t} > {_WALK}.v AND {t} < :hi) "
                    f"FROM {_WALK} WHERE {_WALK}.v IS NOT NULL LIMIT {WALK_LIMIT + 1}) "
                    f"SELECT COUNT(*) FILTER (WHERE v IS NULL), COUNT(*) FILTER (WHERE NOT {_utc_text('v', shapes)}) "
                    f"FROM {_WALK}", {"lo": span[0], "hi": span[1]})
    ended, odd = found[0]
    return ended == 1 and not odd
