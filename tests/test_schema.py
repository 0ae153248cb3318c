"""`monitor schema`: the published JSON Schema of the envelope, and what it refuses."""

import json
from datetime import datetime, timezone

import jsonschema
import pytest

from monitor.cli import main
from monitor.commands.schema import COMMANDS, envelope_schema
from monitor.output import envelope
from monitor.results import Result
from tests.conftest import monitor_json


def _validator(schema):
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def _health() -> dict:
    results = [Result("warning", "Disk / 91.2% used", 91.2, "%", 90, 95, {"path": "/"}, "disk:/", "system", 1.4),
               Result("ok", "no value", id="cron", kind="system")]
    data = envelope("health", datetime(2026, 11, 26, 9, tzinfo=timezone.utc), "vps-1", "prod", "warning", 8.4,
                    results, {"notifications": {"sent": 1, "queued": 0, "silenced": 0, "failed": 0, "outbox": 0}})
    return json.loads(json.dumps(data))


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_monitor_schema_prints_a_valid_2020_12_schema(capsys, command):
    assert main(["schema", *([command] if command else [])]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    if command:
        assert schema["properties"]["command"] == {"const": command}


def test_a_health_envelope_validates_and_new_check_ids_and_details_are_welcome():
    data = _health()
    data["checks"]["tls:example.org:443"] = {**data["checks"]["cron"], "kind": "tls", "details": {"eta_seconds": 3}}
    monitor_json(json.dumps(data))
    _validator(envelope_schema("health")).validate(data)


@pytest.mark.parametrize("break_it", [
    lambda d: d.pop("overall_status"),
    lambda d: d.update(healthy=True),                       # says healthy while warning
    lambda d: d.update(schema_version=2),
    lambda d: d["checks"]["disk:/"].update(status="bad"),
    lambda d: d["checks"]["disk:/"].pop("details"),
    lambda d: d["checks"]["disk:/"].update(value=[1]),
    lambda d: d["notifications"].pop("outbox"),
    lambda d: d.update(command="backup"),
    lambda d: d.update(timestamp="yesterday"),
])
def test_the_schema_refuses_a_broken_envelope(break_it):
    data = _health()
    break_it(data)
    with pytest.raises(jsonschema.ValidationError):
        _validator(envelope_schema()).validate(data)


def _report() -> dict:
    """A daily report object as `monitor daily-report` prints it (every key it can have)."""
    medians = {"median_7d": 30.0, "same_weekday": None, "percent": 13.3}
    return {"date": "2026-11-25", "timezone": "UTC",
            "window": {"start": "2026-11-25T00:00:00+00:00", "end": "2026-11-26T00:00:00+00:00", "hours": 24.0},
            "opportunities_found": 34, "avg_roi": 2.65,
            "top_opportunities": [{"time": "2026-11-25T09:00:00+00:00", "source": "s0", "roi": 4.3}],
            "sources_active": 1, "sources": {"s0": 34}, "inactive_sources": ["zz"], "roi_missing": 0,
            "errors": {"count": 2, "error": 1, "critical": 1, "per_file": {"logs/app.log": 2}, "unparseable_lines": 0,
                       "unreadable": []},
            "health": {"runs_seen": 287, "runs_expected": 288, "percent_ok": 99.7,
                       "incidents": {"disk:/": {"incidents": 1, "downtime_seconds": 300}},
                       "down_spans": [["2026-11-25T03:00:00+00:00", "2026-11-25T03:05:00+00:00"]]},
            "change": {"opportunities": {"previous": 33, "delta": 1, "percent": 3.0},
                       "avg_roi": {"previous": 2.6, "delta": 0.05, "percent": 1.9}},
            "damaged_values": 0, "baseline": {"days_with_data": 7, "enough": True, "opportunities": medians,
                                              "avg_roi": medians},
            "learned_silent": [], "dropped_sources": [{"source": "s1", "count": 1, "median_7d": 12.0}],
            "last_days": [{"day": "2026-11-24", "count": 33}], "hourly": [2] * 24, "missing": [], "message": "...",
            "chart": None, "already_sent": "2026-11-26T09:00:00+00:00"}


def _daily_report() -> dict:
    data = _health()
    data.update(command="daily-report", report=_report())
    data["notifications"].update(dry_run=[{"chat_id": "-100", "text": "..."}],
                                 alertmanager={"firing": 1, "resolved": 0, "accepted": 2, "urls": 2, "pending": 0,
                                               "silences": 1, "silences_pending": 0})
    return data


@pytest.mark.parametrize("where", [
    lambda d: d,
    lambda d: d["checks"]["disk:/"],
    lambda d: d["notifications"],
    lambda d: d["notifications"]["alertmanager"],
    lambda d: d["notifications"]["dry_run"][0],
    lambda d: d["report"],
    lambda d: d["report"]["window"],
    lambda d: d["report"]["errors"],
    lambda d: d["report"]["health"],
    lambda d: d["report"]["health"]["incidents"]["disk:/"],
    lambda d: d["report"]["change"]["avg_roi"],
    lambda d: d["report"]["baseline"]["opportunities"],
    lambda d: d["report"]["top_opportunities"][0],
    lambda d: d["report"]["dropped_sources"][0],
    lambda d: d["report"]["last_days"][0],
])
def test_an_added_field_is_not_breaking_for_readers_but_the_tests_strict_schema_names_every_key(where):
    data = _daily_report()
    monitor_json(json.dumps(data))  # every key named: valid as it is
    where(data)["new_field"] = 1
    _validator(envelope_schema()).validate(data)  # a reader of schema_version 1 accepts additions
    with pytest.raises(jsonschema.ValidationError, match="'new_field' was unexpected"):
        monitor_json(json.dumps(data))


def test_the_maps_keyed_by_a_name_take_any_name_but_only_counts():
    data = _daily_report()
    data["report"]["sources"]["a source named anything"] = 3
    data["report"]["errors"]["per_file"]["/var/log/other.log"] = 1
    monitor_json(json.dumps(data))
    data["report"]["sources"]["s0"] = "many"
    with pytest.raises(jsonschema.ValidationError):
        monitor_json(json.dumps(data))


def test_daily_report_needs_its_report_object():
    data = _daily_report()
    report = data.pop("report")
    with pytest.raises(jsonschema.ValidationError, match="'report' is a required property"):
        _validator(envelope_schema("daily-report")).validate(data)
    data["report"] = report
    _validator(envelope_schema("daily-report")).validate(data)
    for key in ("errors", "health", "change"):  # not measured: null, the reason in `missing`
        data["report"][key] = None
    monitor_json(json.dumps(data))


# --- the rule "every test that parses a job's JSON validates it against the schema" --------------

def unchecked_job_json(source: str) -> list[int]:
    """The lines where `json.loads` reads the stdout of a monitor job (`health`, `backup-check`,
    `daily-report`, started by `run_monitor([...])` or `subprocess.run([MONITOR, ...])`) rather
    than `monitor_json`, which validates it against the strict schema."""
    import ast

    def launches_a_job(call) -> bool:
        for arg in [*call.args, *(k.value for k in call.keywords)]:
            if isinstance(arg, (ast.List, ast.Tuple)):
                words = [e.value for e in arg.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                if words and words[0] in COMMANDS:  # the first word given: the subcommand
                    return True
        return False

    found = []
    for scope in ast.walk(ast.parse(source)):
        if not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        assigned = sorted((node.lineno, target.id, isinstance(node.value, ast.Call) and launches_a_job(node.value))
                          for node in ast.walk(scope) if isinstance(node, ast.Assign)
                          for target in node.targets if isinstance(target, ast.Name))
        for call in ast.walk(scope):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "loads"
                    and isinstance(call.func.value, ast.Name) and call.func.value.id == "json" and call.args):
                continue
            for node in ast.walk(call.args[0]):
                if not (isinstance(node, ast.Attribute) and node.attr == "stdout"):
                    continue
                if isinstance(node.value, ast.Call) and launches_a_job(node.value):
                    found.append(call.lineno)
                elif isinstance(node.value, ast.Name):
                    last = [job for line, name, job in assigned if name == node.value.id and line <= call.lineno]
                    if last and last[-1]:
                        found.append(call.lineno)
    return sorted(set(found))


def test_the_guard_finds_a_jobs_json_read_without_the_schema_and_nothing_else():
    unchecked = (
        "def test_a(run_monitor, tmp_path):\n"
        "    proc = run_monitor(['health', '--format', 'json'], tmp_path)\n"
        "    return json.loads(proc.stdout)['checks']\n"                                     # line 3
        "def test_b():\n"
        "    done = subprocess.run([MONITOR, 'daily-report', '--no-notify'], capture_output=True)\n"
        "    return json.loads(done.stdout.splitlines()[-1])\n"                              # line 6
        "def test_c(run_monitor, tmp_path):\n"
        "    return json.loads(run_monitor(['backup-check'], tmp_path).stdout)\n")            # line 8
    assert unchecked_job_json(unchecked) == [3, 6, 8]
    fine = (
        "def test_a(run_monitor, tmp_path):\n"
        "    proc = run_monitor(['config', 'check', '--format', 'json'], tmp_path)\n"
        "    shown = json.loads(proc.stdout)\n"                        # config check prints the config, not a job's
        "    proc = run_monitor(['health'], tmp_path)\n"
        "    data = monitor_json(proc.stdout)\n"
        "    out = subprocess.run([sys.executable, '-c', CODE, MONITOR, 'health'], capture_output=True)\n"
        "    wrapper = json.loads(out.stdout)\n")                      # a launcher's own JSON around the job's
    assert unchecked_job_json(fine) == []


def test_every_test_reads_a_jobs_json_through_monitor_json():
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    offenders = {str(path.relative_to(tests)): lines for path in sorted(tests.rglob("*.py"))
                 if (lines := unchecked_job_json(path.read_text()))}
    assert offenders == {}, "parse a job's stdout with tests.conftest.monitor_json (or the envelope fixture)"
