"""`monitor schema`: the JSON Schema (2020-12) of the envelope every job prints.

The contract for pipes (`monitor health | jq`, a collector reading the JSON): the
fields of `output.envelope`, each check's `Result.to_json`, the notifications summary
and the daily report. `schema_version` is bumped on any breaking change (a field
removed, renamed or retyped); a new field is not breaking, so the published schema
leaves room for keys it does not name. The tests validate every envelope they parse
with `strict=True`, which names every key: a field added without its line here fails.
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


def _notifications() -> dict:
    return {
        "type": "object",
        "description": "Delivered this run, left queued, silenced, failed attempts; the outbox after the run.",
        "required": ["sent", "queued", "silenced", "failed", "outbox"],
        "properties": {
            "sent": _COUNT, "queued": _COUNT, "silenced": _COUNT, "failed": _COUNT,
            "outbox": {"type": ["integer", "null"], "minimum": 0},
            "dry_run": {"type": "array", "description": "--dry-run: the messages that would be sent.",
                        "items": {"type": "object", "required": ["chat_id", "text"],
                                  "properties": {"chat_id": {"type": ["string", "integer", "null"]},
                                                 "text": {"type": "string"}}}},
            "alertmanager": {"type": "object", "description": "[alertmanager]: alerts posted firing and resolved, "
                                                              "replicas that accepted them, of how many; RESOLVED "
                                                              "alerts kept for the next run; monitor's silences and "
                                                              "acks held as Alertmanager silences, and those no "
                                                              "replica took yet.",
                             "required": list(_AM_COUNTS),
                             "properties": {k: _COUNT for k in _AM_COUNTS},
                             "additionalProperties": False},
        },
        "additionalProperties": True,  # each sink may add its own counts
    }


def _report() -> dict:
    nullable_count = {"type": ["integer", "null"], "minimum": 0}
    return {
        "type": "object",
        "description": "daily-report: the day's figures and the message sent.",
        "required": ["date", "timezone", "window", "opportunities_found", "avg_roi", "top_opportunities",
                     "sources_active", "inactive_sources", "errors", "health", "change", "missing", "message"],
        "properties": {
            "date": {"type": "string", "format": "date"},
            "timezone": {"type": "string"},
            "window": {"type": "object", "required": ["start", "end", "hours"]},
            "opportunities_found": nullable_count,
            "avg_roi": _NUMBER_OR_NULL,
            "top_opportunities": {"type": "array", "items": {
                "type": "object", "required": ["time", "source", "roi"],
                "properties": {"source": {"type": "string"}, "roi": {"type": "number"}}}},
            "sources_active": nullable_count,
            "inactive_sources": {"type": "array", "items": {"type": "string"}},
            "errors": {"type": "object"},
            "health": {"type": "object"},
            "change": {"type": ["object", "null"]},
            "damaged_values": _COUNT,
            "missing": {"type": "array"},
            "message": {"type": ["string", "null"]},
            "already_sent": {"type": "string", "format": "date-time"},
        },
        "additionalProperties": True,
    }


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
        "$defs": {"check": _check(strict), "notifications": _notifications(),
                  **({"report": _report()} if "daily-report" in commands else {})},
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
