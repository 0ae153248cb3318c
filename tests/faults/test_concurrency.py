"""Concurrency: many runs at once on one installation take turns, write whole lines and alert once.

Twenty `monitor health` processes start together on one state and logs folder, as
when cron fires while an operator runs the same command over SSH (or a stuck NFS
mount piles runs up). A scraper endpoint counts how many runs probe it at the same
moment: the run lock must keep that at one (SPEC: Logs, "Runs of one command never
overlap"; Alerts, "sent once").
"""

import json
import re
import subprocess
import threading
import time

import pytest

from tests import loopback
from tests.conftest import monitor_json
from tests.faults.conftest import CHAT, HOST_CHECKS, assert_state_readable, delivered_checks

RUNS = 20


class Overlap:
    """A loopback route that answers after `delay` (or once `release` is set) and records
    the most requests in flight."""

    def __init__(self, delay: float):
        self.delay, self.now, self.most, self.count = delay, 0, 0, 0
        self.lock = threading.Lock()
        self.release = threading.Event()

    def __call__(self, handler):
        with self.lock:
            self.now += 1
            self.count += 1
            self.most = max(self.most, self.now)
        try:
            deadline = time.monotonic() + self.delay
            while not (self.release.is_set() or handler.server.closing.is_set()) and time.monotonic() < deadline:
                self.release.wait(0.05)
            handler.send_whole(200, {"Content-Type": "application/json"}, b'{"status": "ok"}')
        finally:
            with self.lock:
                self.now -= 1


@pytest.fixture
def web():
    with loopback.serve() as server:
        yield server


def _probed(install, web, delay: float, timeout: str = "10s") -> Overlap:
    overlap = Overlap(delay)
    install.extra += (f'[[scrapers]]\nname = "api"\nurl = "{web.route("/health", overlap)}"\ntimeout = "{timeout}"\n'
                      'latency_ms = { warning = 100000, critical = 100000 }\n')
    return overlap


def _start_together(install, count: int, env: dict) -> list[subprocess.Popen]:
    install.config  # written once, before any process reads it
    procs = [install.popen("health", "--format", "json", env=env) for _ in range(count)]
    return procs


def _finish(procs) -> list[tuple[int, int, str, str]]:
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        out.append((proc.pid, proc.returncode, stdout, stderr))
    return out


def _assert_whole_json_lines(install):
    lines = install.log_lines()
    assert lines, "nothing logged"
    for line in lines:
        json.loads(line)  # a torn or interleaved line would not parse
    return [json.loads(line) for line in lines]


def test_twenty_simultaneous_runs_take_turns_log_whole_lines_and_alert_once(install, telegram, web):
    install.scrapers = ["feed"]                      # critical: its heartbeat file is missing
    overlap = _probed(install, web, delay=0.05)
    finished = _finish(_start_together(install, RUNS, {"MONITOR_LOCK_WAIT": "120"}))

    codes = [code for _, code, _, _ in finished]
    assert codes == [2] * RUNS, [(code, err[-300:]) for _, code, _, err in finished if code != 2]
    for _, _, stdout, stderr in finished:
        data = monitor_json(stdout)
        assert set(data["checks"]) == HOST_CHECKS | {"scraper:feed", "scraper:api"}
        assert "Traceback" not in stderr and "state_write_error" not in data and "log_write_error" not in data
    assert overlap.count == RUNS and overlap.most == 1, "two runs of `health` probed at the same time"

    records = _assert_whole_json_lines(install)
    assert sum(r.get("event") == "run" for r in records) == RUNS
    assert_state_readable(install.state)
    assert not list(install.state.glob("*.corrupt-*"))

    assert len(telegram.received) == 1, [r.text for r in telegram.received]
    assert delivered_checks(telegram, ["scraper:feed"]) == {"scraper:feed"}
    assert telegram.delivered[0].chat_id == CHAT
    alerts = json.loads((install.state / "alerts.json").read_text())
    assert alerts["checks"]["scraper:feed"]["notified_status"] == "critical"


def test_with_a_short_lock_wait_the_runs_that_give_up_exit_3_naming_the_holder(install, telegram, web):
    install.scrapers = ["feed"]
    _probed(install, web, delay=0.6)               # each run holds the lock for 0.6 s or more
    finished = _finish(_start_together(install, RUNS, {"MONITOR_LOCK_WAIT": "0.3"}))

    ran = {pid: code for pid, code, _, _ in finished if code != 3}
    gave_up = [(stdout, stderr) for _, code, stdout, stderr in finished if code == 3]
    assert ran and gave_up, [code for _, code, _, _ in finished]
    assert set(ran.values()) == {2}
    for stdout, stderr in gave_up:
        assert stdout == ""
        (line,) = stderr.splitlines()
        match = re.fullmatch(r"monitor: another `monitor health` run \(PID (\d+)\) holds \S+health\.lock; "
                             r"gave up after 0\.3s", line)
        assert match, line
        assert int(match.group(1)) in ran, "the named PID is not a run that held the lock"

    records = _assert_whole_json_lines(install)
    assert sum(r.get("event") == "run" for r in records) == len(ran)  # those that gave up wrote nothing
    assert_state_readable(install.state)
    assert len(telegram.received) == 1


def test_a_health_run_and_a_backup_check_run_proceed_in_parallel(install, telegram, web, tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir()
    (backups / "db-1.sql").write_bytes(b"x" * 2048)
    install.extra += (f'[[backups]]\nname = "db"\npath = "{backups}/*.sql"\nmin_size = "1KB"\n'
                      'min_free_percent = 0\n')
    # The health run holds its lock until the backup check is over (at most 60 s): no
    # race with the clock however slowly a busy machine starts either process.
    overlap = _probed(install, web, delay=60, timeout="90s")
    health = install.popen("health", "--format", "json")
    try:
        deadline = time.monotonic() + 30
        while overlap.count == 0 and time.monotonic() < deadline:  # health is now inside its run
            time.sleep(0.02)
        assert overlap.count == 1

        # With no lock wait, a backup check that needed the health run's lock would exit 3.
        backup = install.run("backup-check", "--format", "json", env={"MONITOR_LOCK_WAIT": "0"})
        assert health.poll() is None, "the health run ended before the backup check"
        assert backup.code == 0, backup
        assert backup.data["checks"]["backup:db"]["status"] == "ok"
    finally:
        overlap.release.set()

    stdout, stderr = health.communicate(timeout=60)
    assert health.returncode != 3, stderr  # it never waited for, nor gave way to, the backup check
    assert monitor_json(stdout)["checks"]["scraper:api"]["status"] == "ok"


def test_starting_more_runs_never_rewrites_the_config_the_earlier_ones_are_reading(install):
    # The cause of a 1-in-5 failure of the twenty-runs test: each start truncated and
    # rewrote monitor.toml, and a run reading it at that instant saw an empty config.
    first = install.config.stat()
    install.popen("config", "check").communicate(timeout=60)
    for _ in range(3):
        again = install.config.stat()
        assert (again.st_ino, again.st_mtime_ns, again.st_size) == (first.st_ino, first.st_mtime_ns, first.st_size)
    with open(install.config, "rb") as reading:  # a run that opened it before a change
        install.alerts = 'flap_window = "1h"'
        changed = install.config.read_text()
        assert reading.read().decode() == install.config_text().replace('[alerts]\nflap_window = "1h"\n', "")
    assert 'flap_window = "1h"' in changed
