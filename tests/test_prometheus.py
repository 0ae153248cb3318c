"""The Prometheus exposition: exact text, escaping, atomic textfiles, the Pushgateway."""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given, settings, strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from monitor.fleet import metrics as prometheus
from monitor.results import Result
from tests.conftest import clean_env


def result(check_id, kind, status, value, **details):
    return Result(status, "m", value=value, details=details, id=check_id, kind=kind)


def exposition(results, command="health", **extra):
    """The text monitor writes, checked to be prometheus_client's own for the same gauges."""
    registry = prometheus.build_registry(command, results, 1_800_000_000.0, 0.25, **extra)
    text = registry.text().decode()
    assert text == generate_latest(registry).decode()
    return text


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


# --- the text written without prometheus_client ------------------------------------------------

_VALUES = st.one_of(st.integers(-10**20, 10**20), st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from([0.0, -0.0, 1.0, 86400.0, 1e6, 1234567.0, 1.5e300, 5e-324, 1e-7]))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=12), _VALUES), min_size=1, max_size=6),
       st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")) | st.sampled_from("\\\n\" "),
               max_size=30))
def test_the_text_is_byte_for_byte_what_prometheus_client_writes_and_parses_back(samples, help_text):
    exposition = prometheus.Exposition()
    for check, value in samples:
        exposition.set("monitor_check_value", help_text, ("command", "check", "kind"),
                       {"kind": "system", "check": check, "command": "health"}, value)
        exposition.set("monitor_outbox_messages", "Unlabelled.", (), {}, value)
    text = exposition.text().decode()
    assert text == generate_latest(exposition).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["monitor_check_value"].documentation == help_text.strip(" ")  # the parser strips spaces
    parsed = {s.labels["check"]: s.value for s in families["monitor_check_value"].samples}
    assert parsed == {check: float(value) for check, value in dict(samples).items()}


def test_infinity_and_large_and_small_values_are_written_as_prometheus_client_writes_them():
    exposition = prometheus.Exposition()
    for i, value in enumerate([math.inf, -math.inf, 86400, 1.0, 1e10, 12345678.9, 0.000001, 2 ** 63]):
        exposition.set("monitor_check_value", "h", ("check",), {"check": str(i)}, value)
    text = exposition.text().decode()
    assert text == generate_latest(exposition).decode()
    assert 'check="0"} +Inf' in text and 'check="2"} 86400.0' in text and 'check="4"} 1e+10' in text


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_the_textfile_of_every_command_with_hostile_label_values(tmp_path):
    weird = 'scraper:a"b\\c\nd \u00e9\u2603'
    results = [result("cpu", "system", "ok", 12.5), result(weird, "scraper", "critical", None),
               result("vault-token", "vault", "ok", None, expire_time=None, ttl_seconds=None),
               result("opportunities", "business", "ok", 3, minimum=1, avg_roi=2.6667),
               result("errors", "business", "warning", 2, count=2)]
    for command in ("health", "backup-check", "daily-report"):
        registry = prometheus.build_registry(command, results, 1_800_000_000.0, 0.25, notifications={"outbox": 0})
        path = prometheus.write_textfile(str(tmp_path), command, registry)
        with open(path, "rb") as handle:
            check = subprocess.run(["promtool", "check", "metrics"], stdin=handle, capture_output=True, text=True)
        # 1 is a parse error; 3 only lint remarks, and the only ones allowed are the "_count"
        # suffix of the business gauges, names the seed fixed (SPEC).
        assert check.returncode in (0, 3), check.stdout + check.stderr
        for line in check.stderr.splitlines():
            assert re.fullmatch(r'daily_\w+_count non-histogram and non-summary metrics should not have "_count" '
                                r'suffix', line), line
    unescaped = registry.text().replace(b'\\"', b'"')  # the parser's view of a raw quote: broken
    assert subprocess.run(["promtool", "check", "metrics"], input=unescaped, capture_output=True).returncode == 1


def test_a_health_run_writing_its_textfile_does_not_import_prometheus_client(tmp_path):
    code = ("import json, sys\n"
            "from monitor.cli import main\n"
            "code = main(['health', '--format', 'json', '--quiet', '--textfile-dir', sys.argv[1]])\n"
            "print(json.dumps({'code': code, 'loaded': 'prometheus_client' in sys.modules}))\n")
    (tmp_path / "prom").mkdir()
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "prom")], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=60)
    outcome = json.loads(proc.stdout.splitlines()[-1])
    assert outcome["loaded"] is False and outcome["code"] in (0, 1, 2), proc.stderr
    text = (tmp_path / "prom" / "monitor_health.prom").read_text()
    assert {f.name for f in text_string_to_metric_families(text)} >= {"monitor_check_status",
                                                                       "monitor_last_run_timestamp_seconds"}
