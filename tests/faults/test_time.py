"""Time: clocks that go backwards, a run across midnight, and DST days in the report.

The kernel counters behind CPU and network rates are fed by a fake host whose clock
jumps back between runs (a state folder restored from a backup, copied from another
host, a VM snapshot); the alert state meets a `now` earlier than when it last told
the operator; the daily log archive is driven across midnight with freezegun; the
report's window is asked for the two DST days of Europe/Paris.
"""

import gzip
import json
import math
import re
import zoneinfo
from datetime import date, timedelta

from freezegun import freeze_time
from hypothesis import given, settings, strategies as st

from monitor.alerts import state as alert_state
from monitor.alerts import messages
from monitor.checks import system
from monitor import state
from monitor.checks.procfs import CpuTimes, NicCounters
from monitor.state import Carried as Counters
from monitor.report.figures import window_for
from monitor.results import CRITICAL, OK, Result, Threshold, with_identity

BOOT = 1_700_000_000.0
NEGATIVE = re.compile(r"(?<![\w.])-\d")  # "-5m", "-0.3%"; not "disk:/dev-1" nor "2026-03-29"


class Host:
    """psutil's API for the two rate checks: counters that only grow, read at `clock`."""

    def __init__(self):
        self.busy = self.idle = 0.0
        self.sent = self.recv = 0

    def boot_time(self):
        return BOOT

    def cpu_times(self):
        return CpuTimes(user=self.busy, nice=0.0, system=0.0, idle=self.idle)

    def net_io_counters(self, pernic=True):
        return {"eth0": NicCounters(self.sent, self.recv, 0, 0, 0, 0, 0, 0)}

    def work(self, seconds: float, busy_share: float = 0.25, rate: int = 1000):
        self.busy += seconds * busy_share
        self.idle += seconds * (1 - busy_share)
        self.sent += int(seconds * rate)
        self.recv += int(seconds * rate)


def _run(host: Host, saved: dict, clock: float) -> tuple[Result, Result, dict]:
    """One cron run: both rate checks against what the previous run saved."""
    counters = Counters(saved, clock=lambda: clock)
    cpu = system.cpu(Threshold(80, 95), counters, host, sleep=lambda s: host.work(s))
    net = system.network(["eth0"], counters, host)
    return cpu, net, {**saved, **counters.updates}


def test_after_the_clock_goes_back_rates_stay_sane_and_resume_over_the_real_span():
    host, saved = Host(), {}
    _, _, saved = _run(host, saved, clock=10_000.0)          # first run: baselines
    host.work(300)
    cpu, net, saved = _run(host, saved, clock=10_300.0)      # a normal run 5 minutes later
    assert cpu.value == 25.0 and net.value == 2000.0

    host.work(300)
    cpu, net, saved = _run(host, saved, clock=4_000.0)       # the clock went back 6300 s
    assert 0 <= cpu.value <= 100 and (net.value is None or net.value >= 0)
    assert not NEGATIVE.search(cpu.message) and not NEGATIVE.search(net.message)

    host.work(60, busy_share=0.5, rate=3000)
    cpu, net, saved = _run(host, saved, clock=4_060.0)       # the next run, one minute on
    assert cpu.value == 50.0 and "avg over 1m" in cpu.message, cpu.message
    assert net.value == 6000.0 and "in 1m" in net.message, net.message


_SAVED_JUNK = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner,
                                                                                       max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(0, 1e5), st.floats(0, 1)), min_size=1, max_size=8),
       junk=st.dictionaries(st.sampled_from(["cpu", "net"]),
                            st.fixed_dictionaries({"boot": st.just(BOOT)},
                                                  optional={"time": _SAVED_JUNK | st.floats(),
                                                            "total": _SAVED_JUNK, "idle": _SAVED_JUNK,
                                                            "nics": _SAVED_JUNK})))
def test_whatever_the_clock_and_the_saved_counters_cpu_stays_in_0_100_and_rates_are_never_negative(steps, junk):
    """Any order of clock readings, starting from any saved counters: never a crash nor an absurd value."""
    host, saved, clock = Host(), state.parse_json(json.dumps(junk)), 0.0  # as a run reads the file
    for jump, worked, share in steps:
        host.work(worked, share)
        clock += jump
        cpu, net, saved = _run(host, saved, clock)
        assert 0 <= cpu.value <= 100
        assert net.value is None or 0 <= net.value < math.inf
        assert not NEGATIVE.search(cpu.message) and not NEGATIVE.search(net.message)
        json.dumps(saved, allow_nan=False)  # what the next run reads back is plain JSON


# --- alert state: now before notified_at ---------------------------------------------------

def _critical(check_id="disk:/"):
    return with_identity(Result(CRITICAL, "Disk / 97% used", value=97.0, unit="%", warning=90, critical=95),
                         check_id, "system", 1.0)


@settings(max_examples=300, deadline=None)
@given(nows=st.lists(st.floats(-30 * 86400, 3599), min_size=1, max_size=30))
def test_a_clock_behind_the_last_notification_never_brings_a_storm_of_reminders(nows):
    """Told at T; later runs read any time up to T + 59m59s (the next reminder is due at T + 1h)."""
    told_at = 1_800_000_000.0
    entries = {"disk:/": {"command": "health", "kind": "system", "status": CRITICAL, "since": told_at - 600,
                          "count": 3, "notified_status": CRITICAL, "notified_at": told_at}}
    sent = []
    for offset in nows:
        now = told_at + offset
        alerts, entries = alert_state.evaluate(entries, [_critical()], "health", None, now, 1, 3600.0, True)
        if alerts:
            alert_state.mark_notified(entries, alerts, now)
            text = messages.compose(alerts, "vps-1", "prod", now)
            assert not NEGATIVE.search(text.replace(" — ", " ")), text
        sent += alerts
        assert all(a.duration >= 0 for a in alerts)
    assert len(sent) <= 1, f"{len(sent)} reminders while the clock wandered before the next one was due"


def test_a_resolved_alert_with_the_clock_gone_back_lasts_zero_not_a_negative_time():
    since = 1_800_000_000.0
    entries = {"disk:/": {"command": "health", "kind": "system", "status": CRITICAL, "since": since, "count": 1,
                          "notified_status": CRITICAL, "notified_at": since}}
    ok = with_identity(Result(OK, "Disk / 50% used", value=50.0, unit="%"), "disk:/", "system", 1.0)
    (alert,), _ = alert_state.evaluate(entries, [ok], "health", None, since - 3600, 1, 3600.0, True)
    assert alert.status == "resolved" and alert.duration == 0
    assert "ok again after 0ms" in messages.compose([alert], "vps-1", "prod", since - 3600)


# --- midnight ---------------------------------------------------------------------------------

def _records(path):
    data = path.read_bytes()
    data = gzip.decompress(data) if path.suffix == ".gz" else data
    return [json.loads(line) for line in data.splitlines()]


def test_a_run_across_midnight_is_archived_once_and_no_record_is_lost_or_doubled(tmp_path, monkeypatch):
    from monitor.cli import main

    beat = tmp_path / "beat"
    beat.write_text("alive\n")
    config = tmp_path / "monitor.toml"
    config.write_text(f'[[scrapers]]\nname = "feed"\nheartbeat_file = "{beat}"\nheartbeat_max_age = "1d"\n')
    monkeypatch.chdir(tmp_path)
    args = ["health", "--only", "scraper", "--quiet", "--config", str(config)]
    log, archive = tmp_path / "logs" / "health.log", tmp_path / "logs" / "archive"

    def everything() -> list[bytes]:
        lines = []
        for path in sorted(archive.glob("*.gz")) if archive.is_dir() else []:
            lines += gzip.decompress(path.read_bytes()).splitlines()
        return lines + (log.read_bytes().splitlines() if log.exists() else [])

    # Two runs on the evening of the 14th, one starting a blink before midnight (it may
    # start, log and archive on either side), then two runs after midnight.
    before, archived = [], None
    for moment in ("2026-03-14 22:00:00", "2026-03-14 23:55:00", "2026-03-14 23:59:59.995",
                   "2026-03-15 00:05:00", "2026-03-15 00:10:00"):
        with freeze_time(moment, tick=True):
            assert main(args) == 0
        now = everything()
        assert len(now) == len(set(now)), f"a record was doubled by the run at {moment}"
        assert set(before) <= set(now), f"a record was lost by the run at {moment}"
        before = now
        if archived is not None:
            assert (archive / "health-2026-03-14.log.gz").read_bytes() == archived, "archived twice"
        elif archive.is_dir():
            archived = (archive / "health-2026-03-14.log.gz").read_bytes()

    assert [p.name for p in archive.iterdir()] == ["health-2026-03-14.log.gz"]
    old = [json.loads(line) for line in gzip.decompress(archived).splitlines()]
    live = [json.loads(line) for line in log.read_bytes().splitlines()]
    assert old and all(r["asctime"].startswith("2026-03-14") for r in old)
    assert live and all(r["asctime"].startswith("2026-03-15") for r in live)
    assert sum(r.get("event") == "run" for r in old + live) == 5


# --- DST ---------------------------------------------------------------------------------------

PARIS = zoneinfo.ZoneInfo("Europe/Paris")


def test_the_report_day_of_the_spring_dst_change_lasts_23_hours():
    window = window_for(date(2026, 3, 29), PARIS)
    assert window.hours == 23
    assert (window.start.isoformat(), window.end.isoformat()) == ("2026-03-29T00:00:00+01:00",
                                                                  "2026-03-30T00:00:00+02:00")


def test_the_report_day_of_the_autumn_dst_change_lasts_25_hours():
    window = window_for(date(2026, 10, 25), PARIS)
    assert window.hours == 25
    assert (window.start.isoformat(), window.end.isoformat()) == ("2026-10-25T00:00:00+02:00",
                                                                  "2026-10-26T00:00:00+01:00")


def test_consecutive_report_days_tile_time_without_gap_or_overlap_across_both_dst_changes():
    day, previous = date(2026, 3, 27), None
    while day < date(2026, 10, 28):
        window = window_for(day, PARIS)
        assert window.hours in (23, 24, 25) and math.isclose(window.end.timestamp() - window.start.timestamp(),
                                                             window.hours * 3600)
        if previous is not None:
            assert previous.end.timestamp() == window.start.timestamp()
        previous, day = window, day + timedelta(days=1)


def test_the_health_summary_expects_276_and_300_runs_on_the_dst_days(tmp_path):
    from monitor.report.figures import health_summary

    short = health_summary(str(tmp_path), window_for(date(2026, 3, 29), PARIS))
    long = health_summary(str(tmp_path), window_for(date(2026, 10, 25), PARIS))
    assert (short["runs_expected"], long["runs_expected"]) == (276, 300)
