"""Checks declare what they export: a new check module is all the textfile, the alert
headlines, the rules, the dashboard and `silence add` need (README "Add a check")."""

import math
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from monitor import checks, config as monitor_config
from monitor.alerts import messages
from monitor.fleet import dashboard, metrics, rules
from monitor.results import CRITICAL, Result, with_identity

ROOT = Path(__file__).resolve().parents[1]
DAY = 86400


def _tls_module() -> types.ModuleType:
    """A check module as a newcomer would write one: a TLS certificate's remaining days."""
    tls = types.ModuleType("monitor.checks.tls")
    tls.METRICS = {"monitor_tls_expiry_seconds": ("Time left until the certificate expires.", ("host",))}
    tls.MEASURES = {"tls": ("expiry", True)}
    tls.check_ids = lambda config: ["tls:example.org"]
    tls.samples = lambda r: [("monitor_tls_expiry_seconds", {"host": r.id.split(":", 1)[1]}, r.value)]

    def checks(config, carried, shared):
        from monitor.runner import Check

        expiry = Result(CRITICAL, "certificate expires soon", value=DAY, unit="s", warning=14 * DAY,
                        critical=3 * DAY)
        return [Check("tls:example.org", "tls", lambda: expiry, 1.0)]

    tls.checks = checks

    def levels(config):
        from monitor.fleet.kit import Levels

        return {"tls_expiry": Levels(14 * DAY, 3 * DAY)}

    def rules(t):
        from monitor.fleet.kit import num, rule

        return {"monitor_tls": [rule("TlsCertificateExpiring",
                                     f"monitor_tls_expiry_seconds <= {num(t['tls_expiry'].critical)}", "5m",
                                     "critical", "A certificate expires soon", "", "")]}

    def panels(t):
        from monitor.fleet.kit import INSTANCE, panel, target

        return [("Certificates", panel("stat", "TLS expiry", [target(f"monitor_tls_expiry_seconds{{{INSTANCE}}}")]),
                 6, 8)]

    tls.levels, tls.rules, tls.panels = levels, rules, panels
    return tls


@pytest.fixture
def tls(monkeypatch):
    module = _tls_module()
    monkeypatch.setitem(sys.modules, "monitor.checks.tls", module)
    monkeypatch.setitem(checks.MODULES, "tls", ("tls", "health", None))
    return module


@pytest.fixture
def config(tmp_path):
    return monitor_config.build({}, None, str(tmp_path))


def _result(value, status=CRITICAL):
    raw = Result(status, "certificate expires soon", value=value, unit="s", warning=14 * DAY, critical=3 * DAY)
    return with_identity(raw, "tls:example.org", "tls", 1.0)


def test_a_new_check_module_runs_in_health_after_the_host_checks(tls, config):
    from monitor.runner import run_checks
    from monitor.state import Carried

    built = checks.health_checks(config, Carried())
    assert [c.id for c in built][-1] == "tls:example.org" and "cpu" in [c.id for c in built]
    assert "tls" in checks.kinds("health")
    assert [c.id for c in checks.health_checks(config, Carried(), only={"tls"})] == ["tls:example.org"]
    run = run_checks([c for c in built if c.kind == "tls"])
    assert run.results[0].status == CRITICAL and run.results[0].id == "tls:example.org"


def test_a_new_check_module_is_exported_to_the_textfile(tls):
    text = generate_latest(metrics.build_registry("health", [_result(DAY)], 1.0, 0.1)).decode()
    assert "# HELP monitor_tls_expiry_seconds Time left until the certificate expires.\n" in text
    assert 'monitor_tls_expiry_seconds{host="example.org"} 86400.0\n' in text


def test_only_finite_samples_are_written_unless_the_module_says_what_infinity_means(tls):
    tls.samples = lambda r: [("monitor_tls_expiry_seconds", {"host": "a"}, math.inf),
                             ("monitor_tls_expiry_seconds", {"host": "b"}, math.nan),
                             ("monitor_tls_expiry_seconds", {"host": "c"}, True)]
    text = generate_latest(metrics.build_registry("health", [_result(DAY)], 1.0, 0.1)).decode()
    assert "monitor_tls_expiry_seconds" not in text
    tls.INFINITE_OK = ("monitor_tls_expiry_seconds",)
    text = generate_latest(metrics.build_registry("health", [_result(DAY)], 1.0, 0.1)).decode()
    assert 'monitor_tls_expiry_seconds{host="a"} +Inf\n' in text and "NaN" not in text and 'host="c"' not in text


def test_a_new_check_module_names_its_value_in_alert_headlines(tls):
    assert messages.headline(_result(DAY), CRITICAL) == "expiry 1d < 3d"


def test_a_new_check_module_is_known_to_silence_add(tls, config):
    assert "tls:example.org" in checks.known_check_ids(config, {})


def test_a_new_check_module_adds_its_rules_in_a_group_before_monitors_own(tls, config):
    groups = rules.rules(config)["groups"]
    assert [g["name"] for g in groups][-2:] == ["monitor_tls", "monitor_meta"]
    assert groups[-2]["rules"][0]["expr"] == "monitor_tls_expiry_seconds <= 259200"
    assert rules.thresholds(config)["tls_expiry"] == (14 * DAY, 3 * DAY)


def test_a_new_check_module_adds_its_row_before_monitors_own(tls, config):
    panels = dashboard.dashboard(config)["panels"]
    rows = [p["title"] for p in panels if p["type"] == "row"]
    assert rows == ["System Health", "Scraper Performance", "Business Metrics", "Security", "Ahead", "Certificates",
                    "Monitor"]
    titles = [p["title"] for p in panels]
    assert titles.index("Certificates") < titles.index("TLS expiry") < titles.index("Monitor")


def test_the_modules_declare_each_metric_once_and_none_of_monitors_own():
    declared = [name for module in checks.catalog() for name in getattr(module, "METRICS", {})]
    assert len(declared) == len(set(declared))
    assert not set(declared) & set(metrics.METRICS)
    for module in checks.catalog():
        for name, (help_text, labels) in getattr(module, "METRICS", {}).items():
            assert re.fullmatch(r"[a-z_]+", name) and help_text.endswith(".") and isinstance(labels, tuple)


# Check ids and kinds, as the renderers and the messages named them before checks declared
# what they export: none of them may come back there.
CHECK_NAMES = re.compile(r"""["'](cpu|memory|swap|load|network|cron|vault|vault-token|opportunities|sources"""
                         r"""|errors|system|scraper|quota|backup|business)["']|["'](disk|inodes|scraper|quota|backup):""")


@pytest.mark.parametrize("path", ["monitor/fleet/metrics.py", "monitor/fleet/rules.py", "monitor/fleet/dashboard.py",
                                  "monitor/fleet/kit.py", "monitor/alerts/messages.py"])
def test_the_renderers_and_the_messages_name_no_check(path):
    assert CHECK_NAMES.findall((ROOT / path).read_text()) == []


def test_declaring_costs_a_check_run_no_import():
    # What `monitor health` loads with every check module: none of the renderers' or the
    # heavy libraries (rules and panels import what they use when asked). The heartbeat
    # pinger under monitor/fleet is not one: every run loads it through jobs.py.
    names = ", ".join(f"monitor.checks.{name}" for name in checks.MODULES)
    code = (f"import sys, {names}\n"
            "heavy = ('monitor.fleet.kit', 'monitor.fleet.rules', 'monitor.fleet.dashboard', 'monitor.fleet.metrics',\n"
            "         'monitor.fleet.yaml', 'requests', 'hvac', 'prometheus_client', 'jinja2', 'yaml')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith(heavy)))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
