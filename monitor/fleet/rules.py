"""The Prometheus alert rules, rendered from the config (the dashboard: `dashboard.py`).

One source of truth: every threshold in `prometheus_rules.yml` and `grafana_dashboard.json`
comes from the same config keys the checks judge with, so `monitor render rules --env prod`
gives an operator the files that match their prod thresholds; the committed files are this
module's output for the built-in defaults. Only text comes out: YAML is written by hand
(no PyYAML at runtime) with every scalar quoted when YAML could read it as anything else.
"""

from typing import NamedTuple

from monitor.fleet.yaml import num as _num, to_yaml
from monitor.jobs import JOBS
from monitor.units import format_duration

# How long after its last run each cron job is overdue (`Job.overdue_after`).
STALE_AFTER = {name: job.overdue_after for name, job in JOBS.items()}
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
