"""The reported day's scan: sources guessed from a sample, proven by the counts (issue 14).

The figures must be those of GROUP BY whatever the guess: a source missing from the
sample, a hint that is not in the day, sources in the sample beyond the FILTER limit.
"""

import sqlite3
from datetime import timedelta

import pytest

from monitor.report import database, day_scan
from tests.test_report import BEFORE, DAY, at, figures_for, make_db

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
