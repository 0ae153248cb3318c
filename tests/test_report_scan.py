"""The reported day's scan: sources guessed from a sample, proven by the counts (issue 14).

The figures must be those of GROUP BY whatever the guess: a source missing from the
sample, a hint that is not in the day, sources in the sample beyond the FILTER limit.
"""

import sqlite3
from datetime import timedelta

import pytest

from monitor.report import database, day_scan
from monitor.report import figures
from tests.test_report import BEFORE, DAY, UTC, at, figures_for, make_db, report_cfg

PLAIN = "SELECT found_at AS time, source, roi FROM opportunities WHERE found_at >= :start AND found_at < :end"


@pytest.fixture
def statements(monkeypatch):
    seen = []
    rows = database.Database.rows

    def spy(self, sql, params):
        seen.append(sql)
        return rows(self, sql, params)

    monkeypatch.setattr(database.Database, "rows", spy)
    return seen


def truth(path, day=DAY):
    """The day's rows per source by GROUP BY (every row UTC text here)."""
    conn = sqlite3.connect(path)
    found = dict(conn.execute("SELECT source, COUNT(*) FROM opportunities WHERE found_at >= ? AND found_at < ? "
                              "AND source IS NOT NULL GROUP BY source",
                              (at(day, "00:00:00"), at(day + timedelta(days=1), "00:00:00"))).fetchall())
    conn.close()
    return found


def full_distinct(statements):
    return [sql for sql in statements if sql.startswith("SELECT DISTINCT") and "LIMIT 13" in sql]


@pytest.mark.parametrize("query", ["", PLAIN], ids=["table", "query"])
def test_the_usual_day_is_counted_without_listing_its_sources_first(tmp_path, statements, query):
    rows = [(at(d, f"{i % 24:02d}:{i % 60:02d}:00", "+00:00"), f"src-{i % 3}", float(i))
            for d in (BEFORE, DAY) for i in range(300)]
    make_db(tmp_path / "opp.db", rows)
    found = figures_for(tmp_path, database="sqlite://opp.db", query=query)
    assert found["sources"] == truth(tmp_path / "opp.db") == {"src-0": 100, "src-1": 100, "src-2": 100}
    assert full_distinct(statements) == []


@pytest.mark.parametrize("query", ["", PLAIN], ids=["table", "query"])
def test_a_source_first_seen_late_in_the_day_is_counted(tmp_path, statements, monkeypatch, query):
    monkeypatch.setattr(day_scan, "SAMPLE_ROWS", 5)  # the sample: the day's first 5 rows
    rows = [(at(DAY, f"{h:02d}:00:00", "+00:00"), "early", 1.0) for h in range(12)]
    rows += [(at(DAY, "23:00:00", "+00:00"), "late", 9.0), (at(DAY, "23:30:00", "+00:00"), None, 2.0)]
    make_db(tmp_path / "opp.db", rows)
    found = figures_for(tmp_path, database="sqlite://opp.db", query=query)
    assert found["sources"] == {"early": 12, "late": 1}
    assert found["opportunities_found"] == 14
    assert found["top_opportunities"][0]["source"] == "late"
    assert len(full_distinct(statements)) == 1  # the guess did not add up: listed, then counted


def test_hints_not_in_the_day_are_no_sources(tmp_path, statements):
    # Sources of the days before and expected_sources are tried, never shown with 0.
    rows = [(at(BEFORE - timedelta(days=d), f"{h:02d}:00:00", "+00:00"), f"old-{h % 4}", 1.0)
            for d in range(7) for h in range(24)]
    rows += [(at(DAY, f"{h:02d}:00:00", "+00:00"), "new", 1.0) for h in range(24)]
    make_db(tmp_path / "opp.db", rows)
    found = figures_for(tmp_path, database="sqlite://opp.db", expected_sources=["gone", "new"])
    assert found["sources"] == {"new": 24}
    assert found["history"]["sources"][0] == {f"old-{i}": 6 for i in range(4)}
    assert full_distinct(statements) == []


def test_more_sampled_sources_than_filters_are_grouped(tmp_path):
    count = database.FILTERED_SOURCES + 2
    rows = [(at(DAY, f"{i % 24:02d}:{i % 60:02d}:00", "+00:00"), f"s{i % count}", 1.0) for i in range(5 * count)]
    make_db(tmp_path / "opp.db", rows)
    found = figures_for(tmp_path, database="sqlite://opp.db", expected_sources=["s1", "other"])
    assert found["sources"] == truth(tmp_path / "opp.db") == {f"s{i}": 5 for i in range(count)}


def test_values_that_cannot_be_bound_back_are_grouped(tmp_path):
    make_db(tmp_path / "opp.db", [(at(DAY, "01:00:00", "+00:00"), "ok", 1.0)])
    conn = sqlite3.connect(tmp_path / "opp.db")
    conn.execute("INSERT INTO opportunities VALUES (?, CAST(? AS TEXT), 1.0)", (at(DAY, "02:00:00", "+00:00"),
                                                                              b"bad\xff"))
    conn.commit()
    conn.close()
    found = figures_for(tmp_path, database="sqlite://opp.db")
    assert found["opportunities_found"] == 2 and sum(found["sources"].values()) == 2
    assert found["damaged_values"] == 1


# --- UTC text proven once per distinct value (utc_proof) -----------------------------------------

def twin_dbs(tmp_path, rows, **table):
    """The same rows twice: with an index on the time column (walked) and without (a GLOB per row)."""
    make_db(tmp_path / "scan.db", rows, **table)
    make_db(tmp_path / "idx.db", rows, **table)
    conn = sqlite3.connect(tmp_path / "idx.db")
    conn.execute("CREATE INDEX at_time ON opportunities (found_at)")
    conn.commit()
    conn.close()


def walked(statements):
    return [sql for sql in statements if sql.startswith("WITH RECURSIVE")]


def batches(days, hours=range(0, 24, 2), per=3):
    """Rows written in batches that share their time: a few distinct values a day."""
    return [(at(day, f"{h:02d}:00:00", "+00:00"), f"src-{(h + i) % 3}", float(i + 1))
            for day in days for h in hours for i in range(per)]


def test_batch_times_are_proven_utc_without_a_glob_per_row(tmp_path, statements):
    rows = batches([DAY - timedelta(days=d) for d in range(-1, 29)])
    twin_dbs(tmp_path, rows)
    found = figures_for(tmp_path, database="sqlite://idx.db")
    on_idx = list(statements)
    assert found == figures_for(tmp_path, database="sqlite://scan.db")
    assert found["opportunities_found"] == 36 and found["previous"]["opportunities_found"] == 36
    assert len(walked(on_idx)) == 2  # before the scans, and again after them
    assert not [sql for sql in on_idx if "GLOB" in sql and not sql.startswith("WITH RECURSIVE")]


EDGES = {  # (text, where its instant lies): a row of another shape anywhere the report reads
    "upper margin, instant in the day": (lambda: at(DAY + timedelta(days=1), "13:30:00", "+14:00"), 1, 0),
    "in the day, instant the day before": (lambda: at(DAY, "00:30:00", "+02:00"), 0, 1),
    "in the day, instant the next day": (lambda: at(DAY, "23:30:00", "-01:00"), 0, 0),
    "space, in the day": (lambda: at(DAY, "05:00:00", sep=" "), 1, 0),
    "day before, instant in the day": (lambda: at(BEFORE, "23:30:00", "-01:00"), 1, 0),
    "day -20": (lambda: at(DAY - timedelta(days=20), "05:00", "+00:00"), 0, 0),
    "lower margin": (lambda: at(DAY - timedelta(days=29), "10:30:00", "-12:00"), 0, 0),
}


@pytest.mark.parametrize("edge", list(EDGES))
def test_a_value_of_another_shape_anywhere_is_judged_by_its_instant(tmp_path, statements, edge):
    text, in_day, in_before = EDGES[edge]
    rows = batches([DAY - timedelta(days=d) for d in range(-1, 30)]) + [(text(), "odd", 100.0)]
    twin_dbs(tmp_path, rows)
    found = figures_for(tmp_path, database="sqlite://idx.db")
    assert walked(statements)
    assert found == figures_for(tmp_path, database="sqlite://scan.db")
    assert found["opportunities_found"] == 36 + in_day
    assert found["previous"]["opportunities_found"] == 36 + in_before
    assert found["sources"].get("odd") == (1 if in_day else None)


def test_more_distinct_times_than_the_walk_takes_get_a_glob_per_row(tmp_path, statements, monkeypatch):
    from monitor.report import utc_proof

    monkeypatch.setattr(utc_proof, "WALK_LIMIT", 5)
    rows = batches([BEFORE, DAY]) + [(at(DAY, "23:30:00", "-01:00"), "odd", 100.0)]
    twin_dbs(tmp_path, rows)
    found = figures_for(tmp_path, database="sqlite://idx.db")
    assert found == figures_for(tmp_path, database="sqlite://scan.db")
    assert found["opportunities_found"] == 36 and "odd" not in found["sources"]
    (tmp_path / "all-utc").mkdir()
    twin_dbs(tmp_path / "all-utc", batches([BEFORE, DAY]))
    statements.clear()
    assert figures_for(tmp_path / "all-utc", database="sqlite://idx.db")["opportunities_found"] == 36
    assert any("GLOB" in sql for sql in statements if not sql.startswith("WITH RECURSIVE"))


def test_a_time_column_with_a_collation_is_not_walked(tmp_path, statements):
    # NOCASE would merge "...T..." with "...t..." (not a UTC shape: GLOB is case-sensitive).
    rows = batches([BEFORE, DAY]) + [(at(DAY, "23:30:00", "-01:00").replace("T", "t"), "odd", 100.0)]
    twin_dbs(tmp_path, rows, types=("TEXT COLLATE NOCASE", "TEXT", "REAL"))
    found = figures_for(tmp_path, database="sqlite://idx.db")
    assert not walked(statements)
    assert found == figures_for(tmp_path, database="sqlite://scan.db")
    assert found["opportunities_found"] == 36


def test_a_row_of_another_shape_written_during_the_report_is_judged_by_its_instant(tmp_path, statements,
                                                                                  monkeypatch):
    # Written after the first walk (that proved all UTC text), before the day's scan.
    twin_dbs(tmp_path, batches([BEFORE, DAY]))
    rows = database.Database.rows

    def write_after_first_walk(self, sql, params):
        out = rows(self, sql, params)
        if sql.startswith("WITH RECURSIVE") and len(walked(statements)) == 1:
            writer = sqlite3.connect(tmp_path / "idx.db")
            writer.execute("INSERT INTO opportunities VALUES (?, 'odd', 100.0)", (at(DAY, "23:30:00", "-01:00"),))
            writer.commit()
            writer.close()
        return out

    monkeypatch.setattr(database.Database, "rows", write_after_first_walk)
    statements.clear()
    found = figures_for(tmp_path, database="sqlite://idx.db")
    assert found["opportunities_found"] == 36 and "odd" not in found["sources"]  # 00:30Z the next day


@pytest.mark.parametrize("odd", [False, True], ids=["utc-text", "an-offset-row"])
def test_the_charts_hours_count_each_row_in_its_own_hour(tmp_path, statements, odd):
    """Plain hour ranges when the day proved UTC text; each row judged by its instant otherwise."""
    rows = [(at(DAY, f"{h:02d}:{m:02d}:00", "+00:00"), "a", 1.0) for h in range(24) for m in range(0, 60, 60 // (h + 1))]
    if odd:  # 01:30 at +02:00 is 23:30 UTC the day before: not in hour 1, nor in the day
        rows.append((at(DAY, "01:30:00", "+02:00"), "a", 1.0))
    make_db(tmp_path / "opp.db", rows)
    cfg = {**report_cfg(tmp_path, database="sqlite://opp.db"), "hourly": True}  # daily.py sets it for a chart
    found = figures.business_figures(cfg, figures.window_for(DAY, UTC), str(tmp_path))
    expected = [len(range(0, 60, 60 // (h + 1))) for h in range(24)]
    assert found["hourly"] == expected and found["opportunities_found"] == sum(expected)
    hour_sql = [sql for sql in statements if "COUNT(*), 0, 0" in sql and "SUM(" not in sql]
    assert hour_sql and all(("julianday" in sql) == odd for sql in hour_sql)
