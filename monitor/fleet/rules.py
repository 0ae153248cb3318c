"""The Prometheus alert rules, rendered from the config (the dashboard: `dashboard.py`).

One source of truth: every threshold in `prometheus_rules.yml` and `grafana_dashboard.json`
comes from the same config keys the checks judge with, so `monitor render rules --env prod`
gives an operator the files that match their prod thresholds; the committed files are this
module's output for the built-in defaults. Each check module declares its thresholds and
rules (`levels`, `rules`: see `monitor/checks/__init__.py`); this module orders them into
groups and adds monitor's own. Only text comes out: YAML is written by hand (no PyYAML at
runtime) with every scalar quoted when YAML could read it as anything else.
"""

from monitor.checks import catalog
from monitor.fleet.kit import HOST as _HOST, duration_text as _duration_text, rule as _rule
from monitor.fleet.yaml import num as _num, to_yaml
from monitor.jobs import JOBS

# How long after its last run each cron job is overdue (`Job.overdue_after`).
STALE_AFTER = {name: job.overdue_after for name, job in JOBS.items()}
# Alerts that mean "this host's health runs stopped": Alertmanager mutes the rest of the host.
HEALTH_STOPPED_ALERTS = ("MonitorHealthNotRunning", "MonitorHealthMetricsGone")
# The groups check modules put their rules in, in file order: the seed's first, as the day-12
# plan wrote it. A group no module names here comes after them, monitor's own (meta) last.
GROUPS = ("web3_scraper_alerts", "monitor_host", "monitor_services", "monitor_business")


def thresholds(config: dict) -> dict:
    """Given a validated config, return every level the rules and the dashboard use."""
    return {key: level for module in catalog() if hasattr(module, "levels")
            for key, level in module.levels(config).items()}


def declared_rules(t: dict) -> dict:
    """Group name -> the rules the check modules declare for it, in GROUPS then module order."""
    groups: dict = {name: [] for name in GROUPS}
    for module in catalog():
        for name, rules in (module.rules(t) if hasattr(module, "rules") else {}).items():
            groups.setdefault(name, []).extend(rules)
    return groups


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
    groups = [{"name": name, "rules": rules} for name, rules in declared_rules(thresholds(config)).items() if rules]
    return {"groups": groups + [{"name": "monitor_meta", "rules": _meta_rules()}]}


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
