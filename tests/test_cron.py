"""The `cron` check (did the other jobs run on schedule?) and `monitor cron`."""

import json
import subprocess
import os
import sys
import time
from pathlib import Path

import pytest

from monitor.checks.cron import cron
from monitor.config import build
from monitor.jobs import JOBS
from monitor.results import OK, WARNING
from monitor.state import Carried

HOUR = 3600


def config_in(folder, **sections):
    return build(sections, None, str(folder))


def ran(folder, job, hours_ago):
    state = Path(folder) / "state"
    state.mkdir(exist_ok=True)
    lock = state / f"{job}.lock"
    lock.write_text("123\n")
    when = time.time() - hours_ago * HOUR
    os.utime(lock, (when, when))


def test_a_fresh_install_with_nothing_scheduled_is_ok(tmp_path):
    result = cron(config_in(tmp_path))
    assert result.status == OK and result.details == {}


def test_a_configured_backup_check_that_never_ran_warns(tmp_path):
    config = config_in(tmp_path, backups=[{"name": "pg", "path": "/var/backups/*.gz"}])
    result = cron(config)
    assert result.status == WARNING and "backup-check never ran" in result.message


def test_backup_check_within_six_and_a_half_hours_is_on_schedule(tmp_path):
    ran(tmp_path, "backup-check", 6)
    result = cron(config_in(tmp_path, backups=[{"name": "pg", "path": "/x/*.gz"}]))
    assert result.status == OK and "backup-check 6h ago" in result.message
    assert result.details["backup-check"]["age_seconds"] >= 6 * HOUR - 5


def test_backup_check_older_than_six_and_a_half_hours_warns_with_when_it_ran(tmp_path):
    ran(tmp_path, "backup-check", 7)
    result = cron(config_in(tmp_path))  # judged because it ran before, even without [[backups]]
    assert result.status == WARNING and "backup-check last ran 7h" in result.message
    assert result.details["backup-check"]["last_run"]


def test_daily_report_older_than_25_hours_warns(tmp_path):
    ran(tmp_path, "daily-report", 24)
    assert cron(config_in(tmp_path, report={})).status == OK
    ran(tmp_path, "daily-report", 26)
    result = cron(config_in(tmp_path, report={}))
    assert result.status == WARNING and "daily-report last ran 1d2h ago" in result.message


def test_health_reports_the_cron_check(tmp_path, run_monitor, envelope):
    ran(tmp_path, "backup-check", 8)
    proc = run_monitor(["health", "--format", "json", "--only", "system"], tmp_path)
    check = envelope(proc)["checks"]["cron"]
    assert (check["kind"], check["status"]) == ("system", WARNING)


def test_monitor_cron_prints_the_seed_schedule_with_absolute_paths(tmp_path, run_monitor):
    proc = run_monitor(["cron"], tmp_path, config="[system]\n")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("#")]
    script = str(Path(sys.executable).with_name("monitor"))
    config = str(tmp_path / "test.toml")
    assert lines == [f"*/5 * * * * {script} health --quiet --config {config}",
                     f"0 */6 * * * {script} backup-check --quiet --config {config}",
                     f"0 9 * * * {script} daily-report --quiet --config {config}"]


def test_monitor_cron_without_a_config_pins_the_working_directory(tmp_path, run_monitor):
    proc = run_monitor(["cron"], tmp_path)
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("#")]
    assert len(lines) == 3 and all(f" cd {tmp_path} && /" in line for line in lines)


# --- a fresh install: nothing is missed before its first scheduled time ------------------------

BOTH = {"backups": [{"name": "pg", "path": "/x/*.gz"}], "report": {}}
FRESH_CONFIG = '[[backups]]\nname = "pg"\npath = "/var/backups/pg/*.sql.gz"\n\n[report]\n'


@pytest.fixture
def local_time():
    """local_time("Europe/Paris") switches this process's local time zone for the test."""
    old = os.environ.get("TZ")

    def use(name):
        os.environ["TZ"] = name
        time.tzset()

    yield use
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


def at(day, hour, minute=0):
    """A timestamp at this local wall time on Monday 30 November 2026 (day 30) or a day after (31)."""
    from datetime import datetime, timedelta

    return (datetime(2026, 11, 30, hour, minute) + timedelta(days=day - 30)).timestamp()


def test_a_fresh_install_pages_nothing_before_the_first_scheduled_times(tmp_path, local_time):
    local_time("Europe/Paris")
    carried = Carried({})
    result = cron(config_in(tmp_path, **BOTH), carried, now=lambda: at(30, 10, 10))
    assert result.status == OK, result.message
    assert "backup-check first due Mon 12:00" in result.message
    assert "daily-report first due Tue 09:00" in result.message
    assert result.details["backup-check"]["first_due"] == "2026-11-30T12:00:00+01:00"
    assert carried.updates["first_run"] == at(30, 10, 10)


@pytest.mark.parametrize("now, late", [
    ((30, 12, 29), []),                                    # 12:00 plus the 30 min grace not over
    ((30, 12, 31), ["backup-check"]),
    ((31, 9, 59), ["backup-check"]),                       # 09:00 plus an hour not over
    ((31, 10, 1), ["backup-check", "daily-report"]),
])
def test_a_job_that_never_ran_is_missed_once_its_first_scheduled_time_and_grace_passed(tmp_path, local_time,
                                                                                         now, late):
    local_time("Europe/Paris")
    day, hour, minute = now
    carried = Carried({"first_run": at(30, 10, 10)})
    result = cron(config_in(tmp_path, **BOTH), carried, now=lambda: at(day, hour, minute))
    assert [job for job in ("backup-check", "daily-report") if f"{job} never ran" in result.message] == late
    assert result.status == (WARNING if late else OK)
    assert "first_run" not in carried.updates  # the mark is written once


def test_the_schedule_is_read_in_local_time(tmp_path, local_time):
    local_time("Asia/Kolkata")  # UTC+05:30: the crontab's 06:00 is 00:30 UTC
    carried = Carried({"first_run": at(30, 5, 50)})
    result = cron(config_in(tmp_path, **BOTH), carried, now=lambda: at(30, 6, 29))
    assert result.details["backup-check"]["first_due"] == "2026-11-30T06:00:00+05:30"
    assert result.status == OK
    assert cron(config_in(tmp_path, **BOTH), carried, now=lambda: at(30, 6, 31)).status == WARNING


def test_an_install_from_before_the_mark_keeps_the_old_rule(tmp_path):
    # Lock files and counters of earlier health runs, but no first_run: what never ran is missed now.
    ran(tmp_path, "backup-check", 2)
    carried = Carried({"cpu": {"boot": 1.0, "time": 5.0, "total": 10.0, "idle": 5.0},
                       "net": {"boot": 1.0, "time": 5.0, "nics": {}}})
    result = cron(config_in(tmp_path, **BOTH), carried)
    assert result.status == WARNING and result.message.startswith("daily-report never ran")
    assert "backup-check" not in result.message and result.details["backup-check"]["age_seconds"] >= 2 * HOUR - 5
    assert carried.updates["first_run"] == 0.0
    again = cron(config_in(tmp_path, **BOTH), Carried({"first_run": 0.0}))
    assert again.status == WARNING and "daily-report never ran" in again.message


def test_an_upgraded_install_keeps_paging_a_job_that_never_ran(tmp_path, run_monitor, envelope):
    ran(tmp_path, "backup-check", 2)
    proc = run_monitor(["health", "--format", "json", "--only", "system"], tmp_path, config=FRESH_CONFIG)
    check = envelope(proc)["checks"]["cron"]  # run_monitor saved counters as an earlier version would
    assert check["status"] == WARNING and "daily-report never ran" in check["message"]
    assert json.loads((tmp_path / "state" / "counters.json").read_text())["first_run"] == 0.0


def test_counters_set_aside_as_corrupt_mean_an_install_from_before_the_mark(tmp_path):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "counters.json.corrupt-20261130T070000").write_text("{")
    result = cron(config_in(tmp_path, **BOTH), Carried({}))
    assert result.status == WARNING and "never ran" in result.message


def test_on_a_fresh_install_an_earlier_manual_run_of_another_command_is_the_first_run(tmp_path, local_time):
    local_time("UTC")
    ran(tmp_path, "backup-check", 0)
    os.utime(tmp_path / "state" / "backup-check.lock", (at(30, 7, 0), at(30, 7, 0)))
    carried = Carried({})
    result = cron(config_in(tmp_path, **BOTH), carried, now=lambda: at(30, 9, 30))
    assert carried.updates["first_run"] == at(30, 7, 0)
    assert result.status == OK and "daily-report first due Mon 09:00" in result.message  # 10:00 with its grace
    assert cron(config_in(tmp_path, **BOTH), Carried({"first_run": at(30, 7, 0)}),
                now=lambda: at(30, 10, 1)).status == WARNING


def test_the_first_health_run_of_a_fresh_install_pages_no_missed_job(tmp_path, run_monitor, envelope):
    proc = run_monitor(["health", "--format", "json", "--only", "system"], tmp_path, config=FRESH_CONFIG,
                       steady_cpu=False)
    check = envelope(proc)["checks"]["cron"]
    assert check["status"] == OK, check["message"]
    assert "never ran" not in proc.stdout and "first due" in check["message"]
    counters = json.loads((tmp_path / "state" / "counters.json").read_text())
    assert abs(counters["first_run"] - time.time()) < 600
    # Seven hours later backup-check (every 6 h) is overdue: it is missed now.
    counters["first_run"] -= 7 * HOUR
    (tmp_path / "state" / "counters.json").write_text(json.dumps(counters))
    proc = run_monitor(["health", "--format", "json", "--only", "system"], tmp_path, config=FRESH_CONFIG,
                       steady_cpu=False)
    check = envelope(proc)["checks"]["cron"]
    assert check["status"] == WARNING and "backup-check never ran" in check["message"]


def test_the_check_reads_the_schedule_monitor_cron_prints(tmp_path, run_monitor):
    from monitor.checks.cron import WATCHED

    proc = run_monitor(["cron"], tmp_path, config="[system]\n")
    printed = {}
    for line in proc.stdout.splitlines():
        if line.startswith("#"):
            continue
        minute, hour, *_ = line.split()
        job = line.split()[6]
        hours = tuple(range(0, 24, int(hour[2:]))) if hour.startswith("*/") else (None if hour == "*" else
                                                                                  (int(hour),))
        printed[job] = (minute, hours)
    assert {job.name: printed[job.name] for job in WATCHED} == {"backup-check": ("0", (0, 6, 12, 18)),
                                                               "daily-report": ("0", (9,))}
    assert {job.name: job.hours for job in WATCHED} == {"backup-check": (0, 6, 12, 18), "daily-report": (9,)}


def test_one_record_per_job_gives_every_schedule():
    assert [(job.name, job.cron) for job in JOBS.values()] == [
        ("health", "*/5 * * * *"), ("backup-check", "0 */6 * * *"), ("daily-report", "0 9 * * *")]
    # The cron check's longest normal gaps: 6 h + 30 min and 24 h + 1 h.
    from monitor.checks.cron import WATCHED, _max_gap

    assert {job.name: _max_gap(job.hours, job.grace) for job in WATCHED} == {
        "backup-check": 6.5 * HOUR, "daily-report": 25 * HOUR}
    # The dead man's switch: overdue after 15m, 7h, 25h, as the committed rules say.
    from monitor.fleet.rules import STALE_AFTER

    assert STALE_AFTER == {"health": 900, "backup-check": 7 * HOUR, "daily-report": 25 * HOUR}
    with pytest.raises(ValueError, match="not minute 0"):
        JOBS["health"].hours  # every 5 minutes: not a schedule the cron check reads


def test_crontab_example_holds_the_lines_monitor_cron_prints():
    """The committed example is `monitor cron`'s job lines for a checkout in /opt/monitor."""
    from monitor.commands.cron import job_lines

    example = (Path(__file__).parent.parent / "crontab.example").read_text()
    jobs = [line for line in example.splitlines() if line and not line.startswith("#") and "=" not in line]
    assert jobs == job_lines("/opt/monitor/.venv/bin/monitor", " --config /opt/monitor/monitor.toml")


# --- `monitor cron` lines are safe to paste (issue 12, item 15) --------------------------

def cron_command(line: str) -> tuple[str, str]:
    """Given a crontab job line, return (what /bin/sh runs, what it gets on stdin) as cron does.

    Vixie cron (Debian's cron, cronie) cuts the command at the first `%` not preceded
    by a backslash, removes that backslash of `\\%`, and feeds what follows the cut to
    the command's stdin with each further `%` as a line break (do_command.c).
    """
    command = line.split(None, 5)[5]
    out, escaped = [], False
    for i, char in enumerate(command):
        if escaped:
            if char == "%":
                out[-1] = "%"
            else:
                out.append(char)
            escaped = False
            continue
        if char == "\\":
            escaped = True
            out.append(char)
            continue
        if char == "%":
            return "".join(out), command[i + 1:].replace("%", "\n")
        out.append(char)
    return "".join(out), ""


def test_cron_command_emulation_follows_vixie_cron():
    assert cron_command("* * * * * date +\\%F%line1%line2") == ("date +%F", "line1\nline2")
    assert cron_command("* * * * * a\\b \\\\%rest") == ("a\\b \\\\", "rest")


def test_monitor_cron_quotes_a_config_path_holding_shell_and_cron_characters(tmp_path, run_monitor):
    # A folder name an unprivileged user could choose: a space, `;`, `#`, `%`, quotes, a backslash.
    folder = tmp_path / "we ird;touch pwned #%x'q\\%y$(touch pwned2)"
    folder.mkdir()
    config = folder / "monitor.toml"
    config.write_text("[system]\n")
    proc = run_monitor(["cron", "--config", str(config)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    jobs = [line for line in proc.stdout.splitlines() if line and not line.startswith("#")]
    assert [line.split()[5] for line in jobs] == [str(Path(sys.executable).with_name("monitor"))] * 3
    command, stdin = cron_command(jobs[0])
    assert stdin == ""  # no `%` left for cron to cut the line at
    # Run it as cron would: /bin/sh -c with the command, from another folder.
    runner = tmp_path / "cron-cwd"
    runner.mkdir()
    from tests.conftest import clean_env

    done = subprocess.run(["/bin/sh", "-c", command], cwd=runner, env=clean_env(), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode in (0, 1, 2), done.stderr  # a verdict, not a usage or config error
    assert done.stdout == ""  # --quiet arrived as its own word
    # The state folder is relative to that config file: the path reached monitor whole.
    assert (folder / "state" / "counters.json").is_file()
    assert not list(tmp_path.rglob("pwned*")), "a word of the path ran as a shell command"


def test_monitor_cron_refuses_a_path_with_a_line_break(tmp_path, run_monitor):
    folder = tmp_path / "a\n* * * * * touch pwned"
    folder.mkdir()
    (folder / "monitor.toml").write_text("[system]\n")
    proc = run_monitor(["cron", "--config", str(folder / "monitor.toml")], tmp_path)
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "line break" in proc.stderr and "Traceback" not in proc.stderr


def test_a_profile_name_that_is_not_a_plain_word_is_a_config_error(tmp_path, run_monitor):
    text = '[system]\n[env."x; touch /tmp/pwned-monitor-cron #"]\n[env.dev]\n'
    proc = run_monitor(["cron", "--env", "x; touch /tmp/pwned-monitor-cron #"], tmp_path, config=text)
    assert (proc.returncode, proc.stdout) == (3, "")
    assert proc.stderr.startswith("config error: ") and "Traceback" not in proc.stderr
    assert "letters, digits, _ . and - only" in proc.stderr
    # The profile table itself is refused, by every command and by `config check`.
    proc = run_monitor(["config", "check"], tmp_path, config=text)
    assert proc.returncode == 3
    assert proc.stderr.strip() == ('config error: env."x; touch /tmp/pwned-monitor-cron #": '
                                   "a profile name is letters, digits, _ . and - only")
    ok = run_monitor(["cron", "--env", "dev"], tmp_path, config="[system]\n[env.dev]\n")
    assert ok.returncode == 0 and ok.stdout.splitlines()[-1].endswith(" --env dev"), ok.stderr


def test_without_a_config_file_the_working_directory_is_pinned_quoted(tmp_path, run_monitor):
    folder = tmp_path / "ops 50% $(touch pwned);x"
    folder.mkdir()
    proc = run_monitor(["cron"], folder, steady_cpu=False)
    assert proc.returncode == 0, proc.stderr
    job = [line for line in proc.stdout.splitlines() if line and not line.startswith("#")][0]
    command, stdin = cron_command(job)
    assert stdin == "" and " --config" not in command
    from tests.conftest import clean_env

    done = subprocess.run(["/bin/sh", "-c", command], cwd=tmp_path, env=clean_env(), capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode in (0, 1, 2), done.stderr
    assert (folder / "state" / "counters.json").is_file()  # the run's state went to the pinned folder
    assert not list(tmp_path.rglob("pwned*"))


def test_a_line_break_in_a_token_file_path_cannot_start_a_job_line_from_the_comments(tmp_path, run_monitor):
    config = ('[telegram]\nchat_ids = ["-100123"]\n'
              'token_file = "/etc/monitor/bot.token\\n* * * * * touch /tmp/pwned-by-comment"\n')
    proc = run_monitor(["cron"], tmp_path, config=config)
    assert proc.returncode == 0, proc.stderr
    jobs = [line for line in proc.stdout.splitlines() if line and not line.startswith("#")]
    assert len(jobs) == 3 and all("pwned" not in line for line in jobs), proc.stdout
    assert "/etc/monitor/bot.token\\n* * * * * touch /tmp/pwned-by-comment" in proc.stdout


@pytest.mark.parametrize("mark", [float("inf"), float("-inf"), float("nan"), True, "1"])
def test_a_first_run_mark_that_is_not_a_finite_number_is_set_again(tmp_path, mark):
    carried = Carried({"first_run": mark})
    cron(config_in(tmp_path, **BOTH), carried, now=lambda: 1_800_000_000.0)
    assert carried.updates["first_run"] == 1_800_000_000.0
