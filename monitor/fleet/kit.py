"""What a check module builds its alert rules and dashboard panels with.

Each check module declares `levels(config)`, `rules(t)` and `panels(t)` (see
`monitor/checks/__init__.py`); they import these helpers inside the function, so a
`monitor health` run never loads this module. The renderers (`rules.py`, `dashboard.py`)
only order and assemble what the modules declare.
"""

from typing import NamedTuple

from monitor.config import SCHEMA, TableList
from monitor.fleet.yaml import num
from monitor.units import format_duration

# `instance` is usually host:port (node_exporter's 9100): ssh wants the host alone.
HOST = '{{ reReplaceAll ":[0-9]+$" "" $labels.instance }}'
# Every dashboard query is narrowed to the instances picked in the dashboard's variable.
INSTANCE = 'instance=~"$instance"'
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


class Levels(NamedTuple):
    """A warning and a critical level, in the unit the metric uses."""

    warning: float
    critical: float


# --- thresholds: the config, or the schema's defaults for sections left out ------------------

def schema_default(*path):
    """The schema's default at `path` ("scrapers", "latency_ms"): for sections the config leaves out."""
    field = SCHEMA
    for key in path:
        field = field.table if isinstance(field, TableList) else field
        field = field.fields[key]
    return field.default


def levels_of(threshold) -> Levels:
    return Levels(threshold.warning, threshold.critical)  # durations keep their .text


class PerName(NamedTuple):
    """One threshold per named item (scraper, API, backup set), in the metric's unit."""

    label: str
    default: object                  # for names the config does not list (other hosts)
    overrides: dict                  # value -> [names], values other than `default`

    @property
    def uniform(self) -> bool:
        return not self.overrides


def per_name(items: list, key: str, label: str, default, convert=lambda v: v) -> PerName:
    values = [(item["name"], convert(item[key])) for item in items]
    distinct = {v for _, v in values}
    if len(distinct) == 1:  # every configured item agrees: that value holds fleet-wide
        return PerName(label, distinct.pop(), {})
    default = convert(default)
    overrides: dict = {}
    for name, value in values:
        if value != default:
            overrides.setdefault(value, []).append(name)
    return PerName(label, default, overrides)


# --- PromQL and text helpers --------------------------------------------------------------

def duration_text(seconds: float) -> str:
    """As the user wrote it ("26h") when it came from the config, else the shortest form."""
    return getattr(seconds, "text", None) or format_duration(seconds)


def compare(metric: str, op: str, levels: PerName, wrap=lambda selector: selector, skip=()) -> str:
    """`metric op level`, with one clause per overridden name when levels differ by name;
    the names in `skip` get no clause (an item that leaves this threshold out)."""
    if levels.uniform and not skip:
        return f"{wrap(metric)} {op} {num(levels.default)}"
    clauses, named = [], list(skip)
    for value, names in levels.overrides.items():
        named += names
        clauses.append(f'{wrap(_selector(metric, levels.label, "=~", names))} {op} {num(value)}')
    clauses.append(f'{wrap(_selector(metric, levels.label, "!~", named))} {op} {num(levels.default)}')
    return " or ".join(clauses)


def _selector(metric: str, label: str, op: str, names: list) -> str:
    # Names are letters, digits, "_", "." and "-" (the config says so); "[.]" rather than
    # "\\." keeps backslashes out, which a PromQL string would unescape first.
    pattern = "|".join(n.replace(".", "[.]") for n in sorted(names))
    return f'{metric}{{{label}{op}"{pattern}"}}'


def level_text(levels: PerName, show) -> str:
    return show(levels.default) if levels.uniform else "its configured level"


def percent(value) -> str:
    return f"{num(value)}%"


# --- alert rules --------------------------------------------------------------------------

def rule(alert, expr, for_, severity, summary, description, runbook) -> dict:
    return {"alert": alert, "expr": expr, "for": for_, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description, "runbook": runbook}}


def pair(alert, expr_for_level, levels: Levels, fors, summary, description, runbook) -> list[dict]:
    """A warning and a critical rule for one measure; "SEVERITY" in `summary` names the level."""
    return [rule(alert, expr_for_level(level), for_, severity, summary.replace("SEVERITY", severity),
                 description, runbook)
            for severity, level, for_ in (("warning", levels.warning, fors[0]),
                                          ("critical", levels.critical, fors[1]))]


def health_runbook(kind: str) -> str:
    return f"ssh {HOST} monitor health --only {kind} --format text"


# --- dashboard panels ---------------------------------------------------------------------

def steps(*pairs) -> dict:
    """Threshold steps: a base color, then (value, color) from low to high."""
    base, *rest = pairs
    return {"mode": "absolute", "steps": [{"color": base, "value": None}]
            + [{"color": color, "value": value} for value, color in rest]}


def higher_worse(levels: Levels) -> dict:
    return steps("green", (levels.warning, "yellow"), (levels.critical, "red"))


def lower_worse(levels: Levels) -> dict:
    return steps("red", (levels.critical, "yellow"), (levels.warning, "green"))


def mapping(*texts) -> list:
    return [{"type": "value", "options": {str(v): {"text": text, "color": color, "index": i}
                                          for i, (v, text, color) in enumerate(texts)}}]


def target(expr: str, legend: str = "{{instance}}", ref: str = "A", instant: bool = False) -> dict:
    target = {"datasource": DATASOURCE, "refId": ref, "expr": expr, "legendFormat": legend}
    if instant:
        target.update(instant=True, range=False, format="table")
    return target


def panel(kind: str, title: str, targets: list, description: str = "", unit: str = "none",
          thresholds: dict | None = None, minimum=None, maximum=None, mappings=None,
          options: dict | None = None, custom: dict | None = None, overrides=None,
          transformations=None) -> dict:
    defaults = {"unit": unit, "thresholds": thresholds or steps("green"), "mappings": mappings or []}
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
    panel = {"type": kind, "title": title, "description": description, "datasource": DATASOURCE,
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
