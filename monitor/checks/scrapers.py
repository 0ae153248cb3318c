"""Scraper checks (kind `scraper`): is a scraper alive? HTTP health, process, heartbeat.

`scraper` runs every probe its config names (`url`, `process`, `heartbeat_file`);
each probe measures and judges itself into a `Probe`, and the worst one decides
the Result, with the scraper's own figures (`json_metrics` in the health answer) and
its success rate over the last runs (`scraper_figures.py`). Network, the process
table, the clock and the outcomes carried between runs come in as arguments.
"""

import json
import os
import re
import stat
import time
from functools import partial
from typing import NamedTuple

from monitor.checks import MARGIN_SECONDS
from monitor.checks.scraper_figures import (DEFAULT_SUCCESS_RATE, Outcomes, judge_metrics, judge_success_rate,
                                            parse_body)
from monitor.checks.processes import MATCH_SECONDS, PROCESS_TABLE, proc_uid, search_all
from monitor.results import CRITICAL, OK, SEVERITY, UNKNOWN, WARNING, Result, Threshold, is_number, worst
from monitor.runner import Check
from monitor.units import format_duration

# The config fills these in; they serve callers that build an entry by hand.
DEFAULT_LATENCY_MS = Threshold(1000, 3000)
DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_AGE = 900.0
MAX_SHOWN = 60            # characters of an unexpected JSON value quoted in a message
FUTURE_SLACK_SECONDS = 60  # a heartbeat this far in the future means a wrong clock


class Probe(NamedTuple):
    """One probe's verdict: a status, the line a person reads, and what was measured."""

    status: str
    message: str
    details: dict


def scraper(cfg: dict, session=None, process_iter=None, now=time.time, outcomes: Outcomes | None = None) -> Result:
    """Given a `[[scrapers]]` entry, run each configured probe and return the worst verdict.

    The value is the HTTP latency in ms when there is a `url` probe that got an answer.
    With `outcomes` (the runs before this one), the success rate joins the verdict.
    """
    # The quick local probes go first: the HTTP probe may use all of the timeout.
    local: dict[str, Probe] = {}
    if cfg.get("process"):
        local["process"] = process_probe(cfg["process"], process_iter, cfg.get("process_user"))
    if cfg.get("heartbeat_file"):
        local["heartbeat"] = heartbeat_probe(cfg["heartbeat_file"],
                                             cfg.get("heartbeat_max_age") or DEFAULT_MAX_AGE, now)
    probes: dict[str, Probe] = {}
    latency_ms, threshold, figures = None, None, None
    if cfg.get("url"):
        threshold = cfg.get("latency_ms") or DEFAULT_LATENCY_MS
        probes["http"], latency_ms, figures = http_probe(cfg["url"], threshold, cfg.get("expect_json") or {},
                                                         cfg.get("timeout") or DEFAULT_TIMEOUT, session,
                                                         cfg.get("json_metrics"), cfg)
    probes.update(local)
    return _verdict(cfg, probes, latency_ms, threshold, figures, outcomes)


def _verdict(cfg: dict, probes: dict, latency_ms, threshold, figures=None, outcomes=None) -> Result:
    """The worst of the probes, the figures and the success rate; `up` is the probes' alone."""
    if not probes:  # the config refuses this; a hand-made entry might not
        return Result(UNKNOWN, "no probe configured (url, process or heartbeat_file)")

    up = worst(*(p.status for p in probes.values())) in (OK, WARNING)
    verdicts = list(probes.values())
    details = {name: {"status": p.status, "message": p.message, **p.details}
               for name, p in probes.items()}
    extra = [figures] if figures else []
    if outcomes is not None:
        extra.append(judge_success_rate(outcomes.record(cfg["name"], up),
                                        cfg.get("success_rate") or DEFAULT_SUCCESS_RATE))
    for verdict in extra:
        verdicts.append(Probe(*verdict))
        details.update(verdict[2])
    status = worst(*(p.status for p in verdicts))
    failed = sorted((p for p in verdicts if p.status != OK),
                    key=lambda p: -SEVERITY[p.status])  # critical lines first
    message = "; ".join(p.message for p in (failed or probes.values()))
    return Result(status, message, value=latency_ms, unit="ms" if threshold else None,
                  warning=threshold.warning if threshold else None,
                  critical=threshold.critical if threshold else None, details=details)


def start(cfg: dict, session, outcomes: Outcomes | None = None):
    """For the runner: a scraper probed by URL alone starts on the probes' loop, no thread of its own.

    Return (Future, finish) as `runner.Check.start` wants, or None (a process or
    heartbeat probe, which may block, runs in a thread with `scraper`).
    """
    if session is None or not cfg.get("url") or cfg.get("process") or cfg.get("heartbeat_file"):
        return None
    from monitor import http

    return (http.start(session, cfg["url"], cfg.get("timeout") or DEFAULT_TIMEOUT, tls=http.tls_settings(cfg)),
            partial(_finish, cfg, outcomes))


def _finish(cfg: dict, outcomes, future) -> Result:
    threshold = cfg.get("latency_ms") or DEFAULT_LATENCY_MS
    probe, latency_ms, figures = _judge_http(future.result, threshold, cfg.get("expect_json") or {},
                                             cfg.get("json_metrics"))
    return _verdict(cfg, {"http": probe}, latency_ms, threshold, figures, outcomes)


# --- HTTP ---------------------------------------------------------------------------

def http_probe(url: str, threshold: Threshold, expect_json: dict, timeout: float,
               session=None, json_metrics: dict | None = None, cfg=None) -> tuple[Probe, float | None, tuple | None]:
    """GET `url`: a 2xx within the latency threshold, with the expected JSON fields.

    Return the Probe, the latency in ms (None when there was no answer) and the
    verdict on the `json_metrics` figures (None when none are configured or read).
    """
    from monitor import http  # loaded only when a scraper has a URL

    tls = http.tls_settings(cfg or {})  # the entry's ca_cert and verify
    return _judge_http(lambda: http.get(session, url, timeout, tls=tls), threshold, expect_json, json_metrics)


def _judge_http(get, threshold: Threshold, expect_json: dict,
                json_metrics: dict | None = None) -> tuple[Probe, float | None, tuple | None]:
    """Judge the answer `get()` returns (or the ProbeError it raises).

    Return the Probe, the latency in ms and, for a 2xx answer when `json_metrics` are
    configured, the figures' verdict (`scraper_figures.judge_metrics`); the body is
    parsed once, and only when JSON is asked for.
    """
    from monitor import http

    try:
        resp = get()
    except http.ProbeError as exc:
        return Probe(CRITICAL, f"HTTP: {exc.reason}", {"error": exc.reason}), None, None
    ms = round(resp.elapsed * 1000, 1)
    details = {"status_code": resp.status, "latency_ms": ms, "redirects": resp.redirects,
               "body_bytes": len(resp.body), "truncated": resp.truncated}
    line = f"HTTP {resp.status} in {ms:.0f} ms"
    if not 200 <= resp.status < 300:
        return Probe(CRITICAL, line, details), ms, None

    parsed = parse_body(resp) if expect_json or json_metrics else (None, None)
    status = threshold.judge(ms)
    if status != OK:
        level = threshold.critical if status == CRITICAL else threshold.warning
        line += f" (slower than {level:g} ms)"
    if expect_json:
        problems = json_mismatches(resp, expect_json, parsed)
        if problems:
            status = CRITICAL
            details["json"] = problems
            line += "; " + problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
    figures = judge_metrics(*parsed, json_metrics) if json_metrics else None
    return Probe(status, line, details), ms, figures


def json_mismatches(resp, expect_json: dict, parsed: tuple | None = None) -> list[str]:
    """Return one line per expected field that the body does not have (empty: all match).

    `parsed`: the body as `scraper_figures.parse_body` gave it, when already parsed.
    """
    from monitor.http import json_field

    wanted = ", ".join(f"{path} = {_show(value)}" for path, value in expect_json.items())
    if resp.truncated:
        return [f"body is over {len(resp.body):,} bytes, not parsed (expected {wanted})"]
    body, why_not = parsed or parse_body(resp)
    if why_not is not None:
        return [f"body is not JSON (expected {wanted})"]
    problems = []
    for path, expected in expect_json.items():
        try:
            actual = json_field(body, path)
        except KeyError:
            problems.append(f"{path} is missing, expected {_show(expected)}")
            continue
        if not _same(actual, expected):
            problems.append(f"{path} is {_show(actual)}, expected {_show(expected)}")
    return problems


def _same(actual, expected) -> bool:
    # In Python True == 1: a TOML `true` must not accept a JSON 1, nor 1 accept true.
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    return actual == expected


def _show(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN - 1] + "…"


# --- process -------------------------------------------------------------------------

def process_probe(pattern: str, process_iter=None, user: int | None = None,
                  budget: float = MATCH_SECONDS) -> Probe:
    """At least one process whose command line matches `pattern` (re.search) is running.

    Only the first 4 KB of each command line is matched, within `budget` seconds in
    all. With `user` (a uid) only processes whose real uid it is count: anyone can
    start a process named like the scraper (`exec -a`), and their command lines are
    not even matched. The monitor itself and its parent are left out: their command
    lines can hold the pattern (`monitor health` run from a script naming the scraper).
    """
    if process_iter is None and not os.path.isdir("/proc/self"):
        import psutil  # no /proc: only scrapers with a process probe pay for psutil

        process_iter = psutil.process_iter
    regex = re.compile(pattern)
    own = {os.getpid(), os.getppid()}
    rows = [(pid, text, uid) for pid, text, uid in PROCESS_TABLE.snapshot(process_iter)
            if pid not in own]
    if user is not None:
        rows = [row for row in rows if (row[2] if row[2] is not None else proc_uid(row[0])) == user]
    found, timed_out = search_all(regex, [text for _, text, _ in rows], budget)
    pids = [rows[i][0] for i in found]
    details = {"pattern": pattern, "count": len(pids), "pids": pids[:10]}
    whose = ""
    if user is not None:
        details["user"] = user
        whose = f" of {_user_name(user)}"
    if timed_out:
        details["timed_out"] = True
    if not pids:
        if timed_out:
            hint = "" if user is not None else "; set process_user to match only the scraper's account"
            return Probe(UNKNOWN, f"matching {_show(pattern)} took over {budget:g} s and found no "
                                  f"process{whose}{hint}", details)
        return Probe(CRITICAL, f"no process{whose} matches {_show(pattern)}", details)
    noun, verb = ("process", "matches") if len(pids) == 1 else ("processes", "match")
    return Probe(OK, f"{len(pids)} {noun}{whose} {verb} {_show(pattern)}", details)


def _user_name(uid: int) -> str:
    import pwd

    try:
        return f"user {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"uid {uid}"


# --- heartbeat -----------------------------------------------------------------------

def heartbeat_probe(path: str, max_age: float, now=time.time) -> Probe:
    """The file the scraper touches on success was modified within `max_age` seconds."""
    limit = getattr(max_age, "text", None) or format_duration(max_age)
    details = {"path": path, "max_age_seconds": float(max_age)}
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return Probe(CRITICAL, f"heartbeat file {path} is missing", details)
    except OSError as exc:
        return Probe(CRITICAL, f"heartbeat file {path}: {exc.strerror or type(exc).__name__}", details)
    if stat.S_ISDIR(st.st_mode):
        return Probe(CRITICAL, f"heartbeat file {path} is a directory", details)
    age = now() - st.st_mtime
    details["age_seconds"] = round(age, 1)
    if age < -FUTURE_SLACK_SECONDS:
        # A future mtime would look fresh for as long as the clocks disagree.
        return Probe(WARNING, f"heartbeat {path} is {format_duration(-age)} in the future (clock skew?)",
                     details)
    if age > max_age:
        return Probe(CRITICAL, f"heartbeat {format_duration(age)} old (max {limit}): {path}", details)
    return Probe(OK, f"heartbeat {format_duration(max(age, 0))} ago", details)


# --- what these checks export (the contract: monitor/checks/__init__.py) ----------------------

METRICS = {
    "monitor_scraper_up": ("1 if every probe of the scraper is ok or warning.", ("scraper",)),
    "monitor_scraper_response_seconds": ("Response time of the scraper's health endpoint.", ("scraper",)),
    "monitor_scraper_heartbeat_age_seconds": ("Age of the file the scraper touches on success.", ("scraper",)),
    "monitor_scraper_success_rate": ("Share of the scraper's last runs (up to 12, within 1 h) whose probes "
                                     "passed.", ("scraper",)),
    "monitor_scraper_metric": ("A number from the scraper's health JSON (json_metrics), by dotted path.",
                               ("scraper", "field")),
}
PROBES = ("http", "process", "heartbeat")
MEASURES = {"scraper": ("latency", False)}
# The seed's scraper job (day 12 plan): kept exactly as written there.
SEED_SCRAPER_JOB = "web3_scraper"


def checks(config: dict, carried=None, shared=None) -> list:
    """One check per [[scrapers]] entry; its probes share the run's HTTP session."""
    session = shared.http_session() if shared else None
    outcomes = Outcomes(carried, [cfg["name"] for cfg in config["scrapers"]], time.time())
    return [Check(f"scraper:{cfg['name']}", "scraper", partial(scraper, cfg, session, outcomes=outcomes),
                  cfg["timeout"] + MARGIN_SECONDS, on_timeout=CRITICAL, start=partial(start, cfg, session, outcomes))
            for cfg in config["scrapers"]]


def check_ids(config: dict) -> list[str]:
    return [f"scraper:{s['name']}" for s in config["scrapers"]]


def samples(result) -> list:
    name, details = result.id.split(":", 1)[1], result.details or {}
    # Up is the probes' verdict: the figures and the success rate have their own series.
    probes = [d.get("status") for key, d in details.items() if key in PROBES and isinstance(d, dict)]
    up = worst(*probes) if probes and all(s in SEVERITY for s in probes) else result.status
    out = [("monitor_scraper_up", {"scraper": name}, 1 if up in (OK, WARNING) else 0)]
    http = details.get("http") if isinstance(details.get("http"), dict) else {}
    latency = http.get("latency_ms")
    if is_number(latency):
        out.append(("monitor_scraper_response_seconds", {"scraper": name}, latency / 1000))
    heartbeat = details.get("heartbeat") if isinstance(details.get("heartbeat"), dict) else {}
    out.append(("monitor_scraper_heartbeat_age_seconds", {"scraper": name}, heartbeat.get("age_seconds")))
    out.append(("monitor_scraper_success_rate", {"scraper": name}, details.get("success_rate_1h")))
    metrics = details.get("metrics") if isinstance(details.get("metrics"), dict) else {}
    out += [("monitor_scraper_metric", {"scraper": name, "field": field}, value) for field, value in metrics.items()]
    return out


def levels(config: dict) -> dict:
    from monitor.fleet.kit import per_name, schema_default

    scrapers = config["scrapers"]
    latency, rate = schema_default("scrapers", "latency_ms"), schema_default("scrapers", "success_rate")
    # Seconds: the unit of the Prometheus metric, not of the config.
    return {"latency_warning": per_name(scrapers, "latency_ms", "scraper", latency, lambda t: t.warning / 1000),
            "latency_critical": per_name(scrapers, "latency_ms", "scraper", latency, lambda t: t.critical / 1000),
            "heartbeat_max_age": per_name(scrapers, "heartbeat_max_age", "scraper",
                                          schema_default("scrapers", "heartbeat_max_age")),
            "success_rate_warning": per_name(scrapers, "success_rate", "scraper", rate, lambda t: t.warning),
            "success_rate_critical": per_name(scrapers, "success_rate", "scraper", rate, lambda t: t.critical),
            # (scraper, dotted path, Threshold) of every json_metrics field: no default to share.
            "scraper_metrics": [(s["name"], path, level) for s in scrapers
                                for path, level in (s.get("json_metrics") or {}).items()]}


def rules(t: dict) -> dict:
    from monitor.checks.scraper_figures import figure_rules
    from monitor.fleet.kit import compare, duration_text, health_runbook, level_text, num, rule

    runbook = health_runbook("scraper")
    seed = {"alert": "ScraperDown", "expr": f'up{{job="{SEED_SCRAPER_JOB}"}} == 0', "for": "5m",
            "labels": {"severity": "critical"},
            "annotations": {"summary": "Web3 Scraper is down",
                            "description": "Prometheus cannot scrape {{ $labels.instance }} "
                                           f"(job {SEED_SCRAPER_JOB}, up = {{{{ $value }}}}) for 5 minutes.",
                            "runbook": runbook}}
    rules = [rule("ScraperUnhealthy", "monitor_scraper_up == 0", "5m", "critical",
                  "Scraper {{ $labels.scraper }} fails its health probes",
                  "Scraper {{ $labels.scraper }} on {{ $labels.instance }} fails its probes "
                  "(monitor_scraper_up = {{ $value }}): HTTP health, process or heartbeat.", runbook)]
    for severity, key, for_ in (("warning", "latency_warning", "10m"), ("critical", "latency_critical", "5m")):
        rules.append(rule(
            "ScraperSlow", compare("monitor_scraper_response_seconds", ">=", t[key]), for_, severity,
            f"Scraper {{{{ $labels.scraper }}}} answers slowly ({severity})",
            "Scraper {{ $labels.scraper }} on {{ $labels.instance }} answered its health check in "
            f"{{{{ $value | humanizeDuration }}}} ({severity} from {level_text(t[key], duration_text)}).",
            runbook))
    # 15m: three more runs at one per 5 minutes, so the check itself judges by then (4 runs).
    for severity in ("warning", "critical"):
        level = t[f"success_rate_{severity}"]
        rules.append(rule(
            "ScraperSuccessRateLow", compare("monitor_scraper_success_rate", "<=", level), "15m", severity,
            "Scraper {{ $labels.scraper }} fails intermittently",
            "Scraper {{ $labels.scraper }} on {{ $labels.instance }} passed its probes in "
            f"{{{{ $value | humanizePercentage }}}} of its runs in the last hour ({severity} at "
            f"{level_text(level, lambda v: num(v * 100) + '%')} or less).", runbook))
    rules += figure_rules(t["scraper_metrics"], runbook)
    return {"web3_scraper_alerts": [seed], "monitor_services": rules}


def panels(t: dict) -> list:
    from monitor.fleet.kit import INSTANCE as I, mapping, panel, steps, target

    row, legend = "Scraper Performance", "{{instance}} {{scraper}}"
    latency = t["latency_warning"], t["latency_critical"]
    rate = t["success_rate_warning"], t["success_rate_critical"]
    return [
        (row, panel("stat", "Scraper up", [target(f"monitor_scraper_up{{{I}}}", legend)],
                    "Every probe (HTTP, process, heartbeat) ok or warning.", "none",
                    steps("red", (1, "green")), mappings=mapping((0, "DOWN", "red"), (1, "UP", "green"))), 6, 8),
        (row, panel("timeseries", "Health endpoint latency",
                    [target(f"monitor_scraper_response_seconds{{{I}}}", legend)],
                    "scrapers latency_ms, here in seconds.", "s",
                    steps("green", (latency[0].default, "yellow"), (latency[1].default, "red")), 0), 6, 8),
        (row, panel("timeseries", "Success rate (1 h)",
                    [target(f"monitor_scraper_success_rate{{{I}}}", legend)],
                    "Share of the last 12 health runs (within 1 h) whose probes passed (scrapers success_rate).",
                    "percentunit", steps("red", (rate[1].default, "yellow"), (rate[0].default, "green")), 0, 1), 6, 8),
        (row, panel("timeseries", "Heartbeat age",
                    [target(f"monitor_scraper_heartbeat_age_seconds{{{I}}}", legend)],
                    "Age of the file each scraper touches on success (scrapers heartbeat_max_age).", "s",
                    steps("green", (t["heartbeat_max_age"].default, "red")), 0), 6, 8),
        (row, panel("timeseries", "Scraper figures (json_metrics)",
                    [target(f"monitor_scraper_metric{{{I}}}", "{{instance}} {{scraper}} {{field}}")],
                    "The numbers each scraper reports in its health JSON, by dotted path (scrapers json_metrics).",
                    "none"), 24, 8),
    ]
