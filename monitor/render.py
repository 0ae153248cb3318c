"""Fleet view: the Prometheus alert rules and the Grafana dashboard, rendered from the config.

One source of truth: every threshold in `prometheus_rules.yml` and `grafana_dashboard.json`
comes from the same config keys the checks judge with, so `monitor render rules --env prod`
gives an operator the files that match their prod thresholds; the committed files are this
module's output for the built-in defaults. Only text comes out: YAML is written by hand
(no PyYAML at runtime) with every scalar quoted when YAML could read it as anything else.
"""

import json
import re
from typing import NamedTuple

from monitor.units import format_duration, parse_duration

# How long after its last run each cron job is overdue (schedule + grace):
# health runs every 5 minutes, backup-check every 6 hours, daily-report at 09:00.
STALE_AFTER = {"health": parse_duration("15m"), "backup-check": parse_duration("7h"),
               "daily-report": parse_duration("25h")}
# Below this share of passed probes over an hour, a scraper is flapping.
SUCCESS_RATE_MIN = 0.9
# The seed's scraper job (day 12 plan): kept exactly as written there.
SEED_SCRAPER_JOB = "web3_scraper"
# Alerts that mean "this host's health runs stopped": Alertmanager mutes the rest of the host.
HEALTH_STOPPED_ALERTS = ("MonitorHealthNotRunning", "MonitorHealthMetricsGone")

# `instance` is usually host:port (node_exporter's 9100): ssh wants the host alone.
_HOST = '{{ reReplaceAll ":[0-9]+$" "" $labels.instance }}'


class Levels(NamedTuple):
    """A warning and a critical level, in the unit the metric uses."""

    warning: float
    critical: float


# --- thresholds: the config, or the schema's defaults for sections left out ------------------

def _schema_default(*path):
    from monitor.config import SCHEMA, TableList

    field = SCHEMA
    for key in path:
        field = field.table if isinstance(field, TableList) else field
        field = field.fields[key]
    return field.default


def _levels(threshold) -> Levels:
    return Levels(threshold.warning, threshold.critical)  # durations keep their .text


class _PerName(NamedTuple):
    """One threshold per named item (scraper, API, backup set), in the metric's unit."""

    label: str
    default: object                  # for names the config does not list (other hosts)
    overrides: dict                  # value -> [names], values other than `default`

    @property
    def uniform(self) -> bool:
        return not self.overrides


def _per_name(items: list, key: str, label: str, default, convert=lambda v: v) -> _PerName:
    values = [(item["name"], convert(item[key])) for item in items]
    distinct = {v for _, v in values}
    if len(distinct) == 1:  # every configured item agrees: that value holds fleet-wide
        return _PerName(label, distinct.pop(), {})
    default = convert(default)
    overrides: dict = {}
    for name, value in values:
        if value != default:
            overrides.setdefault(value, []).append(name)
    return _PerName(label, default, overrides)


def thresholds(config: dict) -> dict:
    """Given a validated config, return every level the rules and the dashboard use."""
    system = config["system"]
    vault = config.get("vault") or {}
    report = config.get("report") or {}
    ttl = vault.get("token_ttl") or _schema_default("vault", "token_ttl")
    latency = _schema_default("scrapers", "latency_ms")
    remaining = _schema_default("quotas", "remaining_percent")
    max_age = _schema_default("backups", "max_age")
    heartbeat = _schema_default("scrapers", "heartbeat_max_age")
    scrapers, quotas, backups = config["scrapers"], config["quotas"], config["backups"]
    return {
        "cpu": _levels(system["cpu_percent"]),
        "memory": _levels(system["memory_percent"]),
        "swap": _levels(system["swap_percent"]),
        "disk": _levels(system["disk_percent"]),
        "inodes": _levels(system["inodes_percent"]),
        "load": _levels(system["load_per_cpu"]),
        "token_ttl": _levels(ttl),
        # Seconds and ratios: the units of the Prometheus metrics, not of the config.
        "latency_warning": _per_name(scrapers, "latency_ms", "scraper", latency,
                                     lambda t: t.warning / 1000),
        "latency_critical": _per_name(scrapers, "latency_ms", "scraper", latency,
                                      lambda t: t.critical / 1000),
        "quota_warning": _per_name(quotas, "remaining_percent", "api", remaining,
                                   lambda t: t.warning / 100),
        "quota_critical": _per_name(quotas, "remaining_percent", "api", remaining,
                                    lambda t: t.critical / 100),
        "backup_max_age": _per_name(backups, "max_age", "backup", max_age),
        "heartbeat_max_age": _per_name(scrapers, "heartbeat_max_age", "scraper", heartbeat),
        "min_opportunities": report.get("min_opportunities", _schema_default("report", "min_opportunities")),
    }


# --- PromQL and text helpers --------------------------------------------------------------

def _num(value) -> str:
    """A number as PromQL and YAML read it back: 80, 0.05, 1.5 (never 1e-05 or 80.0)."""
    value = float(value)
    if value.is_integer():
        return str(int(value))
    return format(value, ".12f").rstrip("0")


def _duration_text(seconds: float) -> str:
    """As the user wrote it ("26h") when it came from the config, else the shortest form."""
    return getattr(seconds, "text", None) or format_duration(seconds)


def _compare(metric: str, op: str, levels: _PerName, wrap=lambda selector: selector) -> str:
    """`metric op level`, with one clause per overridden name when levels differ by name."""
    if levels.uniform:
        return f"{wrap(metric)} {op} {_num(levels.default)}"
    clauses, named = [], []
    for value, names in levels.overrides.items():
        named += names
        clauses.append(f'{wrap(_selector(metric, levels.label, "=~", names))} {op} {_num(value)}')
    clauses.append(f'{wrap(_selector(metric, levels.label, "!~", named))} {op} {_num(levels.default)}')
    return " or ".join(clauses)


def _selector(metric: str, label: str, op: str, names: list) -> str:
    # Names are letters, digits, "_", "." and "-" (the config says so); "[.]" rather than
    # "\\." keeps backslashes out, which a PromQL string would unescape first.
    pattern = "|".join(n.replace(".", "[.]") for n in sorted(names))
    return f'{metric}{{{label}{op}"{pattern}"}}'


def _level_text(levels: _PerName, show) -> str:
    return show(levels.default) if levels.uniform else "its configured level"


def _percent(value) -> str:
    return f"{_num(value)}%"


# --- the alert rules ----------------------------------------------------------------------

def _rule(alert, expr, for_, severity, summary, description, runbook) -> dict:
    return {"alert": alert, "expr": expr, "for": for_, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description, "runbook": runbook}}


def _pair(alert, expr_for_level, levels: Levels, fors, summary, description, runbook) -> list[dict]:
    """A warning and a critical rule for one measure; "SEVERITY" in `summary` names the level."""
    return [_rule(alert, expr_for_level(level), for_, severity, summary.replace("SEVERITY", severity),
                  description, runbook)
            for severity, level, for_ in (("warning", levels.warning, fors[0]),
                                          ("critical", levels.critical, fors[1]))]


def _health_runbook(kind: str) -> str:
    return f"ssh {_HOST} monitor health --only {kind} --format text"


def _host_rules(t: dict) -> list[dict]:
    runbook = _health_runbook("system")
    rules = []
    for alert, name, metric, fors, shown, text in (
        ("HostCpuHigh", "cpu", "monitor_cpu_usage_percent", ("10m", "5m"),
         '{{ $value | printf "%.0f" }}%', "CPU"),
        ("HostMemoryHigh", "memory", "monitor_memory_usage_percent", ("10m", "5m"),
         '{{ $value | printf "%.0f" }}%', "Memory"),
        ("HostSwapHigh", "swap", 'monitor_check_value{kind="system",check="swap"}', ("15m", "10m"),
         '{{ $value | printf "%.0f" }}%', "Swap"),
        ("HostLoadHigh", "load", 'monitor_check_value{kind="system",check="load"}', ("15m", "10m"),
         '{{ $value | printf "%.2f" }}', "Load per CPU"),
        ("HostDiskUsageHigh", "disk", "monitor_disk_usage_percent", ("5m", "5m"),
         '{{ $value | printf "%.1f" }}%', "Disk {{ $labels.path }}"),
        ("HostInodesHigh", "inodes", 'monitor_check_value{kind="system",check=~"inodes:.*"}', ("5m", "5m"),
         '{{ $value | printf "%.1f" }}%', 'Inodes of {{ reReplaceAll "^inodes:" "" $labels.check }}'),
    ):
        levels = t[name]
        unit = "" if name == "load" else "%"
        rules += _pair(
            alert, lambda level, metric=metric: f"{metric} >= {_num(level)}", levels, fors,
            text + (" high" if name == "load" else " usage high") + " (SEVERITY)",
            f"{text} at {shown} on {{{{ $labels.instance }}}} "
            f"(warning from {_num(levels.warning)}{unit}, critical from {_num(levels.critical)}{unit}).",
            runbook)
    return rules


def _service_rules(t: dict) -> list[dict]:
    vault_runbook, scraper_runbook = _health_runbook("vault"), _health_runbook("scraper")
    ttl = t["token_ttl"]
    rules = [
        _rule("VaultDown", "monitor_vault_up == 0", "5m", "critical", "Vault is unreachable",
              "monitor on {{ $labels.instance }} gets no answer from Vault's health endpoint "
              "(monitor_vault_up = {{ $value }}).", vault_runbook),
        _rule("VaultSealed", "monitor_vault_sealed == 1", "1m", "critical", "Vault is sealed",
              "Vault answers monitor on {{ $labels.instance }} but is sealed (monitor_vault_sealed = {{ $value }}): "
              "the scraper cannot read its secrets until it is unsealed.", vault_runbook),
    ]
    rules += _pair(
        "VaultTokenExpiring", lambda level: f"monitor_vault_token_ttl_seconds <= {_num(level)}", ttl, ("5m", "5m"),
        "monitor's Vault token expires soon (SEVERITY)",
        "monitor's Vault token on {{ $labels.instance }} expires in {{ $value | humanizeDuration }} "
        f"(warning from {_duration_text(ttl.warning)}, critical from {_duration_text(ttl.critical)}); "
        "renew it or issue a new one.",
        vault_runbook)
    rules.append(_rule(
        "ScraperUnhealthy", "monitor_scraper_up == 0", "5m", "critical",
        "Scraper {{ $labels.scraper }} fails its health probes",
        "Scraper {{ $labels.scraper }} on {{ $labels.instance }} fails its probes "
        "(monitor_scraper_up = {{ $value }}): HTTP health, process or heartbeat.", scraper_runbook))
    for severity, key, for_ in (("warning", "latency_warning", "10m"), ("critical", "latency_critical", "5m")):
        levels = t[key]
        rules.append(_rule(
            "ScraperSlow", _compare("monitor_scraper_response_seconds", ">=", levels), for_, severity,
            f"Scraper {{{{ $labels.scraper }}}} answers slowly ({severity})",
            "Scraper {{ $labels.scraper }} on {{ $labels.instance }} answered its health check in "
            f"{{{{ $value | humanizeDuration }}}} ({severity} from {_level_text(levels, _duration_text)}).",
            scraper_runbook))
    rules.append(_rule(
        "ScraperSuccessRateLow", f"avg_over_time(monitor_scraper_up[1h]) < {_num(SUCCESS_RATE_MIN)}", "5m", "warning",
        "Scraper {{ $labels.scraper }} fails intermittently",
        "Scraper {{ $labels.scraper }} on {{ $labels.instance }} passed its probes in "
        f"{{{{ $value | humanizePercentage }}}} of the last hour (expected at least {_num(SUCCESS_RATE_MIN * 100)}%).",
        scraper_runbook))
    for severity, key in (("warning", "quota_warning"), ("critical", "quota_critical")):
        levels = t[key]
        rules.append(_rule(
            "ApiQuotaLow", _compare("monitor_api_quota_remaining_ratio", "<=", levels), "5m", severity,
            f"API quota of {{{{ $labels.api }}}} running out ({severity})",
            "{{ $value | humanizePercentage }} of the {{ $labels.api }} API quota is left for "
            f"{{{{ $labels.instance }}}} ({severity} from {_level_text(levels, lambda r: _percent(r * 100))}).",
            _health_runbook("quota")))
    backup_runbook = f"ssh {_HOST} monitor backup-check --format text"
    max_age = t["backup_max_age"]
    # The textfile holds the age at the last backup-check (every 6 hours): adding the time
    # since that run gives the age now, so a backup going stale between runs is seen at once.
    now_age = ('{} + on(instance, job) group_left() '
               '(time() - monitor_last_run_timestamp_seconds{{command="backup-check"}})')
    rules.append(_rule(
        "BackupStale", _compare("monitor_backup_age_seconds", ">", max_age, now_age.format), "5m", "critical",
        "Backup {{ $labels.backup }} is stale",
        "The newest file of backup {{ $labels.backup }} on {{ $labels.instance }} is "
        f"{{{{ $value | humanizeDuration }}}} old (max_age {_level_text(max_age, _duration_text)}).",
        backup_runbook))
    rules.append(_rule(
        "BackupFailed", 'monitor_check_status{kind="backup"} == 2', "1m", "critical",
        "Backup check {{ $labels.check }} failed",
        "backup-check judged {{ $labels.check }} critical on {{ $labels.instance }} (status {{ $value }}): "
        "missing, empty, shrunk, unreadable or failed verification.",
        backup_runbook))
    return rules


def _business_rules() -> list[dict]:
    runbook = f"ssh {_HOST} monitor daily-report --format text --no-notify"
    return [
        _rule("ScraperErrorsLogged", "daily_errors_count > 0", "10m", "warning",
              "The scraper logged errors yesterday",
              "{{ $value }} ERROR/CRITICAL log record(s) on {{ $labels.instance }} during the reported day.",
              runbook),
        _rule("ExpectedSourcesSilent", 'monitor_check_status{kind="business",check="sources"} == 1', "10m", "warning",
              "Expected sources found nothing yesterday",
              "Some of report.expected_sources had no opportunity during the reported day on "
              "{{ $labels.instance }} (status {{ $value }}).",
              runbook),
    ]


def _meta_rules() -> list[dict]:
    def overdue(alert, command, severity, text):
        limit = STALE_AFTER[command]
        return _rule(
            alert, f'time() - monitor_last_run_timestamp_seconds{{command="{command}"}} > {_num(limit)}', "5m", severity,
            f"monitor {command} stopped running",
            f"monitor {command} last finished {{{{ $value | humanizeDuration }}}} ago on {{{{ $labels.instance }}}} "
            f"(expected {text}; overdue after {_duration_text(limit)}).",
            f"ssh {_HOST} monitor {command} --format text --no-notify (and compare crontab -l with monitor cron)")

    health_ts = 'monitor_last_run_timestamp_seconds{command="health"}'
    return [
        overdue("MonitorHealthNotRunning", "health", "critical", "every 5 minutes"),
        overdue("MonitorBackupCheckNotRunning", "backup-check", "warning", "every 6 hours"),
        overdue("MonitorDailyReportNotRunning", "daily-report", "warning", "every day"),
        _rule("MonitorHealthMetricsGone", f"max_over_time({health_ts}[1d]) unless {health_ts}", "10m", "critical",
              "monitor health metrics vanished",
              "{{ $labels.instance }} reported monitor health runs within the last day, the last at "
              "{{ $value | humanizeTimestamp }}, and reports none now: host, node_exporter or textfile "
              "folder lost (a retired host clears within a day).",
              f"ssh {_HOST} systemctl status prometheus-node-exporter; ssh {_HOST} monitor health --format text"),
        # absent() keeps no instance label: this summary names no host on purpose.
        _rule("MonitorHealthAbsent", f"absent({health_ts})", "15m", "critical",
              "No host reports monitor health runs",
              "Prometheus has no monitor_last_run_timestamp_seconds series for health at all "
              "(absent = {{ $value }}): no textfile collector or Pushgateway delivers monitor metrics.",
              "check the scrape targets in Prometheus, then on each host: monitor health --format text"),
        _rule("MonitorOutboxGrowing", "monitor_outbox_messages > 0", "30m", "warning",
              "Telegram messages are stuck in monitor's outbox",
              "{{ $value }} Telegram message(s) wait in monitor's outbox on {{ $labels.instance }} "
              "for more than 30 minutes: Telegram unreachable or the bot token is refused.",
              f"ssh {_HOST} monitor notify test"),
        _rule("MonitorTextfileError", "node_textfile_scrape_error == 1", "15m", "warning",
              "node_exporter cannot read a textfile",
              "node_exporter on {{ $labels.instance }} fails to read a .prom file of its textfile folder "
              "(node_textfile_scrape_error = {{ $value }}): its metrics are missing.",
              f"ssh {_HOST} journalctl -u prometheus-node-exporter --since -1h "
              "(then monitor health --format text rewrites monitor's own files)"),
    ]


def rules(config: dict) -> dict:
    """Given a validated config, return the rule groups as plain data."""
    t = thresholds(config)
    seed = [
        # The day-12 plan's rules, exactly as written there, plus annotations.
        {"alert": "ScraperDown", "expr": f'up{{job="{SEED_SCRAPER_JOB}"}} == 0', "for": "5m",
         "labels": {"severity": "critical"},
         "annotations": {
             "summary": "Web3 Scraper is down",
             "description": "Prometheus cannot scrape {{ $labels.instance }} "
                            f"(job {SEED_SCRAPER_JOB}, up = {{{{ $value }}}}) for 5 minutes.",
             "runbook": _health_runbook("scraper")}},
        {"alert": "LowOpportunityCount", "expr": f"daily_opportunities_count < {_num(t['min_opportunities'])}",
         "for": "10m", "labels": {"severity": "warning"},
         "annotations": {
             "summary": "Fewer opportunities than expected",
             "description": "{{ $labels.instance }} found {{ $value }} opportunities during the reported day "
                            f"(report.min_opportunities = {_num(t['min_opportunities'])}).",
             "runbook": f"ssh {_HOST} monitor daily-report --format text --no-notify"}},
    ]
    return {"groups": [
        {"name": "web3_scraper_alerts", "rules": seed},
        {"name": "monitor_host", "rules": _host_rules(t)},
        {"name": "monitor_services", "rules": _service_rules(t)},
        {"name": "monitor_business", "rules": _business_rules()},
        {"name": "monitor_meta", "rules": _meta_rules()},
    ]}


def rules_yaml(config: dict) -> str:
    """Given a validated config, return the text of `prometheus_rules.yml` for its thresholds."""
    header = [
        "# prometheus_rules.yml: alerts on the metrics monitor writes for node_exporter's textfile",
        "# collector (or a Pushgateway), with the seed's ScraperDown and LowOpportunityCount.",
        f"# Generated by `monitor render rules` from the thresholds of environment \"{config['environment']}\";",
        "# change the config and render again rather than editing this file.",
        "# Check: promtool check rules prometheus_rules.yml",
    ]
    return "\n".join(header + to_yaml(rules(config))) + "\n"


# --- YAML ---------------------------------------------------------------------------------

# Plain scalars YAML 1.1 or 1.2 would read as something other than a string.
_YAML_NOT_STRING = re.compile(r"""(?x)
    (?i: y | n | yes | no | true | false | on | off | null | ~ | = | <<)
  | [-+]?(?: \.inf | \.Inf | \.INF ) | \.nan | \.NaN | \.NAN
  | [-+]? [0-9][0-9_]* (?: \.[0-9_]* )? (?: [eE][-+]?[0-9]+ )?
  | [-+]? \.[0-9][0-9_]* (?: [eE][-+]?[0-9]+ )?
  | [-+]? 0[xX][0-9a-fA-F_]+ | [-+]? 0o?[0-7_]+ | [-+]? 0b[01_]+
  | [-+]? [0-9][0-9_]* (?: :[0-5]?[0-9] )+ (?: \.[0-9_]* )?
  | [0-9]{4}-[0-9]{1,2}-[0-9]{1,2} (?: [Tt\ ].* )?
""")
_YAML_INDICATORS = "-?:,[]{}#&*!|>'\"%@`"


def _plain_ok(text: str) -> bool:
    return (bool(text) and text == text.strip() and text[0] not in _YAML_INDICATORS
            and ": " not in text and " #" not in text and not text.endswith(":")
            and all(" " <= c <= "~" for c in text)
            and not _YAML_NOT_STRING.fullmatch(text))


def yaml_scalar(value) -> str:
    """A scalar as YAML text: plain when unambiguous, else single- or double-quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _num(value)
    text = str(value)
    if _plain_ok(text):
        return text
    if all(" " <= c and c != "\x7f" for c in text):
        return "'" + text.replace("'", "''") + "'"
    return json.dumps(text)  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(node, indent: int = 0) -> list[str]:
    """Block-style YAML lines for dicts of str keys, lists and scalars; blank lines between mappings in a list."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, (dict, list)) and value:
                lines.append(f"{pad}{key}:")
                lines += to_yaml(value, indent + 2)
            elif isinstance(value, (dict, list)):
                lines.append(f"{pad}{key}: {'{}' if isinstance(value, dict) else '[]'}")
            else:
                lines.append(f"{pad}{key}: {yaml_scalar(value)}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if isinstance(item, dict) and item:
                if i:
                    lines.append("")
                sub = to_yaml(item, indent + 2)
                lines.append(f"{pad}- {sub[0][indent + 2:]}")
                lines += sub[1:]
            else:
                lines.append(f"{pad}- {yaml_scalar(item)}")
    return lines


# --- the Grafana dashboard ----------------------------------------------------------------

_DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
_I = 'instance=~"$instance"'
_STATUS_MAPPINGS = [{"type": "value", "options": {
    "0": {"text": "OK", "color": "green", "index": 0},
    "1": {"text": "WARNING", "color": "yellow", "index": 1},
    "2": {"text": "CRITICAL", "color": "red", "index": 2},
    "3": {"text": "UNKNOWN", "color": "purple", "index": 3},
}}]


def _steps(*pairs) -> dict:
    """Threshold steps: a base color, then (value, color) from low to high."""
    base, *rest = pairs
    return {"mode": "absolute", "steps": [{"color": base, "value": None}]
            + [{"color": color, "value": value} for value, color in rest]}


def _higher_worse(levels: Levels) -> dict:
    return _steps("green", (levels.warning, "yellow"), (levels.critical, "red"))


def _lower_worse(levels: Levels) -> dict:
    return _steps("red", (levels.critical, "yellow"), (levels.warning, "green"))


def _mapping(*texts) -> list:
    return [{"type": "value", "options": {str(v): {"text": text, "color": color, "index": i}
                                          for i, (v, text, color) in enumerate(texts)}}]


class _Layout:
    """Hands out panel ids and grid positions, row by row, 24 columns wide."""

    def __init__(self):
        self.panels: list[dict] = []
        self.x = self.y = self.row_height = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"type": "row", "title": title, "collapsed": False, "panels": [],
                            "id": len(self.panels) + 1, "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}})
        self.y += 1

    def add(self, panel: dict, w: int, h: int = 8) -> None:
        if self.x + w > 24:
            self._newline()
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.row_height = max(self.row_height, h)

    def _newline(self):
        if self.x:
            self.y += self.row_height
        self.x = self.row_height = 0


def _target(expr: str, legend: str = "{{instance}}", ref: str = "A", instant: bool = False) -> dict:
    target = {"datasource": _DS, "refId": ref, "expr": expr, "legendFormat": legend}
    if instant:
        target.update(instant=True, range=False, format="table")
    return target


def _panel(kind: str, title: str, targets: list, description: str = "", unit: str = "none",
           thresholds: dict | None = None, minimum=None, maximum=None, mappings=None,
           options: dict | None = None, custom: dict | None = None, overrides=None,
           transformations=None) -> dict:
    defaults = {"unit": unit, "thresholds": thresholds or _steps("green"), "mappings": mappings or []}
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                              "spanNulls": True,
                              "thresholdsStyle": {"mode": "dashed" if thresholds else "off"}}
    if custom:
        defaults.setdefault("custom", {}).update(custom)
    panel = {"type": kind, "title": title, "description": description, "datasource": _DS,
             "targets": targets, "fieldConfig": {"defaults": defaults, "overrides": overrides or []}}
    if kind == "timeseries":
        panel["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                            "tooltip": {"mode": "multi", "sort": "desc"}}
    elif kind == "stat":
        panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                            "colorMode": "background", "graphMode": "none", "justifyMode": "auto",
                            "orientation": "auto", "textMode": "auto"}
    if options:
        panel.setdefault("options", {}).update(options)
    if transformations:
        panel["transformations"] = transformations
    return panel


def _system_row(layout: _Layout, t: dict) -> None:
    layout.row("System Health")
    for title, expr, key, desc in (
        ("CPU busy %", f"monitor_cpu_usage_percent{{{_I}}}", "cpu",
         "Average since the previous health run (system.cpu_percent)."),
        ("Memory used %", f"monitor_memory_usage_percent{{{_I}}}", "memory",
         "(total - available) / total (system.memory_percent)."),
        ("Disk used %", f"monitor_disk_usage_percent{{{_I}}}", "disk",
         "As df counts it, for each of system.disk_paths (system.disk_percent)."),
    ):
        legend = "{{instance}} {{path}}" if key == "disk" else "{{instance}}"
        layout.add(_panel("timeseries", title, [_target(expr, legend)], desc, "percent",
                          _higher_worse(t[key]), 0, 100), 8)
    layout.add(_panel("timeseries", "Inodes used %",
                      [_target(f'monitor_check_value{{{_I},kind="system",check=~"inodes:.*"}}',
                               "{{instance}} {{check}}")],
                      "For each of system.disk_paths (system.inodes_percent).", "percent",
                      _higher_worse(t["inodes"]), 0, 100), 6)
    layout.add(_panel("timeseries", "Swap used %",
                      [_target(f'monitor_check_value{{{_I},kind="system",check="swap"}}')],
                      "system.swap_percent.", "percent", _higher_worse(t["swap"]), 0, 100), 6)
    layout.add(_panel("timeseries", "Load per CPU (5 min)",
                      [_target(f'monitor_check_value{{{_I},kind="system",check="load"}}')],
                      "5-minute load average divided by the CPU count (system.load_per_cpu).", "none",
                      _higher_worse(t["load"]), 0), 6)
    layout.add(_panel("timeseries", "Network throughput",
                      [_target(f'monitor_check_value{{{_I},kind="system",check="network"}}')],
                      "Bytes per second, in and out, over system.network_interfaces, since the previous run.",
                      "Bps", minimum=0), 6)


def _scraper_row(layout: _Layout, t: dict) -> None:
    layout.row("Scraper Performance")
    up = _mapping((0, "DOWN", "red"), (1, "UP", "green"))
    layout.add(_panel("stat", "Scraper up", [_target(f"monitor_scraper_up{{{_I}}}", "{{instance}} {{scraper}}")],
                      "Every probe (HTTP, process, heartbeat) ok or warning.", "none",
                      _steps("red", (1, "green")), mappings=up), 6)
    latency = t["latency_warning"], t["latency_critical"]
    layout.add(_panel("timeseries", "Health endpoint latency",
                      [_target(f"monitor_scraper_response_seconds{{{_I}}}", "{{instance}} {{scraper}}")],
                      "scrapers latency_ms, here in seconds.", "s",
                      _steps("green", (latency[0].default, "yellow"), (latency[1].default, "red")), 0), 6)
    layout.add(_panel("timeseries", "Success rate (1 h)",
                      [_target(f"avg_over_time(monitor_scraper_up{{{_I}}}[1h])", "{{instance}} {{scraper}}")],
                      "Share of health runs whose probes passed over the last hour.", "percentunit",
                      _steps("red", (SUCCESS_RATE_MIN, "green")), 0, 1), 6)
    layout.add(_panel("timeseries", "Heartbeat age",
                      [_target(f"monitor_scraper_heartbeat_age_seconds{{{_I}}}", "{{instance}} {{scraper}}")],
                      "Age of the file each scraper touches on success (scrapers heartbeat_max_age).", "s",
                      _steps("green", (t["heartbeat_max_age"].default, "red")), 0), 6)


def _business_row(layout: _Layout, t: dict) -> None:
    layout.row("Business Metrics")
    minimum = t["min_opportunities"]
    layout.add(_panel("stat", "Opportunities (reported day)", [_target(f"daily_opportunities_count{{{_I}}}")],
                      "Fewer than report.min_opportunities is a warning.", "none",
                      _steps("yellow", (minimum, "green"))), 6)
    layout.add(_panel("timeseries", "Opportunities per day", [_target(f"daily_opportunities_count{{{_I}}}")],
                      "", "none", _steps("yellow", (minimum, "green")), 0,
                      custom={"drawStyle": "bars", "fillOpacity": 60}), 6)
    layout.add(_panel("timeseries", "Average ROI", [_target(f"daily_avg_roi{{{_I}}}")],
                      "Average ROI of the reported day's opportunities.", "none"), 4)
    layout.add(_panel("stat", "Active sources", [_target(f"daily_sources_active{{{_I}}}")],
                      "Distinct sources with opportunities during the reported day.", "none"), 4)
    layout.add(_panel("stat", "Errors logged", [_target(f"daily_errors_count{{{_I}}}")],
                      "ERROR and CRITICAL records during the reported day.", "none",
                      _steps("green", (1, "yellow"))), 4)


def _security_row(layout: _Layout, t: dict) -> None:
    layout.row("Security")
    layout.add(_panel("stat", "Vault reachable", [_target(f"monitor_vault_up{{{_I}}}")], "", "none",
                      _steps("red", (1, "green")), mappings=_mapping((0, "DOWN", "red"), (1, "UP", "green"))), 5)
    layout.add(_panel("stat", "Vault sealed", [_target(f"monitor_vault_sealed{{{_I}}}")], "", "none",
                      _steps("green", (1, "red")),
                      mappings=_mapping((0, "unsealed", "green"), (1, "SEALED", "red"))), 5)
    layout.add(_panel("stat", "Vault token TTL", [_target(f"monitor_vault_token_ttl_seconds{{{_I}}}")],
                      "Remaining TTL of monitor's token (vault.token_ttl; a root token never expires).", "s",
                      _lower_worse(t["token_ttl"])), 6)
    quota = Levels(t["quota_warning"].default, t["quota_critical"].default)
    layout.add(_panel("bargauge", "API quota remaining",
                      [_target(f"monitor_api_quota_remaining_ratio{{{_I}}}", "{{instance}} {{api}}")],
                      "Remaining share of each provider's quota (quotas remaining_percent).", "percentunit",
                      _lower_worse(quota), 0, 1,
                      options={"displayMode": "basic", "orientation": "horizontal",
                               "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}), 8)


def _monitor_row(layout: _Layout, t: dict) -> None:
    layout.row("Monitor")
    for command, limit in STALE_AFTER.items():
        layout.add(_panel("stat", f"Last {command} run",
                          [_target(f'time() - monitor_last_run_timestamp_seconds{{{_I},command="{command}"}}')],
                          f"Seconds since monitor {command} last finished; overdue after {_duration_text(limit)}.",
                          "s", _steps("green", (limit, "red"))), 8)
    status = [{"id": "custom.cellOptions", "value": {"type": "color-background"}},
              {"id": "mappings", "value": _STATUS_MAPPINGS},
              {"id": "thresholds", "value": _steps("green", (1, "yellow"), (2, "red"), (3, "purple"))}]
    layout.add(_panel("table", "Check status",
                      [_target(f"monitor_check_status{{{_I}}}", "", instant=True)],
                      "The verdict of every check at each command's last run.", "none",
                      custom={"filterable": True},
                      overrides=[{"matcher": {"id": "byName", "options": "status"}, "properties": status}],
                      transformations=[{"id": "organize", "options": {
                          "excludeByName": {"Time": True, "__name__": True, "job": True},
                          "indexByName": {"instance": 0, "command": 1, "kind": 2, "check": 3, "Value": 4},
                          "renameByName": {"Value": "status"}}}],
                      options={"showHeader": True, "sortBy": [{"displayName": "status", "desc": True}]}), 12, 10)
    layout.add(_panel("timeseries", "Telegram outbox", [_target(f"monitor_outbox_messages{{{_I}}}")],
                      "Messages waiting for Telegram; above zero for 30 minutes alerts.", "none",
                      _steps("green", (1, "yellow")), 0), 6, 10)
    layout.add(_panel("timeseries", "Run duration",
                      [_target(f"monitor_run_duration_seconds{{{_I}}}", "{{instance}} {{command}}"),
                       _target(f"node_textfile_scrape_error{{{_I}}}", "{{instance}} textfile error", "B")],
                      "How long each command's last run took; a textfile error means node_exporter could not "
                      "read a .prom file.", "s", minimum=0), 6, 10)
    # As BackupStale computes it: the age seen by the last backup-check plus the time since.
    age_now = (f"monitor_backup_age_seconds{{{_I}}} + on(instance, job) group_left() "
               f'(time() - monitor_last_run_timestamp_seconds{{{_I},command="backup-check"}})')
    layout.add(_panel("timeseries", "Backup age", [_target(age_now, "{{instance}} {{backup}}")],
                      "Age of the newest file of each backup set (backups max_age).", "s",
                      _steps("green", (t["backup_max_age"].default, "red")), 0), 24)


def dashboard(config: dict) -> dict:
    """Given a validated config, return the Grafana dashboard as plain data."""
    t = thresholds(config)
    layout = _Layout()
    _system_row(layout, t)
    _scraper_row(layout, t)
    _business_row(layout, t)
    _security_row(layout, t)
    _monitor_row(layout, t)
    environment = config["environment"]
    instance_query = "label_values(monitor_last_run_timestamp_seconds, instance)"
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "description": "",
                      "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "__elements": {},
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
            {"type": "panel", "id": "bargauge", "name": "Bar gauge", "version": ""},
            {"type": "panel", "id": "stat", "name": "Stat", "version": ""},
            {"type": "panel", "id": "table", "name": "Table", "version": ""},
            {"type": "panel", "id": "timeseries", "name": "Time series", "version": ""},
        ],
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "description": f"monitor fleet view: hosts, scrapers, business figures, Vault and quotas, monitor itself. "
                       f"Generated by `monitor render dashboard` (environment {environment}).",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": layout.panels,
        "refresh": "1m",
        "schemaVersion": 38,
        "tags": ["monitor", "web3-scraper", environment],
        "templating": {"list": [{
            "name": "instance", "label": "Instance", "type": "query", "datasource": _DS,
            "definition": instance_query,
            "query": {"query": instance_query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "refresh": 2, "regex": "", "sort": 1, "multi": True, "includeAll": True, "allValue": ".*",
            "current": {}, "options": [], "hide": 0}]},
        "time": {"from": "now-24h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": f"monitor fleet ({environment})",
        "uid": f"monitor-fleet-{environment}",
        "version": 1,
        "weekStart": "",
    }


def dashboard_json(config: dict) -> str:
    """Given a validated config, return the text of `grafana_dashboard.json` for its thresholds."""
    return json.dumps(dashboard(config), indent=2, sort_keys=False) + "\n"
