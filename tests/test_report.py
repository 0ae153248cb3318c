"""`monitor daily-report`: yesterday's business in one message (SPEC: [report], Daily report,
Prometheus daily_*).

The window's calendar maths under freezegun and across the Paris DST changes; the
business figures from SQLite files built here (ISO text, epoch, a user query, awkward
identifiers, broken sources); errors and health counted from synthetic logs; then the
installed `monitor` run as cron would, against a loopback stand-in for Telegram.
"""

import gzip
import hashlib
import json
import os
import sqlite3
import threading
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time

from monitor import config as config_mod
from monitor.report import database, figures
from monitor.checks import business
from monitor.report.daily import choose_day
from monitor.config import ConfigError
from monitor.report.text import render, validate_template
from monitor.results import OK, UNKNOWN, WARNING
from monitor.alerts.telegram import html_to_plain, split_message
from tests.telegram_standin import TelegramStandIn, html_error

UTC = ZoneInfo("UTC")
PARIS = ZoneInfo("Europe/Paris")
# A finished day for the command line too: --date refuses a day that is not over yet.
DAY = min(date(2026, 11, 25), datetime.now(timezone.utc).date() - timedelta(days=2))
BEFORE = DAY - timedelta(days=1)
TOKEN = "123456789:AAFAKEtokenFAKEtokenFAKEtokenFAKE12"
CHAT = "-100123"


def at(day: date, clock: str, suffix: str = "", sep: str = "T") -> str:
    return f"{day.isoformat()}{sep}{clock}{suffix}"


def report_cfg(folder, **report) -> dict:
    """The validated [report] table, as config loading makes it (relative paths from `folder`)."""
    return config_mod.build({"report": report}, None, str(folder))["report"]


def make_db(path, rows, table="opportunities", columns=("found_at", "source", "roi"),
            types=("TEXT", "TEXT", "REAL"), wal=False) -> Path:
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    cols = ", ".join(f'"{c}" {t}' for c, t in zip(columns, types))
    conn.execute(f'CREATE TABLE "{table}" ({cols})')
    conn.executemany(f'INSERT INTO "{table}" VALUES (?, ?, ?)', rows)
    conn.commit()
    conn.close()
    return Path(path)


def day_rows(day: date, rois, sources=("uniswap", "curve")) -> list[tuple]:
    """One row per ROI, spread over the day (UTC, ISO with T), sources taken in turn."""
    return [(at(day, f"{(i * 7) % 24:02d}:{i % 60:02d}:00"), sources[i % len(sources)], roi)
            for i, roi in enumerate(rois)]


def figures_for(folder, day=DAY, tz=UTC, **report):
    cfg = report_cfg(folder, **report)
    return figures.business_figures(cfg, figures.window_for(day, tz), str(folder))


# --- the window -------------------------------------------------------------------------------

@pytest.mark.parametrize("now, tz, expected", [
    ("2026-11-25 23:30:00", "UTC", date(2026, 11, 24)),
    ("2026-11-25 23:30:00", "Asia/Tokyo", date(2026, 11, 25)),      # 08:30 on the 26th there
    ("2026-11-25 03:00:00", "America/New_York", date(2026, 11, 23)),  # 22:00 on the 24th there
])
def test_the_default_day_is_yesterday_in_the_report_timezone(now, tz, expected):
    with freeze_time(now):
        assert choose_day(None, ZoneInfo(tz)) == expected


@pytest.mark.parametrize("day, hours, runs", [
    (date(2026, 3, 29), 23, 276),   # last Sunday of March: 02:00 -> 03:00
    (date(2026, 10, 25), 25, 300),  # last Sunday of October: 03:00 -> 02:00
    (date(2026, 11, 25), 24, 288),
])
def test_a_paris_dst_day_is_23_or_25_hours_and_expects_that_many_runs(tmp_path, day, hours, runs):
    with freeze_time(datetime.combine(day + timedelta(days=1), datetime.min.time()) + timedelta(hours=7)):
        chosen = choose_day(None, PARIS)
    assert chosen == day
    window = figures.window_for(chosen, PARIS)
    assert window.hours == hours
    assert window.end.timestamp() - window.start.timestamp() == hours * 3600
    assert figures.health_summary(str(tmp_path), window)["runs_expected"] == runs


def test_every_five_minutes_of_the_25_hour_day_counts_as_a_run(tmp_path):
    window = figures.window_for(date(2026, 10, 25), PARIS)
    start = window.start.astimezone(timezone.utc)
    lines = [run_record(start + timedelta(minutes=5 * i), "ok", {"cpu": "ok"}, tz=PARIS) for i in range(300)]
    (tmp_path / "health.log").write_text("".join(lines))
    health = figures.health_summary(str(tmp_path), window)
    assert (health["runs_seen"], health["runs_expected"], health["percent_ok"]) == (300, 300, 100.0)


def test_a_date_in_the_future_or_today_or_malformed_is_refused():
    with freeze_time("2026-11-25 12:00:00"):
        for text in ("2026-11-25", "2027-01-01"):
            with pytest.raises(ConfigError, match="--date: .* is not over yet"):
                choose_day(text, UTC)
        with pytest.raises(ConfigError, match='--date: expected YYYY-MM-DD, got "2026-13-01"'):
            choose_day("2026-13-01", UTC)
        assert choose_day("2026-11-24", UTC) == date(2026, 11, 24)


# --- business figures from SQLite -------------------------------------------------------------

def test_figures_count_average_the_best_five_and_the_active_sources(tmp_path):
    rows = day_rows(DAY, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.5], sources=("uniswap", "curve", "balancer"))
    rows += [(at(DAY, "12:00:00"), "curve", None), (at(DAY, "13:00:00"), "curve", None)]
    make_db(tmp_path / "opp.db", rows)
    found = figures_for(tmp_path, database="sqlite://opp.db")
    assert found["opportunities_found"] == 9
    assert found["avg_roi"] == round(21.5 / 7, 4)      # NULL ROI rows are not averaged...
    assert found["roi_missing"] == 2                   # ...but counted
    assert [o["roi"] for o in found["top_opportunities"]] == [6.0, 5.0, 4.0, 3.0, 2.0]
    assert found["sources"] == {"uniswap": 3, "curve": 4, "balancer": 2}


def test_roi_stored_as_text_is_averaged_and_ordered_as_a_number(tmp_path):
    rows = day_rows(DAY, ["9", "10.5", "2.25", "100", "0.5", "30"])
    make_db(tmp_path / "opp.db", rows, types=("TEXT", "TEXT", "TEXT"))
    found = figures_for(tmp_path, database="sqlite://opp.db")
    assert found["avg_roi"] == round(152.25 / 6, 4)
    assert [o["roi"] for o in found["top_opportunities"]] == [100.0, 30.0, 10.5, 9.0, 2.25]


def test_sources_check_names_the_expected_sources_that_went_silent(tmp_path):
    make_db(tmp_path / "opp.db", day_rows(DAY, [1.0, 2.0, 3.0]) + day_rows(BEFORE, [1.0], ("sushi",)))
    cfg = report_cfg(tmp_path, database="sqlite://opp.db", expected_sources=["uniswap", "curve", "sushi"])
    probe = business.ReportProbe(cfg, str(tmp_path / "logs"), figures.window_for(DAY, UTC), str(tmp_path))
    result = business.sources(probe)
    assert (result.status, result.value) == (WARNING, 2)
    assert result.details["inactive"] == ["sushi"]
    probe.errors()
    report, missing = probe.report()
    assert (report["sources_active"], report["inactive_sources"], missing) == (2, ["sushi"], [])


def test_change_compares_with_the_day_before(tmp_path):
    make_db(tmp_path / "opp.db", day_rows(DAY, [2.0, 4.0, 6.0]) + day_rows(BEFORE, [1.0, 3.0]) +
            day_rows(BEFORE - timedelta(days=1), [50.0] * 9))
    found = figures_for(tmp_path, database="sqlite://opp.db")
    assert found["previous"] == {"opportunities_found": 2, "avg_roi": 2.0}
    assert figures.change(found, found["previous"]) == {
        "opportunities": {"previous": 2, "delta": 1, "percent": 50.0},
        "avg_roi": {"previous": 2.0, "delta": 2.0, "percent": 100.0},
    }


def test_iso_times_with_t_space_z_and_offsets_near_midnight_fall_in_the_right_day(tmp_path):
    next_day = DAY + timedelta(days=1)
    inside = [at(DAY, "00:00:00"), at(DAY, "00:00:01", sep=" "), at(DAY, "23:59:59", "Z"),
              at(DAY, "23:59:59.999", sep=" "), at(next_day, "01:30:00", "+02:00"),  # 23:30Z
              at(DAY, "12:00:00.123456", "Z"), at(DAY, "22:30:00", "-01:00")]    # 23:30Z
    before = [at(DAY, "01:59:59", "+02:00"), at(BEFORE, "23:59:59", sep=" "), at(BEFORE, "23:00:00", "Z")]
    outside = [at(next_day, "00:00:00", "Z"), at(DAY, "23:30:00", "-01:00"), at(next_day, "00:00:00", sep=" ")]
    rows = [(t, "s", 1.0) for t in inside + before + outside]
    make_db(tmp_path / "opp.db", rows)
    found = figures_for(tmp_path, database="sqlite://opp.db")
    assert found["opportunities_found"] == len(inside)
    assert found["previous"]["opportunities_found"] == len(before)


@pytest.mark.parametrize("tz", [UTC, PARIS], ids=str)
def test_mixed_offset_rows_near_midnight_among_utc_rows_are_counted_in_the_right_day(tmp_path, tz):
    # Mostly UTC text (read by plain text ranges), with a few rows written in far zones
    # whose text lies in another day than their instant, up to 14 h away.
    start = datetime.combine(DAY, datetime.min.time(), tz).astimezone(timezone.utc)
    end = datetime.combine(DAY + timedelta(days=1), datetime.min.time(), tz).astimezone(timezone.utc)
    prev = datetime.combine(BEFORE, datetime.min.time(), tz).astimezone(timezone.utc)

    def text(instant, zone_hours=0, shape="+00:00"):
        local = instant.astimezone(timezone(timedelta(hours=zone_hours)))
        if zone_hours:
            return local.isoformat()
        return local.replace(tzinfo=None).isoformat() + ("" if shape == "naive" else shape)

    second = timedelta(seconds=1)
    inside = [text(start), text(start, shape="Z"), text(end - second, shape="naive"),
              text(end - timedelta(microseconds=1), shape="Z"), text(start + timedelta(hours=12)),
              text(end - timedelta(minutes=30), 14),     # text in the next day, +14:00
              text(start + timedelta(minutes=30), -12),  # text in the day before, -12:00
              text(end - second, 13), text(start, -11)]
    before = [text(start - second), text(prev, shape="Z"), text(prev + timedelta(hours=1), -12),  # text 2 days back
              text(start - timedelta(minutes=1), 14)]    # text inside the day, instant before it
    outside = [text(end), text(end, shape="naive"), text(end, -12),                              # text inside the day
               text(prev - second), text(prev - timedelta(minutes=1), 14)]                       # text the day before
    filler = [text(start + timedelta(hours=h)) for h in range(-60, 84, 3)]  # UTC rows two days around
    counted_filler = [f for f in filler if start.isoformat()[:19] <= f[:19] < end.isoformat()[:19]]
    before_filler = [f for f in filler if prev.isoformat()[:19] <= f[:19] < start.isoformat()[:19]]
    rows = [(t, "s", 1.0) for t in inside + before + outside + filler]
    make_db(tmp_path / "opp.db", rows)
    sqlite3.connect(tmp_path / "opp.db").execute("CREATE INDEX at_time ON opportunities (found_at)").connection.commit()
    found = figures_for(tmp_path, tz=tz, database="sqlite://opp.db", timezone=str(tz))
    assert found["opportunities_found"] == len(inside) + len(counted_filler)
    assert found["previous"]["opportunities_found"] == len(before) + len(before_filler)
    # The same rows without the far zones: every figure from the plain text ranges.
    make_db(tmp_path / "utc.db", [(t, "s", 1.0) for t in filler + inside[:5] + before[:2] + outside[:2]])
    found = figures_for(tmp_path, tz=tz, database="sqlite://utc.db", timezone=str(tz))
    assert found["opportunities_found"] == 5 + len(counted_filler)
    assert found["previous"]["opportunities_found"] == 2 + len(before_filler)
    # Far-zone rows only in the margins, none among the two days' text: still found.
    make_db(tmp_path / "margins.db", [(t, "s", 1.0) for t in filler + [inside[5], before[2]]])
    found = figures_for(tmp_path, tz=tz, database="sqlite://margins.db", timezone=str(tz))
    assert found["opportunities_found"] == 1 + len(counted_filler)
    assert found["previous"]["opportunities_found"] == 1 + len(before_filler)


MANY = database.FILTERED_SOURCES + 3  # sources counted by GROUP BY rather than one FILTER each


@pytest.mark.parametrize("sources", [2, MANY], ids=["few-sources", "many-sources"])
@pytest.mark.parametrize("day", ["day", "before"])
def test_rows_of_another_shape_only_inside_a_days_text_are_judged_by_their_instant(tmp_path, sources, day):
    # UTC text everywhere else: the margins hold nothing odd. Inside the day's (or the
    # day before's) text range, rows whose instant lies in another day.
    names = [f"src-{i}" for i in range(sources)]
    filler = [(at(d, f"{h:02d}:00:00", "+00:00"), names[h % sources], 1.0)
              for d in (BEFORE - timedelta(days=1), BEFORE, DAY, DAY + timedelta(days=1)) for h in range(24)]
    inside = DAY if day == "day" else BEFORE
    odd = [(at(inside, "23:30:00", "-01:00"), "odd", 50.0),        # 00:30Z the next day
           (at(inside + timedelta(days=1), "05:00:00", sep=" "), "odd", 60.0),  # sorts inside, the next day
           (at(inside, "00:30:00", "+02:00"), "odd", 70.0)]         # 22:30Z the day before
    make_db(tmp_path / "opp.db", filler + odd)
    sqlite3.connect(tmp_path / "opp.db").execute("CREATE INDEX at_time ON opportunities (found_at)").connection.commit()
    found = figures_for(tmp_path, database="sqlite://opp.db")
    if day == "day":  # 22:30Z the day before counts there; the other two in no day
        expected = {"opportunities_found": 24, "before": 25, "best": 1.0, "odd": None}
    else:             # 00:30Z and 05:00 of DAY count in DAY; 22:30Z two days back in none
        expected = {"opportunities_found": 26, "before": 24, "best": 60.0, "odd": 2}
    assert found["opportunities_found"] == expected["opportunities_found"]
    assert found["previous"]["opportunities_found"] == expected["before"]
    assert found["top_opportunities"][0]["roi"] == expected["best"]
    assert found["sources"].get("odd") == expected["odd"]
    assert sum(found["sources"].values()) == found["opportunities_found"]


@pytest.mark.parametrize("count", [1, database.FILTERED_SOURCES, MANY])
def test_every_source_is_counted_whatever_their_number(tmp_path, count):
    rows = [(at(DAY, f"{i % 24:02d}:{i % 60:02d}:00", "+00:00"), f"scraper-{i % count}", float(i))
            for i in range(10 * count)]
    rows += [(at(DAY, "12:00:00", "+00:00"), None, 1.0), (at(BEFORE, "12:00:00", "+00:00"), "yesterday-only", 1.0)]
    make_db(tmp_path / "opp.db", rows)
    found = figures_for(tmp_path, database="sqlite://opp.db")
    assert found["sources"] == {f"scraper-{i}": 10 for i in range(count)}
    assert found["opportunities_found"] == 10 * count + 1  # the row without a source counts, as no source
    plain = "SELECT found_at AS time, source, roi FROM opportunities WHERE found_at >= :start AND found_at < :end"
    assert figures_for(tmp_path, database="sqlite://opp.db", query=plain) == found


def test_a_user_query_that_returns_other_rows_each_time_still_adds_up(tmp_path):
    # Sources listed by one statement and counted by the next: a query that picks other
    # rows each time must not lose the ones it did not list.
    make_db(tmp_path / "opp.db", [(at(DAY, f"{h:02d}:00:00"), f"src-{h}", float(h)) for h in range(8)])
    query = ("SELECT * FROM (SELECT found_at AS time, source, roi FROM opportunities "
             "WHERE found_at >= :start AND found_at < :end ORDER BY random() LIMIT 4)")
    for _ in range(5):
        found = figures_for(tmp_path, database="sqlite://opp.db", query=query)
        assert sum(found["sources"].values()) == found["opportunities_found"] == 4


def test_the_day_is_cut_at_midnight_of_the_report_timezone(tmp_path):
    # Paris is UTC+1 in November: its day starts at 23:00Z the evening before.
    rows = [(at(BEFORE, "23:00:00", "Z"), "s", 1.0), (at(DAY, "00:30:00", "+01:00"), "s", 1.0),
            (at(DAY, "22:59:59", "Z"), "s", 1.0), (at(DAY, "23:00:00", "Z"), "s", 1.0),
            (at(BEFORE, "22:59:59", "Z"), "s", 1.0)]
    make_db(tmp_path / "opp.db", rows)
    found = figures_for(tmp_path, tz=PARIS, database="sqlite://opp.db", timezone="Europe/Paris")
    assert (found["opportunities_found"], found["previous"]["opportunities_found"]) == (3, 1)
    assert found["top_opportunities"][0]["time"].endswith("+01:00")  # shown in the report's zone


def test_epoch_times_are_counted_by_instant(tmp_path):
    start = datetime.combine(DAY, datetime.min.time(), timezone.utc).timestamp()
    rows = [(start, "s", 1.0), (start + 86399.5, "s", 3.0), (start + 86400, "s", 9.0), (start - 1, "s", 7.0),
            (int(start) + 3600, "t", None)]
    make_db(tmp_path / "opp.db", rows, types=("REAL", "TEXT", "REAL"))
    found = figures_for(tmp_path, database="sqlite://opp.db", time_format="epoch")
    assert (found["opportunities_found"], found["avg_roi"], found["roi_missing"]) == (3, 2.0, 1)
    assert found["previous"] == {"opportunities_found": 1, "avg_roi": 7.0}
    assert found["top_opportunities"][0] == {"time": at(DAY, "23:59:59.500000", "+00:00"), "source": "s",
                                             "roi": 3.0}


def test_a_user_query_gets_start_and_end(tmp_path):
    conn = sqlite3.connect(tmp_path / "deals.db")
    conn.execute("CREATE TABLE deals (ts TEXT, venue TEXT, gain REAL, test INTEGER)")
    conn.executemany("INSERT INTO deals VALUES (?, ?, ?, ?)", [
        (at(DAY, "10:00:00", "+00:00"), "uniswap", 2.0, 0), (at(DAY, "11:00:00", "+00:00"), "curve", 4.0, 0),
        (at(DAY, "12:00:00", "+00:00"), "uniswap", 99.0, 1),  # a test row the query leaves out
        (at(BEFORE, "12:00:00", "+00:00"), "curve", 1.0, 0)])
    conn.commit()
    conn.close()
    query = ("SELECT ts AS time, venue AS source, gain AS roi FROM deals "
             "WHERE test = 0 AND julianday(ts) >= julianday(:start) AND julianday(ts) < julianday(:end)")
    found = figures_for(tmp_path, database="sqlite://deals.db", query=query)
    assert (found["opportunities_found"], found["avg_roi"]) == (2, 3.0)
    assert found["previous"] == {"opportunities_found": 1, "avg_roi": 1.0}
    assert [o["source"] for o in found["top_opportunities"]] == ["curve", "uniswap"]


def test_identifiers_are_quoted_so_a_table_named_order_works(tmp_path):
    make_db(tmp_path / "opp.db", day_rows(DAY, [1.0, 3.0]), table="order", columns=("when", "group", "select"))
    found = figures_for(tmp_path, database=f"sqlite://{tmp_path}/opp.db", table="order",
                        columns={"time": "when", "source": "group", "roi": "select"})
    assert (found["opportunities_found"], found["avg_roi"]) == (2, 2.0)


def test_sqlite_urls_relative_absolute_and_sqlalchemy_style_read_the_same_file(tmp_path):
    (tmp_path / "data dir#1").mkdir()
    make_db(tmp_path / "data dir#1" / "opp?.db", day_rows(DAY, [1.0, 3.0]))
    for url in ("sqlite://data dir#1/opp?.db", f"sqlite://{tmp_path}/data dir#1/opp?.db",
                f"sqlite:///{tmp_path}/data dir#1/opp?.db"):
        assert figures_for(tmp_path, database=url)["opportunities_found"] == 2, url


def test_a_missing_database_file_is_named(tmp_path):
    with pytest.raises(figures.ReportError, match=r"report.database: .*nowhere\.db does not exist"):
        figures_for(tmp_path, database="sqlite://nowhere.db")
    assert not (tmp_path / "nowhere.db").exists()


@pytest.mark.parametrize("settings, reason", [
    ({"table": "opportunity"}, r"report.table: no such table: opportunity"),
    ({"columns": {"time": "found_on"}}, r"report.columns: no such column: found_on"),
    ({"columns": {"roi": "profit"}}, r"report.columns: no such column: profit"),
])
def test_a_missing_table_or_column_is_named(tmp_path, settings, reason):
    make_db(tmp_path / "opp.db", day_rows(DAY, [1.0]))
    with pytest.raises(figures.ReportError, match=reason):
        figures_for(tmp_path, database="sqlite://opp.db", **settings)


@pytest.mark.parametrize("wal", [False, True], ids=["rollback-journal", "wal"])
def test_the_database_is_only_read(tmp_path, wal):
    path = make_db(tmp_path / "opp.db", day_rows(DAY, [1.0, 2.0]), wal=wal)
    before = hashlib.sha256(path.read_bytes()).hexdigest(), os.stat(path).st_mtime_ns
    assert figures_for(tmp_path, database="sqlite://opp.db")["opportunities_found"] == 2
    assert (hashlib.sha256(path.read_bytes()).hexdigest(), os.stat(path).st_mtime_ns) == before
    assert sorted(os.listdir(tmp_path)) == ["opp.db"]  # no -journal, -wal or -shm left behind


def test_a_slow_database_holds_up_neither_the_error_count_nor_the_report(tmp_path, monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(figures, "business_figures", lambda *args: release.wait(30) and {})
    cfg = report_cfg(tmp_path, database="sqlite://opp.db")
    probe = business.ReportProbe(cfg, str(tmp_path / "logs"), figures.window_for(DAY, UTC), str(tmp_path))
    stuck = threading.Thread(target=probe.business, daemon=True)
    stuck.start()
    try:
        done = {}
        others = threading.Thread(target=lambda: done.update(errors=business.errors(probe), report=probe.report()),
                                  daemon=True)
        others.start()
        others.join(5)
        assert done, "the error count waited for the database"
        assert done["errors"].status == OK
        report, missing = done["report"]
        assert report["health"]["runs_expected"] == 288 and report["opportunities_found"] is None
        assert missing == ["report.database: no answer in time"]
    finally:
        release.set()
        stuck.join(5)


# --- errors in the logs -----------------------------------------------------------------------

def count(tmp_path, patterns=("logs/*.log",), day=DAY, tz=UTC):
    return figures.count_errors([str(tmp_path / p) for p in patterns], figures.window_for(day, tz))


def jline(**record) -> str:
    return json.dumps(record) + "\n"


def test_json_error_records_are_counted_whatever_the_field_names(tmp_path):
    (tmp_path / "logs").mkdir()
    noon = datetime.combine(DAY, datetime.min.time(), timezone.utc) + timedelta(hours=12)
    (tmp_path / "logs" / "app.log").write_text("".join([
        jline(levelname="ERROR", asctime=at(DAY, "10:00:00,123", sep=" "), message="a"),
        jline(level="CRITICAL", timestamp=at(DAY, "11:00:00", "Z"), message="b"),
        jline(level="error", time=at(DAY, "12:00:00", "+00:00"), msg="structlog writes lower case"),
        jline(level="ERROR", time=noon.timestamp(), msg="epoch seconds"),
        jline(level="critical", time=int(noon.timestamp() * 1000), msg="epoch milliseconds (pino)"),
        jline(levelname="INFO", asctime=at(DAY, "10:00:00"), message="no ERROR here"),
        jline(levelname="WARNING", asctime=at(DAY, "10:00:00"), message="a CRITICAL word in a warning"),
    ]))
    found = count(tmp_path)
    assert (found["count"], found["error"], found["critical"], found["unparseable_lines"]) == (5, 3, 2, 0)


def test_plain_text_error_lines_are_counted(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "scraper.log").write_text(
        f"{at(DAY, '10:00:00', sep=' ')} ERROR fetch failed\n"
        f"{at(DAY, '10:00:00,123')} CRITICAL database gone\n"
        f"[{at(DAY, '11:00:00.5', 'Z')}] [ERROR] bracketed\n"
        f"{at(DAY, '12:00:00', sep=' ')} INFO an ERROR in the text of an info line\n"
        f"  Traceback line mentioning ERROR\n")
    found = count(tmp_path)
    assert (found["count"], found["error"], found["critical"]) == (3, 2, 1)


def test_a_line_with_both_error_and_critical_counts_once(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "app.log").write_text(
        f"{at(DAY, '10:00:00', sep=' ')} ERROR retrying after a CRITICAL failure\n"
        + jline(levelname="CRITICAL", asctime=at(DAY, "11:00:00"), message="ERROR ERROR CRITICAL"))
    found = count(tmp_path)
    assert (found["count"], found["error"], found["critical"]) == (2, 1, 1)


def test_gz_archives_are_included_and_records_outside_the_window_are_not(tmp_path):
    archive = tmp_path / "logs" / "archive"
    archive.mkdir(parents=True)
    record = lambda day, clock: jline(levelname="ERROR", asctime=at(day, clock, "+00:00"), message="x")  # noqa: E731
    (tmp_path / "logs" / "app.log").write_text(record(DAY, "20:00:00") + record(DAY + timedelta(days=1), "00:00:00"))
    (tmp_path / "logs" / "app.log.gz").write_bytes(gzip.compress(record(DAY, "19:00:00").encode()))
    (archive / f"app-{DAY}.log.gz").write_bytes(gzip.compress(
        (record(DAY, "00:00:00") + record(DAY, "08:00:00")).encode()))
    (archive / f"app-{BEFORE}.log.gz").write_bytes(gzip.compress(
        (record(BEFORE, "23:59:59") + record(DAY, "00:00:01")).encode()))
    found = count(tmp_path)
    assert found["count"] == 5
    assert found["per_file"] == {str(tmp_path / "logs" / "app.log"): 1, str(tmp_path / "logs" / "app.log.gz"): 1,
                                 str(archive / f"app-{DAY}.log.gz"): 2, str(archive / f"app-{BEFORE}.log.gz"): 1}


def test_a_corrupt_archive_is_reported_not_fatal_and_old_archives_are_not_read(tmp_path):
    archive = tmp_path / "logs" / "archive"
    archive.mkdir(parents=True)
    data = gzip.compress(jline(levelname="ERROR", asctime=at(DAY, "10:00:00")).encode() * 2000)
    (archive / f"app-{DAY}.log.gz").write_bytes(data[:30] + b"\0" * 40 + data[70:])
    (archive / "app-2026-01-01.log.gz").write_bytes(b"not gzip at all")  # months old: skipped
    (tmp_path / "logs" / "app.log").write_text(jline(levelname="ERROR", asctime=at(DAY, "11:00:00")))
    found = count(tmp_path)
    assert found["count"] >= 1
    assert [u.split(":")[0] for u in found["unreadable"]] == [str(archive / f"app-{DAY}.log.gz")]
    cfg = report_cfg(tmp_path, error_logs=["logs/*.log"])
    probe = business.ReportProbe(cfg, str(tmp_path / "logs"), figures.window_for(DAY, UTC), str(tmp_path))
    result = business.errors(probe)
    assert result.status == WARNING and f"app-{DAY}.log.gz" in result.message


def test_binary_garbage_and_a_10_mb_line_do_not_crash_and_are_counted_as_unparseable(tmp_path):
    (tmp_path / "logs").mkdir()
    garbage = bytes(range(256)) * 64 + b"\n{\xff\xfe ERROR \x00\x01}\n" + os.urandom(100_000).replace(b"\n", b"x")
    huge = b'{"levelname": "ERROR", "asctime": "' + at(DAY, "09:00:00").encode() + b'", "message": "' \
        + b"x" * (10 * 1024 * 1024) + b'"}\n'
    after = jline(levelname="ERROR", asctime=at(DAY, "10:00:00")).encode()
    (tmp_path / "logs" / "app.log").write_bytes(garbage + b"\n" + huge + after + b"\x00\x9c garbage ERROR\n")
    found = count(tmp_path)
    assert found["count"] == 1                 # the record after the garbage is still found
    # The broken JSON, the truncated 10 MB line, and the last line: its first level word is
    # ERROR (an error record by the plain rule) and it has no time to place it in the day.
    assert found["unparseable_lines"] == 3


def test_error_lines_across_read_chunks_are_each_found_once(tmp_path):
    (tmp_path / "logs").mkdir()
    lines = []
    for i in range(40_000):  # ~3.5 MB: several 1 MiB chunks, lines cut at every boundary
        level = "ERROR" if i % 7 == 0 else "CRITICAL" if i % 11 == 0 else "INFO"
        lines.append(jline(levelname=level, asctime=at(DAY, f"{i % 24:02d}:00:00"), message="y" * (i % 50)))
    (tmp_path / "logs" / "big.log").write_text("".join(lines))
    found = count(tmp_path)
    errors = sum(1 for i in range(40_000) if i % 7 == 0)
    criticals = sum(1 for i in range(40_000) if i % 7 and i % 11 == 0)
    assert (found["error"], found["critical"], found["unparseable_lines"]) == (errors, criticals, 0)


def test_json_lines_count_by_their_level_field_in_every_spelling_not_by_words_in_messages(tmp_path):
    (tmp_path / "logs").mkdir()
    records = [
        '{"levelname": "ERROR", "asctime": "%s"}' % at(DAY, "01:00:00"),
        '{"level":"error","time":"%s"}' % at(DAY, "02:00:00", "Z"),                  # compact (zap, pino)
        '{"level" : "CRITICAL", "timestamp": "%s"}' % at(DAY, "03:00:00"),           # spaced
        '{"msg": "x", "level":\t"Critical", "time": "%s"}' % at(DAY, "04:00:00"),   # a tab, title case
        '{"levelname": "INFO", "asctime": "%s", "message": "retried after an error: \\"ERROR\\""}'
        % at(DAY, "05:00:00"),
        '{"level": "warning", "time": "%s", "msg": "critical path slow, error rate 2%%"}' % at(DAY, "06:00:00"),
        '{"levelname": "INFO", "asctime": "%s", "message": "error' % at(DAY, "07:00:00"),  # cut short, not an error
        '{"levelname": "ERROR", "asctime": "%s", "message": "cut' % at(DAY, "08:00:00"),   # cut short, an error
    ]
    (tmp_path / "logs" / "app.log").write_text("\n".join(records) + "\n")
    found = count(tmp_path)
    assert (found["error"], found["critical"], found["unparseable_lines"]) == (2, 2, 1)


# --- health -----------------------------------------------------------------------------------

def run_record(when: datetime, status: str, checks: dict, tz=UTC) -> str:
    return jline(asctime=when.astimezone(tz).isoformat(timespec="milliseconds"), levelname="INFO",
                 message=f"health run: {status}", event="run", command="health", overall_status=status,
                 checks=checks, duration_ms=50.0, host="vps-1", environment="prod")


def test_health_counts_runs_percent_ok_incidents_and_downtime_per_check(tmp_path):
    start = datetime.combine(DAY, datetime.min.time(), timezone.utc)
    lines, archived = [], []
    for i in range(288):
        if 100 <= i < 110:  # 10 runs missed (a reboot)
            continue
        vault = "critical" if 20 <= i < 23 or i == 40 else "ok"
        disk = "warning" if i == 200 else "ok"
        checks = {"cpu": "ok", "vault": vault, "disk:/": disk}
        status = "critical" if vault != "ok" else "warning" if disk != "ok" else "ok"
        (archived if i < 144 else lines).append(run_record(start + timedelta(minutes=5 * i), status, checks))
    lines.insert(5, jline(asctime=at(DAY, "12:00:00"), levelname="ERROR", message="vault critical", event="check"))
    lines.append(run_record(start + timedelta(days=1), "critical", {"cpu": "critical"}))  # the next day
    (tmp_path / "health.log").write_text("".join(lines))
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / f"health-{DAY}.log.gz").write_bytes(gzip.compress("".join(archived).encode()))
    (tmp_path / "archive" / f"backup-{DAY}.log.gz").write_bytes(gzip.compress(run_record(start, "ok", {}).encode()))
    health = figures.health_summary(str(tmp_path), figures.window_for(DAY, UTC))
    assert (health["runs_seen"], health["runs_expected"]) == (278, 288)
    assert health["percent_ok"] == round(100 * 273 / 278, 1)
    assert health["incidents"] == {"vault": {"incidents": 2, "downtime_seconds": 4 * 300},
                                   "disk:/": {"incidents": 1, "downtime_seconds": 300}}


# --- the message --------------------------------------------------------------------------------

def rendered(tmp_path, template="", **report):
    make_db(tmp_path / "opp.db", day_rows(DAY, [1.5, 2.5], sources=("<b>&evil", "uniswap")))
    cfg = report_cfg(tmp_path, database="sqlite://opp.db", template=template, **report)
    probe = business.ReportProbe(cfg, str(tmp_path / "logs"), figures.window_for(DAY, UTC), str(tmp_path))
    probe.business()
    probe.errors()
    data, missing = probe.report()
    return render(data, missing, host="vps-<1>", environment="prod", warning=False, min_opportunities=1,
                  template_path=cfg["template"])


def test_the_built_in_message_escapes_every_value(tmp_path):
    text = rendered(tmp_path, expected_sources=["<i>gone"])
    assert html_error(text) is None
    assert "&lt;b&gt;&amp;evil" in text and "&lt;i&gt;gone" in text and "vps-&lt;1&gt;" in text
    assert "<b>&evil" in html_to_plain(text)


def test_a_template_that_raises_falls_back_to_the_built_in_and_says_so(tmp_path):
    for body in ("{{ 1/0 }}", "{{ no_such_thing.attribute }}"):
        (tmp_path / "custom.j2").write_text(body)
        text = rendered(tmp_path, template="custom.j2")
        assert text.startswith("ℹ️ INFO <b>Daily report</b>")
        assert "custom template failed" in text
        (tmp_path / "opp.db").unlink()


def test_validate_template_names_the_file_and_the_line(tmp_path):
    good, bad = tmp_path / "good.j2", tmp_path / "bad.j2"
    good.write_text("{{ header }} {{ report.opportunities_found }}\n")
    bad.write_text("line one\n{% if report %}\n{{ report.errors.count }\n{% endif %}\n")
    assert validate_template(str(good)) is None
    assert validate_template("") is None
    error = validate_template(str(bad))
    assert error.startswith(f"report.template: {bad} line 3: ")
    assert "\n" not in error
    assert validate_template(str(tmp_path / "missing.j2")) == \
        f"report.template: {tmp_path / 'missing.j2'}: cannot read: No such file or directory"


# --- the command line -------------------------------------------------------------------------

REPORT_TOML = """[report]
database = "sqlite://opp.db"
min_opportunities = {minimum}
expected_sources = ["uniswap", "<b>&evil"]
timezone = "UTC"
chart = false
{extra}
"""


def installation(tmp_path, rois=(1.5, 2.5, 4.0), minimum=2, extra="", telegram=None) -> str:
    make_db(tmp_path / "opp.db", day_rows(DAY, rois, sources=("uniswap", "<b>&evil"))
            + day_rows(BEFORE, [1.0, 1.0]))
    text = REPORT_TOML.format(minimum=minimum, extra=extra)
    if telegram:
        text += f'\n[telegram]\nchat_ids = ["{CHAT}"]\napi_url = "{telegram.api_url}"\ntimeout = "5s"\n'
    return text


def daily(run_monitor, tmp_path, config, *args, env=None):
    return run_monitor(["daily-report", "--date", DAY.isoformat(), *args], tmp_path, config=config,
                       env={"TELEGRAM_BOT_TOKEN": TOKEN, **(env or {})}, steady_cpu=False)


@pytest.fixture
def telegram():
    with TelegramStandIn() as standin:
        yield standin


def test_json_output_carries_the_report_object(tmp_path, run_monitor, envelope):
    proc = daily(run_monitor, tmp_path, installation(tmp_path), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = envelope(proc)
    assert data["command"] == "daily-report" and data["overall_status"] == OK
    assert set(data["checks"]) == {"opportunities", "sources", "errors"}
    report = data["report"]
    assert {"opportunities_found", "avg_roi", "top_opportunities", "sources_active", "inactive_sources",
            "errors", "health", "change"} <= set(report)
    assert (report["date"], report["opportunities_found"], report["avg_roi"]) == (DAY.isoformat(), 3, 2.6667)
    assert [o["roi"] for o in report["top_opportunities"]] == [4.0, 2.5, 1.5]
    assert (report["sources_active"], report["inactive_sources"]) == (2, [])
    assert report["errors"]["count"] == 0
    assert report["health"]["runs_expected"] == 288
    assert report["change"]["opportunities"] == {"previous": 2, "delta": 1, "percent": 50.0}
    assert report["message"].startswith("ℹ️ INFO")


def test_below_min_opportunities_is_a_warning_and_exit_1(tmp_path, run_monitor, envelope):
    proc = daily(run_monitor, tmp_path, installation(tmp_path, minimum=10), "--format", "json")
    assert proc.returncode == 1, proc.stderr
    data = envelope(proc)
    assert data["checks"]["opportunities"]["status"] == WARNING
    assert "fewer than 10" in data["checks"]["opportunities"]["message"]
    assert data["report"]["message"].startswith("⚠️ WARNING")
    assert "(below 10)" in data["report"]["message"]


def test_text_format_prints_the_message_text(tmp_path, run_monitor, envelope):
    config = installation(tmp_path)
    message = envelope(daily(run_monitor, tmp_path, config, "--format", "json"))["report"]["message"]
    proc = daily(run_monitor, tmp_path, config, "--format", "text")
    assert proc.returncode == 0, proc.stderr
    assert html_to_plain(message) in proc.stdout
    assert "Opportunities: 3" in proc.stdout and "<b>&evil" in proc.stdout


@pytest.mark.parametrize("day, says", [
    ((datetime.now(timezone.utc) + timedelta(days=2)).date().isoformat(), "is not over yet"),
    ("2026-13-01", 'expected YYYY-MM-DD, got "2026-13-01"'),
])
def test_a_future_or_malformed_date_exits_3_with_one_line(tmp_path, run_monitor, day, says):
    proc = run_monitor(["daily-report", "--date", day], tmp_path, config=installation(tmp_path), steady_cpu=False)
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "--date" in proc.stderr and says in proc.stderr


def test_an_unknown_timezone_is_a_config_error(tmp_path, run_monitor):
    config = installation(tmp_path).replace('timezone = "UTC"', 'timezone = "Europe/Atlantis"')
    proc = run_monitor(["daily-report"], tmp_path, config=config, steady_cpu=False)
    assert proc.returncode == 3
    assert proc.stderr.strip() == 'config error: report.timezone: unknown time zone "Europe/Atlantis"'


def test_a_missing_database_still_reports_errors_and_health_and_exits_3(tmp_path, run_monitor, envelope):
    config = installation(tmp_path).replace("sqlite://opp.db", "sqlite://gone.db")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "scraper.log").write_text(f"{at(DAY, '10:00:00', sep=' ')} ERROR boom\n")
    proc = daily(run_monitor, tmp_path, config, "--format", "json")
    assert proc.returncode == 3, proc.stderr
    data = envelope(proc)
    assert data["checks"]["opportunities"]["status"] == UNKNOWN
    assert "gone.db does not exist" in data["checks"]["opportunities"]["message"]
    report = data["report"]
    assert report["opportunities_found"] is None and report["errors"]["count"] == 1
    assert report["health"]["runs_expected"] == 288
    assert "Not available: report.database: " in report["message"] and "Errors logged:</b> 1" in report["message"]


def test_the_report_is_sent_once_per_day_unless_forced(tmp_path, run_monitor, envelope, telegram):
    config = installation(tmp_path, telegram=telegram)
    first = daily(run_monitor, tmp_path, config, "--format", "json")
    assert first.returncode == 0, first.stderr
    assert envelope(first)["notifications"]["sent"] == 1
    assert len(telegram.delivered) == 1
    text = telegram.delivered[0].text
    assert telegram.delivered[0].parse_mode == "HTML" and html_error(text) is None
    assert text.startswith("ℹ️ INFO <b>Daily report</b>")
    assert "&lt;b&gt;&amp;evil" in text and "<b>&evil" not in text

    again = daily(run_monitor, tmp_path, config, "--format", "json")
    assert again.returncode == 0, again.stderr
    assert envelope(again)["notifications"]["sent"] == 0 and "already_sent" in envelope(again)["report"]
    assert len(telegram.received) == 1

    forced = daily(run_monitor, tmp_path, config, "--format", "json", "--force")
    assert envelope(forced)["notifications"]["sent"] == 1
    assert [r.text for r in telegram.delivered] == [text, text]


def test_a_report_without_a_bot_token_waits_in_the_outbox_and_goes_out_once(tmp_path, run_monitor, envelope,
                                                                            telegram):
    config = installation(tmp_path, telegram=telegram)
    without = daily(run_monitor, tmp_path, config, "--format", "json", env={"TELEGRAM_BOT_TOKEN": ""})
    assert envelope(without)["notifications"]["sent"] == 0 and telegram.received == []
    assert envelope(without)["notifications"]["queued"] == 1
    assert "no bot token" in without.stderr
    fixed = daily(run_monitor, tmp_path, config, "--format", "json")
    assert envelope(fixed)["notifications"]["sent"] == 1  # the kept report, not a second one
    assert len(telegram.delivered) == 1 and "already_sent" in envelope(fixed)["report"]
    assert envelope(daily(run_monitor, tmp_path, config, "--format", "json"))["notifications"]["sent"] == 0
    assert len(telegram.delivered) == 1


def test_a_warning_report_arrives_as_a_warning(tmp_path, run_monitor, envelope, telegram):
    proc = daily(run_monitor, tmp_path, installation(tmp_path, minimum=10, telegram=telegram), "--format", "json")
    assert proc.returncode == 1, proc.stderr
    assert telegram.delivered, telegram.received
    assert telegram.delivered[0].text.startswith("⚠️ WARNING <b>Daily report</b>")
    assert all(html_error(r.text) is None for r in telegram.received)


def test_a_custom_template_replaces_the_built_in(tmp_path, run_monitor, envelope):
    (tmp_path / "short.j2").write_text("{{ header }} {{ day }}: {{ report.opportunities_found }} found, "
                                       "best {{ report.top_opportunities[0].source }}\n")
    config = installation(tmp_path, rois=(9.0, 1.0), extra='template = "short.j2"')
    data = envelope(daily(run_monitor, tmp_path, config, "--format", "json"))
    assert data["report"]["message"] == f"ℹ️ INFO {DAY}: 2 found, best uniswap"


def test_a_custom_template_that_raises_falls_back_and_the_run_says_so(tmp_path, run_monitor, envelope,
                                                                      log_records):
    (tmp_path / "broken.j2").write_text("{{ report.opportunities_found / 0 }}")
    config = installation(tmp_path, extra='template = "broken.j2"')
    proc = daily(run_monitor, tmp_path, config, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    message = envelope(proc)["report"]["message"]
    assert message.startswith("ℹ️ INFO <b>Daily report</b>")
    assert "custom template failed (ZeroDivisionError); built-in used" in message
    assert any(r.get("event") == "template_failed" for r in log_records(tmp_path / "logs" / "report.log"))


def test_textfile_dir_gets_the_daily_metrics(tmp_path, run_monitor):
    (tmp_path / "prom").mkdir()
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "scraper.log").write_text(f"{at(DAY, '10:00:00', sep=' ')} ERROR boom\n" * 2)
    proc = daily(run_monitor, tmp_path, installation(tmp_path), "--format", "json",
                 "--textfile-dir", str(tmp_path / "prom"))
    assert proc.returncode == 1, proc.stderr  # two errors logged: the errors check warns
    values = {}
    for line in (tmp_path / "prom" / "monitor_daily-report.prom").read_text().splitlines():
        if line.startswith("daily_"):
            name, value = line.split(" ")
            values[name] = float(value)
    assert values == {"daily_opportunities_count": 3.0, "daily_avg_roi": 2.6667,
                      "daily_sources_active": 2.0, "daily_errors_count": 2.0}


def test_without_a_date_the_report_covers_yesterday_in_its_timezone(tmp_path, run_monitor, envelope):
    config = installation(tmp_path).replace('timezone = "UTC"', 'timezone = "Pacific/Kiritimati"')
    days = {(datetime.now(ZoneInfo("Pacific/Kiritimati")) - timedelta(days=1)).date().isoformat()}
    proc = run_monitor(["daily-report", "--format", "json"], tmp_path, config=config, steady_cpu=False)
    days.add((datetime.now(ZoneInfo("Pacific/Kiritimati")) - timedelta(days=1)).date().isoformat())
    report = envelope(proc)["report"]
    assert report["date"] in days and report["timezone"] == "Pacific/Kiritimati"
    assert report["window"]["start"].endswith("+14:00")


def test_a_warning_report_is_one_ringing_message_that_does_not_repeat_its_own_warnings(
        tmp_path, run_monitor, envelope, telegram):
    config = installation(tmp_path, minimum=10, telegram=telegram)
    proc = daily(run_monitor, tmp_path, config, "--format", "json")
    assert proc.returncode == 1, proc.stderr
    assert envelope(proc)["notifications"]["sent"] == 1
    assert len(telegram.delivered) == 1
    message = telegram.delivered[0]
    assert message.text.startswith("⚠️ WARNING <b>Daily report</b>")
    assert "(below 10)" in message.text  # the report says it ...
    assert "<b>opportunities</b>" not in message.text  # ... and no alert block repeats it
    assert message.text.count("WARNING") == 1
    assert message.disable_notification is False
    # Told by the report: the next day's run does not alert about it as new either.
    assert json.loads((tmp_path / "state" / "alerts.json").read_text())["checks"]["opportunities"]["notified_status"]


def test_a_resolved_business_alert_still_appears_under_the_report(tmp_path, run_monitor, envelope, telegram):
    config = installation(tmp_path, minimum=10, telegram=telegram)
    daily(run_monitor, tmp_path, config, "--format", "json")
    proc = daily(run_monitor, tmp_path, config.replace("min_opportunities = 10", "min_opportunities = 2"),
                 "--format", "json", "--force")
    assert proc.returncode == 0, proc.stderr
    assert len(telegram.delivered) == 2
    text = html_to_plain(telegram.delivered[1].text)
    assert text.startswith("ℹ️ INFO Daily report")
    assert "✅ RESOLVED" in text and "opportunities ok again" in text


def test_the_best_five_show_hh_mm_and_a_200_kb_source_is_clipped_to_one_message(
        tmp_path, run_monitor, envelope, telegram):
    huge = "S" * 200_000
    config = installation(tmp_path, telegram=telegram)
    (tmp_path / "opp.db").unlink()
    make_db(tmp_path / "opp.db", day_rows(DAY, (1.5, 2.5, 4.0), sources=(huge, "uniswap")))
    proc = daily(run_monitor, tmp_path, config, "--format", "json")
    assert proc.returncode == 1, proc.stderr  # "<b>&evil" went silent
    assert len(telegram.delivered) == 1 and len(telegram.received) == 1
    plain = html_to_plain(telegram.delivered[0].text)
    best = [line for line in plain.splitlines() if line[:3] in ("1. ", "2. ", "3. ")]
    assert best == [f"1. {'S' * 63}… · ROI 4.00 · 14:02", "2. uniswap · ROI 2.50 · 07:01",
                    f"3. {'S' * 63}… · ROI 1.50 · 00:00"]
    assert envelope(proc)["report"]["top_opportunities"][0]["time"] == f"{DAY}T14:02:00+00:00"  # JSON: ISO


def test_a_report_with_thousands_of_long_lines_is_cut_to_two_messages(tmp_path):
    report = {"date": DAY.isoformat(), "timezone": "UTC", "window": {"hours": 24}, "opportunities_found": 1,
              "avg_roi": 1.0, "top_opportunities": [], "sources_active": 1, "inactive_sources": ["x" * 500] * 900,
              "errors": None, "change": {},
              "health": {"runs_seen": 1, "runs_expected": 288, "percent_ok": 0.0,
                         "incidents": {f"scraper:{i}" + "y" * 90: {"incidents": 1, "downtime_seconds": 300}
                                       for i in range(2000)}}}
    text = render(report, ["z" * 5000], host="h", environment="prod", warning=True, min_opportunities=None)
    chunks = split_message(text)
    assert len(chunks) == 2 and all(html_error(c) is None for c in chunks)
    assert "and 890 more" in text
    assert text.endswith("more line(s) left out: the report holds at most 2 messages</i>")


def test_a_source_that_is_not_utf8_or_holds_a_terminal_escape_is_reported_printable(
        tmp_path, run_monitor, envelope, telegram):
    config = installation(tmp_path, telegram=telegram)
    (tmp_path / "opp.db").unlink()
    conn = sqlite3.connect(tmp_path / "opp.db")
    conn.execute("CREATE TABLE opportunities (found_at TEXT, source TEXT, roi REAL)")
    conn.execute("INSERT INTO opportunities VALUES (?, CAST(? AS TEXT), 9.0)", (at(DAY, "12:00:00"), b"dex-\xff"))
    conn.execute("INSERT INTO opportunities VALUES (?, ?, 1.0)", (at(DAY, "13:00:00"), "uni\x1b[2Jswap"))
    conn.commit()
    conn.close()
    proc = daily(run_monitor, tmp_path, config, "--format", "json")
    assert "\x1b" not in proc.stdout
    report = envelope(proc)["report"]
    assert [o["source"] for o in report["top_opportunities"]] == ["dex-\\xff", "uni\\x1b[2Jswap"]
    plain = html_to_plain(telegram.delivered[0].text)
    assert "1. dex-\\xff · ROI 9.00 · 12:00" in plain and "2. uni\\x1b[2Jswap · ROI 1.00 · 13:00" in plain


def test_monitors_own_logs_are_not_counted_as_scraper_errors(tmp_path):
    logs = tmp_path / "logs"
    (logs / "archive").mkdir(parents=True)
    own = jline(asctime=at(DAY, "10:00:00", "+00:00"), levelname="ERROR", event="check")
    for name in ("health.log", "backup.log", "report.log"):
        (logs / name).write_text(own + "\n")
    with gzip.open(logs / "archive" / f"health-{DAY}.log.gz", "wt") as archive:
        archive.write(own + "\n")
    (logs / "scraper.log").write_text(f"{at(DAY, '11:00:00', sep=' ')} ERROR rpc timeout\n")
    window = figures.window_for(DAY, UTC)
    found = figures.count_errors([str(logs / "*.log")], window, own_logs=str(logs))
    assert found["count"] == 1 and list(found["per_file"]) == [str(logs / "scraper.log")]


def test_critical_log_records_make_the_errors_check_a_warning_not_a_page(tmp_path):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "scraper.log").write_text(f"{at(DAY, '11:00:00', sep=' ')} CRITICAL disk gone\n")
    probe = business.ReportProbe(report_cfg(tmp_path, error_logs=[str(tmp_path / "logs" / "*.log")]),
                                 str(tmp_path / "monitor-logs"), figures.window_for(DAY, UTC), str(tmp_path))
    result = business.errors(probe)
    assert (result.status, result.value) == (WARNING, 1)


def test_a_template_with_a_syntax_error_is_a_config_error_naming_the_line(tmp_path, run_monitor):
    (tmp_path / "bad.j2").write_text("hello\n{% if x %}\n{{ oops\n")
    proc = run_monitor(["daily-report"], tmp_path, config='[report]\ntemplate = "bad.j2"\n', steady_cpu=False)
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.startswith("config error: report.template: ") and " line " in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


# --- the template runs sandboxed (issue 12, item 9) ----------------------------------------

@pytest.mark.parametrize("template, line, name", [
    ("{{ cycler.__init__.__globals__.os.popen('touch PWNED').read() }}", 1, "__"),
    ("ok\n{{ joiner['__init__']['__globals__'].os.popen('touch PWNED').read() }}", 2, "__"),
    ("{{ (cycler|attr('__init__')) }}", 1, "__init__"),
    ("{% for x in range(3) %}{{ x }}{% endfor %}\n\n{{ lipsum.__globals__ }}", 3, "__globals__"),
], ids=["dotted", "subscript", "attr-filter", "third-line"])
def test_a_template_reaching_python_internals_is_a_config_error_and_runs_nothing(
        tmp_path, run_monitor, template, line, name):
    (tmp_path / "evil.j2").write_text(template)
    config = installation(tmp_path, extra='template = "evil.j2"')
    for args in (["config", "check"], ["daily-report", "--date", DAY.isoformat()], ["health", "--only", "system"]):
        proc = run_monitor(args, tmp_path, config=config, steady_cpu=False)
        assert (proc.returncode, proc.stdout) == (3, ""), proc.stderr
        assert proc.stderr.startswith(f"config error: report.template: {tmp_path / 'evil.j2'} line {line}: ")
        assert "is not allowed: report templates run sandboxed" in proc.stderr and name in proc.stderr
        assert len(proc.stderr.splitlines()) == 1
    assert not (tmp_path / "PWNED").exists()


def test_a_template_that_computes_an_internal_name_is_stopped_by_the_sandbox_while_rendering(
        tmp_path, run_monitor, envelope, log_records):
    # No internal name is written out, so only the sandbox can stop it, at 09:00.
    (tmp_path / "sly.j2").write_text("{% set u = '_' ~ '_' %}"
                                     "{{ ((cycler|attr(u ~ 'init' ~ u))|attr(u ~ 'globals' ~ u))"
                                     "['os'].popen('touch PWNED').read() }}")
    config = installation(tmp_path, extra='template = "sly.j2"')
    assert run_monitor(["config", "check"], tmp_path, config=config).returncode == 0
    proc = daily(run_monitor, tmp_path, config, "--format", "json")
    assert not (tmp_path / "PWNED").exists()
    assert proc.returncode == 0, proc.stderr
    message = envelope(proc)["report"]["message"]
    assert message.startswith("ℹ️ INFO <b>Daily report</b>")  # the built-in report still goes out
    # The sandbox hands back an undefined value for the refused attribute; the next step fails.
    assert "custom template failed (UndefinedError); built-in used" in message


def test_a_template_may_not_change_the_values_it_is_given(tmp_path, run_monitor, envelope, log_records):
    # Immutable sandbox: a template cannot empty the lists the rest of the run reads.
    (tmp_path / "mut.j2").write_text("{{ report.top_opportunities.clear() }}{{ report.top_opportunities|length }}")
    config = installation(tmp_path, extra='template = "mut.j2"')
    report = envelope(daily(run_monitor, tmp_path, config, "--format", "json"))["report"]
    assert len(report["top_opportunities"]) == 3
    assert "custom template failed (SecurityError); built-in used" in report["message"]
    records = log_records(tmp_path / "logs" / "report.log")
    assert any(r.get("event") == "template_unsafe" and r["levelname"] == "ERROR" for r in records)


def test_safe_templates_still_use_format_loops_and_the_filters(tmp_path, run_monitor, envelope):
    (tmp_path / "ok.j2").write_text("{{ '{:.1f}'.format(report.avg_roi) }} "
                                    "{{ report.top_opportunities|map(attribute='source')|list|names }} "
                                    "{% for o in report.top_opportunities %}{{ o.time|hhmm }};{% endfor %}")
    config = installation(tmp_path, extra='template = "ok.j2"')
    message = envelope(daily(run_monitor, tmp_path, config, "--format", "json"))["report"]["message"]
    assert message == "2.7 uniswap, &lt;b&gt;&amp;evil, uniswap 14:02;07:01;00:00;"


def test_values_that_are_not_utf8_are_counted_in_the_report_object_and_its_text(tmp_path, run_monitor, envelope):
    config = installation(tmp_path)
    clean = envelope(daily(run_monitor, tmp_path, config, "--format", "json"))["report"]
    assert clean["damaged_values"] == 0 and "not UTF-8" not in clean["message"]
    (tmp_path / "opp.db").unlink()
    conn = sqlite3.connect(tmp_path / "opp.db")
    conn.execute("CREATE TABLE opportunities (found_at TEXT, source TEXT, roi REAL)")
    for clock, source, roi in [("09:00:00", b"dex-\xff", 9.0), ("10:00:00", b"dex-\xff", 1.0),
                               ("11:00:00", "café".encode("latin-1"), 2.0), ("12:00:00", b"uniswap", 3.0)]:
        conn.execute("INSERT INTO opportunities VALUES (?, CAST(? AS TEXT), ?)", (at(DAY, clock), source, roi))
    conn.commit()
    conn.close()
    proc = daily(run_monitor, tmp_path, config, "--format", "json")
    report = envelope(proc)["report"]
    assert report["missing"] == [] and report["opportunities_found"] == 4
    assert report["sources"] == {"dex-\\xff": 2, "caf\\xe9": 1, "uniswap": 1}
    assert report["damaged_values"] == 2  # distinct values, however many rows hold them
    assert "<i>2 database value(s) were not UTF-8: their bytes are shown as \\xff</i>" in report["message"]
    text = daily(run_monitor, tmp_path, config, "--format", "text", "--force").stdout
    assert "2 database value(s) were not UTF-8" in text
