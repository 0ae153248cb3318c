"""The daily report's "normal" and its chart (issue 18): baselines from the 28 days before,
learned sources, the PNG, sendPhoto through the Bot API stand-in, and the outbox.

Per-day figures are checked against counts made here in Python, by instant, on SQLite
and a real PostgreSQL (tests/postgres.py), over the Paris DST weeks with gaps and rows
written in several offsets. The month of realistic data is the issue's "Done when".
"""

import json
import random
import re
import time
import sqlite3
import struct
from datetime import date, datetime, time as dtime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from monitor.report import baseline, figures
from tests.postgres import PostgresServer
from tests.test_report import CHAT, TOKEN, report_cfg
from tests.telegram_standin import TelegramStandIn, _error, server_error

PARIS = ZoneInfo("Europe/Paris")
SPRING = date(2026, 4, 2)   # reported day: the week before holds 29 March, a 23 h day
AUTUMN = date(2026, 10, 29)  # 25 October, a 25 h day, in its week


def dst_rows(report_day: date, seed: int = 3) -> list[tuple[str, str, float]]:
    """Rows over the 30 days before `report_day` (gaps on two days), near local midnights, in
    UTC text, "+02:00"/"+01:00" offsets, a space and "Z", so each spelling meets the day cut."""
    rng = random.Random(seed)
    rows = []
    for back in range(0, 31):
        day = report_day - timedelta(days=back)
        if back in (4, 11):  # gaps: no data at all
            continue
        for i in range(20 + back % 5):
            local = datetime.combine(day, dtime(0), PARIS) + timedelta(minutes=rng.choice([i, 30, 700, 1439 - i]))
            when = local.astimezone(timezone.utc)
            shape = i % 4
            text = (when.strftime("%Y-%m-%dT%H:%M:%SZ") if shape == 0 else local.isoformat() if shape == 1
                    else when.strftime("%Y-%m-%d %H:%M:%S") if shape == 2 else when.strftime("%Y-%m-%dT%H:%M:%S"))
            rows.append((text, ["uniswap", "curve", "balancer"][i % 3], round(rng.uniform(0.5, 9), 3)))
    return rows


def truth(rows, report_day: date) -> dict:
    """Rows and ROI sums per local day, by instant (naive text is UTC)."""
    out = {}
    for text, source, roi in rows:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        day = when.astimezone(PARIS).date()
        count, total = out.get(day, (0, 0.0))
        out[day] = (count + 1, total + roi)
    return out


def make_sqlite(path, rows):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE opportunities (found_at TEXT, source TEXT, roi REAL)")
    conn.execute("CREATE INDEX opportunities_found_at ON opportunities (found_at)")
    conn.executemany("INSERT INTO opportunities VALUES (?, ?, ?)", rows)
    conn.commit()
    conn.close()


def assert_history_is_exact(found, rows, report_day):
    expected = truth(rows, report_day)
    days = found["history"]["days"]
    assert len(days) == 28
    for back, entry in enumerate(days, start=1):
        day = report_day - timedelta(days=back)
        assert entry["day"] == day.isoformat()
        assert entry["count"] == expected.get(day, (0, 0))[0], day
        if entry["roi_read"]:
            assert entry["roi_sum"] == pytest.approx(expected.get(day, (0, 0.0))[1]), day
    assert found["opportunities_found"] == expected[report_day][0]
    assert found["previous"]["opportunities_found"] == expected.get(report_day - timedelta(days=1), (0,))[0]


@pytest.mark.parametrize("report_day", [SPRING, AUTUMN], ids=str)
def test_days_before_are_cut_at_local_midnight_across_dst_and_offsets_in_sqlite(tmp_path, report_day):
    rows = dst_rows(report_day)
    make_sqlite(tmp_path / "opp.db", rows)
    cfg = report_cfg(tmp_path, database="sqlite://opp.db", timezone="Europe/Paris")
    found = figures.business_figures(cfg, figures.window_for(report_day, PARIS), str(tmp_path))
    assert_history_is_exact(found, rows, report_day)
    assert found["history"]["days"][3]["count"] == 0  # the gap
    # UTC text only: the same days through the plain text ranges.
    make_sqlite(tmp_path / "utc.db", [(utc_text(t), s, r) for t, s, r in rows])
    cfg = report_cfg(tmp_path, database="sqlite://utc.db", timezone="Europe/Paris")
    assert rounded(figures.business_figures(cfg, figures.window_for(report_day, PARIS), str(tmp_path))["history"]) \
        == rounded(found["history"])


def rounded(history: dict) -> dict:
    """The history with ROI sums rounded: sums of the same floats in another order differ in the last bits."""
    return {**history, "days": [{**d, "roi_sum": round(d["roi_sum"], 6)} for d in history["days"]]}


def utc_text(text: str) -> str:
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def pg():
    with PostgresServer() as server:
        server.execute(server.database,
                       "CREATE TABLE opportunities (found_at timestamptz NOT NULL, source text, roi numeric(12, 4))",
                       "CREATE INDEX ON opportunities (found_at)",
                       "CREATE TABLE texts (found_at text, source text, roi double precision)")
        with server.connect() as conn:
            rows = [(utc_text(t), s, r) for day in (SPRING, AUTUMN) for t, s, r in dst_rows(day)]
            conn.cursor().executemany("INSERT INTO opportunities VALUES (%s, %s, %s)", rows)
            conn.cursor().executemany("INSERT INTO texts VALUES (%s, %s, %s)", rows)
        yield server


@pytest.mark.parametrize("table", ["opportunities", "texts"])
@pytest.mark.parametrize("report_day", [SPRING, AUTUMN], ids=str)
def test_days_before_are_cut_at_local_midnight_across_dst_in_postgres(pg, tmp_path, report_day, table):
    rows = [(utc_text(t), s, r) for day in (SPRING, AUTUMN) for t, s, r in dst_rows(day)]
    cfg = report_cfg(tmp_path, database=pg.url, table=table, timezone="Europe/Paris")
    found = figures.business_figures(cfg, figures.window_for(report_day, PARIS), str(tmp_path))
    assert_history_is_exact(found, rows, report_day)
    make_sqlite(tmp_path / "same.db", rows)
    cfg = report_cfg(tmp_path, database="sqlite://same.db", timezone="Europe/Paris")
    assert rounded(figures.business_figures(cfg, figures.window_for(report_day, PARIS), str(tmp_path))["history"]) \
        == rounded(found["history"])


# --- the medians and the learned sources (plain data) --------------------------------------------

def history_of(counts, sources=None):
    days = [{"day": f"d{i}", "count": c, "roi_sum": 2.0 * c, "with_roi": c, "roi_read": True} for i, c in
            enumerate(counts)]
    return {"days": days + [{"day": "x", "count": 0, "roi_sum": 0, "with_roi": 0, "roi_read": False}] * (28 - len(days)),
            "sources": sources or []}


def test_two_broken_weeks_of_four_do_not_excuse_a_real_drop_on_that_weekday():
    """Two half-broken Wednesdays among the last four gave a same-weekday median of 650 (the
    mean of 1000 and 300), and a day at 500 (-50 % of the week's 1000) was judged normal for
    the weekday: silent where it should warn. The higher middle value is the baseline."""
    week = [1000] * 6 + [1000] + [1000] * 6 + [1000] + [1000] * 6 + [300] + [1000] * 6 + [300]
    usual = baseline.baselines(history_of(week), 500, 2.0, drop=0.4)["opportunities"]
    assert (usual["median_7d"], usual["same_weekday"], usual["effective"]) == (1000, 1000, 1000)
    assert baseline.below(500, usual, 0.4) and usual["weekday_normal"] is False
    # Three quiet weekdays of four: a quiet day is that weekday's normal.
    week = [1000] * 6 + [300] + [1000] * 6 + [300] + [1000] * 6 + [300] + [1000] * 6 + [1000]
    usual = baseline.baselines(history_of(week), 300, 2.0, drop=0.4)["opportunities"]
    assert usual["same_weekday"] == 300 and not baseline.below(300, usual, 0.4) and usual["weekday_normal"]


def test_the_7_day_median_counts_only_days_with_data_and_needs_three():
    assert baseline.baselines(history_of([100, 0, 0, 0, 0, 0, 300]), 90, 2.0)["enough"] is False
    found = baseline.baselines(history_of([100, 0, 180, 0, 200, 0, 0]), 90, 2.0)
    assert found["opportunities"] == {"median_7d": 180, "same_weekday": None, "percent": -50.0, "effective": 180}
    assert found["avg_roi"]["median_7d"] == 2.0


def test_the_effective_baseline_is_the_lower_median_and_says_when_the_weekday_made_the_day_normal():
    # Day -7 (index 6) is the same weekday: 4 weeks of quiet Saturdays under busy weekdays.
    week = [280, 290, 282, 275, 300, 285, 160] + [280] * 6 + [165] + [280] * 6 + [163] + [280] * 6 + [150]
    found = baseline.baselines(history_of(week), 151, 2.0, drop=0.4)
    usual = found["opportunities"]
    # The four Saturdays 160, 165, 163, 150: the higher middle one of an even count.
    assert (usual["median_7d"], usual["same_weekday"], usual["effective"]) == (282, 163, 163)
    assert usual["weekday_normal"] is True and not baseline.below(151, usual, 0.4)
    # Below both: not normal for the weekday either.
    usual = baseline.baselines(history_of(week), 90, 2.0, drop=0.4)["opportunities"]
    assert usual["weekday_normal"] is False and baseline.below(90, usual, 0.4)
    # A weekday above its own median: the 7-day one is the lower and the one judged by.
    assert baseline.baselines(history_of([100, 100, 100, 100, 100, 100, 300] * 4), 100, 2.0)["opportunities"][
        "effective"] == 100


def test_a_quiet_weekday_that_is_usual_for_that_weekday_is_not_below_the_baseline():
    usual = {"median_7d": 300, "same_weekday": 150}
    assert not baseline.below(140, usual, 0.4)  # a Sunday like the Sundays before
    assert baseline.below(70, usual, 0.4)       # below both


def test_a_source_silent_after_5_of_7_days_is_learned_and_a_sharp_drop_is_named():
    recent = [{"a": 10, "b": 50, "c": 5}] * 4 + [{"a": 10, "b": 50}] + [{}] * 2
    silent, dropped = baseline.learned_sources({"sources": recent}, {"b": 12, "c": 2})
    assert silent == ["a"]  # c: 2 is not under 30 % of its median 5
    assert dropped == [{"source": "b", "count": 12, "median_7d": 50}]


# --- the chart ------------------------------------------------------------------------------------

def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def dst_report(day: str, hours: int, **extra) -> dict:
    """A report object for a Paris day of `hours` hours, as ReportProbe builds it for the chart."""
    window = figures.window_for(date.fromisoformat(day), PARIS)
    start, end = window.start, window.end
    assert window.hours == hours
    days = [{"day": (date.fromisoformat(day) - timedelta(days=13 - i)).isoformat(), "count": c}
            for i, c in enumerate([300] * 6 + [0] + [290] * 6 + [151])]
    return {"date": day, "timezone": "Europe/Paris", "hourly": [3] * hours, "last_days": days,
            "window": {"start": start.isoformat(), "end": end.isoformat(), "hours": hours},
            "baseline": {"opportunities": {"median_7d": 300, "percent": -49.7}}, **extra}


@pytest.mark.parametrize("day, hours, positions, labels", [
    # 02:00-03:00 comes twice: 03:00 starts the fifth bar.
    ("2026-10-25", 25, [0, 4, 7, 10, 13, 16, 19, 22, 25], ["00", "03", "06", "09", "12", "15", "18", "21", "24"]),
    # 02:00 never comes: 03:00 starts the third bar.
    ("2026-03-29", 23, [0, 2, 5, 8, 11, 14, 17, 20, 23], ["00", "03", "06", "09", "12", "15", "18", "21", "24"]),
    ("2026-03-18", 24, [0, 3, 6, 9, 12, 15, 18, 21, 24], ["00", "03", "06", "09", "12", "15", "18", "21", "24"]),
], ids=["25h", "23h", "24h"])
def test_the_hours_are_labelled_in_local_clock_time_on_dst_days(day, hours, positions, labels):
    from monitor.report import chart

    spans = [["2026-10-25T02:30:00+02:00", "2026-10-25T02:20:00+01:00"],   # the first 02:30 to the second 02:20
             ["2026-10-25T10:00:00+01:00", "2026-10-25T11:00:00+01:00"]] if hours == 25 else []
    figure = chart.draw(dst_report(day, hours, health={"down_spans": spans}), 50)
    try:
        days, hourly = figure.axes
        assert list(hourly.get_xticks()) == positions
        assert [t.get_text() for t in hourly.get_xticklabels()] == labels
        assert hourly.get_xlim() == (0, hours)
        assert str(hours) in hourly.get_xlabel() or hours == 24
        shaded = [p for p in hourly.patches if p.get_edgecolor()[:3] == p.get_facecolor()[:3]]
        # Incidents: half see-through over the bars, a solid edge; hours since the start, as the bars.
        assert [(round(p.get_x(), 2), round(p.get_x() + p.get_width(), 2)) for p in shaded] == (
            [(2.5, 3.33), (11.0, 12.0)] if spans else [])
        assert all(p.get_facecolor()[3] == 0.5 and p.get_edgecolor()[3] == 1 and p.get_linewidth() >= 2
                   and p.get_zorder() > 2 for p in shaded)
    finally:
        figure.clf()


def test_the_chart_reads_on_a_phone_and_nothing_covers_a_bar():
    """Telegram shows it ~330 points wide: ticks >= 28 px, titles >= 36 px; the legends sit above the
    bars; the reported day says its count and change; a day without any opportunity is marked."""
    from monitor.report import chart

    report = dst_report("2026-10-25", 25, health={"down_spans": [["2026-10-25T10:00:00+01:00",
                                                                  "2026-10-25T11:00:00+01:00"]]})
    figure = chart.draw(report, 50)
    try:
        px = chart.DPI / 72
        figure.canvas.draw()  # laid out as when saved
        renderer = figure.canvas.get_renderer()
        for ax in figure.axes:
            ticks = ax.get_xticklabels() + ax.get_yticklabels()
            assert min(t.get_fontsize() * px for t in ticks) >= 28
            title = ax._left_title  # matplotlib's left-aligned title (get_title gives only its text)
            assert title.get_fontsize() * px >= 36 and title.get_text() == ax.get_title(loc="left") != ""
            legend = ax.get_legend()
            assert legend is not None
            box, area = legend.get_window_extent(renderer), ax.get_window_extent(renderer)
            assert box.y0 >= area.y1 - 1  # above the plotting area, under the title
            assert box.y1 <= title.get_window_extent(renderer).y0 + 1
        days = figure.axes[0]
        said = [t.get_text() for t in days.texts]
        assert "151\n−49.7 %" in said and "0" in said
        [zero] = [line for line in days.lines if line.get_marker() == "X"]
        assert list(zero.get_xdata()) == [6] and 0 < zero.get_ydata()[0] < 20  # just above the axis
    finally:
        figure.clf()
    png = chart.render_png(report, 50)
    assert png_size(png)[0] >= 1000 and len(png) < 200 * 1024


def test_a_chart_of_nothing_is_still_a_picture():
    from monitor.report import chart

    report = {**dst_report("2026-03-18", 24), "last_days": [{"day": "2026-03-18", "count": 0}], "hourly": [],
              "baseline": {}}
    png = chart.render_png(report, None)
    assert png_size(png)[0] >= 1000


def realistic_month(path, report_day: date, seed: int = 7, events: bool = True):
    """A month: weekdays ~300 a day, weekends ~160, five sources; "pancake" dies two days
    before the reported day, and the reported day (a Wednesday) is at half its usual volume
    (without `events`, an ordinary month)."""
    rng = random.Random(seed)
    rows = []
    for back in range(0, 32):
        day = report_day - timedelta(days=back)
        usual = 300 if day.weekday() < 5 else 160
        n = int(usual * (0.5 if back == 0 and events else 1) * rng.uniform(0.94, 1.06))
        names = ["uniswap", "sushiswap", "curve", "balancer"] + (["pancake"] if back >= 2 or not events else [])
        for i in range(n):
            second = rng.randrange(86400)
            rows.append((f"{day}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z",
                         names[i % len(names)], round(rng.uniform(0.5, 8), 3)))
    make_sqlite(path, rows)


MONTH_DAY = date(2026, 3, 18)  # a Wednesday


def month_config(tmp_path, telegram=None, extra="") -> str:
    realistic_month(tmp_path / "opp.db", MONTH_DAY)
    text = (f'[report]\ndatabase = "sqlite://opp.db"\nerror_logs = []\nmin_opportunities = 50\n'
            f'expected_sources = ["uniswap"]\n{extra}')
    if telegram:
        text += f'\n[telegram]\nchat_ids = ["{CHAT}"]\napi_url = "{telegram.api_url}"\ntimeout = "10s"\n'
    return text


def month_run(run_monitor, tmp_path, config, *args, env=None):
    return run_monitor(["daily-report", "--date", MONTH_DAY.isoformat(), *args], tmp_path, config=config,
                       env={"TELEGRAM_BOT_TOKEN": TOKEN, **(env or {})}, steady_cpu=False, timeout=90)


def healthy_day(logs, day: date) -> None:
    """Every five-minute `health` run of `day` (UTC) logged, all ok: the report's health line is normal."""
    from tests.test_report import run_record

    logs.mkdir(exist_ok=True)
    start = datetime.combine(day, dtime(0), timezone.utc)
    (logs / "health.log").write_text("".join(run_record(start + timedelta(minutes=5 * i), "ok", {"cpu": "ok"})
                                             for i in range(288)))


FIGURE, SIGNED = r"\d+(?:\.\d+)?", r"[+−]\d+(?:\.\d+)?"
# The whole message, line by line: any line more (a flag, a note, a source) fails the match.
MONTH_TEXT = [
    r"⚠️ WARNING <b>Daily report</b> · .+ \(.+\)",
    r"<i>2026-03-18, UTC</i>",
    r"",
    rf"<b>Opportunities:</b> (?P<found>\d+) \(7-day median (?P<median>\d+), (?P<percent>−4\d(?:\.\d)?) %\) "
    rf"\(−\d+ vs the day before, −{FIGURE} %\)",
    rf"<b>Average ROI:</b> \d\.\d\d \(7-day median \d\.\d\d, {SIGNED} %\) \({SIGNED} vs the day before, {SIGNED} %\)",
    r"",
    r"<b>Best 5:</b>",
    *(rf"{i}\. (uniswap|sushiswap|curve|balancer) · ROI \d\.\d\d · \d\d:\d\d" for i in range(1, 6)),
    r"<b>Sources active:</b> 4 · silent: pancake",
    r"<b>Errors logged:</b> 0",
    r"<b>Health runs:</b> 288/288 · 100\.0% ok",
]


def test_a_month_of_data_calls_out_the_dead_source_and_the_half_day_and_nothing_else(tmp_path, run_monitor,
                                                                                     envelope):
    healthy_day(tmp_path / "logs", MONTH_DAY)
    (tmp_path / "prom").mkdir()
    with TelegramStandIn() as telegram:
        proc = month_run(run_monitor, tmp_path, month_config(tmp_path, telegram), "--format", "json",
                         "--textfile-dir", str(tmp_path / "prom"))
        assert proc.returncode == 1, proc.stderr
        data = envelope(proc)
        photos, texts = getattr(telegram, "photos", []), telegram.delivered
    assert {k: v["status"] for k, v in data["checks"].items()} == {
        "opportunities": "warning", "sources": "warning", "errors": "ok"}
    report = data["report"]
    assert report["learned_silent"] == ["pancake"] and report["dropped_sources"] == []
    assert report["inactive_sources"] == [] and report["missing"] == []
    usual = report["baseline"]["opportunities"]
    assert -60 < usual["percent"] < -40 and usual["weekday_normal"] is False
    # The text: the drop against the median and the silent source, every other line as usual.
    [text] = [r.text for r in texts]
    lines = text.split("\n")
    assert len(lines) == len(MONTH_TEXT), text
    for line, pattern in zip(lines, MONTH_TEXT):
        assert re.fullmatch(pattern, line), (line, pattern)
    said = re.fullmatch(MONTH_TEXT[3], lines[3])
    assert int(said["found"]) == report["opportunities_found"] and int(said["median"]) == usual["median_7d"]
    # The photo: one PNG, before the text, its caption the headline with the drop.
    [photo] = photos
    width, height = png_size(photo.png)
    assert width >= 1000 and len(photo.png) < 200 * 1024
    assert photo.content_type.startswith("multipart/form-data; boundary=")
    assert photo.status == 200 and photo.chat_id == CHAT
    assert photo.caption.startswith("⚠️ WARNING Daily report") and len(photo.caption) <= 1024
    assert f"Opportunities: {report['opportunities_found']} (7-day median {said['median']}, {said['percent']} %)" \
        in photo.caption
    assert photo.disable_notification is False  # a warning report rings, its photo too
    # The textfile: the baseline the check judged by (the lower median), as the rule sees it.
    metrics = dict(line.split(" ") for line in (tmp_path / "prom" / "monitor_daily-report.prom").read_text()
                   .splitlines() if line.startswith("daily_"))
    assert float(metrics["daily_opportunities_baseline"]) == usual["effective"] == min(usual["median_7d"],
                                                                                        usual["same_weekday"])
    roi = report["baseline"]["avg_roi"]
    assert float(metrics["daily_avg_roi_baseline"]) == pytest.approx(min(roi["median_7d"], roi["same_weekday"]))


def test_a_usual_saturday_is_normal_exports_the_weekday_baseline_and_says_which_median(tmp_path):
    """The month's Saturday: 151 against a 7-day median of 282 (−46 %), as Saturdays go (163)."""
    from monitor.checks import business
    from monitor.report import text

    realistic_month(tmp_path / "opp.db", MONTH_DAY)
    cfg = report_cfg(tmp_path, database="sqlite://opp.db", error_logs=[], min_opportunities=50)
    saturday = MONTH_DAY - timedelta(days=4)
    probe = business.ReportProbe(cfg, str(tmp_path / "logs"), figures.window_for(saturday, ZoneInfo("UTC")),
                                 str(tmp_path))
    result = business.opportunities(probe)
    assert (result.status, result.value) == ("ok", 151)
    assert result.message.endswith("(7-day median 282, -46.5 %; same weekday 163)")
    exported = {name: value for name, _, value in business.samples(result.replace(id="opportunities"))}
    assert exported["daily_opportunities_baseline"] == 163  # what OpportunitiesBelowBaseline compares with
    report, missing = probe.report()
    said = text.render(report, missing, host="vm", environment="prod", warning=False, min_opportunities=50)
    assert "<b>Opportunities:</b> 151 (7-day median 282, −46.5 %; same weekday 163, −7.4 %)" in said


@pytest.mark.parametrize("levels, status", [
    ({}, "warning"),                                                # −49 %: beyond 40 %, within 70 %
    ({"baseline_critical": 0.45}, "critical"),                      # beyond the critical drop
    ({"baseline_drop": 0.55, "baseline_critical": 0.6}, "ok"),      # within a wider warning drop
], ids=["defaults", "critical", "wider-drop"])
def test_the_half_day_is_judged_by_baseline_drop_and_baseline_critical(tmp_path, levels, status):
    from monitor.checks import business

    realistic_month(tmp_path / "opp.db", MONTH_DAY)
    cfg = report_cfg(tmp_path, database="sqlite://opp.db", error_logs=[], min_opportunities=50, **levels)
    probe = business.ReportProbe(cfg, str(tmp_path / "logs"), figures.window_for(MONTH_DAY, ZoneInfo("UTC")),
                                 str(tmp_path))
    result = business.opportunities(probe)
    assert result.status == status, result.message
    assert -55 < result.details["percent"] < -45
    assert result.details["baseline"] == min(result.details["median_7d"], result.details["same_weekday"])


def test_a_critical_drop_smaller_than_the_warning_drop_is_one_config_error(tmp_path, run_monitor):
    config = month_config(tmp_path, extra="baseline_drop = 0.5\nbaseline_critical = 0.3\n")
    for args in (["config", "check"], ["daily-report", "--date", MONTH_DAY.isoformat()]):
        proc = run_monitor(args, tmp_path, config=config, steady_cpu=False)
        assert (proc.returncode, proc.stdout) == (3, "")
        assert proc.stderr == ("config error: report.baseline_critical: 0.3 is below report.baseline_drop (0.5); "
                               "critical is the deeper drop\n")
    assert not (tmp_path / "state").exists()


def test_chart_writes_the_png_and_sends_nothing(tmp_path, run_monitor, envelope):
    with TelegramStandIn() as telegram:
        proc = month_run(run_monitor, tmp_path, month_config(tmp_path, telegram), "--chart", "out.png",
                         "--format", "json")
        assert proc.returncode == 1, proc.stderr
        assert telegram.received == [] and getattr(telegram, "photos", []) == []
    png = (tmp_path / "out.png").read_bytes()
    assert png_size(png)[0] >= 1000 and len(png) < 200 * 1024
    from matplotlib import image  # decoded back by matplotlib's own reader

    pixels = image.imread(str(tmp_path / "out.png"))
    assert pixels.shape[1] == png_size(png)[0] and pixels.shape[0] == png_size(png)[1]
    assert envelope(proc)["report"]["chart"] == "out.png"


def test_a_photo_waits_in_the_outbox_while_telegram_is_down_and_goes_later(tmp_path, run_monitor, envelope):
    with TelegramStandIn() as telegram:
        telegram.always(server_error())
        config = month_config(tmp_path, telegram)
        proc = month_run(run_monitor, tmp_path, config, "--format", "json")
        assert envelope(proc)["notifications"]["outbox"] == 2, proc.stderr  # the photo and the text
        kept = sorted(p.name for p in (tmp_path / "state").glob("outbox-photo-*.png"))
        assert len(kept) == 1
        lines = [json.loads(line) for line in (tmp_path / "state" / "outbox.jsonl").read_text().splitlines()]
        assert [line.get("photo") for line in lines] == [kept[0], None]
        telegram.always(None)
        telegram.clear()
        proc = run_monitor(["health", "--only", "system", "--format", "json"], tmp_path,
                           config=config, env={"TELEGRAM_BOT_TOKEN": TOKEN})
        assert envelope(proc)["notifications"]["outbox"] == 0, proc.stderr
        ok = [p for p in telegram.photos if p.status == 200]
    assert len(ok) == 1 and png_size(ok[0].png)[0] >= 1000
    assert not list((tmp_path / "state").glob("outbox-photo-*.png"))


def test_a_chart_telegram_refuses_is_dropped_with_one_error_and_the_text_goes_the_same_run(
        tmp_path, run_monitor, envelope, log_records):
    with TelegramStandIn() as telegram:
        telegram.photo_answer = _error(400, "Bad Request: PHOTO_INVALID_DIMENSIONS")
        config = month_config(tmp_path, telegram)
        proc = month_run(run_monitor, tmp_path, config, "--format", "json")
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr == ""  # not a configuration error: cron mails nothing
        notifications = envelope(proc)["notifications"]
        assert (notifications["sent"], notifications["outbox"]) == (1, 0)
        [text] = [r.text for r in telegram.delivered]
        assert text.startswith("⚠️ WARNING <b>Daily report</b>") and "silent: pancake" in text
        assert [p.status for p in telegram.photos] == [400]
        assert not (tmp_path / "state" / "outbox.jsonl").exists()
        assert not list((tmp_path / "state").glob("outbox-photo-*"))
        # The next run (health, 5 minutes later) finds nothing waiting: no upload again, nothing on stderr.
        proc = run_monitor(["health", "--only", "system", "--format", "json"], tmp_path, config=config,
                           env={"TELEGRAM_BOT_TOKEN": TOKEN})
        assert proc.stderr == "" and envelope(proc)["notifications"]["outbox"] == 0
        assert len(telegram.photos) == 1
        assert [r.text for r in telegram.delivered if "Daily report" in r.text] == [text]
    records = log_records(tmp_path / "logs" / "report.log") + log_records(tmp_path / "logs" / "health.log")
    warnings = [r for r in records if r["levelname"] in ("WARNING", "ERROR") and r.get("event") != "check"]
    assert [(r["levelname"], r.get("event")) for r in warnings] == [("ERROR", "chart_refused")]
    assert warnings[0]["message"].startswith("chart refused by Telegram: Telegram 400: ")
    assert "PHOTO_INVALID_DIMENSIONS" in warnings[0]["message"]
    assert warnings[0]["message"].endswith("; the text goes alone")


# --- a chart waiting in the outbox (a report queued while Telegram was down) ------------------------

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64  # enough for the stand-in, which checks the signature


def waiting_report(tmp_path, telegram, png=PNG) -> str:
    """The outbox as a report run leaves it while Telegram is down: the chart, then the text.
    Returns the config of a host that runs `health` every five minutes."""
    from monitor.alerts import outbox

    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    now = time.time()
    photo = outbox.new_message(CHAT, "⚠️ WARNING Daily report · vm (prod)", True, now, message_id="photo1")
    photo["png"] = png
    text = outbox.new_message(CHAT, "⚠️ WARNING <b>Daily report</b> · vm (prod)\nOpportunities: 146", True, now,
                              message_id="text1")
    outbox.save(str(state), [photo, text])
    return f'[telegram]\nchat_ids = ["{CHAT}"]\napi_url = "{telegram.api_url}"\ntimeout = "10s"\n'


def health_run(run_monitor, tmp_path, config):
    return run_monitor(["health", "--only", "system", "--format", "json"], tmp_path, config=config,
                       env={"TELEGRAM_BOT_TOKEN": TOKEN})


def report_texts(telegram) -> list[str]:
    return [r.text for r in telegram.delivered if "Daily report" in r.text]


@pytest.mark.parametrize("answer", [_error(400, "Bad Request: IMAGE_PROCESS_FAILED"),
                                    _error(400, "Bad Request: not enough rights to send photos to the chat"),
                                    _error(413, "Request Entity Too Large")], ids=["400", "no-photo-rights", "413"])
def test_a_waiting_chart_telegram_refuses_is_dropped_and_its_text_goes(tmp_path, run_monitor, envelope,
                                                                       log_records, answer):
    with TelegramStandIn() as telegram:
        telegram.photo_answer = answer
        config = waiting_report(tmp_path, telegram)
        proc = health_run(run_monitor, tmp_path, config)
        assert proc.stderr == "" and envelope(proc)["notifications"]["outbox"] == 0
        assert report_texts(telegram) == ["⚠️ WARNING <b>Daily report</b> · vm (prod)\nOpportunities: 146"]
        assert len(telegram.photos) == 1  # refused once, not tried again
        assert not list((tmp_path / "state").glob("outbox-photo-*"))
    [warning] = [r for r in log_records(tmp_path / "logs" / "health.log") if r.get("event") == "chart_refused"]
    assert warning["levelname"] == "ERROR" and f"Telegram {answer.status}" in warning["message"]


@pytest.mark.parametrize("description", ["Bad Request: chat not found",
                                         "Bad Request: have no rights to send a message",
                                         "Bad Request: PEER_ID_INVALID"])
def test_a_chart_refused_for_the_chat_keeps_todays_behaviour(tmp_path, run_monitor, envelope, description):
    """A 400 about the chat, not the picture: the photo waits, the text behind it (it would fail too)."""
    with TelegramStandIn() as telegram:
        telegram.photo_answer = _error(400, description)
        proc = health_run(run_monitor, tmp_path, waiting_report(tmp_path, telegram))
        assert envelope(proc)["notifications"]["outbox"] == 2
        assert "telegram configuration error" in proc.stderr and description[len("Bad Request: "):] in proc.stderr
        assert report_texts(telegram) == []
    assert len(list((tmp_path / "state").glob("outbox-photo-*"))) == 1


@pytest.mark.parametrize("damage", ["oversized", "missing", "traversal"])
def test_a_damaged_chart_in_the_outbox_is_set_aside_and_the_text_still_goes(tmp_path, run_monitor, envelope,
                                                                             log_records, damage):
    from monitor.alerts import outbox

    outside = tmp_path / "x"
    outside.write_bytes(PNG)  # what "../x" would reach from the state folder
    with TelegramStandIn() as telegram:
        config = waiting_report(tmp_path, telegram)
        state = tmp_path / "state"
        [photo_file] = state.glob("outbox-photo-*")
        if damage == "oversized":  # grown past the cap by hand (or a full disk's garbage)
            photo_file.write_bytes(PNG + b"\x00" * outbox.MAX_PHOTO)
        elif damage == "missing":
            photo_file.unlink()
        else:  # a hand-edited outbox naming a file outside the state folder
            lines = (state / "outbox.jsonl").read_text().splitlines()
            lines[0] = lines[0].replace(photo_file.name, "../x")
            (state / "outbox.jsonl").write_text("\n".join(lines) + "\n")
        proc = health_run(run_monitor, tmp_path, config)
        assert envelope(proc)["notifications"]["outbox"] == 0, proc.stderr
        assert report_texts(telegram) == ["⚠️ WARNING <b>Daily report</b> · vm (prod)\nOpportunities: 146"]
        assert getattr(telegram, "photos", []) == []  # nothing uploaded: not the oversized file, not ../x
    assert outside.read_bytes() == PNG
    [aside] = state.glob("outbox.jsonl.corrupt-*")
    assert '"photo1"' in aside.read_text()  # the photo's line kept for a person to look at
    assert [r["event"] for r in log_records(tmp_path / "logs" / "health.log")
            if r.get("event", "").startswith("outbox")] == ["outbox_corrupt"]


def test_a_quiet_report_sends_its_chart_silently(tmp_path, run_monitor, envelope):
    realistic_month(tmp_path / "opp.db", MONTH_DAY, events=False)
    with TelegramStandIn() as telegram:
        config = (f'[report]\ndatabase = "sqlite://opp.db"\nerror_logs = []\n'
                  f'[telegram]\nchat_ids = ["{CHAT}"]\napi_url = "{telegram.api_url}"\ntimeout = "10s"\n')
        proc = month_run(run_monitor, tmp_path, config, "--format", "json")
        assert proc.returncode == 0, proc.stderr
        assert {c["status"] for c in envelope(proc)["checks"].values()} == {"ok"}
        [photo], [text] = telegram.photos, telegram.delivered
    assert text.text.startswith("ℹ️ INFO <b>Daily report</b>") and text.disable_notification is True
    assert photo.status == 200 and photo.disable_notification is True
    assert photo.caption.startswith("ℹ️ INFO Daily report")


BLOCK_MATPLOTLIB = """
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("matplotlib blocked by the test")
sys.meta_path.insert(0, _Block())
"""


def test_without_matplotlib_the_text_goes_and_one_warning_says_why(tmp_path, run_monitor, envelope, log_records):
    (tmp_path / "block").mkdir()
    (tmp_path / "block" / "sitecustomize.py").write_text(BLOCK_MATPLOTLIB)
    with TelegramStandIn() as telegram:
        proc = month_run(run_monitor, tmp_path, month_config(tmp_path, telegram), "--format", "json",
                         env={"PYTHONPATH": str(tmp_path / "block")})
        assert proc.returncode == 1, proc.stderr
        assert len(telegram.delivered) == 1 and getattr(telegram, "photos", []) == []
    warnings = [r for r in log_records(tmp_path / "logs" / "report.log") if r.get("event") == "chart_failed"]
    assert len(warnings) == 1 and warnings[0]["levelname"] == "WARNING"
    assert "matplotlib is not installed" in warnings[0]["message"]


def test_chart_false_sends_the_text_alone(tmp_path, run_monitor, envelope):
    with TelegramStandIn() as telegram:
        proc = month_run(run_monitor, tmp_path, month_config(tmp_path, telegram, "chart = false\n"),
                         "--format", "json")
        assert proc.returncode == 1, proc.stderr
        assert len(telegram.delivered) == 1 and getattr(telegram, "photos", []) == []


def test_source_names_learned_from_the_database_are_bounded_in_the_sources_check():
    """Thousands of long names fell silent or dropped: the message shows ten, each clipped."""
    from monitor.checks import business

    long = ["s" * 500 + f"{i:04d}" for i in range(2000)]
    week = [dict.fromkeys(long, 100) for _ in range(7)]

    class Probe:
        cfg = {"expected_sources": []}

        def business(self):
            today = {name: (1 if i % 2 else 0) for i, name in enumerate(long)}
            return {"history": {"sources": week}, "sources": {k: v for k, v in today.items() if v}}, None

    result = business.sources(Probe())
    assert result.status == "warning"
    assert len(result.message) < 2000 and "and 990 more" in result.message
    assert len(result.details["learned_silent"]) == len(result.details["dropped"]) == business.MAX_NAMES
