"""The reported day's rows per source and totals, in one scan when the sources are few.

GROUP BY sorts every row of the day (SQLite has no hash aggregate). With few sources,
the usual case, one scan counts each by a FILTER, the values bound as parameters. The
values are guessed first (cheap): the sources of a sample of the day's first rows,
and those the caller already knows (the days before, `expected_sources`). The scan
also counts the rows with a source, so the guess is proven by the counts adding up
to it; when they do not (a source missing from the guess, one written between two
statements, a user query that does not return the same rows twice, a value that
cannot be bound back), SELECT DISTINCT lists them all and the scan runs again, and
GROUP BY decides if that does not add up either.
"""

# Up to this many distinct sources, SQLite counts them by one FILTER each in a single
# scan; beyond it GROUP BY, whose sort costs the same whatever their number. Measured
# on the bench's 333k rows a day (2-CPU machine under load, ms): GROUP BY 198, with
# the shape count 382 (the sort then carries the time text); DISTINCT 89 plus a scan
# with 5 / 8 / 12 / 16 / 24 filters 160 / 163 / 183 / 216 / 294, the shape count +62.
# With the shape count (the table's own SQL) the filters win up to ~16 sources; for a
# user query (no shape count) they tie at 5 here (155 vs 385 on a quieter run).
FILTERED_SOURCES = 12
# The day's first rows whose sources make the guess: a few milliseconds of reading
# (index order for the table's own SQL) against a full DISTINCT pass (~90 ms on the
# bench's 333k rows).
SAMPLE_ROWS = 2000


def day_scan(db, source: str, s: str, r: str, roi: str, where: str, params: dict,
             odd: str = "", known=()) -> tuple[dict, tuple]:
    """Rows per source, and (rows, ROI sum, rows with ROI[, rows matching `odd`]) of `where`.

    `known`: source names likely in the day (tried with the sample's, never trusted).
    """
    totals = f"COUNT(*), SUM({roi}), COUNT({r})" + (f", COUNT(*) FILTER (WHERE {odd})" if odd else "")
    if db.kind == "sqlite":
        sample = db.rows(f"SELECT DISTINCT v FROM (SELECT {s} AS v FROM {source} WHERE {where} "
                         f"LIMIT {SAMPLE_ROWS})", params)
        guess = _values([value for (value,) in sample], known)
        found = _filtered(db, source, s, totals, where, params, guess) if guess is not None else None
        if found is None:
            listed = db.rows(f"SELECT DISTINCT {s} FROM {source} WHERE {where} LIMIT {FILTERED_SOURCES + 1}", params)
            values = _values([value for (value,) in listed])
            # Every value the guess had already: the counts did not add up for another reason.
            if values is not None and not set(values) <= set(guess or ()):
                found = _filtered(db, source, s, totals, where, params, values)
        if found is not None:
            return found
    groups = db.rows(f"SELECT {s}, {totals} FROM {source} WHERE {where} GROUP BY {s}", params)
    sums = tuple(sum(group[i] or 0 for group in groups) for i in range(1, 5 if odd else 4))
    return {group[0]: group[1] for group in groups if group[0] is not None}, sums


def _values(read: list, known=()) -> list | None:
    """The distinct values to count by FILTERs, or None if too many or one cannot be bound back.

    `known` names (hints, not read from the day) are added while there is room.
    """
    values = [value for value in read if value is not None]
    if len(values) > FILTERED_SOURCES or not all(map(_bindable, values)):
        return None
    seen = {str(value) for value in values}
    for name in known:
        if len(values) < FILTERED_SOURCES and isinstance(name, str) and name not in seen and _bindable(name):
            values.append(name)
            seen.add(name)
    return values


def _filtered(db, source: str, s: str, totals: str, where: str, params: dict, values: list):
    """One scan: a FILTER count per value; None unless they add up to the rows with a source."""
    names = {f"source_{i}": value for i, value in enumerate(values)}
    counts = "".join(f"COUNT(*) FILTER (WHERE {s} = :{name}), " for name in names)
    row = db.rows(f"SELECT {counts}COUNT({s}), {totals} FROM {source} WHERE {where}", {**params, **names})[0]
    n = len(values)
    if sum(row[:n]) != row[n]:
        return None
    return {value: count for value, count in zip(values, row[:n]) if count}, tuple(row[n + 1:])


def _bindable(value) -> bool:
    """A value read that is passed back unchanged as a parameter (not text kept with bad bytes)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True
