"""The daily report's figures from a real PostgreSQL server (tests/postgres.py): native
timestamptz and numeric columns, text and epoch times, a user query, quoted names,
broken sources, a read-only session; the same numbers as SQLite for the same rows
(SPEC: [report], Daily report)."""

import sqlite3
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from monitor.report import figures
from tests import loopback
from tests.postgres import PostgresServer
from tests.test_report import BEFORE, DAY, UTC, at, report_cfg

NEXT = DAY + timedelta(days=1)
# Times near both midnights, in several spellings; ROI as numbers, text and NULL.
ROWS = [
    (at(DAY, "00:00:00", "Z"), "uniswap", "1.5"),
    (at(DAY, "00:30:00", "+01:00"), "curve", "7.25"),       # 23:30Z the day before
    (at(DAY, "12:00:00", "Z"), "uniswap", None),
    (at(DAY, "13:15:00", "Z"), "<b>&evil", "10.5"),
    (at(DAY, "18:00:00", "Z"), "curve", "9"),
    (at(DAY, "22:45:00", "Z"), "curve", "2.125"),
    (at(DAY, "23:59:59", "Z"), "balancer", "0.5"),
    (at(NEXT, "01:30:00", "+02:00"), "uniswap", "3.75"),    # 23:30Z
    (at(NEXT, "00:00:00", "Z"), "uniswap", "99"),          # the next day
    (at(BEFORE, "08:00:00", "Z"), "uniswap", "4"),
    (at(BEFORE, "23:00:00", "Z"), "sushi", None),            # 00:00 in Paris
    (at(BEFORE, "22:59:59", "Z"), "sushi", "6"),
]


@pytest.fixture(scope="module")
def pg():
    with PostgresServer() as server:
        server.execute(server.database,
                       "CREATE TABLE opportunities (id serial PRIMARY KEY, found_at timestamptz NOT NULL, "
                       "source text, roi numeric(12, 4))",
                       "CREATE INDEX ON opportunities (found_at)",
                       'CREATE TABLE "order" ("when" text, "group" text, "select" text)',
                       "CREATE TABLE epochs (ts double precision, source text, roi double precision)",
                       "CREATE SEQUENCE tickets")
        with server.connect() as conn:
            conn.cursor().executemany("INSERT INTO opportunities (found_at, source, roi) VALUES (%s, %s, %s)",
                                      ROWS)
            conn.cursor().executemany('INSERT INTO "order" VALUES (%s, %s, %s)', ROWS)
            conn.cursor().executemany("INSERT INTO epochs VALUES (%s, %s, %s)",
                                      [(epoch(t), s, None if r is None else float(r)) for t, s, r in ROWS])
        yield server


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def sqlite_figures(tmp_path, tz, **report):
    conn = sqlite3.connect(tmp_path / "same.db")
    conn.execute("CREATE TABLE opportunities (found_at TEXT, source TEXT, roi TEXT)")
    conn.executemany("INSERT INTO opportunities VALUES (?, ?, ?)", ROWS)
    conn.commit()
    conn.close()
    return pg_figures(tmp_path, tz, database="sqlite://same.db", **report)


def pg_figures(tmp_path, tz=UTC, **report):
    cfg = report_cfg(tmp_path, timezone=str(tz), **report)
    return figures.business_figures(cfg, figures.window_for(DAY, tz), str(tmp_path))


@pytest.mark.parametrize("tz", [UTC, ZoneInfo("Europe/Paris")], ids=str)
def test_timestamptz_and_numeric_give_the_same_figures_as_sqlite(pg, tmp_path, tz):
    from_pg = pg_figures(tmp_path, tz, database=pg.url)
    assert from_pg == sqlite_figures(tmp_path, tz)
    if tz == UTC:
        assert from_pg["opportunities_found"] == 7
        assert (from_pg["avg_roi"], from_pg["roi_missing"]) == (round(27.375 / 6, 4), 1)
        assert [o["roi"] for o in from_pg["top_opportunities"]] == [10.5, 9.0, 3.75, 2.125, 1.5]
        assert from_pg["sources"] == {"uniswap": 3, "curve": 2, "<b>&evil": 1, "balancer": 1}
        assert from_pg["previous"] == {"opportunities_found": 4, "avg_roi": 5.75}


def test_iso_text_and_quoted_names_in_postgres(pg, tmp_path):
    found = pg_figures(tmp_path, database=pg.url, table="order",
                       columns={"time": "when", "source": "group", "roi": "select"})
    assert found == sqlite_figures(tmp_path, UTC)


def test_epoch_columns_in_postgres(pg, tmp_path):
    found = pg_figures(tmp_path, database=pg.url, table="epochs", time_format="epoch",
                       columns={"time": "ts", "source": "source", "roi": "roi"})
    assert found == sqlite_figures(tmp_path, UTC)


def test_a_user_query_with_start_and_end_in_postgres(pg, tmp_path):
    query = ("SELECT found_at AS time, source, roi FROM opportunities "
             "WHERE found_at >= :start AND found_at < :end AND source NOT LIKE '%evil'")
    found = pg_figures(tmp_path, database=pg.url, query=query)
    assert found["opportunities_found"] == 6
    assert "<b>&evil" not in found["sources"]
    assert found["previous"]["opportunities_found"] == 4


@pytest.mark.parametrize("settings, reason", [
    ({"table": "opportunity"}, r'report.table: relation "opportunity" does not exist'),
    ({"columns": {"time": "found_on"}}, r'report.columns: column "found_on" does not exist'),
])
def test_a_missing_table_or_column_is_named_in_postgres(pg, tmp_path, settings, reason):
    with pytest.raises(figures.ReportError, match=reason):
        pg_figures(tmp_path, database=pg.url, **settings)


def test_the_postgres_session_is_read_only(pg, tmp_path):
    query = "SELECT now() AS time, 'x' AS source, nextval('tickets') AS roi WHERE :start < :end"
    with pytest.raises(figures.ReportError, match="read-only transaction"):
        pg_figures(tmp_path, database=pg.url, query=query)
    with pg.connect() as conn:
        assert conn.execute("SELECT last_value, is_called FROM tickets").fetchone() == (1, False)


def test_a_locked_table_ends_in_a_statement_timeout_not_a_hang(pg, tmp_path):
    with pg.connect() as migration:
        migration.execute("LOCK TABLE opportunities IN ACCESS EXCLUSIVE MODE")
        db = figures.Database(pg.url, statement_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(figures.ReportError, match="report.database: canceling statement due to statement timeout"):
            db.rows("SELECT COUNT(*) FROM opportunities WHERE found_at >= :start", {"start": datetime.now(UTC)})
        assert time.monotonic() - started < 5
        db.close()
        migration.rollback()


def test_an_unreachable_server_is_a_clear_message(tmp_path):
    url = f"postgresql://postgres@127.0.0.1:{loopback.closed_port()}/business"
    with pytest.raises(figures.ReportError, match="report.database: cannot connect: .*127.0.0.1"):
        pg_figures(tmp_path, database=url)


def test_daily_report_from_postgres_end_to_end(pg, tmp_path, run_monitor, envelope):
    config = f'[report]\ndatabase = "{pg.url}"\nmin_opportunities = 5\nexpected_sources = ["uniswap", "sushi"]\n'
    proc = run_monitor(["daily-report", "--date", DAY.isoformat(), "--format", "json"], tmp_path,
                       config=config, steady_cpu=False)
    assert proc.returncode == 1, proc.stderr  # sushi went silent
    data = envelope(proc)
    report = data["report"]
    assert (report["opportunities_found"], report["sources_active"], report["inactive_sources"]) == (7, 4, ["sushi"])
    assert report["top_opportunities"][0] == {"time": at(DAY, "13:15:00", "+00:00"), "source": "<b>&evil",
                                              "roi": 10.5}
    assert report["change"]["opportunities"] == {"previous": 4, "delta": 3, "percent": 75.0}
    assert "&lt;b&gt;&amp;evil" in report["message"]
    assert data["checks"]["sources"]["status"] == "warning"


def test_the_window_is_passed_as_instants(pg, tmp_path):
    # A session in another time zone must not move the day: bounds are timestamptz.
    url = pg.url + "?options=-c%20TimeZone%3DPacific/Kiritimati"
    assert pg_figures(tmp_path, database=url) == pg_figures(tmp_path, database=pg.url)


# --- a value that is not UTF-8 costs one value, not the report (issue 12, item 16) ---------

@pytest.fixture(scope="module")
def legacy_url(pg):
    """A SQL_ASCII database (a legacy scraper's): the server stores any bytes a client sends."""
    pg.execute("postgres", "CREATE DATABASE legacy ENCODING 'SQL_ASCII' TEMPLATE template0 "
                           "LC_COLLATE 'C' LC_CTYPE 'C'")
    url = pg.url.rsplit("/", 1)[0] + "/legacy"
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE opportunities (found_at timestamptz, source text, roi numeric)")
        raw = "convert_from(decode(%s, 'hex'), 'SQL_ASCII')"  # the bytes exactly, whatever the client
        for when, source, roi in [(at(DAY, "09:00:00", "Z"), b"dex-\xff\xfe", 9),
                                  (at(DAY, "10:00:00", "Z"), b"dex-\xff\xfe", 3),
                                  (at(DAY, "11:00:00", "Z"), "café".encode("latin-1"), 2),
                                  (at(DAY, "12:00:00", "Z"), "curvé".encode(), 1),
                                  (at(DAY, "13:00:00", "Z"), b"uniswap", 5)]:
            conn.execute(f"INSERT INTO opportunities VALUES (%s, {raw}, %s)", (when, source.hex(), roi))
    return url


def test_values_that_are_not_utf8_in_a_sql_ascii_database_are_shown_escaped_and_counted(
        legacy_url, tmp_path, run_monitor, envelope):
    config = f'[report]\ndatabase = "{legacy_url}"\nmin_opportunities = 1\nexpected_sources = ["uniswap"]\n'
    proc = run_monitor(["daily-report", "--date", DAY.isoformat(), "--format", "json"], tmp_path,
                       config=config, steady_cpu=False)
    assert proc.returncode == 0, proc.stderr
    report = envelope(proc)["report"]
    assert report["missing"] == []
    assert (report["opportunities_found"], report["sources_active"], report["inactive_sources"]) == (5, 4, [])
    assert report["sources"] == {"dex-\\xff\\xfe": 2, "caf\\xe9": 1, "curvé": 1, "uniswap": 1}
    assert [o["source"] for o in report["top_opportunities"]] == [
        "dex-\\xff\\xfe", "uniswap", "dex-\\xff\\xfe", "caf\\xe9", "curvé"]
    assert report["damaged_values"] == 2  # two distinct values read were not UTF-8
    assert "2 database value(s) were not UTF-8" in report["message"]
    assert "dex-\\xff\\xfe" in report["message"]
