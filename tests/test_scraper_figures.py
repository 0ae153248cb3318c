"""The scraper's own figures (issue 15): json_metrics thresholds on its health JSON, and its
success rate over the last runs, carried in the state file between runs."""

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from monitor import config as monitor_config
from monitor.checks import exported
from monitor.checks.scraper_figures import KEEP, OUTCOMES_KEY, Outcomes, judge_success_rate
from monitor.checks.scrapers import scraper
from monitor.config import ConfigError
from monitor.fleet import dashboard as render_dashboard, rules as render_rules
from monitor.results import CRITICAL, OK, UNKNOWN, WARNING, Threshold, with_identity
from monitor.state import Carried
from tests.loopback import server, session  # noqa: F401 (fixtures)
from tests.loopback import reply, sized

ERROR_RATE = {"stats.error_rate": Threshold(0.05, 0.2)}
SUCCESS = {"stats.success_rate": Threshold(0.95, 0.8, True)}


def config(**entry):
    """A `[[scrapers]]` entry as the config loader returns it."""
    base = {"name": "uniswap", "url": None, "expect_json": {}, "latency_ms": Threshold(1000, 3000),
            "process": None, "heartbeat_file": None, "heartbeat_max_age": 900.0, "timeout": 5.0,
            "json_metrics": {}, "success_rate": Threshold(0.9, 0.5, True)}
    return {**base, **entry}


def status_json(**stats):
    return reply(json={"status": "ok", "stats": stats})


class Clock:
    def __init__(self, now=1_700_000_000.0):
        self.now = now

    def __call__(self):
        return self.now


def samples(result, name="uniswap") -> dict:
    """{(metric, labels as sorted tuple): value} of what the result writes to the textfile."""
    result = with_identity(result, f"scraper:{name}", "scraper", 1.0)
    return {(metric, tuple(sorted(labels.items()))): value for metric, _, _, labels, value in exported(result)}


# --- json_metrics ----------------------------------------------------------------------------

def test_a_field_over_its_warning_level_warns_naming_field_value_and_level(server, session):
    url = server.route("/health", status_json(error_rate=0.07, success_rate=0.99))
    result = scraper(config(url=url, json_metrics={**ERROR_RATE, **SUCCESS}), session)
    assert result.status == WARNING
    assert "stats.error_rate 0.07 > 0.05" in result.message
    assert result.details["metrics"] == {"stats.error_rate": 0.07, "stats.success_rate": 0.99}
    assert result.details["metric_problems"] == {"stats.error_rate": "stats.error_rate 0.07 > 0.05"}


def test_a_lower_is_worse_field_under_its_critical_level_is_critical(server, session):
    url = server.route("/health", status_json(error_rate=0.01, success_rate=0.7))
    result = scraper(config(url=url, json_metrics={**ERROR_RATE, **SUCCESS}), session)
    assert result.status == CRITICAL
    assert result.message.startswith("stats.success_rate 0.7 < 0.8"), result.message


def test_the_worst_field_leads_the_message_and_the_others_follow(server, session):
    url = server.route("/health", status_json(error_rate=0.5, success_rate=0.9))
    result = scraper(config(url=url, json_metrics={**SUCCESS, **ERROR_RATE}), session)
    assert result.status == CRITICAL
    assert result.message == "stats.error_rate 0.5 > 0.2; stats.success_rate 0.9 < 0.95"


def test_figures_within_their_levels_keep_the_probe_message(server, session):
    url = server.route("/health", status_json(error_rate=0.01))
    result = scraper(config(url=url, json_metrics=ERROR_RATE), session)
    assert result.status == OK
    assert result.message.startswith("HTTP 200 in ")
    assert result.details["metrics"] == {"stats.error_rate": 0.01}


def test_figures_changed_between_runs_change_the_verdict(server, session):
    cfg = config(url=server.route("/health", status_json(error_rate=0.01)), json_metrics=ERROR_RATE)
    assert scraper(cfg, session).status == OK
    server.route("/health", status_json(error_rate=0.3))
    second = scraper(cfg, session)
    assert second.status == CRITICAL and "stats.error_rate 0.3 > 0.2" in second.message


def test_a_critical_figure_leaves_the_scraper_up_and_is_exported_by_field(server, session):
    url = server.route("/health", status_json(error_rate=0.3, p95={"latency_ms": 812}))
    metrics = {**ERROR_RATE, "stats.p95.latency_ms": Threshold(1000, 2000)}
    result = scraper(config(url=url, json_metrics=metrics), session)
    assert result.status == CRITICAL
    found = samples(result)
    assert found[("monitor_scraper_up", (("scraper", "uniswap"),))] == 1  # it answered: its figure is bad
    assert found[("monitor_scraper_metric", (("field", "stats.error_rate"), ("scraper", "uniswap")))] == 0.3
    assert found[("monitor_scraper_metric", (("field", "stats.p95.latency_ms"), ("scraper", "uniswap")))] == 812


@pytest.mark.parametrize("stats, why", [
    ({}, "stats.error_rate unknown: missing"),
    ({"error_rate": "0.07"}, "stats.error_rate unknown: is a string"),
    ({"error_rate": True}, "stats.error_rate unknown: is a boolean"),
    ({"error_rate": None}, "stats.error_rate unknown: is null"),
    ({"error_rate": [0.07]}, "stats.error_rate unknown: is an array"),
    ({"error_rate": {"value": 0.07}}, "stats.error_rate unknown: is an object"),
])
def test_a_field_that_is_not_a_number_is_unknown_with_why(server, session, stats, why):
    url = server.route("/health", status_json(**stats))
    result = scraper(config(url=url, json_metrics=ERROR_RATE), session)
    assert result.status == UNKNOWN
    assert result.message == why
    assert result.details["metrics"] == {"stats.error_rate": None}
    assert ("monitor_scraper_metric", (("field", "stats.error_rate"), ("scraper", "uniswap"))) not in samples(result)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"9" * 400])
def test_nan_infinity_and_numbers_past_a_float_are_unknown_not_exported(server, session, literal):
    url = server.route("/health", reply(body=b'{"stats": {"error_rate": ' + literal + b"}}"))
    result = scraper(config(url=url, json_metrics=ERROR_RATE), session)
    assert result.status == UNKNOWN
    assert result.message == "stats.error_rate unknown: is not a finite number"
    assert samples(result)[("monitor_scraper_up", (("scraper", "uniswap"),))] == 1
    assert not [key for key in samples(result) if key[0] == "monitor_scraper_metric"]


@pytest.mark.parametrize("body, why", [
    (b"<html>502 Bad Gateway</html>", "body is not JSON"),
    (b'{"stats": {"error_rate": 0.07, "note": "\xff\xfe caf\xe9"}}', "body is not JSON"),
    (b"[" * 200_000 + b"]" * 200_000, "body is not JSON: nested too deeply"),
    (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "body is not JSON: nested too deeply"),
])
def test_hostile_bodies_make_every_field_unknown_with_why(server, session, body, why):
    url = server.route("/health", reply(body=body))
    result = scraper(config(url=url, json_metrics={**ERROR_RATE, **SUCCESS}), session)
    assert result.status == UNKNOWN
    assert result.message == f"stats.error_rate unknown: {why}; stats.success_rate unknown: {why}"
    assert result.details["http"]["status"] == OK  # the endpoint itself answered


def test_a_5mb_body_is_read_no_further_than_the_cap_and_not_parsed(server, session):
    body = b'{"stats": {"error_rate": 0.07}, "pad": "' + b"x" * 5_000_000 + b'"}'
    url = server.route("/health", sized(body))
    result = scraper(config(url=url, json_metrics=ERROR_RATE), session)
    assert result.status == UNKNOWN
    assert result.message == "stats.error_rate unknown: body is over 1,000,000 bytes, not parsed"
    assert result.details["http"]["body_bytes"] == 1_000_000 and result.details["http"]["truncated"]


def test_without_json_metrics_a_body_that_is_not_json_is_not_judged(server, session):
    url = server.route("/health", reply(body=b"\xff not json"))
    result = scraper(config(url=url), session)
    assert result.status == OK
    assert "metrics" not in result.details


def test_a_failed_answer_is_critical_and_its_figures_are_not_judged(server, session):
    url = server.route("/health", reply(503, json={"stats": {"error_rate": 0.9}}))
    result = scraper(config(url=url, json_metrics=ERROR_RATE), session)
    assert result.status == CRITICAL and result.message.startswith("HTTP 503")
    assert "metrics" not in result.details


# --- success rate --------------------------------------------------------------------------

def run_outcomes(carried_value, name, ok_flags, clock, step=300.0):
    """What each health run does with the outcomes, one state file round trip per run."""
    for ok in ok_flags:
        carried = Carried(carried_value)
        Outcomes(carried, [name], clock()).record(name, ok)
        carried_value = json.loads(json.dumps(carried.to_write(True)))
        clock.now += step
    return carried_value


def flags(saved, name="a") -> str:
    return saved[OUTCOMES_KEY]["runs"][name]


def test_a_scraper_that_flaps_between_runs_is_critical_even_when_this_probe_is_ok(server, session):
    answers = iter([reply(503), status_json(), reply(503), status_json()])
    url = server.url("/health")
    clock, saved, results = Clock(), {}, []
    for _ in range(4):
        server.route("/health", next(answers))
        carried = Carried(saved)
        outcomes = Outcomes(carried, ["uniswap"], clock())
        results.append(scraper(config(url=url), session, now=clock, outcomes=outcomes))
        saved = json.loads(json.dumps(carried.to_write(True)))
        clock.now += 300
    first, second, third, last = results
    # Fewer than 4 runs: shown, not judged; the failing probes speak for themselves.
    assert second.status == OK and second.details["success_rate"] == {"ok": 1, "runs": 2, "judged": False}
    assert third.status == CRITICAL and third.message.startswith("HTTP 503")
    assert last.details["http"]["status"] == OK
    assert last.status == CRITICAL
    assert last.message == "success rate 50% (2 of the last 4 runs) ≤ 50%"
    assert last.details["success_rate_1h"] == 0.5
    assert samples(last)[("monitor_scraper_up", (("scraper", "uniswap"),))] == 1  # this probe passed
    assert samples(last)[("monitor_scraper_success_rate", (("scraper", "uniswap"),))] == 0.5


def test_one_failure_in_twelve_runs_is_fine_and_two_are_a_warning():
    clock, rate = Clock(), Threshold(0.9, 0.5, True)
    saved = run_outcomes({}, "a", [True] * 11 + [False], clock)
    assert flags(saved) == "1" * 11 + "0"
    assert judge_success_rate(flags(saved), rate)[0] == OK  # 11 of 12: 92%
    saved = run_outcomes(saved, "a", [False], clock)
    status, message, details = judge_success_rate(flags(saved), rate)
    assert status == WARNING and message == "success rate 83% (10 of the last 12 runs) ≤ 90%"
    assert details["success_rate"] == {"ok": 10, "runs": KEEP, "judged": True}


def test_outcomes_are_bounded_to_12_runs_and_to_the_last_hour():
    clock = Clock()
    saved = run_outcomes({}, "a", [False] * 30, clock)
    assert flags(saved) == "0" * KEEP and len(saved[OUTCOMES_KEY]["times"]) == KEEP
    clock.now += 3600  # monitor stopped for an hour: the failures before no longer count
    saved = run_outcomes(saved, "a", [True], clock)
    assert flags(saved) == "1"


def test_a_state_file_hand_edited_or_from_a_clock_set_back_starts_afresh():
    clock = Clock()
    saved = run_outcomes({}, "a", [False] * 3, clock)
    good = saved[OUTCOMES_KEY]
    for hostile in ("garbage", {"times": "x", "runs": good["runs"]}, {"times": [1, "x"], "runs": good["runs"]},
                    {"times": good["times"][::-1], "runs": good["runs"]},  # not ascending
                    {"times": [t + 7200 for t in good["times"]], "runs": good["runs"]},  # from the future
                    ):
        assert flags(run_outcomes({OUTCOMES_KEY: hostile}, "a", [True], Clock(clock.now))) == "1", hostile
    for runs in ({"a": "01x"}, {"a": 7}, {"a": "0" * 50}, "garbage"):
        assert flags(run_outcomes({OUTCOMES_KEY: {**good, "runs": runs}}, "a", [True], Clock(clock.now))) == "1"
    assert flags(run_outcomes(saved, "a", [True], clock)) == "0001"  # while the real one carries on


def test_a_probe_that_never_finishes_counts_as_a_failed_run():
    carried = Carried({})
    Outcomes(carried, ["a", "b"], 1000.0).record("a", True)  # b's check timed out
    assert carried.to_write(True)[OUTCOMES_KEY] == {"times": [1000.0], "runs": {"a": "1", "b": "0"}}


def test_a_scraper_added_later_has_fewer_runs_and_a_removed_one_loses_its_history():
    clock = Clock()
    saved = run_outcomes({}, "a", [False, False], clock)
    carried = Carried(saved)
    outcomes = Outcomes(carried, ["a", "b"], clock())
    assert (outcomes.record("a", True), outcomes.record("b", True)) == ("001", "1")
    clock.now += 300
    carried = Carried(json.loads(json.dumps(carried.to_write(True))))
    Outcomes(carried, ["b"], clock()).record("b", True)
    assert carried.to_write(True)[OUTCOMES_KEY]["runs"] == {"b": "11"}


# --- end to end: the real state file, the textfile, config errors --------------------------------

def flapping(answers):
    """An answer that cycles through `answers`, one per request."""
    state = {"n": 0}

    def answer(handler):
        current = answers[state["n"] % len(answers)]
        state["n"] += 1
        current(handler)
    return answer


def test_health_runs_carry_outcomes_in_the_state_file_and_a_flapping_scraper_goes_critical(
        server, tmp_path, run_monitor, envelope):
    body = {"status": "ok", "stats": {"error_rate": 0.07, "success_rate": 0.99}}
    url = server.route("/health", flapping([reply(503), reply(json=body)]))
    retired = server.route("/retired", reply(json=body))
    uniswap = textwrap.dedent(f"""\
        [[scrapers]]
        name = "uniswap"
        url = "{url}"
        [scrapers.json_metrics]
        "stats.error_rate" = {{ warning = 0.05, critical = 0.2 }}
        "stats.success_rate" = {{ warning = 0.95, critical = 0.8, lower_is_worse = true }}
        """)
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    verdicts = []
    for i in range(4):
        toml = uniswap + (f'[[scrapers]]\nname = "retired"\nurl = "{retired}"\n' if i < 3 else "")
        proc = run_monitor(["health", "--only", "scraper", "--format", "json", "--textfile-dir", str(textfiles)],
                           tmp_path, config=toml)
        verdicts.append(envelope(proc)["checks"]["scraper:uniswap"])
    assert [v["details"]["http"]["status"] for v in verdicts] == ["critical", "ok", "critical", "ok"]
    assert verdicts[1]["status"] == "warning"  # 1 of 2 runs: not judged yet; the error rate warns
    assert verdicts[1]["details"]["success_rate"] == {"ok": 1, "runs": 2, "judged": False}
    last = verdicts[3]
    assert last["status"] == "critical" and proc.returncode == 2
    assert last["message"] == "success rate 50% (2 of the last 4 runs) ≤ 50%; stats.error_rate 0.07 > 0.05"
    assert last["details"]["success_rate_1h"] == 0.5
    assert last["details"]["metrics"] == {"stats.error_rate": 0.07, "stats.success_rate": 0.99}

    state = json.loads((tmp_path / "state" / "counters.json").read_text())
    # the retired scraper's history is gone
    assert state[OUTCOMES_KEY]["runs"] == {"uniswap": "0101"}
    prom = (textfiles / "monitor_health.prom").read_text()
    assert 'monitor_scraper_up{scraper="uniswap"} 1.0' in prom  # this run's probe passed
    assert 'monitor_scraper_success_rate{scraper="uniswap"} 0.5' in prom
    assert 'monitor_scraper_metric{field="stats.error_rate",scraper="uniswap"} 0.07' in prom
    assert 'monitor_scraper_metric{field="stats.success_rate",scraper="uniswap"} 0.99' in prom


@pytest.mark.parametrize("entry, error", [
    ('json_metrics = { "stats..rate" = { warning = 1, critical = 2 } }',
     'scrapers[0].json_metrics."stats..rate": expected a dotted path of letters, digits, _ and - '
     '(like "stats.error_rate")'),
    ('json_metrics = { "stats.error_rate" = { warning = 0.2, critical = 0.05 } }',
     'scrapers[0].json_metrics."stats.error_rate": warning (0.2) is above critical (0.05)'),
    ('json_metrics = { "stats.ok" = { warning = 0.8, critical = 0.95, lower_is_worse = true } }',
     'scrapers[0].json_metrics."stats.ok": warning (0.8) is below critical (0.95); lower is worse here'),
    ('json_metrics = { "stats.ok" = { warning = 1, critical = 2, lower_is_worse = "yes" } }',
     'scrapers[0].json_metrics."stats.ok".lower_is_worse: expected true or false'),
    ('json_metrics = { "stats.ok" = { warning = 1, critical = 2, lower = true } }',
     'scrapers[0].json_metrics."stats.ok".lower: unknown key (expected warning, critical or lower_is_worse)'),
    ('json_metrics = { "stats.ok" = 0.5 }',
     'scrapers[0].json_metrics."stats.ok": expected a table like { warning = ..., critical = ... }'),
    ('success_rate = { warning = 0.5, critical = 0.9 }',
     "scrapers[0].success_rate: warning (0.5) is below critical (0.9); lower is worse here"),
    ('success_rate = { warning = 1.5, critical = 0.9 }',
     "scrapers[0].success_rate.warning: expected a value in [0, 1], got 1.5"),
])
def test_bad_json_metrics_or_success_rate_is_one_config_error_naming_the_key(tmp_path, entry, error):
    raw = f'[[scrapers]]\nname = "a"\nurl = "http://127.0.0.1:1/health"\n{entry}\n'
    (tmp_path / "monitor.toml").write_text(raw)
    with pytest.raises(ConfigError) as info:
        monitor_config.load(str(tmp_path / "monitor.toml"))
    assert [e.split(": ", 1)[1] if e.startswith(str(tmp_path)) else e for e in info.value.errors] == [error]


def test_a_bad_json_metrics_path_exits_3_with_one_line(tmp_path, run_monitor):
    toml = ('[[scrapers]]\nname = "a"\nurl = "http://127.0.0.1:1/health"\n'
            'json_metrics = { "stats.\\nrate" = { warning = 1, critical = 2 } }\n')
    proc = run_monitor(["health"], tmp_path, config=toml)
    assert proc.returncode == 3
    assert 'json_metrics."stats.\\nrate": expected a dotted path' in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "json_metrics" in line]) == 1


# --- rules and dashboard -------------------------------------------------------------------

FIGURES = {"scrapers": [
    {"name": "uniswap", "url": "http://127.0.0.1:9101/health",
     "json_metrics": {"stats.error_rate": {"warning": 0.05, "critical": 0.2},
                      "stats.success_rate": {"warning": 0.95, "critical": 0.8, "lower_is_worse": True}},
     "success_rate": {"warning": 0.8, "critical": 0.4}},
    {"name": "curve.fi", "url": "http://127.0.0.1:9102/health"},
]}

RULE_TEST = """\
rule_files:
  - rules.yml
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'monitor_scraper_metric{instance="vps-1:9100",job="node",scraper="uniswap",field="stats.error_rate"}'
        values: '0.01x30'
      - series: 'monitor_scraper_metric{instance="vps-2:9100",job="node",scraper="uniswap",field="stats.error_rate"}'
        values: '0.07x30'
      - series: 'monitor_scraper_metric{instance="vps-3:9100",job="node",scraper="uniswap",field="stats.success_rate"}'
        values: '0.5x30'
      # Not configured for this scraper: no rule watches it.
      - series: 'monitor_scraper_metric{instance="vps-4:9100",job="node",scraper="curve.fi",field="stats.error_rate"}'
        values: '0.9x30'
      - series: 'monitor_scraper_success_rate{instance="vps-1:9100",job="node",scraper="uniswap"}'
        values: '0.75x30'
      - series: 'monitor_scraper_success_rate{instance="vps-2:9100",job="node",scraper="curve.fi"}'
        values: '0.75x30'
    alert_rule_test:
      - eval_time: 3m
        alertname: ScraperMetricOutOfRange
      - eval_time: 20m
        alertname: ScraperMetricOutOfRange
        exp_alerts:
          - exp_labels: {severity: warning, scraper: uniswap, field: stats.error_rate, instance: "vps-2:9100", job: node}
            exp_annotations:
              summary: Scraper uniswap reports stats.error_rate out of range (warning)
              description: Scraper uniswap on vps-2:9100 reports stats.error_rate = 0.07 in its health JSON, past its warning level (scrapers json_metrics).
              runbook: ssh vps-2 monitor health --only scraper --format text
          - exp_labels: {severity: warning, scraper: uniswap, field: stats.success_rate, instance: "vps-3:9100", job: node}
            exp_annotations:
              summary: Scraper uniswap reports stats.success_rate out of range (warning)
              description: Scraper uniswap on vps-3:9100 reports stats.success_rate = 0.5 in its health JSON, past its warning level (scrapers json_metrics).
              runbook: ssh vps-3 monitor health --only scraper --format text
          - exp_labels: {severity: critical, scraper: uniswap, field: stats.success_rate, instance: "vps-3:9100", job: node}
            exp_annotations:
              summary: Scraper uniswap reports stats.success_rate out of range (critical)
              description: Scraper uniswap on vps-3:9100 reports stats.success_rate = 0.5 in its health JSON, past its critical level (scrapers json_metrics).
              runbook: ssh vps-3 monitor health --only scraper --format text
      # uniswap's own level is 80%: 75% warns; curve.fi keeps the default 90%: 75% warns too.
      - eval_time: 20m
        alertname: ScraperSuccessRateLow
        exp_alerts:
          - exp_labels: {severity: warning, scraper: uniswap, instance: "vps-1:9100", job: node}
            exp_annotations:
              summary: Scraper uniswap fails intermittently
              description: Scraper uniswap on vps-1:9100 passed its probes in 75% of its runs in the last hour (warning at its configured level or less).
              runbook: ssh vps-1 monitor health --only scraper --format text
          - exp_labels: {severity: warning, scraper: curve.fi, instance: "vps-2:9100", job: node}
            exp_annotations:
              summary: Scraper curve.fi fails intermittently
              description: Scraper curve.fi on vps-2:9100 passed its probes in 75% of its runs in the last hour (warning at its configured level or less).
              runbook: ssh vps-2 monitor health --only scraper --format text
"""


def test_rules_from_json_metrics_and_success_rate_pass_promtool(tmp_path):
    from tests.test_fleet import run, tool

    text = render_rules.rules_yaml(monitor_config.build(FIGURES, None, str(tmp_path)))
    assert ('expr: monitor_scraper_metric{scraper="uniswap",field="stats.error_rate"} >= 0.05 or '
            'monitor_scraper_metric{scraper="uniswap",field="stats.success_rate"} <= 0.95\n') in text
    assert ('expr: monitor_scraper_success_rate{scraper=~"uniswap"} <= 0.8 or '
            'monitor_scraper_success_rate{scraper!~"uniswap"} <= 0.9\n') in text
    (tmp_path / "rules.yml").write_text(text)
    (tmp_path / "test.yml").write_text(RULE_TEST)
    checked = run([tool("promtool"), "check", "rules", str(tmp_path / "rules.yml")])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run([tool("promtool"), "test", "rules", "test.yml"], cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_without_json_metrics_there_is_no_figure_rule_and_the_dashboard_still_shows_them(tmp_path):
    defaults = monitor_config.build({}, None, str(tmp_path))
    assert "ScraperMetricOutOfRange" not in render_rules.rules_yaml(defaults)
    board = render_dashboard.dashboard(defaults)
    titles = {p["title"]: p for p in board["panels"]}
    assert titles["Scraper figures (json_metrics)"]["targets"][0]["expr"] == 'monitor_scraper_metric{instance=~"$instance"}'
    steps = titles["Success rate (1 h)"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [(s["color"], s["value"]) for s in steps] == [("red", None), ("yellow", 0.5), ("green", 0.9)]
