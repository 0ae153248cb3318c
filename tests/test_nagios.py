"""`--format nagios`: the plugin API's status line, performance data and long output,
read back by a strict parser of the plugin guidelines (tests/nagios_grammar.py)."""

from datetime import datetime, timezone

import pytest

from monitor.nagios import LONG_LINES, PERFDATA_CHARS, to_nagios
from monitor.output import envelope
from monitor.results import Result
from tests.nagios_grammar import parse_output

STARTED = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)


def check(id, status, value=None, unit=None, warning=None, critical=None, message="", kind="system"):
    return Result(status, message or f"{id} is {status}", value=value, unit=unit, warning=warning,
                  critical=critical, id=id, kind=kind)


def rendered(results, overall="ok", **extra):
    data = envelope("health", STARTED, "vps-1", "prod", overall, 8.4, results, extra, config="/etc/m.toml")
    return to_nagios(data)


SAMPLE = [
    check("cpu", "ok", 12.5, "%", 80, 95),
    check("memory", "warning", 87.0, "%", 85, 95),
    check("disk:/", "critical", 96.1, "%", 90, 95, message="/ 96.1% used"),
    check("quota:etherscan", "critical", 3.0, "%", 20, 5, kind="quota"),
    check("vault", "ok", 12.25, "ms", 500, 2000, kind="vault"),
    check("cron", "ok"),
]


def test_status_line_gives_the_state_the_counts_and_the_worst_checks_first():
    out = parse_output(rendered(SAMPLE, "critical"))
    assert out.status_line == "MONITOR CRITICAL - 2 critical, 1 warning: disk:/, quota:etherscan, memory"
    assert out.long_lines == ["CRITICAL disk:/: / 96.1% used", "CRITICAL quota:etherscan: quota:etherscan is critical",
                              "WARNING memory: memory is warning"]


def test_an_ok_run_says_how_many_checks_and_has_no_long_output():
    out = parse_output(rendered([check("cpu", "ok", 1.0, "%", 80, 95), check("cron", "ok")]))
    assert out.status_line == "MONITOR OK - 0 critical, 0 warning: 2 checks ok"
    assert out.long_lines == []


def test_unknown_checks_are_counted_and_make_the_state_unknown():
    out = parse_output(rendered([check("cron", "unknown"), check("cpu", "warning", 85.0, "%", 80, 95)], "unknown"))
    assert out.status_line == "MONITOR UNKNOWN - 0 critical, 1 warning, 1 unknown: cron, cpu"


def test_perfdata_is_each_numeric_check_worst_first_in_the_guidelines_grammar():
    text = rendered(SAMPLE, "critical")
    assert "'disk:/'=96.1%;90;95;0;100" in text  # the issue's own example
    data = parse_output(text).perfdata
    assert [d.label for d in data] == ["disk:/", "quota:etherscan", "memory", "cpu", "vault"]  # cron: no value
    vault = data[-1]
    assert (vault.value, vault.uom, vault.min, vault.max) == (12.25, "ms", None, None)
    cpu = data[3]
    assert (cpu.value, cpu.uom, cpu.min, cpu.max) == (12.5, "%", 0, 100)


def _verdict(datum) -> str:
    """What a Nagios range says of the datum's value: it matches the values that do not alert."""
    if datum.crit is not None and not datum.crit.match(datum.value):
        return "critical"
    if datum.warn is not None and not datum.warn.match(datum.value):
        return "warning"
    return "ok"


def test_thresholds_mean_to_nagios_what_they_mean_to_monitor():
    """A Nagios range matches the values that do not alert: monitor's verdict, read back."""
    values = {"cpu": "ok", "memory": "warning", "disk:/": "critical", "quota:etherscan": "critical", "vault": "ok"}
    for datum in parse_output(rendered(SAMPLE, "critical")).perfdata:
        assert _verdict(datum) == values[datum.label], datum
    quota = next(d for d in parse_output(rendered(SAMPLE)).perfdata if d.label == "quota:etherscan")
    assert quota.warn.match(50) and not quota.warn.match(10)  # lower is worse: "@~:20" alerts at 20 and below


@pytest.mark.parametrize("warning, critical, lower_is_worse, values", [
    (0.5, 0.5, True, [0.4, 0.5, 0.6, 1.0]),   # success rate, both levels at 0.5: alert below, not above
    (20, 20, True, [3, 20, 21, 80]),          # quota left
    (0.9, 0.5, True, [0.3, 0.5, 0.7, 0.9, 0.95]),
    (90, 90, False, [50, 89.9, 95]),          # higher is worse, both at 90 (at the level: see the README)
    (80, 95, False, [10, 85, 99]),
])
def test_a_levels_direction_is_the_checks_own_even_when_warning_equals_critical(warning, critical, lower_is_worse,
                                                                              values):
    """monitor judges (Threshold.judge); the plugin line, read with nagiosplugin's Range, agrees on each value."""
    from monitor.results import Threshold, measured

    results = []
    for i, value in enumerate(values):
        result = measured(value, Threshold(warning, critical, lower_is_worse), f"value {value}", unit="")
        results.append(result.replace(id=f"c{i}", kind="scraper"))
    text = rendered(results, "critical")
    for datum, result in zip(sorted(parse_output(text).perfdata, key=lambda d: d.label), results):
        assert _verdict(datum) == result.status, (datum, result)
    if lower_is_worse and warning == critical:
        assert f";@~:{warning};@~:{critical}" in text  # the guidelines' "alert at or below"


def test_units_outside_the_allowed_set_are_converted_or_dropped():
    results = [check("network", "ok", 2048.5, "B/s"), check("load", "ok", 0.52, "per CPU", 1.5, 3.0),
               check("dump", "ok", 1.5, "GiB", 4, 8), check("backup:db", "ok", 7200, "s", None, 93600)]
    data = {d.label: d for d in parse_output(rendered(results)).perfdata}
    assert (data["network"].value, data["network"].uom) == (2048.5, "")
    assert (data["load"].value, data["load"].uom, data["load"].warn.end) == (0.52, "", 1.5)
    assert (data["dump"].value, data["dump"].uom, data["dump"].crit.end) == (1.5 * 2**30, "B", 8 * 2**30)
    assert (data["backup:db"].value, data["backup:db"].warn, data["backup:db"].crit.end) == (7200, None, 93600)


def test_numbers_are_plain_decimals_never_exponents_or_minus_zero():
    results = [check("tiny", "ok", 1e-7, "s"), check("huge", "ok", 1.5e20, "B"), check("neg", "ok", -0.0, "s"),
               check("int", "ok", 3, "c")]
    text = rendered(results)
    assert "e-" not in text and "e+" not in text and "-0" not in text
    data = {d.label: d for d in parse_output(text).perfdata}
    assert data["huge"].value == 1.5e20 and data["tiny"].value == 0 and data["int"].uom == "c"


@pytest.mark.parametrize("check_id, label", [
    ("disk:/mnt/it's", "disk:/mnt/it's"),
    ("disk:/a=b", "disk:/a_b"),
    ("disk:/a b|c", "disk:/a b¦c"),
    ("disk:/x\n'=1 'y'=2", "disk:/x\\n'_1 'y'_2"),
])
def test_a_hostile_check_id_stays_one_datum_with_its_quotes_doubled(check_id, label):
    out = parse_output(rendered([check(check_id, "critical", 99.0, "%", 90, 95)], "critical"))
    assert [d.label for d in out.perfdata] == [label]
    assert len(out.long_lines) == 1


def test_a_hostile_message_is_one_bounded_printable_line():
    message = "boom\n\x1b[2J|'x'=1 " + "A" * 10_000
    out = parse_output(rendered([check("scraper:api", "critical", message=message, kind="scraper")], "critical"))
    (line,) = out.long_lines
    assert line.startswith("CRITICAL scraper:api: boom\\n\\x1b[2J¦'x'=1 AAA") and len(line) <= 300
    assert line.isprintable()


def test_two_thousand_failing_checks_stay_within_what_nrpe_returns():
    results = [check(f"scraper:s{i:04}", "critical" if i % 2 else "warning", 3000.0 + i, "ms", 1000, 3000,
                     kind="scraper") for i in range(2000)]
    text = rendered(results, "critical")
    out = parse_output(text)
    assert len(text.encode()) < 8192  # Nagios Core 3 and NRPE 2 cut plugin output at 8 KB / 1 KB lines
    assert out.status_line.endswith("and 1995 more")
    assert 0 < len(out.perfdata) < 2000 and all(d.label.startswith("scraper:s") for d in out.perfdata)
    assert all(d.crit.match(d.value) is False for d in out.perfdata[:900])  # the critical ones first
    assert len(" ".join(text.split("\n")[0].split(" | ")[1:])) <= PERFDATA_CHARS
    assert len(out.long_lines) == LONG_LINES and out.long_lines[-1] == f"… and {2000 - LONG_LINES + 1} more"


def test_a_write_error_makes_an_ok_run_a_warning_and_is_named():
    out = parse_output(rendered([check("cpu", "ok", 1.0, "%", 80, 95)], state_write_error="cannot write state/x"))
    assert out.status_line == "MONITOR WARNING - 0 critical, 0 warning: state_write_error"
    assert out.long_lines == ["state_write_error: cannot write state/x"]


# --- the command line ----------------------------------------------------------------------

@pytest.mark.parametrize("verdict, code", [("ok", 0), ("warning", 1), ("critical", 2)])
def test_health_format_nagios_state_matches_the_exit_code(tmp_path, run_monitor, verdict_config, verdict, code):
    proc = run_monitor(["health", "--format", "nagios"], tmp_path, config=verdict_config(verdict))
    assert proc.returncode == code, proc.stderr
    out = parse_output(proc.stdout.rstrip("\n"))
    assert out.status_line.startswith(f"MONITOR {verdict.upper()} - ")
    assert {d.label for d in out.perfdata} >= {"cpu", "memory", "disk:/", "inodes:/", "load"}
    if verdict != "ok":
        assert out.long_lines[0].startswith(f"{verdict.upper()} disk:/: ")


def test_quiet_prints_nothing_in_the_nagios_format(tmp_path, run_monitor, verdict_config):
    proc = run_monitor(["health", "--format", "nagios", "--quiet"], tmp_path, config=verdict_config("critical"))
    assert (proc.returncode, proc.stdout) == (2, "")


def test_backup_check_and_daily_report_speak_nagios_too(tmp_path, run_monitor):
    (tmp_path / "b").mkdir()
    config = '[[backups]]\nname = "db"\npath = "b/*.sql.gz"\nmin_free_percent = 0\n'
    proc = run_monitor(["backup-check", "--format", "nagios"], tmp_path, config=config, steady_cpu=False)
    assert proc.returncode == 2, proc.stderr
    out = parse_output(proc.stdout.rstrip("\n"))
    assert out.status_line == "MONITOR CRITICAL - 1 critical, 0 warning: backup:db"
    assert out.long_lines == [f"CRITICAL backup:db: no file matches {tmp_path}/b/*.sql.gz"]

    import sqlite3
    sqlite3.connect(tmp_path / "opp.db").executescript(
        "CREATE TABLE opportunities (id INTEGER PRIMARY KEY, source TEXT, roi REAL, found_at TEXT);")
    config = '[report]\ndatabase = "sqlite://opp.db"\nmin_opportunities = 1\ntimezone = "UTC"\n'
    proc = run_monitor(["daily-report", "--date", "2026-11-25", "--format", "nagios", "--no-notify"], tmp_path,
                       config=config, steady_cpu=False)
    out = parse_output(proc.stdout.rstrip("\n"))
    assert proc.returncode == 1, proc.stderr
    assert out.status_line.startswith("MONITOR WARNING - 0 critical, 1 warning: opportunities")
    assert [d.label for d in out.perfdata][0] == "opportunities"


def test_a_run_that_fails_before_checking_says_why_on_the_status_line(tmp_path, run_monitor):
    bad = "[system]\ncpu_percent = { warning = 10 }\n"
    proc = run_monitor(["health", "--format", "nagios"], tmp_path, config=bad)
    assert (proc.returncode, proc.stdout) == (3, "MONITOR UNKNOWN - config error: system.cpu_percent.critical: required\n")
    proc = run_monitor(["--format=nagios", "health", "--no-such-option"], tmp_path)
    assert proc.returncode == 3 and proc.stdout.startswith("MONITOR UNKNOWN - monitor: No such option")
    proc = run_monitor(["health", "--format", "json"], tmp_path, config=bad)  # other formats: stderr alone
    assert (proc.returncode, proc.stdout) == (3, "")
