"""The Prometheus exposition: exact text, escaping, atomic textfiles, the Pushgateway."""

import json
import math
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.fleet import metrics as prometheus
from monitor.results import Result


def result(check_id, kind, status, value, **details):
    return Result(status, "m", value=value, details=details, id=check_id, kind=kind)


def exposition(results, command="health", **extra):
    registry = prometheus.build_registry(command, results, 1_800_000_000.0, 0.25, **extra)
    return generate_latest(registry).decode()


def test_a_health_run_is_exposed_exactly():
    text = exposition([result("cpu", "system", "ok", 12.5), result("disk:/", "system", "warning", 91.2)],
                      notifications={"outbox": 2})
    assert text == """\
# HELP monitor_check_status Check status: 0 ok, 1 warning, 2 critical, 3 unknown.
# TYPE monitor_check_status gauge
monitor_check_status{check="cpu",command="health",kind="system"} 0.0
monitor_check_status{check="disk:/",command="health",kind="system"} 1.0
# HELP monitor_check_value The value a check measured, in the check's own unit.
# TYPE monitor_check_value gauge
monitor_check_value{check="cpu",command="health",kind="system"} 12.5
monitor_check_value{check="disk:/",command="health",kind="system"} 91.2
# HELP monitor_cpu_usage_percent CPU busy percent since the previous health run.
# TYPE monitor_cpu_usage_percent gauge
monitor_cpu_usage_percent 12.5
# HELP monitor_disk_usage_percent Disk space used percent, as df counts it.
# TYPE monitor_disk_usage_percent gauge
monitor_disk_usage_percent{path="/"} 91.2
# HELP monitor_last_run_timestamp_seconds When the command last finished, as a Unix time.
# TYPE monitor_last_run_timestamp_seconds gauge
monitor_last_run_timestamp_seconds{command="health"} 1.8e+09
# HELP monitor_run_duration_seconds How long the command's last run took.
# TYPE monitor_run_duration_seconds gauge
monitor_run_duration_seconds{command="health"} 0.25
# HELP monitor_outbox_messages Telegram messages waiting in the outbox.
# TYPE monitor_outbox_messages gauge
monitor_outbox_messages 2.0
"""


def test_a_daily_report_run_is_exposed_exactly_with_the_days_figures_after_the_runs_own():
    text = exposition([result("opportunities", "business", "ok", 3, minimum=1, avg_roi=2.6667),
                       result("sources", "business", "ok", 2), result("errors", "business", "warning", 2, count=2)],
                      command="daily-report", notifications={"outbox": 2})
    assert text == """\
# HELP monitor_check_status Check status: 0 ok, 1 warning, 2 critical, 3 unknown.
# TYPE monitor_check_status gauge
monitor_check_status{check="opportunities",command="daily-report",kind="business"} 0.0
monitor_check_status{check="sources",command="daily-report",kind="business"} 0.0
monitor_check_status{check="errors",command="daily-report",kind="business"} 1.0
# HELP monitor_check_value The value a check measured, in the check's own unit.
# TYPE monitor_check_value gauge
monitor_check_value{check="opportunities",command="daily-report",kind="business"} 3.0
monitor_check_value{check="sources",command="daily-report",kind="business"} 2.0
monitor_check_value{check="errors",command="daily-report",kind="business"} 2.0
# HELP monitor_last_run_timestamp_seconds When the command last finished, as a Unix time.
# TYPE monitor_last_run_timestamp_seconds gauge
monitor_last_run_timestamp_seconds{command="daily-report"} 1.8e+09
# HELP monitor_run_duration_seconds How long the command's last run took.
# TYPE monitor_run_duration_seconds gauge
monitor_run_duration_seconds{command="daily-report"} 0.25
# HELP daily_opportunities_count Opportunities found during the reported day.
# TYPE daily_opportunities_count gauge
daily_opportunities_count 3.0
# HELP daily_avg_roi Average ROI of the opportunities of the reported day.
# TYPE daily_avg_roi gauge
daily_avg_roi 2.6667
# HELP daily_sources_active Distinct sources with opportunities during the reported day.
# TYPE daily_sources_active gauge
daily_sources_active 2.0
# HELP daily_errors_count ERROR and CRITICAL log records during the reported day.
# TYPE daily_errors_count gauge
daily_errors_count 2.0
"""


def test_a_vault_check_that_timed_out_still_says_vault_is_down():
    # The runner's own Result (no details): the vault module's samples read it as unreachable.
    text = exposition([result("vault", "vault", "critical", None), result("scraper:a", "scraper", "critical", None)])
    assert "monitor_vault_up 0.0" in text and 'monitor_scraper_up{scraper="a"} 0.0' in text


def test_label_values_with_quotes_newlines_and_backslashes_stay_valid_exposition():
    weird = 'scraper:a"b\\c\nd'
    text = exposition([result(weird, "scraper", "critical", None)])
    families = {f.name: f for f in text_string_to_metric_families(text)}
    labels = [s.labels for s in families["monitor_check_status"].samples]
    assert {"check": weird, "command": "health", "kind": "scraper"} in labels
    assert '\\"' in text and "\\n" in text  # escaped, not raw


def test_values_that_are_not_numbers_are_left_out_never_nan():
    text = exposition([result("cpu", "system", "unknown", None), result("load", "system", "ok", math.nan)])
    assert "NaN" not in text and "monitor_check_value" not in text
    assert 'monitor_check_status{check="cpu",command="health",kind="system"} 3.0' in text


def test_a_never_expiring_vault_token_is_exposed_as_infinity():
    text = exposition([result("vault-token", "vault", "ok", None, expire_time=None, ttl_seconds=None)])
    assert "monitor_vault_token_ttl_seconds +Inf" in text


def test_the_textfile_is_replaced_atomically_and_leaves_no_temp_file(tmp_path):
    registry = prometheus.build_registry("backup-check", [], 1.0, 0.1)
    path = prometheus.write_textfile(str(tmp_path), "backup-check", registry)
    assert path == str(tmp_path / "monitor_backup-check.prom")
    assert os.listdir(tmp_path) == ["monitor_backup-check.prom"]
    assert (tmp_path / "monitor_backup-check.prom").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("make", ["missing", "file"])
def test_a_textfile_folder_that_is_not_a_folder_fails_with_the_reason(tmp_path, make):
    target = tmp_path / "prom"
    if make == "file":
        target.write_text("x")
    with pytest.raises(OSError) as failure:
        prometheus.write_textfile(str(target), "health", prometheus.build_registry("health", [], 1.0, 0.1))
    assert failure.value.strerror == ("Not a directory" if make == "file" else "No such file or directory")


class _Gateway(BaseHTTPRequestHandler):
    def do_PUT(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.pushed.append((self.path, body.decode()))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def gateway():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    server.pushed = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_health_pushes_to_the_pushgateway_grouped_by_instance_and_command(tmp_path, run_monitor, verdict_config,
                                                                          gateway):
    url = f"http://127.0.0.1:{gateway.server_address[1]}"
    config = verdict_config("ok") + f'[prometheus]\npushgateway_url = "{url}"\n'
    proc = run_monitor(["health", "--format", "json"], tmp_path, config=config)
    assert proc.returncode == 0, proc.stderr
    [(path, body)] = gateway.pushed
    # The grouping key, in the order prometheus_client writes it (sorted by label name).
    assert path == f"/metrics/job/monitor/command/health/instance/{os.uname().nodename}"
    assert 'monitor_last_run_timestamp_seconds{command="health"}' in body


def test_an_unreachable_pushgateway_is_a_logged_warning_and_changes_nothing(tmp_path, run_monitor, verdict_config,
                                                                             envelope, log_records):
    config = verdict_config("ok") + '[prometheus]\npushgateway_url = "http://127.0.0.1:1"\n'
    proc = run_monitor(["health", "--format", "json"], tmp_path, config=config)
    assert proc.returncode == 0 and proc.stderr == ""
    assert envelope(proc)["overall_status"] == "ok"
    warnings = [r for r in log_records(tmp_path / "logs" / "health.log") if r.get("event") == "pushgateway_failed"]
    assert len(warnings) == 1 and warnings[0]["levelname"] == "WARNING"


def test_infinite_values_are_left_out_never_inf():
    # Only a Vault token that never expires is +Inf on purpose; a measured infinity is not.
    text = exposition([result("quota:etherscan", "quota", "ok", math.inf),
                       result("load", "system", "ok", -math.inf)])
    assert "Inf" not in text and "monitor_check_value" not in text and "quota_remaining" not in text


def test_a_non_finite_value_makes_the_check_unknown_with_null_in_stdout():
    from monitor.output import envelope, to_json
    from monitor.results import OK, with_identity
    import datetime

    raw = Result(OK, "42 things", value=math.inf, details={"rate": math.nan, "list": [-math.inf, 1.5]})
    shown = with_identity(raw, "custom", "system", 1.0)
    assert (shown.status, shown.value) == ("unknown", None)
    assert shown.message == "42 things (value is not a finite number)"
    assert shown.details == {"rate": None, "list": [None, 1.5]}
    # And whatever else an envelope carries is strict JSON too.
    line = to_json(envelope("health", datetime.datetime(2026, 1, 1), "h", "prod", "ok", 1.0, [raw],
                            extra={"odd": math.nan}))
    assert json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in {line}"))["odd"] is None
