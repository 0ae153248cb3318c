"""Files planted in state/ and logs/ by whoever can write them: a root run follows no link.

The planter is the service user who owns the folders (README: Running as root and as a
service user); the run is root's. Each test plants what was reproduced against the
version before: a symlink or hard link where the run locks, archives or writes its temp
files, a FIFO where it reads or appends. The run must write nothing through them, read
nothing through them, never hang, say so in one stderr line, and still run its checks
and send its alert. The suite runs as root, like cron: the victims are root's files.
"""

import gzip
import json
import os
import stat
import subprocess
from datetime import date, timedelta

import pytest

from tests.faults.conftest import HOST_CHECKS, delivered_checks, no_traceback

VICTIM_TEXT = "root's file: must stay exactly as it is\n"
SECRET = "SECRET-root-only-9f3c"
YESTERDAY = (date.today() - timedelta(days=1)).isoformat()
# Generous: a run takes well under a second; a hang (the bug) is for ever.
RUN_TIMEOUT = 60


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "root-only" / "victim"
    path.parent.mkdir(mode=0o700)
    path.write_text(VICTIM_TEXT)
    os.chmod(path, 0o640)
    return path


def _unchanged(victim) -> bool:
    return victim.read_text() == VICTIM_TEXT and stat.S_IMODE(victim.stat().st_mode) == 0o640


def _stderr_lines(run, key: str) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith(f"monitor health: {key}: ")]


def _checks_and_alert_went_on(run, telegram):
    assert run.code == 2, run
    assert set(run.data["checks"]) == HOST_CHECKS | {"scraper:feed"}
    assert delivered_checks(telegram, ["scraper:feed"]) == {"scraper:feed"}, "the alert did not go out"
    assert no_traceback(run), run.stderr


@pytest.mark.parametrize("link", ["symlink", "hard link"])
def test_a_lock_file_planted_as_a_link_to_a_root_file_is_not_written_and_the_run_goes_on(install, telegram,
                                                                                         victim, link):
    install.scrapers = ["feed"]
    lock = install.state / "health.lock"
    if link == "symlink":
        lock.symlink_to(victim)
    else:
        os.link(victim, lock)

    run = install.health()

    assert _unchanged(victim), victim.read_text()  # before: the run's PID, the file cut after it
    _checks_and_alert_went_on(run, telegram)
    (line,) = _stderr_lines(run, "state write error")
    assert "health.lock" in line and ("symbolic link" in line or "2 links" in line), line
    assert "health.lock" in run.data["state_write_error"]


def test_temp_files_cannot_be_guessed_so_links_planted_at_the_old_names_are_never_written(install, telegram,
                                                                                         victim):
    """`.NAME.<pid>.tmp` was opened O_CREAT|O_TRUNC: a link planted there for the next PIDs
    made the run truncate the victim, write its JSON into it and chmod it 0600 (0644 for
    the textfile). Temp names are now random and created O_EXCL|O_NOFOLLOW."""
    install.scrapers = ["feed"]
    install.textfiles.mkdir()
    install.extra = f'[prometheus]\ntextfile_dir = "{install.textfiles}"\n'
    names = [install.state / f".{n}.{{pid}}.tmp" for n in ("alerts.json", "counters.json", "outbox.jsonl")]
    names.append(install.textfiles / ".monitor_health.prom.{pid}.tmp")

    def plant():  # in the child, before it execs monitor: its PID is known
        for name in names:
            os.symlink(victim, str(name).format(pid=os.getpid()))

    run = install.health(preexec_fn=plant)

    assert _unchanged(victim), (victim.read_text()[:200], oct(victim.stat().st_mode))
    _checks_and_alert_went_on(run, telegram)
    assert "state_write_error" not in run.data and "textfile_write_error" not in run.data, run.data
    assert json.loads((install.state / "counters.json").read_text())  # written beside the links
    assert "monitor_check_status" in (install.textfiles / "monitor_health.prom").read_text()


def test_a_pending_archive_planted_as_a_link_to_a_root_only_file_is_not_copied_into_the_logs(install, telegram,
                                                                                            victim):
    install.scrapers = ["feed"]
    victim.write_text(json.dumps({"asctime": f"{YESTERDAY}T08:00:00.000+00:00", "message": SECRET}) + "\n"
                      + f"a line without a date: {SECRET}\n")
    os.chmod(victim, 0o600)
    archive = install.logs / "archive"
    archive.mkdir(parents=True, mode=0o750)
    (archive / "health.log.pending").symlink_to(victim)

    run = install.health()

    _checks_and_alert_went_on(run, telegram)
    for path in install.logs.rglob("*"):  # before: the archive (0640) or today's log held it
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert SECRET.encode() not in (gzip.decompress(data) if path.suffix == ".gz" else data), path
    assert SECRET in victim.read_text() and stat.S_IMODE(victim.stat().st_mode) == 0o600
    (line,) = _stderr_lines(run, "log write error")
    assert "health.log.pending" in line and "symbolic link" in line, line
    # Today's records still land in today's log.
    assert any(json.loads(line).get("event") == "run" for line in install.log_lines())


def test_a_symlinked_archive_folder_is_not_written_into(install, telegram, tmp_path):
    """logs/archive -> a root folder: the archives (and retention's deletions) would go there."""
    install.scrapers = ["feed"]
    elsewhere = tmp_path / "root-only-folder"
    elsewhere.mkdir(mode=0o700)
    old_archive = elsewhere / "health-2000-01-01.log.gz"  # retention would remove it
    old_archive.write_bytes(gzip.compress(b"keep me\n"))
    install.logs.mkdir(mode=0o750)
    (install.logs / "archive").symlink_to(elsewhere)
    old = {"asctime": f"{YESTERDAY}T12:00:00.000+00:00", "levelname": "INFO", "message": "yesterday"}
    (install.logs / "health.log").write_text(json.dumps(old) + "\n")

    run = install.health()

    _checks_and_alert_went_on(run, telegram)
    assert sorted(p.name for p in elsewhere.iterdir()) == [old_archive.name]
    (line,) = _stderr_lines(run, "log write error")
    assert "archive" in line and "symbolic link" in line, line


FIFOS = ["state/counters.json", "state/alerts.json", "state/outbox.jsonl", "state/silences.json",
         "state/health.lock", "state/notify.lock", "logs/health.log", "logs/archive/health.log.pending"]


@pytest.mark.parametrize("where", FIFOS)
def test_a_fifo_planted_as_a_state_or_log_file_never_hangs_the_run(install, telegram, where):
    install.scrapers = ["feed"]
    fifo = install.folder / where
    fifo.parent.mkdir(parents=True, exist_ok=True)
    if fifo.exists():
        fifo.unlink()
    os.mkfifo(fifo, 0o600)
    proc = install.popen("health", "--format", "json")
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:  # the bug: blocked in open(2) of the FIFO for ever
        proc.kill()
        proc.communicate()
        pytest.fail(f"the run hung on the FIFO {where}")
    from tests.faults.conftest import Run

    run = Run(("health",), proc.returncode, stdout, stderr, 0.0)
    install.runs.append(run)
    _checks_and_alert_went_on(run, telegram)
    said = [line for line in run.stderr.splitlines() if "FIFO" in line]
    assert len(said) == 1 and fifo.name in said[0], run.stderr
    assert "not a regular file" in said[0]


def test_the_run_lock_survives_rm_of_the_lock_file_during_a_run(install, telegram):
    """`rm state/health.lock` while a run is in its checks: the next run still waits."""
    from tests import loopback

    with loopback.serve() as web:
        held = _Held()
        install.extra = (f'[[scrapers]]\nname = "api"\nurl = "{web.route("/health", held)}"\ntimeout = "30s"\n'
                         'latency_ms = { warning = 100000, critical = 100000 }\n')
        first = install.popen("health", "--format", "json")
        try:
            assert held.started.wait(30), "the first run never reached its checks"
            os.unlink(install.state / "health.lock")  # the first run holds the lock now

            second = install.run("health", "--format", "json", env={"MONITOR_LOCK_WAIT": "0.3"})
            assert second.code == 3, second
            assert "another `monitor health` run" in second.stderr and second.stdout == "", second
        finally:
            held.release.set()
            out, err = first.communicate(timeout=RUN_TIMEOUT)
        assert first.returncode == 0, err
        third = install.popen("health", "--format", "json")
        out, err = third.communicate(timeout=RUN_TIMEOUT)
        assert third.returncode == 0, err
        assert (install.state / "health.lock").read_text().strip() == str(third.pid)


class _Held:
    """A loopback route that answers once the test says so."""

    def __init__(self):
        import threading

        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self, handler):
        self.started.set()
        while not (self.release.is_set() or handler.server.closing.is_set()):
            self.release.wait(0.05)
        handler.send_whole(200, {"Content-Type": "application/json"}, b'{"status": "ok"}')


@pytest.mark.parametrize("command", [("silence", "list"), ("silence", "add", "disk:*", "--for", "1h")])
def test_silence_commands_on_a_planted_silences_file_say_so_in_one_line_and_exit_3(install, victim, command):
    (install.state / "silences.json").unlink()
    (install.state / "silences.json").symlink_to(victim)
    run = install.run(*command, timeout=RUN_TIMEOUT)
    assert run.code == 3 and run.stdout == "", run
    (line,) = run.stderr.splitlines()
    assert "silences.json" in line and "symbolic link" in line, line
    assert _unchanged(victim)


def test_the_daily_report_reads_no_health_log_planted_as_a_link_to_a_root_only_file(install, telegram, victim):
    """Its health summary (runs seen, incidents per check) is sent to Telegram: a planted
    `logs/health.log -> /root/...` holding run records would put root's text in it."""
    record = {"asctime": f"{YESTERDAY}T12:00:00.000+00:00", "levelname": "INFO", "event": "run",
              "overall_status": "critical", "checks": {SECRET: "critical"}}
    victim.write_text(json.dumps(record) + "\n")
    os.chmod(victim, 0o600)
    install.logs.mkdir(mode=0o750)
    (install.logs / "health.log").symlink_to(victim)

    run = install.run("daily-report", "--format", "json", timeout=RUN_TIMEOUT)

    assert run.code == 3, run  # unknown: no database configured; the report is still made and sent
    assert run.data["report"]["health"]["runs_seen"] == 0
    assert SECRET not in run.stdout and SECRET not in run.stderr
    assert telegram.delivered and not any(SECRET in m.text for m in telegram.delivered)
    assert no_traceback(run), run.stderr
