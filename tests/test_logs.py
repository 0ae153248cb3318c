"""The JSON logs: one record per line, a closing `run` record, daily gzip archives."""

import gzip
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from datetime import date, timedelta, timezone

import pytest
from freezegun import freeze_time
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.logs import LOG_MODE, archive_if_stale, close_log, open_log
from tests.conftest import HOST_CHECKS, clean_env

ISO_WITH_OFFSET = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?[+-]\d{2}:\d{2}$")
TODAY = date(2026, 3, 10)


def record(day: date | str, message: str, hour: int = 12) -> str:
    return json.dumps({"asctime": f"{day}T{hour:02d}:00:00.000+00:00", "levelname": "INFO",
                       "message": message}) + "\n"


def gunzip_lines(path) -> list[dict]:
    with gzip.open(path, "rt") as handle:
        return [json.loads(line) for line in handle]


def messages(lines) -> list[str]:
    return [line["message"] for line in lines]


# --- what a run writes ------------------------------------------------------------------------

def test_every_run_ends_with_one_run_record(tmp_path, run_monitor, verdict_config, log_records):
    run_monitor(["health"], tmp_path, config=verdict_config("warning"))
    records = log_records(tmp_path / "logs" / "health.log")
    runs = [r for r in records if r.get("event") == "run"]
    assert len(runs) == 1 and records[-1] is runs[0]
    run = runs[0]
    assert set(run) >= {"event", "command", "overall_status", "checks", "duration_ms", "host",
                        "environment", "asctime", "levelname", "message"}
    assert run["command"] == "health"
    assert run["overall_status"] == "warning"
    assert run["checks"]["disk:/"] == "warning" and run["checks"]["cpu"] == "ok"
    assert set(run["checks"]) == HOST_CHECKS
    assert run["host"] == os.uname().nodename and run["environment"] == "prod"
    assert ISO_WITH_OFFSET.match(run["asctime"]), run["asctime"]
    assert run["levelname"] == "INFO" and run["message"]
    assert isinstance(run["duration_ms"], (int, float))


@pytest.mark.parametrize("verdict, level", [("warning", "WARNING"), ("critical", "ERROR")])
def test_a_non_ok_check_adds_a_record_at_its_level(tmp_path, run_monitor, verdict_config, log_records,
                                                   verdict, level):
    run_monitor(["health"], tmp_path, config=verdict_config(verdict))
    records = log_records(tmp_path / "logs" / "health.log")
    flagged = [r for r in records if r["levelname"] in ("WARNING", "ERROR")]
    assert len(flagged) == 1
    assert flagged[0]["levelname"] == level
    assert flagged[0]["check"] == "disk:/" and flagged[0]["status"] == verdict
    assert "disk:/" in flagged[0]["message"]


def test_an_ok_run_writes_no_warning_or_error_record(tmp_path, run_monitor, verdict_config, log_records):
    run_monitor(["health"], tmp_path, config=verdict_config("ok"))
    records = log_records(tmp_path / "logs" / "health.log")
    assert [r["levelname"] for r in records if r["levelname"] not in ("DEBUG", "INFO")] == []
    assert [r["event"] for r in records if r.get("event") == "run"] == ["run"]


def test_runs_append_to_the_same_log(tmp_path, run_monitor, verdict_config, log_records):
    for verdict in ("ok", "critical"):
        run_monitor(["health", "-q"], tmp_path, config=verdict_config(verdict))
    runs = [r for r in log_records(tmp_path / "logs" / "health.log") if r.get("event") == "run"]
    assert [r["overall_status"] for r in runs] == ["ok", "critical"]


def test_log_records_carry_their_fields_and_non_ascii_text(tmp_path):
    handler = open_log(str(tmp_path), "health")
    try:
        logging.getLogger("monitor").warning("disk %s is full", "/données", extra={"check": "disk:/"})
    finally:
        close_log()
    assert handler.error is None
    [line] = (tmp_path / "health.log").read_text(encoding="utf-8").splitlines()
    assert "/données" in line  # readable with grep, not \u-escaped
    rec = json.loads(line)
    assert rec["levelname"] == "WARNING" and rec["check"] == "disk:/"
    assert ISO_WITH_OFFSET.match(rec["asctime"])


def test_an_unwritable_log_is_reported_by_the_handler_not_raised(tmp_path):
    (tmp_path / "logs").write_text("")
    handler = open_log(str(tmp_path / "logs"), "health")
    try:
        logging.getLogger("monitor").error("lost")
    finally:
        close_log()
    assert "cannot write" in handler.error and "health.log" in handler.error


# --- daily archive ----------------------------------------------------------------------------

def test_records_of_earlier_days_are_gzipped_and_todays_stay(tmp_path):
    yesterday = TODAY - timedelta(days=1)
    (tmp_path / "health.log").write_text(record(yesterday, "old 1") + record(yesterday, "old 2", 23)
                                         + record(TODAY, "new", 0))
    written = archive_if_stale(str(tmp_path), "health", TODAY, 30)
    archive = tmp_path / "archive" / f"health-{yesterday}.log.gz"
    assert written == [str(archive)]
    assert messages(gunzip_lines(archive)) == ["old 1", "old 2"]
    assert (tmp_path / "health.log").read_text() == record(TODAY, "new", 0)
    assert os.listdir(tmp_path / "archive") == [archive.name]


def test_an_archive_is_written_exactly_once(tmp_path):
    yesterday = TODAY - timedelta(days=1)
    (tmp_path / "health.log").write_text(record(yesterday, "old") + record(TODAY, "new"))
    archive_if_stale(str(tmp_path), "health", TODAY, 30)
    archive = tmp_path / "archive" / f"health-{yesterday}.log.gz"
    first = archive.read_bytes()
    with open(tmp_path / "health.log", "a") as log:
        log.write(record(TODAY, "newer"))
    assert archive_if_stale(str(tmp_path), "health", TODAY, 30) == []
    assert archive.read_bytes() == first
    assert messages(json.loads(line) for line in (tmp_path / "health.log").read_text().splitlines()) == [
        "new", "newer"]


def test_a_log_spanning_two_earlier_days_yields_two_archives(tmp_path):
    day1, day2 = TODAY - timedelta(days=2), TODAY - timedelta(days=1)
    (tmp_path / "health.log").write_text(record(day1, "a") + record(day1, "b") + record(day2, "c"))
    written = archive_if_stale(str(tmp_path), "health", TODAY, 30)
    assert [os.path.basename(p) for p in written] == [f"health-{day1}.log.gz", f"health-{day2}.log.gz"]
    assert messages(gunzip_lines(written[0])) == ["a", "b"]
    assert messages(gunzip_lines(written[1])) == ["c"]
    assert not (tmp_path / "health.log").exists() or (tmp_path / "health.log").read_text() == ""


def test_archiving_again_for_a_day_keeps_what_was_archived(tmp_path):
    yesterday = TODAY - timedelta(days=1)
    (tmp_path / "health.log").write_text(record(yesterday, "morning"))
    archive_if_stale(str(tmp_path), "health", TODAY, 30)
    (tmp_path / "health.log").write_text(record(yesterday, "evening"))  # e.g. a clock set back
    archive_if_stale(str(tmp_path), "health", TODAY, 30)
    assert messages(gunzip_lines(tmp_path / "archive" / f"health-{yesterday}.log.gz")) == ["morning", "evening"]


def test_a_log_of_today_only_is_left_alone(tmp_path):
    (tmp_path / "health.log").write_text(record(TODAY, "new"))
    assert archive_if_stale(str(tmp_path), "health", TODAY, 30) == []
    assert not (tmp_path / "archive").exists()


def test_a_missing_or_empty_log_is_left_alone(tmp_path):
    assert archive_if_stale(str(tmp_path), "health", TODAY, 30) == []
    (tmp_path / "health.log").write_text("")
    assert archive_if_stale(str(tmp_path), "health", TODAY, 30) == []


def test_retention_removes_archives_older_than_retention_days(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    kept_day, old_day = TODAY - timedelta(days=7), TODAY - timedelta(days=8)
    for day in (kept_day, old_day, TODAY - timedelta(days=400)):
        (archive / f"health-{day}.log.gz").write_bytes(gzip.compress(record(day, "x").encode()))
    (archive / f"backup-{old_day}.log.gz").write_bytes(b"")  # another command's archive
    (tmp_path / "health.log").write_text(record(TODAY - timedelta(days=1), "old"))
    archive_if_stale(str(tmp_path), "health", TODAY, 7)
    assert sorted(os.listdir(archive)) == sorted([
        f"backup-{old_day}.log.gz", f"health-{kept_day}.log.gz", f"health-{TODAY - timedelta(days=1)}.log.gz"])


def test_an_archive_left_half_done_by_a_crashed_run_is_finished(tmp_path):
    yesterday = TODAY - timedelta(days=1)
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "health.log.pending").write_text(record(yesterday, "old") + record(TODAY, "new"))
    (tmp_path / "health.log").write_text(record(TODAY, "newer"))
    archive_if_stale(str(tmp_path), "health", TODAY, 30)
    assert messages(gunzip_lines(tmp_path / "archive" / f"health-{yesterday}.log.gz")) == ["old"]
    assert not (tmp_path / "archive" / "health.log.pending").exists()
    assert sorted(messages(json.loads(x) for x in (tmp_path / "health.log").read_text().splitlines())) == [
        "new", "newer"]


def test_archives_and_the_rewritten_log_are_not_world_readable(tmp_path):
    yesterday = TODAY - timedelta(days=1)
    (tmp_path / "health.log").write_text(record(yesterday, "old") + record(TODAY, "new"))
    old_umask = os.umask(0)
    try:
        archive_if_stale(str(tmp_path), "health", TODAY, 30)
    finally:
        os.umask(old_umask)
    assert (tmp_path / "health.log").stat().st_mode & 0o777 == LOG_MODE
    assert (tmp_path / "archive" / f"health-{yesterday}.log.gz").stat().st_mode & 0o777 == LOG_MODE
    assert (tmp_path / "archive").stat().st_mode & 0o007 == 0


def test_a_record_logged_after_the_archive_lands_in_todays_log(tmp_path):
    folder = str(tmp_path)
    with freeze_time("2026-03-01 12:00:00"):
        open_log(folder, "health")
        logging.getLogger("monitor").info("yesterday's run")
        close_log()
    with freeze_time("2026-03-02 12:00:00"):
        open_log(folder, "health")  # opened first, as a run does, then archived
        archive_if_stale(folder, "health", date.today(), 30)
        logging.getLogger("monitor").info("today's run")
        close_log()
    assert messages(gunzip_lines(tmp_path / "archive" / "health-2026-03-01.log.gz")) == ["yesterday's run"]
    [today] = [json.loads(line) for line in (tmp_path / "health.log").read_text().splitlines()]
    assert today["message"] == "today's run" and today["asctime"].startswith("2026-03-02")


def test_the_next_run_archives_yesterdays_records_and_keeps_its_own(tmp_path, run_monitor, verdict_config,
                                                                    log_records):
    yesterday = date.today() - timedelta(days=1)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "health.log").write_text(record(yesterday, "old 1", 1) + record(yesterday, "old 2", 2))
    run_monitor(["health", "-q"], tmp_path, config=verdict_config("ok"))
    archive = logs / "archive" / f"health-{yesterday}.log.gz"
    assert messages(gunzip_lines(archive)) == ["old 1", "old 2"]
    first = archive.read_bytes()
    run_monitor(["health", "-q"], tmp_path, config=verdict_config("ok"))
    assert archive.read_bytes() == first  # exactly once
    records = log_records(logs / "health.log")
    runs = [r for r in records if r.get("event") == "run"]
    assert len(runs) == 2  # the archiving run's own record is kept
    assert not any(r["asctime"].startswith(str(yesterday)) for r in records)


# --- concurrent writers -------------------------------------------------------------------------

WRITER = textwrap.dedent("""\
    import logging, sys
    from monitor.logs import close_log, open_log
    open_log(sys.argv[1], "health")
    log = logging.getLogger("monitor")
    for i in range(200):
        log.info("%s %d %s", sys.argv[2], i, sys.argv[2] * 2000, extra={"event": "check", "i": i})
    close_log()
    """)


def test_two_processes_appending_at_once_never_break_a_line(tmp_path):
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), tag], env=clean_env())
               for tag in ("a", "b")]
    assert [w.wait(timeout=30) for w in writers] == [0, 0]
    lines = (tmp_path / "health.log").read_text().splitlines()
    assert len(lines) == 400
    records = [json.loads(line) for line in lines]  # raises on any interleaved line
    for tag in ("a", "b"):
        assert sorted(r["i"] for r in records if r["message"].startswith(tag + " ")) == list(range(200))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40).map(lambda text: "{" + text), st.text(max_size=40),
                 st.sampled_from(['{"a": 1}', ' {"a":1} \n', '{"a":1} x', '{"a": NaN}', '{"a"', '{"a": 1}\t\r\n',
                                  '\x0c{"a": 1}', '{"a": 1}\x0b', '{"levelname": "ERROR"}', '{"level": "error"} {}'])))
def test_a_candidate_is_unparseable_exactly_when_json_loads_refuses_it(text):
    # error_record calls json's C scanner straight: a JSON-looking line is counted unparseable
    # ("?") exactly when json.loads refuses it.
    from hypothesis import assume

    from monitor.logscan import error_record

    line = text.encode("utf-8", "surrogatepass")
    assume(line.lstrip().startswith(b"{"))
    try:
        json.loads(text)
        refused = False
    except ValueError:
        refused = True
    assert (error_record(line, timezone.utc) == ("?", None)) == refused
