"""The `cron` check (did the other jobs run on schedule?) and `monitor cron`."""

import os
import sys
import time
from pathlib import Path

from monitor.checks.cron import cron
from monitor.config import build
from monitor.results import OK, WARNING

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
