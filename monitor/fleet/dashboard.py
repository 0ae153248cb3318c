"""The Grafana dashboard, rendered from the same thresholds as the rules."""

import json

from monitor.fleet.rules import STALE_AFTER, SUCCESS_RATE_MIN, Levels, _duration_text, thresholds

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
