"""The Grafana dashboard, rendered from the same thresholds as the rules.

Each check module declares its panels and the row they go in (`panels`: see
`monitor/checks/__init__.py`); this module lays the rows out and adds monitor's own.
"""

import json

from monitor.checks import catalog
from monitor.fleet.kit import (DATASOURCE as _DS, INSTANCE as _I, duration_text as _duration_text, panel as _panel,
                               steps as _steps, target as _target)
from monitor.fleet.rules import STALE_AFTER, thresholds

_STATUS_MAPPINGS = [{"type": "value", "options": {
    "0": {"text": "OK", "color": "green", "index": 0},
    "1": {"text": "WARNING", "color": "yellow", "index": 1},
    "2": {"text": "CRITICAL", "color": "red", "index": 2},
    "3": {"text": "UNKNOWN", "color": "purple", "index": 3},
}}]
# The rows check modules put their panels in, top to bottom. A row no module names here comes
# after them; monitor's own row is last, with the panels modules declare for it after its own.
ROWS = ("System Health", "Scraper Performance", "Business Metrics", "Security")
MONITOR_ROW = "Monitor"


def declared_panels(t: dict) -> dict:
    """Row title -> [(panel, width, height)] the check modules declare, in ROWS then module order."""
    rows: dict = {title: [] for title in ROWS}
    for module in catalog():
        for title, panel, w, h in (module.panels(t) if hasattr(module, "panels") else []):
            rows.setdefault(title, []).append((panel, w, h))
    return {title: panels for title, panels in rows.items() if panels}


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


def dashboard(config: dict) -> dict:
    """Given a validated config, return the Grafana dashboard as plain data."""
    t = thresholds(config)
    layout = _Layout()
    rows = declared_panels(t)
    for title, panels in rows.items():
        if title != MONITOR_ROW:
            layout.row(title)
            for panel, w, h in panels:
                layout.add(panel, w, h)
    _monitor_row(layout, t)
    for panel, w, h in rows.get(MONITOR_ROW, []):  # after monitor's own
        layout.add(panel, w, h)
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
