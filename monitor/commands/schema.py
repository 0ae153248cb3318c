"""`monitor schema`: the JSON Schema (2020-12) of the envelope every job prints.

The contract for pipes (`monitor health | jq`, a collector reading the JSON): the
fields of `output.envelope`, each check's `Result.to_json`, the notifications summary
and the daily report. `schema_version` is bumped on any breaking change (a field
removed, renamed or retyped); a new field is not breaking, so the published schema
leaves room for keys it does not name. The tests validate every envelope they parse
with `strict=True`, which names every key of every object (the notifications and the
report included; `details` and the maps keyed by a name, such as sources, excepted):
a field added without its line here fails them.
"""

import json

import click

from monitor.output import SCHEMA_VERSION

COMMANDS = ("health", "backup-check", "daily-report")
STATUSES = ["ok", "warning", "critical", "unknown"]
PROBLEMS = ("log_write_error", "state_write_error", "textfile_write_error", "notify_error")

_COUNT = {"type": "integer", "minimum": 0}
_AM_COUNTS = ("firing", "resolved", "accepted", "urls", "pending", "silences", "silences_pending")
_NUMBER_OR_NULL = {"type": ["number", "null"]}


def _check(strict: bool) -> dict:
    return {
        "type": "object",
        "description": "One check's result (monitor/results.py: Result.to_json).",
        "required": ["kind", "status", "value", "unit", "warning", "critical", "message", "duration_ms", "details"],
        "properties": {
            "kind": {"type": "string", "description": "system, vault, scraper, quota, backup, business, ..."},
            "status": {"enum": STATUSES},
            "value": {"type": ["number", "string", "null"],
                      "description": "What was measured; null when it could not be (never Infinity or NaN)."},
            "unit": {"type": ["string", "null"]},
            "warning": _NUMBER_OR_NULL,
            "critical": _NUMBER_OR_NULL,
            "message": {"type": "string"},
            "duration_ms": {"type": "number", "minimum": 0},
            "details": {"type": "object", "additionalProperties": True,
                        "description": "Check-specific figures; each kind adds its own keys."},
            "lower_is_worse": {"const": True, "description": "Present when a lower value is worse (quota left, "
                                                             "a TTL): warning and critical are floors."},
        },
        "additionalProperties": not strict,
    }


def _object(properties: dict, required, strict: bool, description: str = "") -> dict:
    out = {"type": "object", "required": list(required), "properties": properties,
           "additionalProperties": not strict}
    if description:
        out["description"] = description
    return out


def _nullable(schema: dict) -> dict:
    """The object `schema`, or null (its keywords about keys apply to objects alone)."""
    return {**schema, "type": ["object", "null"]}


def _notifications(strict: bool) -> dict:
    return _object({
        "sent": _COUNT, "queued": _COUNT, "silenced": _COUNT, "failed": _COUNT,
        "outbox": {"type": ["integer", "null"], "minimum": 0},
        "dry_run": {"type": "array", "description": "--dry-run: the messages that would be sent.",
                    "items": _object({"chat_id": {"type": ["string", "integer", "null"]}, "text": {"type": "string"}},
                                     ["chat_id", "text"], strict)},
        "alertmanager": _object({k: _COUNT for k in _AM_COUNTS}, _AM_COUNTS, strict,
                                "[alertmanager]: alerts posted firing and resolved, replicas that accepted them, "
                                "of how many; RESOLVED alerts kept for the next run; monitor's silences and acks "
                                "held as Alertmanager silences, and those no replica took yet."),
    }, ["sent", "queued", "silenced", "failed", "outbox"], strict,
        "Delivered this run, left queued, silenced, failed attempts; the outbox after the run.")


def _report(strict: bool) -> dict:
    nullable_count = {"type": ["integer", "null"], "minimum": 0}
    number_or_null = _NUMBER_OR_NULL
    strings = {"type": "array", "items": {"type": "string"}}
    counts_by_name = {"type": "object", "additionalProperties": _COUNT}
    medians = _object({"median_7d": number_or_null, "same_weekday": number_or_null, "percent": number_or_null,
                       "effective": {**number_or_null, "description": "What the day is judged against: the lower "
                                     "of the two medians (the daily_*_baseline metrics)."},
                       "weekday_normal": {"type": "boolean", "description": "Opportunities only: far below the "
                                          "7-day median, yet not below the same weekday's."}},
                      ["median_7d", "same_weekday", "percent"], strict)
    change = _object({"previous": number_or_null, "delta": number_or_null, "percent": number_or_null},
                     ["previous", "delta", "percent"], strict)
    return _object({
        "date": {"type": "string", "format": "date"},
        "timezone": {"type": "string"},
        "window": _object({"start": {"type": "string", "format": "date-time"},
                           "end": {"type": "string", "format": "date-time"},
                           "hours": {"type": "number", "exclusiveMinimum": 0}}, ["start", "end", "hours"], strict,
                          "The day covered, in report.timezone (23 or 25 hours on a DST change)."),
        "opportunities_found": nullable_count,
        "avg_roi": number_or_null,
        "top_opportunities": {"type": "array", "items": _object(
            {"time": {"type": ["string", "number", "null"],
                      "description": "ISO 8601 in the report's zone when the database value reads as a time."},
             "source": {"type": ["string", "number", "null"]}, "roi": {"type": "number"}}, ["time", "source", "roi"], strict)},
        "sources_active": nullable_count,
        "sources": {**counts_by_name, "description": "Opportunities per source that had any."},
        "inactive_sources": strings,
        "roi_missing": _COUNT,
        "errors": _nullable(_object({
            "count": _COUNT, "error": _COUNT, "critical": _COUNT,
            "per_file": {**counts_by_name, "description": "ERROR and CRITICAL records per log file with any."},
            "unparseable_lines": _COUNT, "unreadable": strings,
        }, ["count", "error", "critical", "per_file", "unparseable_lines", "unreadable"], strict,
            "ERROR/CRITICAL records in report.error_logs within the window; null: not counted (see missing).")),
        "health": _nullable(_object({
            "runs_seen": _COUNT, "runs_expected": _COUNT, "percent_ok": number_or_null,
            "incidents": {"type": "object", "additionalProperties": _object(
                {"incidents": _COUNT, "downtime_seconds": {"type": "number", "minimum": 0}},
                ["incidents", "downtime_seconds"], strict)},
            "down_spans": {"type": "array", "items": {"type": "array", "items": {"type": "string"},
                                                      "minItems": 2, "maxItems": 2}},
        }, ["runs_seen", "runs_expected", "percent_ok", "incidents", "down_spans"], strict,
            "monitor health runs in the window; null: not read (see missing).")),
        "change": _nullable(_object({"opportunities": change, "avg_roi": change}, ["opportunities", "avg_roi"],
                                    strict, "Against the day before; null: no figures (see missing).")),
        "damaged_values": _COUNT,
        "baseline": _object({"days_with_data": _COUNT, "enough": {"type": "boolean"},
                             "opportunities": medians, "avg_roi": medians},
                            ["days_with_data", "enough", "opportunities", "avg_roi"], strict),
        "learned_silent": strings,
        "dropped_sources": {"type": "array", "items": _object(
            {"source": {"type": "string"}, "count": _COUNT, "median_7d": {"type": "number"}},
            ["source", "count", "median_7d"], strict)},
        "last_days": {"type": "array", "items": _object({"day": {"type": "string", "format": "date"},
                                                         "count": nullable_count}, ["day", "count"], strict)},
        "hourly": {"type": "array", "items": _COUNT, "description": "Opportunities per hour of the day (a chart)."},
        "missing": strings,
        "message": {"type": ["string", "null"]},
        "chart": {"type": ["string", "null"], "description": "--chart: the PNG written; null: not drawn."},
        "already_sent": {"type": "string", "format": "date-time"},
    }, ["date", "timezone", "window", "opportunities_found", "avg_roi", "top_opportunities", "sources_active",
        "inactive_sources", "errors", "health", "change", "missing", "message"], strict,
        "daily-report: the day's figures and the message sent.")


def envelope_schema(command: str | None = None, strict: bool = False) -> dict:
    """Given a job's name (or None for any of them), return the JSON Schema of its envelope.

    `strict` also refuses keys the schema does not name (the tests' setting).
    """
    commands = [command] if command else list(COMMANDS)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"monitor {command or 'health | backup-check | daily-report'} --format json",
        "description": "The one JSON object a monitor job prints on stdout. schema_version is bumped on "
                       "any breaking change; added fields are not breaking.",
        "type": "object",
        "required": ["schema_version", "command", "timestamp", "host", "environment", "config",
                     "overall_status", "healthy", "duration_ms", "checks", "notifications"],
        "properties": {
            "schema_version": {"const": SCHEMA_VERSION},
            "command": {"const": command} if command else {"enum": commands},
            "timestamp": {"type": "string", "format": "date-time",  # the pattern: format is only a hint
                          "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})$"},
            "host": {"type": "string"},
            "environment": {"type": "string"},
            "config": {"type": ["string", "null"], "description": "The config file used; null: built-in defaults."},
            "overall_status": {"enum": STATUSES, "description": "The worst check: ok < warning < unknown < critical."},
            "healthy": {"type": "boolean", "description": "overall_status is ok."},
            "duration_ms": {"type": "number", "minimum": 0},
            "checks": {"type": "object", "description": "Keyed by the stable check id.",
                       "propertyNames": {"minLength": 1}, "additionalProperties": {"$ref": "#/$defs/check"}},
            "notifications": {"$ref": "#/$defs/notifications"},
            **({"report": {"$ref": "#/$defs/report"}} if "daily-report" in commands else {}),
            **{key: {"type": "string", "description": "Set when this could not be done; the exit code is at least 1."}
               for key in PROBLEMS},
        },
        "additionalProperties": not strict,
        "allOf": [
            {"if": {"properties": {"overall_status": {"const": "ok"}}},
             "then": {"properties": {"healthy": {"const": True}}},
             "else": {"properties": {"healthy": {"const": False}}}},
        ],
        "$defs": {"check": _check(strict), "notifications": _notifications(strict),
                  **({"report": _report(strict)} if "daily-report" in commands else {})},
    }
    if "daily-report" in commands:
        schema["allOf"].append({"if": {"properties": {"command": {"const": "daily-report"}}},
                                "then": {"required": ["report"]}})
    return schema


@click.command("schema")
@click.argument("command", required=False, type=click.Choice(COMMANDS))
def schema_command(command):
    """Print the JSON Schema (2020-12) of the JSON a job prints (every job's, or COMMAND's)."""
    click.echo(json.dumps(envelope_schema(command), indent=2))
