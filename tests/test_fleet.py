"""The fleet view: alert rules, their unit tests, the Alertmanager example and the Grafana
dashboard, rendered from the config and proven on a real Prometheus that scrapes two real
node_exporters fed by the installed `monitor` (one healthy host, one failing host).

promtool, amtool, prometheus and prometheus-node-exporter come from Debian packages that
`make test` installs; a missing tool fails the test, it never skips it.
"""

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import ssl
import threading
import time
import gzip
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from monitor import config as monitor_config
from monitor.fleet import dashboard as render_dashboard, rules as render_rules, yaml as render_yaml
from monitor.checks import metrics as check_metrics
from monitor.fleet.metrics import METRICS as MONITOR_METRICS

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "prometheus_rules.yml"
DASHBOARD = ROOT / "grafana_dashboard.json"
ALERTMANAGER = ROOT / "alertmanager.example.yml"
RULE_TESTS = sorted((ROOT / "tests" / "prometheus").glob("*.yml"))
MONITOR = str(Path(sys.executable).with_name("monitor"))

# The shell's settings that would change what the monitor runs see.
_SCRUBBED = ("MONITOR_CONFIG", "MONITOR_ENV", "MONITOR_LOCK_WAIT", "TELEGRAM_BOT_TOKEN",
             "VAULT_ADDR", "VAULT_TOKEN", "NO_COLOR")
ROW_TITLES = ["System Health", "Scraper Performance", "Business Metrics", "Security", "Ahead", "Monitor"]


def tool(*names: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"{names[0]} not found: `make test` installs it (Debian packages prometheus, "
                "prometheus-alertmanager, prometheus-node-exporter)")


def default_config(tmp_path) -> dict:
    # The built-in defaults, as `monitor.config.load(None, None)` gives them in a folder
    # without monitor.toml; built directly so an /etc/monitor/monitor.toml on the machine
    # running the tests cannot leak in.
    return monitor_config.build({}, None, str(tmp_path))


def run(args, **kwargs) -> subprocess.CompletedProcess:
    if "input" not in kwargs:
        kwargs["stdin"] = subprocess.DEVNULL
    return subprocess.run(args, capture_output=True, text=True, timeout=60, **kwargs)


# --- one source of truth ---------------------------------------------------------------------

def test_committed_rules_equal_the_render_of_the_defaults(tmp_path):
    assert RULES.read_text() == render_rules.rules_yaml(default_config(tmp_path)), (
        "prometheus_rules.yml drifted from monitor/fleet/: run `monitor render rules > prometheus_rules.yml`")


def test_committed_dashboard_equals_the_render_of_the_defaults(tmp_path):
    assert DASHBOARD.read_text() == render_dashboard.dashboard_json(default_config(tmp_path)), (
        "grafana_dashboard.json drifted from monitor/fleet/: "
        "run `monitor render dashboard > grafana_dashboard.json`")


PROD = {
    "system": {"cpu_percent": {"warning": 70, "critical": 90}},
    "vault": {"token_ttl": {"warning": "3d", "critical": "12h"}},
    "scrapers": [
        {"name": "uniswap", "url": "http://127.0.0.1:9101/health", "latency_ms": {"warning": 500, "critical": 2000}},
        {"name": "sushi.v2", "url": "http://127.0.0.1:9102/health"},
        {"name": "pancake-v3", "url": "http://127.0.0.1:9103/health", "latency_ms": {"warning": 500, "critical": 2000}},
        {"name": "curve.fi", "url": "http://127.0.0.1:9104/health", "latency_ms": {"warning": 2000, "critical": 4000}},
    ],
    "quotas": [{"name": "etherscan", "url": "https://api.example.org/q", "remaining_header": "X-R", "limit": 100,
                "remaining_percent": {"warning": 30, "critical": 10}}],
    "backups": [{"name": "postgres", "path": "/var/backups/*.gz", "max_age": "8h"}],
    "report": {"min_opportunities": 20},
    "env": {"dev": {"system": {"cpu_percent": {"warning": 95, "critical": 99}}}},
}


def test_rules_follow_the_config_thresholds(tmp_path):
    text = render_rules.rules_yaml(monitor_config.build(PROD, None, str(tmp_path)))
    assert "expr: monitor_cpu_usage_percent >= 70\n" in text
    assert "expr: monitor_cpu_usage_percent >= 90\n" in text
    assert "expr: daily_opportunities_count < 20\n" in text
    assert "expr: monitor_vault_token_ttl_seconds <= 259200\n" in text
    assert "expr: monitor_vault_token_ttl_seconds <= 43200\n" in text
    # One quota set: its levels hold for every API. Two scrapers that disagree: one
    # clause for the overridden name, the built-in default for every other name.
    assert "expr: monitor_api_quota_remaining_ratio <= 0.3\n" in text
    assert ('expr: monitor_scraper_response_seconds{scraper=~"pancake-v3|uniswap"} >= 0.5 or '
            'monitor_scraper_response_seconds{scraper=~"curve[.]fi"} >= 2 or '
            'monitor_scraper_response_seconds{scraper!~"curve[.]fi|pancake-v3|uniswap"} >= 1\n') in text
    assert ('expr: monitor_scraper_response_seconds{scraper=~"pancake-v3|uniswap"} >= 2 or '
            'monitor_scraper_response_seconds{scraper=~"curve[.]fi"} >= 4 or '
            'monitor_scraper_response_seconds{scraper!~"curve[.]fi|pancake-v3|uniswap"} >= 3\n') in text
    assert "(warning from its configured level)" in text
    assert "> 28800\n" in text and "(max_age 8h)" in text
    path = tmp_path / "prod_rules.yml"
    path.write_text(text)
    checked = run([tool("promtool"), "check", "rules", str(path)])
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_an_environment_profile_renders_its_own_thresholds(tmp_path):
    dev = monitor_config.build(PROD, "dev", str(tmp_path))
    assert "expr: monitor_cpu_usage_percent >= 95\n" in render_rules.rules_yaml(dev)
    panel = _panel(render_dashboard.dashboard(dev), "CPU busy %")
    assert [s["value"] for s in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]] == [None, 95, 99]
    assert render_dashboard.dashboard(dev)["uid"] == "monitor-fleet-dev"


@pytest.mark.parametrize("text, expected", [
    ("Web3 Scraper is down", "Web3 Scraper is down"),
    ("5m", "5m"),
    ('up{job="web3_scraper"} == 0', 'up{job="web3_scraper"} == 0'),
    ("yes", "'yes'"), ("Off", "'Off'"), ("null", "'null'"), ("~", "'~'"),
    ("50", "'50'"), ("0.05", "'0.05'"), ("1e3", "'1e3'"), ("0x1F", "'0x1F'"), ("1:30", "'1:30'"),
    ("2026-11-25", "'2026-11-25'"), (".inf", "'.inf'"),
    ("{{ $labels.instance }} is down", "'{{ $labels.instance }} is down'"),
    ("down: really", "'down: really'"), ("a #comment", "'a #comment'"), ("- item", "'- item'"),
    ("monitor's outbox: full", "'monitor''s outbox: full'"),
    (" padded", "' padded'"), ("", "''"),
    ("two\nlines", '"two\\nlines"'), ("tab\there", '"tab\\there"'),
    ("✅ resolved", "'✅ resolved'"),
])
def test_yaml_scalars_are_quoted_whenever_yaml_could_misread_them(text, expected):
    assert render_yaml.yaml_scalar(text) == expected


def test_yaml_numbers_read_back_as_the_same_numbers():
    assert [render_yaml.yaml_scalar(v) for v in (80, 80.0, 0.05, 1.5, 604800.0, True, None)] == \
        ["80", "80", "0.05", "1.5", "604800", "true", "null"]


# --- the rules and their unit tests ------------------------------------------------------------

def _all_rules(config) -> list[dict]:
    return [rule for group in render_rules.rules(config)["groups"] for rule in group["rules"]]


def test_rules_pass_promtool_check():
    checked = run([tool("promtool"), "check", "rules", str(RULES)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(_all_rules(monitor_config.build({}, None, '.')))} rules found" in checked.stdout


def test_rule_unit_tests_pass_promtool_test_rules():
    assert RULE_TESTS, "no rule unit tests in tests/prometheus"
    tested = run([tool("promtool"), "test", "rules", *map(str, RULE_TESTS)], cwd=ROOT)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def _unit_test_cases() -> list[tuple[str, set]]:
    """(alertname, severities expected to fire) for each alert_rule_test of tests/prometheus."""
    cases = []
    for path in RULE_TESTS:
        for block in re.split(r"\n\s*- eval_time:", path.read_text())[1:]:
            name = re.search(r"alertname: (\S+)", block).group(1)
            cases.append((name, set(re.findall(r"exp_labels: \{severity: (\w+)", block))))
    return cases


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_stays_quiet(tmp_path):
    cases = _unit_test_cases()
    for rule in _all_rules(default_config(tmp_path)):
        name, severity = rule["alert"], rule["labels"]["severity"]
        assert any(n == name and severity in fired for n, fired in cases), f"{name} ({severity}) never fires"
        assert any(n == name and severity not in fired for n, fired in cases), f"{name} never stays quiet"


def test_the_seed_rules_are_kept_as_written():
    text = RULES.read_text()
    assert ("  - name: web3_scraper_alerts\n    rules:\n"
            "      - alert: ScraperDown\n"
            "        expr: up{job=\"web3_scraper\"} == 0\n"
            "        for: 5m\n"
            "        labels:\n"
            "          severity: critical\n"
            "        annotations:\n"
            "          summary: Web3 Scraper is down\n") in text
    assert ("      - alert: LowOpportunityCount\n"
            "        expr: daily_opportunities_count < 50\n"
            "        for: 10m\n"
            "        labels:\n"
            "          severity: warning\n") in text


def test_every_alert_says_severity_summary_description_and_runbook(tmp_path):
    for rule in _all_rules(default_config(tmp_path)):
        notes = rule["annotations"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert notes["summary"] and "$value" in notes["description"], rule["alert"]
        # absent() has no instance label to show: that alert names no host.
        if rule["alert"] != "MonitorHealthAbsent":
            assert "$labels.instance" in notes["description"], rule["alert"]
            assert notes["runbook"].startswith("ssh "), rule["alert"]
        assert "monitor " in notes["runbook"], rule["alert"]
        # Alertmanager's Telegram message is HTML: no bare "<", ">" or "&" in the texts.
        assert not re.search(r"[<>&]", notes["summary"] + notes["description"]), rule["alert"]


def test_each_command_has_a_dead_mans_switch():
    text = RULES.read_text()
    for command, limit in (("health", 900), ("backup-check", 25200), ("daily-report", 90000)):
        assert f'expr: time() - monitor_last_run_timestamp_seconds{{command="{command}"}} > {limit}\n' in text
    assert 'expr: absent(monitor_last_run_timestamp_seconds{command="health"})\n' in text


# --- Alertmanager -------------------------------------------------------------------------------

def _amtool_version(amtool: str) -> tuple:
    answer = run([amtool, "--version"])
    found = re.search(r"version (\d+)\.(\d+)", answer.stdout + answer.stderr)
    return tuple(map(int, found.groups())) if found else (0, 0)


def test_alertmanager_example_passes_amtool_check_config(tmp_path):
    amtool = tool("amtool")
    checked = run([amtool, "check-config", str(ALERTMANAGER)])
    if _amtool_version(amtool) >= (0, 26):
        assert checked.returncode == 0, checked.stdout + checked.stderr
        return
    # Debian 12's Alertmanager 0.25 predates bot_token_file (0.26): the file must fail on
    # that field alone, and pass with the inline bot_token 0.25 knows.
    problems = re.findall(r"line \d+: (.*)", checked.stdout + checked.stderr)
    assert checked.returncode != 0 and problems and set(problems) == {
        "field bot_token_file not found in type config.plain"}, checked.stdout + checked.stderr
    older = tmp_path / "alertmanager-0.25.yml"
    older.write_text(re.sub(r"bot_token_file: \S+", 'bot_token: "123456:placeholder"', ALERTMANAGER.read_text()))
    checked = run([amtool, "check-config", str(older)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "2 inhibit rules" in checked.stdout and "2 receivers" in checked.stdout


def test_alertmanager_example_routes_by_severity_to_telegram_and_inhibits_stopped_hosts():
    text = ALERTMANAGER.read_text()
    for needed in ("group_by: [alertname, environment]", "repeat_interval:", "telegram_configs:",
                   "bot_token_file:", "chat_id: -100", "parse_mode: HTML", "send_resolved: true",
                   "matchers: ['severity=\"critical\"']", "matchers: ['severity=\"warning\"']"):
        assert needed in text, needed
    inhibit = text[text.index("inhibit_rules:"):]
    stopped = "|".join(render_rules.HEALTH_STOPPED_ALERTS)
    assert f"source_matchers: ['alertname=~\"{stopped}\"']" in inhibit
    assert f"target_matchers: ['alertname!~\"{stopped}\"']" in inhibit
    assert "equal: [instance]" in inhibit
    rules = RULES.read_text()
    assert all(f"alert: {name}\n" in rules for name in render_rules.HEALTH_STOPPED_ALERTS)


def test_alertmanager_telegram_message_template_renders(tmp_path):
    text = ALERTMANAGER.read_text()
    block = re.search(r"message: &message \|-\n((?: {10}.*\n|\n)+)", text).group(1)
    body = "\n".join(line[10:] for line in block.splitlines())
    (tmp_path / "message.tmpl").write_text('{{ define "monitor.telegram" }}' + body + "{{ end }}")
    rendered = run([tool("amtool"), "template", "render", f"--template.glob={tmp_path / 'message.tmpl'}",
                    '--template.text={{ template "monitor.telegram" . }}'])
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    assert "RESOLVED" in rendered.stdout and "<b>" in rendered.stdout


# --- the dashboard ------------------------------------------------------------------------------

def _panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _panel(dashboard: dict, title: str) -> dict:
    return next(p for p in _panels(dashboard) if p["title"] == title)


def _exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p["targets"]]


# Read by the rules and panels, written by others: the seed's scrape job and node_exporter.
NOT_MONITORS = {"up", "node_textfile_scrape_error"}
PROMQL_WORDS = {"avg_over_time", "max_over_time", "time", "absent", "on", "group_left", "unless", "or",
                "instance", "job", "check", "label_replace"}


def _metric_names(expr: str) -> set[str]:
    bare = re.sub(r'"[^"]*"|\{[^}]*\}|\[[^]]*\]', " ", expr)  # strings, label matchers, ranges
    return set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare)) - PROMQL_WORDS


def test_every_metric_a_panel_or_a_rule_reads_is_one_that_monitor_or_a_check_module_declares(tmp_path):
    exported = set(MONITOR_METRICS) | set(check_metrics()) | NOT_MONITORS
    config = default_config(tmp_path)
    exprs = _exprs(render_dashboard.dashboard(config)) + [r["expr"] for r in _all_rules(config)]
    read = set().union(*map(_metric_names, exprs))
    assert read - exported == set()


def test_dashboard_imports_with_a_prometheus_input_and_an_instance_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS"
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    assert {r["id"] for r in dashboard["__requires"]} >= {"grafana", "prometheus", "timeseries", "stat", "table"}
    variable = dashboard["templating"]["list"][0]
    assert variable["name"] == "instance" and variable["multi"] and variable["includeAll"]
    assert variable["query"]["query"] == "label_values(monitor_last_run_timestamp_seconds, instance)"
    assert [p["title"] for p in dashboard["panels"] if p["type"] == "row"] == ROW_TITLES
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in _panels(dashboard):
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]


def test_every_dashboard_query_filters_on_the_instance_variable():
    for expr in _exprs(json.loads(DASHBOARD.read_text())):
        selectors = re.findall(r"\b((?:monitor|daily|node)_[a-z_]+)(\{[^}]*\})?", expr)
        assert selectors, expr
        for name, labels in selectors:
            assert 'instance=~"$instance"' in labels, f"{name} in {expr}"


def test_dashboard_thresholds_equal_the_default_config(tmp_path):
    dashboard = json.loads(DASHBOARD.read_text())
    system = default_config(tmp_path)["system"]

    def steps(title):
        return [(s["color"], s["value"]) for s in _panel(dashboard, title)["fieldConfig"]["defaults"]["thresholds"]["steps"]]

    for title, key in (("CPU busy %", "cpu_percent"), ("Memory used %", "memory_percent"),
                       ("Disk used %", "disk_percent"), ("Inodes used %", "inodes_percent"),
                       ("Swap used %", "swap_percent"), ("Load per CPU (5 min)", "load_per_cpu")):
        levels = system[key]
        assert steps(title) == [("green", None), ("yellow", levels.warning), ("red", levels.critical)], title
    assert steps("CPU busy %") == [("green", None), ("yellow", 80), ("red", 95)]
    assert steps("Vault token TTL") == [("red", None), ("yellow", 86400), ("green", 604800)]
    assert steps("API quota remaining") == [("red", None), ("yellow", 0.05), ("green", 0.2)]
    assert steps("Health endpoint latency") == [("green", None), ("yellow", 1), ("red", 3)]
    assert steps("Opportunities (reported day)") == [("yellow", None), ("green", 50)]
    assert steps("Last health run") == [("green", None), ("red", 900)]


# --- end to end: real Prometheus, two node_exporters, the installed monitor --------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class _Provider(BaseHTTPRequestHandler):
    """The scraper's health endpoint and the API quota provider, on loopback."""

    def do_GET(self):
        if self.path == "/health":
            self._send(200, {}, b'{"status": "ok", "stats": {"error_rate": 0.01}}')
        elif self.path.startswith("/quota/"):
            remaining = self.path.rsplit("/", 1)[1]
            self._send(200, {"X-RateLimit-Remaining": remaining, "X-RateLimit-Limit": "100"}, b"{}")
        else:
            self._send(503, {}, b'{"status": "down"}')

    def _send(self, status, headers, body):
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


def _wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args[0]} exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{process.args[0]} not answering on {url}: {log.read_text()[-2000:]}")


def _opportunities(path: Path, day, count: int, sources=("uniswap",)) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS opportunities (found_at TEXT, source TEXT, roi REAL)")
        db.executemany("INSERT INTO opportunities VALUES (?, ?, ?)",
                       [(f"{day}T{10 + i // 60:02d}:{i % 60:02d}:00+00:00", sources[i % len(sources)], 1.0 + i / 100)
                        for i in range(count)])


def _host(folder: Path, text: str) -> Path:
    folder.mkdir()
    (folder / "textfiles").mkdir()
    (folder / "backups").mkdir()
    (folder / "scraper-logs").mkdir()
    (folder / "monitor.toml").write_text(text)
    return folder


def _seed_eta_series(state: Path) -> None:
    """Earlier health runs of the failing host (issue 17): its disk / filled 1.5 % of its size
    every 10 minutes (full within 12 h however full it is now), its inodes as fast, and its
    quota went from 60 to 99 calls used of 100 in 40 minutes, with a daily reset: every ETA
    is known."""
    st, now = os.statvfs("/"), time.time()
    used, total = (st.f_blocks - st.f_bfree) * st.f_frsize, (st.f_blocks - st.f_bfree + st.f_bavail) * st.f_frsize
    inodes = st.f_files - st.f_ffree
    state.mkdir(mode=0o700)
    (state / "counters.json").write_text(json.dumps({
        "eta:disk:/": [[now - 600 * k, used - k * total * 0.015, total] for k in (4, 3, 2, 1)],
        "eta:inodes:/": [[now - 600 * k, inodes - k * st.f_files * 0.015, st.f_files] for k in (4, 3, 2, 1)],
        "eta:quota:etherscan": [[now - 600 * k, 99 - 10 * k, 100] for k in (4, 3, 2, 1)],
    }))


class Fleet:
    """Everything the end-to-end tests look at."""

    def __init__(self, url: str, hosts: dict, runs: dict):
        self.url, self.hosts, self.runs = url, hosts, runs

    def api(self, path: str, **params):
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            return json.load(exc)

    def query(self, expr: str) -> dict:
        return self.api("query", query=expr)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    from tests.openbao import dev_server, unused_url

    tool("promtool")  # fail early, with the install hint, when any tool is missing
    prometheus = tool("prometheus")
    node_exporter = tool("prometheus-node-exporter", "node_exporter")
    base = tmp_path_factory.mktemp("fleet")
    processes: list[subprocess.Popen] = []
    provider = ThreadingHTTPServer(("127.0.0.1", 0), _Provider)
    provider.daemon_threads = True
    threading.Thread(target=provider.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{provider.server_address[1]}"
    # The same provider over HTTPS, for the ok host's quota: its certificate is the tls: check's.
    from tests.tls_certs import DAY, Authority

    authority = Authority(base / "tls")
    cert, key, _ = authority.leaf("provider", datetime.now(timezone.utc) - DAY, datetime.now(timezone.utc) + 20 * DAY)
    tls_provider = ThreadingHTTPServer(("127.0.0.1", 0), _Provider)
    tls_provider.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    tls_provider.socket = context.wrap_socket(tls_provider.socket, server_side=True)
    threading.Thread(target=tls_provider.serve_forever, daemon=True).start()
    tls_api = f"https://127.0.0.1:{tls_provider.server_address[1]}"
    yesterday = (datetime.now(timezone.utc) - timedelta(days=1)).date()
    try:
        with dev_server() as bao:
            request = urllib.request.Request(
                f"{bao.addr}/v1/auth/token/create", method="POST", data=json.dumps({"ttl": "720h"}).encode(),
                headers={"X-Vault-Token": bao.root_token, "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as resp:
                token = json.load(resp)["auth"]["client_token"]
            request = urllib.request.Request(  # what vault.secrets reads (issue 17, item 4)
                f"{bao.addr}/v1/secret/data/scraper", method="POST",
                data=json.dumps({"data": {"api_key": "fleet-api-key-value"}}).encode(),
                headers={"X-Vault-Token": bao.root_token, "Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=10).close()

            ok = _host(base / "ok", f"""
[system]
network_interfaces = ["lo"]
[vault]
url = "{bao.addr}"
secrets = ["secret/scraper#api_key"]
scraper_token_file = "scraper.token"
[[scrapers]]
name = "uniswap"
url = "{api}/health"
expect_json = {{ status = "ok" }}
json_metrics = {{ "stats.error_rate" = {{ warning = 0.05, critical = 0.2 }} }}
heartbeat_file = "heartbeat"
[[quotas]]
name = "etherscan"
url = "{tls_api}/quota/90"
ca_cert = "{authority.path}"
remaining_header = "X-RateLimit-Remaining"
limit_header = "X-RateLimit-Limit"
[[backups]]
name = "postgres"
path = "backups/*.sql.gz"
verify = "gzip"
[report]
database = "sqlite://{base / 'ok' / 'opportunities.db'}"
expected_sources = ["uniswap", "sushiswap"]
error_logs = ["scraper-logs/*.log"]
[[logfiles]]
name = "scraper"
path = "scraper-logs/*.log"
errors_per_minute = {{ warning = 1, critical = 10 }}
""")
            (ok / "heartbeat").touch()
            (ok / "scraper.token").write_text(bao.root_token)  # never expires: the TTL panel shows +Inf
            (ok / "scraper.token").chmod(0o600)
            (ok / "backups" / "db.sql.gz").write_bytes(gzip.compress(b"-- dump\n" * 100))
            _opportunities(ok / "opportunities.db", yesterday, 60, ("uniswap", "sushiswap"))
            for back in (1, 2, 3):  # three days before: a 7-day median for the baseline panel
                _opportunities(ok / "opportunities.db", yesterday - timedelta(days=back), 60, ("uniswap", "sushiswap"))
            (ok / "scraper-logs" / "scraper.log").write_text(f"{yesterday} 10:00:00 INFO all good\n")

            # The failing host: Vault refuses connections, the scraper answers 503, 1% of
            # the API quota is left, the newest backup is 3 days old, 3 opportunities,
            # a silent expected source, an error logged, Telegram unreachable (outbox).
            bad = _host(base / "bad", f"""
[system]
network_interfaces = ["lo"]
[vault]
url = "{unused_url()}"
[[scrapers]]
name = "uniswap"
url = "{api}/down"
[[quotas]]
name = "etherscan"
url = "{api}/quota/1"
remaining_header = "X-RateLimit-Remaining"
limit_header = "X-RateLimit-Limit"
reset_every = "1d"
[[backups]]
name = "postgres"
path = "backups/*.sql.gz"
verify = "gzip"
[report]
database = "sqlite://{base / 'bad' / 'opportunities.db'}"
expected_sources = ["uniswap", "sushiswap"]
error_logs = ["scraper-logs/*.log"]
[telegram]
chat_ids = ["-1001234567890"]
api_url = "{unused_url()}"
""")
            old = bad / "backups" / "db.sql.gz"
            old.write_bytes(gzip.compress(b"-- dump\n" * 100))
            three_days_ago = time.time() - 3 * 86400
            os.utime(old, (three_days_ago, three_days_ago))
            _opportunities(bad / "opportunities.db", yesterday, 3)
            _seed_eta_series(bad / "state")
            (bad / "scraper-logs" / "scraper.log").write_text(f"{yesterday} 10:00:00 ERROR uniswap: HTTP 429\n")

            hosts = {"host-ok:9100": ok, "host-bad:9100": bad}
            targets = []
            for instance, folder in hosts.items():
                port = free_port()
                log = folder / "node_exporter.log"
                with open(log, "w") as out:
                    processes.append(subprocess.Popen(
                        [node_exporter, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults",
                         "--collector.textfile", f"--collector.textfile.directory={folder / 'textfiles'}"],
                        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
                targets.append((instance, port, log, processes[-1]))
            prom_port = free_port()
            static = "\n".join(f"      - targets: ['127.0.0.1:{port}']\n        labels: {{instance: '{instance}'}}"
                               for instance, port, _, _ in targets)
            (base / "prometheus.yml").write_text(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {RULES}
scrape_configs:
  - job_name: node
    static_configs:
{static}
""")
            prom_log = base / "prometheus.log"
            with open(prom_log, "w") as out:
                processes.append(subprocess.Popen(
                    [prometheus, f"--config.file={base / 'prometheus.yml'}", f"--storage.tsdb.path={base / 'tsdb'}",
                     f"--web.listen-address=127.0.0.1:{prom_port}"],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=base))

            env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
            runs: dict = {}

            def feed(instance, folder, extra_env):
                config = ["--config", str(folder / "monitor.toml"), "--textfile-dir", str(folder / "textfiles"),
                          "--format", "json"]
                commands = [["health"], ["backup-check"], ["daily-report", "--date", str(yesterday)], ["health"]]
                first_health_ended = None
                for i, command in enumerate(commands):
                    if i == 3:
                        # The network rate needs the counters of two health runs over a second
                        # apart: the first run saved its counters before it ended, so 1.2 s after
                        # its end is enough however slowly a busy machine started either process.
                        time.sleep(max(0.0, 1.2 - (time.monotonic() - first_health_ended)))
                    runs.setdefault(instance, []).append(
                        run([MONITOR, *command, *config], cwd=folder, env={**env, **extra_env}))
                    if i == 0:
                        first_health_ended = time.monotonic()

            threads = [
                threading.Thread(target=feed, args=("host-ok:9100", ok, {"VAULT_TOKEN": token})),
                threading.Thread(target=feed, args=("host-bad:9100", bad, {
                    "VAULT_TOKEN": token, "TELEGRAM_BOT_TOKEN": "123456789:" + "A" * 35})),
            ]
            for thread in threads:
                thread.start()
            for _, port, log, process in targets:
                _wait_http(f"http://127.0.0.1:{port}/metrics", process, log)
            _wait_http(f"http://127.0.0.1:{prom_port}/-/ready", processes[-1], prom_log, timeout=30)
            for thread in threads:
                thread.join(60)

            fleet = Fleet(f"http://127.0.0.1:{prom_port}", hosts, runs)
            # Wait for both hosts' three commands to be scraped, from their second health run.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                found = fleet.query('count(monitor_last_run_timestamp_seconds) '
                                    '+ count(monitor_check_value{check="network"})')["data"]["result"]
                if found and float(found[0]["value"][1]) == 8:
                    break
                time.sleep(0.25)
            else:
                pytest.fail(f"Prometheus did not get both hosts' metrics: {fleet.api('targets')}\n{runs}")
            yield fleet
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        provider.shutdown()
        provider.server_close()
        tls_provider.shutdown()
        tls_provider.server_close()


def test_monitor_runs_gave_the_expected_verdicts(fleet):
    codes = {instance: [r.returncode for r in runs] for instance, runs in fleet.runs.items()}
    for instance, runs in fleet.runs.items():
        for completed in runs:
            assert completed.returncode in (0, 1, 2), f"{instance}: {completed.args}\n{completed.stderr}"
    assert codes["host-bad:9100"][1] == 2, "the 3-day-old backup is critical"


# The SPEC and the seed's LowOpportunityCount fix these two gauge names; promtool's linter
# would rather not see "_count" outside histograms and summaries. Nothing else may be said.
CONTRACT_LINT = {f'{name} non-histogram and non-summary metrics should not have "_count" suffix'
                 for name in ("daily_opportunities_count", "daily_errors_count")}


def test_every_textfile_passes_promtool_check_metrics(fleet):
    promtool = tool("promtool")
    for instance, folder in fleet.hosts.items():
        files = sorted((folder / "textfiles").glob("*.prom"))
        assert [f.name for f in files] == ["monitor_backup-check.prom", "monitor_daily-report.prom",
                                           "monitor_health.prom"], instance
        for path in files:
            checked = run([promtool, "check", "metrics"], input=path.read_text())
            problems = set(filter(None, (checked.stdout + checked.stderr).splitlines()))
            # Exit 3 is lint only; exit 1 would be an exposition that does not parse.
            assert checked.returncode == 0 or (checked.returncode == 3 and problems <= CONTRACT_LINT), \
                f"{path}: {checked.stdout}{checked.stderr}"
        assert not [p for p in (folder / "textfiles").iterdir() if not p.name.endswith(".prom")], "stray temp files"


def test_node_exporter_reads_every_textfile_without_error(fleet):
    errors = fleet.query("node_textfile_scrape_error")["data"]["result"]
    assert sorted(r["metric"]["instance"] for r in errors) == sorted(fleet.hosts)
    assert all(r["value"][1] == "0" for r in errors), errors


def test_every_dashboard_query_parses_and_returns_series(fleet):
    empty = []
    for expr in _exprs(json.loads(DASHBOARD.read_text())):
        concrete = expr.replace("$instance", ".*").replace("$__rate_interval", "1m").replace("$__interval", "1m")
        answer = fleet.query(concrete)
        assert answer["status"] == "success", f"{concrete}: {answer.get('error')}"
        if not answer["data"]["result"]:
            empty.append(concrete)
    assert empty == [], "queries without series"


def _levels(tmp_path) -> dict:
    t = render_rules.thresholds(default_config(tmp_path))
    return {"HostCpuHigh": t["cpu"], "HostMemoryHigh": t["memory"], "HostSwapHigh": t["swap"],
            "HostLoadHigh": t["load"], "HostDiskUsageHigh": t["disk"], "HostInodesHigh": t["inodes"]}


EXPECTED_ON_THE_FAILING_HOST = {
    ("VaultDown", "critical"), ("ScraperUnhealthy", "critical"), ("ScraperSuccessRateLow", "warning"),
    ("ScraperSuccessRateLow", "critical"),  # monitor's own success rate: 0 of its runs passed
    ("ApiQuotaLow", "warning"), ("ApiQuotaLow", "critical"), ("BackupStale", "critical"),
    ("BackupFailed", "critical"), ("LowOpportunityCount", "warning"), ("ScraperErrorsLogged", "warning"),
    ("ExpectedSourcesSilent", "warning"), ("MonitorOutboxGrowing", "warning"),
    ("HostDiskFillingUp", "warning"), ("HostDiskFillingUp", "critical"), ("ApiQuotaExhaustedBeforeReset", "warning"),
    ("HostInodesFillingUp", "warning"), ("HostInodesFillingUp", "critical"),
}


def test_the_failing_host_alone_raises_the_expected_alerts(fleet, tmp_path):
    # Both hosts are this machine: its real CPU, memory or load may cross a level while the
    # suite runs. Such an alert is fine on either host, provided its value really is over.
    machine = _levels(tmp_path)

    def explained(alert) -> bool:
        levels = machine.get(alert["labels"]["alertname"])
        return levels is not None and float(alert["value"]) >= getattr(levels, alert["labels"]["severity"])

    deadline = time.monotonic() + 20
    while True:
        alerts = fleet.api("alerts")["data"]["alerts"]
        by_host: dict = {}
        for alert in alerts:
            by_host.setdefault(alert["labels"].get("instance"), []).append(alert)
        bad = {(a["labels"]["alertname"], a["labels"]["severity"]) for a in by_host.get("host-bad:9100", [])
               if not explained(a)}
        unexpected = [a for host, found in by_host.items() if host != "host-bad:9100" for a in found
                      if not explained(a)]
        if (bad == EXPECTED_ON_THE_FAILING_HOST and not unexpected) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert bad == EXPECTED_ON_THE_FAILING_HOST
    assert unexpected == []
    assert {a["state"] for a in by_host["host-bad:9100"]} <= {"pending", "firing"}
    # The annotations' templates ran in Prometheus itself: host without port for ssh.
    vault = next(a for a in by_host["host-bad:9100"] if a["labels"]["alertname"] == "VaultDown")
    assert vault["annotations"]["runbook"] == "ssh host-bad monitor health --only vault --format text"
    assert vault["annotations"]["description"] == (
        "monitor on host-bad:9100 gets no answer from Vault's health endpoint (monitor_vault_up = 0).")


def _seconds(duration: str) -> int:
    return int(duration[:-1]) * {"s": 1, "m": 60, "h": 3600}[duration[-1]]


def test_prometheus_loaded_the_rules_as_rendered(fleet, tmp_path):
    # Read back through Prometheus' own YAML parser: every hand-written scalar of the
    # rules file (labels, templates with quotes and colons) arrives as rendered.
    loaded = {g["name"]: g for g in fleet.api("rules")["data"]["groups"]}
    rendered = render_rules.rules(default_config(tmp_path))["groups"]
    assert sorted(loaded) == sorted(g["name"] for g in rendered)
    for want_group in rendered:
        got_group = loaded[want_group["name"]]
        assert len(got_group["rules"]) == len(want_group["rules"])
        for got, want in zip(got_group["rules"], want_group["rules"]):
            assert (got["name"], got["labels"], got["annotations"], got["duration"]) == \
                (want["alert"], want["labels"], want["annotations"], _seconds(want["for"]))
            assert got["health"] == "ok", (got["name"], got.get("lastError"))
            # format_query prints the expression the way Prometheus does (matcher order, spacing).
            formatted = fleet.api("format_query", query=want["expr"])["data"]
            assert re.sub(r"\s+", "", got["query"]) == re.sub(r"\s+", "", formatted)
